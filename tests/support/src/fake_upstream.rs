//! A fake upstream nameserver on loopback, UDP and TCP on one port. By default it answers `A`
//! for any name with 192.0.2.53 (TTL 300), NXDOMAIN for names starting with `nx.`, and nothing
//! at all for names starting with `drop.`; [`FakeUpstream::set_rule`] gives a name other
//! behaviour (answers from a table with chosen TTLs, NXDOMAIN/NODATA with an SOA, SERVFAIL,
//! truncation over UDP, delays, lost packets, spoofed replies, and each kind of malformed reply in
//! [`Broken`]). It counts the queries it receives.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;

/// The address every default `A` answer carries.
pub const UPSTREAM_ANSWER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 53);

/// How the fake answers one name.
#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    /// A/AAAA records for the addresses of the asked family (NODATA for the other family).
    Answer {
        ips: Vec<IpAddr>,
        ttl: u32,
    },
    /// TXT records.
    Txt {
        strings: Vec<String>,
        ttl: u32,
    },
    /// NXDOMAIN with an SOA in authority (`soa_ttl`, MINIMUM `minimum`).
    NxDomain {
        soa_ttl: u32,
        minimum: u32,
    },
    /// NOERROR, no answer, SOA in authority.
    NoData {
        soa_ttl: u32,
        minimum: u32,
    },
    /// An SOA record for the asked name in the answer section, with this serial.
    Soa {
        serial: u32,
    },
    ServFail,
    Refused,
    /// No reply at all.
    Drop,
    /// Over UDP: TC set and no records; over TCP: the inner rule.
    Truncate(Box<Rule>),
    /// The inner rule after a delay.
    Delay(Duration, Box<Rule>),
    /// First a forged reply with the right ID from another port and one with a wrong ID from
    /// the right port (both answering 203.0.113.66), then the inner rule 50 ms later.
    Spoofed(Box<Rule>),
    /// No reply to the first `n` queries for the name (lost packets), then the inner rule.
    DropFirst(usize, Box<Rule>),
    /// A malformed reply (with our ID) carrying [`BROKEN_ANSWER`], and nothing else.
    Broken(Broken),
}

/// The ways [`Rule::Broken`] breaks a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broken {
    /// The message ends inside the answer record (TC clear).
    CutInRecord,
    /// The answer's owner name is a compression pointer to itself.
    PointerLoop,
    /// The answer's RDLENGTH runs past the end of the message.
    RdlengthPastEnd,
    /// ANCOUNT says one more record than there is.
    CountMismatch,
    /// Eleven bytes: less than a header.
    Short,
    /// The right ID, but the question and answer are for `poison.example.` (A [`BROKEN_ANSWER`]).
    OtherQuestion,
    /// An OPT record with EDNS version 1.
    EdnsVersion,
    /// An OPT record with garbage extended RCODE bits.
    ExtendedRcode,
}

impl Broken {
    pub const ALL: [Broken; 8] = [
        Broken::CutInRecord,
        Broken::PointerLoop,
        Broken::RdlengthPastEnd,
        Broken::CountMismatch,
        Broken::Short,
        Broken::OtherQuestion,
        Broken::EdnsVersion,
        Broken::ExtendedRcode,
    ];
}

/// The address every broken reply carries: it must never reach a client.
pub const BROKEN_ANSWER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 66);

/// The address spoofed replies carry.
pub const SPOOFED_ANSWER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 66);

/// One datagram or frame to send.
struct Outgoing {
    bytes: Vec<u8>,
    /// Sent from another port than the one queried (a forgery).
    forged_port: bool,
    /// Wait this long before sending it.
    delay: Duration,
}

#[derive(Debug, Default)]
struct State {
    rules: HashMap<String, Rule>,
    default: Option<Rule>,
    queries: HashMap<String, usize>,
    total: usize,
    tcp: usize,
    /// The largest query received, in bytes.
    largest: usize,
}

/// A running fake upstream; stops when dropped.
#[derive(Debug)]
pub struct FakeUpstream {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    tasks: Vec<JoinHandle<()>>,
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl FakeUpstream {
    /// Starts on 127.0.0.1 with a random port (UDP and TCP).
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_on("127.0.0.1:0".parse()?).await
    }

    /// Starts on `addr` (port 0 picks one port for both transports).
    pub async fn start_on(addr: SocketAddr) -> anyhow::Result<Self> {
        Self::start_bound(dns_transport::bind_dns_port(addr, 1)?).await
    }

    /// Starts on a port bound elsewhere (inside a network namespace, say).
    pub async fn start_bound(port: dns_transport::DnsPort) -> anyhow::Result<Self> {
        let udp = port.udp.into_iter().next().context("no UDP socket")?;
        udp.set_nonblocking(true)?;
        let socket = Arc::new(UdpSocket::from_std(udp)?);
        let addr = socket.local_addr()?;
        let listener = TcpListener::from_std(port.tcp)?;
        let state = Arc::new(Mutex::new(State::default()));
        let udp_task = {
            let (socket, state) = (socket.clone(), state.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                loop {
                    let Ok((len, peer)) = socket.recv_from(&mut buf).await else {
                        continue;
                    };
                    let packet = buf[..len].to_vec();
                    let (socket, state) = (socket.clone(), state.clone());
                    tokio::spawn(async move {
                        for reply in respond(&state, &packet, false).await {
                            tokio::time::sleep(reply.delay).await;
                            if reply.forged_port {
                                if let Ok(other) = UdpSocket::bind("127.0.0.1:0").await {
                                    let _ = other.send_to(&reply.bytes, peer).await;
                                }
                            } else {
                                let _ = socket.send_to(&reply.bytes, peer).await;
                            }
                        }
                    });
                }
            })
        };
        let tcp_task = {
            let state = state.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((mut stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let state = state.clone();
                    tokio::spawn(async move {
                        loop {
                            let mut len = [0u8; 2];
                            if stream.read_exact(&mut len).await.is_err() {
                                return;
                            }
                            let mut packet = vec![0u8; usize::from(u16::from_be_bytes(len))];
                            if stream.read_exact(&mut packet).await.is_err() {
                                return;
                            }
                            lock(&state).tcp += 1;
                            for reply in respond(&state, &packet, true).await {
                                if reply.forged_port {
                                    continue;
                                }
                                tokio::time::sleep(reply.delay).await;
                                let mut frame = (reply.bytes.len() as u16).to_be_bytes().to_vec();
                                frame.extend_from_slice(&reply.bytes);
                                if stream.write_all(&frame).await.is_err() {
                                    return;
                                }
                            }
                        }
                    });
                }
            })
        };
        Ok(FakeUpstream {
            addr,
            state,
            tasks: vec![udp_task, tcp_task],
        })
    }

    /// Gives `name` a behaviour (case-insensitive, trailing dot optional).
    pub fn set_rule(&self, name: &str, rule: Rule) {
        lock(&self.state).rules.insert(key(name), rule);
    }

    /// The behaviour for names without a rule (instead of the built-in conventions).
    pub fn set_default(&self, rule: Rule) {
        lock(&self.state).default = Some(rule);
    }

    /// Queries received so far (UDP and TCP).
    pub fn queries(&self) -> usize {
        lock(&self.state).total
    }

    /// Queries received for one name.
    pub fn queries_for(&self, name: &str) -> usize {
        lock(&self.state)
            .queries
            .get(&key(name))
            .copied()
            .unwrap_or(0)
    }

    /// The largest query received (UDP or TCP), in bytes.
    pub fn largest_query(&self) -> usize {
        lock(&self.state).largest
    }

    /// Queries received over TCP.
    pub fn tcp_queries(&self) -> usize {
        lock(&self.state).tcp
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn default_rule(name: &str) -> Rule {
    if name.starts_with("nx.") {
        Rule::NxDomain {
            soa_ttl: 300,
            minimum: 300,
        }
    } else if name.starts_with("drop.") {
        Rule::Drop
    } else {
        Rule::Answer {
            ips: vec![IpAddr::V4(UPSTREAM_ANSWER)],
            ttl: 300,
        }
    }
}

/// The replies to send for `packet`, in order.
async fn respond(state: &Mutex<State>, packet: &[u8], tcp: bool) -> Vec<Outgoing> {
    {
        let mut state = lock(state);
        state.largest = state.largest.max(packet.len());
    }
    let Ok(query) = Message::from_vec(packet) else {
        return Vec::new();
    };
    let Some(question) = query.queries.first().cloned() else {
        return Vec::new();
    };
    let name = key(&question.name().to_ascii());
    let (seen, mut rule) = {
        let mut state = lock(state);
        state.total += 1;
        let seen = {
            let count = state.queries.entry(name.clone()).or_insert(0);
            *count += 1;
            *count
        };
        let rule = state
            .rules
            .get(&name)
            .cloned()
            .or_else(|| state.default.clone())
            .unwrap_or_else(|| default_rule(&name));
        (seen, rule)
    };
    let mut out = Vec::new();
    let mut delay = Duration::ZERO;
    loop {
        match rule {
            Rule::Delay(d, inner) => {
                delay += d;
                rule = *inner;
            }
            Rule::Truncate(inner) if tcp => rule = *inner,
            Rule::DropFirst(n, _) if seen <= n => return out,
            Rule::DropFirst(_, inner) => rule = *inner,
            Rule::Broken(kind) => {
                if let Some(bytes) = broken(&query, kind) {
                    out.push(Outgoing {
                        bytes,
                        forged_port: false,
                        delay,
                    });
                }
                return out;
            }
            Rule::Spoofed(inner) => {
                let forged_rule = Rule::Answer {
                    ips: vec![IpAddr::V4(SPOOFED_ANSWER)],
                    ttl: 3600,
                };
                if let Some(bytes) = build(&query, &forged_rule) {
                    let mut wrong_id = bytes.clone();
                    wrong_id[0] ^= 0xFF;
                    out.push(Outgoing {
                        bytes,
                        forged_port: true,
                        delay,
                    });
                    out.push(Outgoing {
                        bytes: wrong_id,
                        forged_port: false,
                        delay: Duration::ZERO,
                    });
                }
                delay = Duration::from_millis(50);
                rule = *inner;
            }
            other => {
                if let Some(bytes) = build(&query, &other) {
                    out.push(Outgoing {
                        bytes,
                        forged_port: false,
                        delay,
                    });
                }
                return out;
            }
        }
    }
}

fn build(query: &Message, rule: &Rule) -> Option<Vec<u8>> {
    let question = query.queries.first()?.clone();
    let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.add_query(question.clone());
    if let Some(edns) = &query.edns {
        let mut ours = hickory_proto::op::Edns::new();
        ours.set_max_payload(edns.max_payload().max(512));
        reply.set_edns(ours);
    }
    let owner = question.name().clone();
    let soa = |ttl: u32, minimum: u32| {
        let zone = Name::from_ascii("example.").unwrap_or_else(|_| Name::root());
        let mname = Name::from_ascii("ns.example.").unwrap_or_else(|_| Name::root());
        let rname = Name::from_ascii("hostmaster.example.").unwrap_or_else(|_| Name::root());
        Record::from_rdata(
            zone,
            ttl,
            RData::SOA(SOA::new(mname, rname, 1, 3600, 600, 86400, minimum)),
        )
    };
    match rule {
        Rule::Answer { ips, ttl } => {
            for ip in ips {
                let data = match (ip, question.query_type()) {
                    (IpAddr::V4(v4), RecordType::A) => RData::A(A(*v4)),
                    (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(AAAA(*v6)),
                    _ => continue,
                };
                reply.add_answer(Record::from_rdata(owner.clone(), *ttl, data));
            }
        }
        Rule::Txt { strings, ttl } => {
            reply.add_answer(Record::from_rdata(
                owner,
                *ttl,
                RData::TXT(TXT::new(strings.clone())),
            ));
        }
        Rule::NxDomain { soa_ttl, minimum } => {
            reply.metadata.response_code = ResponseCode::NXDomain;
            reply.add_authority(soa(*soa_ttl, *minimum));
        }
        Rule::NoData { soa_ttl, minimum } => {
            reply.add_authority(soa(*soa_ttl, *minimum));
        }
        Rule::Soa { serial } => {
            let mname = Name::from_ascii("ns.example.").unwrap_or_else(|_| Name::root());
            let rname = Name::from_ascii("hostmaster.example.").unwrap_or_else(|_| Name::root());
            reply.add_answer(Record::from_rdata(
                owner,
                30,
                RData::SOA(SOA::new(mname, rname, *serial, 3600, 600, 86400, 30)),
            ));
        }
        Rule::ServFail => reply.metadata.response_code = ResponseCode::ServFail,
        Rule::Refused => reply.metadata.response_code = ResponseCode::Refused,
        Rule::Drop => return None,
        Rule::Truncate(_) => reply.metadata.truncation = true,
        Rule::Delay(..) | Rule::Spoofed(_) | Rule::DropFirst(..) | Rule::Broken(_) => {
            return None;
        }
    }
    reply.to_vec().ok()
}

/// A reply to `query` broken as `kind` says.
fn broken(query: &Message, kind: Broken) -> Option<Vec<u8>> {
    let answer = Rule::Answer {
        ips: vec![IpAddr::V4(BROKEN_ANSWER)],
        ttl: 3600,
    };
    let question = query.queries.first()?;
    if question.query_type() != RecordType::A {
        return None;
    }
    let mut plain = query.clone();
    plain.edns = None;
    let mut bytes = build(&plain, &answer)?;
    let name_len: usize = question
        .name()
        .iter()
        .map(|label| label.len() + 1)
        .sum::<usize>()
        + 1;
    let question_end = 12 + name_len + 4;
    // The answer record: owner pointer (2), type, class, TTL, RDLENGTH (10), address (4).
    let rr = question_end;
    match kind {
        Broken::CutInRecord => bytes.truncate(bytes.len() - 2),
        Broken::PointerLoop => {
            bytes[rr] = 0xC0 | (rr >> 8) as u8;
            bytes[rr + 1] = rr as u8;
        }
        Broken::RdlengthPastEnd => bytes[rr + 10..rr + 12].copy_from_slice(&200u16.to_be_bytes()),
        Broken::CountMismatch => bytes[6..8].copy_from_slice(&2u16.to_be_bytes()),
        Broken::Short => bytes.truncate(11),
        Broken::OtherQuestion => {
            let mut other = plain.clone();
            other.queries[0].set_name(Name::from_ascii("poison.example.").ok()?);
            bytes = build(&other, &answer)?;
        }
        Broken::EdnsVersion | Broken::ExtendedRcode => {
            // Our OPT: root, type 41, payload 1232, extended RCODE, version, flags, no data.
            let (extended, version) = if kind == Broken::EdnsVersion {
                (0, 1)
            } else {
                (0x7F, 0)
            };
            bytes.extend_from_slice(&[0, 0, 41, 0x04, 0xD0, extended, version, 0, 0, 0, 0]);
            let arcount = u16::from_be_bytes([bytes[10], bytes[11]]) + 1;
            bytes[10..12].copy_from_slice(&arcount.to_be_bytes());
        }
    }
    Some(bytes)
}
