//! kube-dns as a primary for the cluster zone: AXFR (RFC 5936) and IXFR (RFC 1995) over TCP
//! from the published snapshots, and NOTIFY (RFC 1996) to secondaries after each change.
//!
//! The IXFR journal is the last `--transfer-journal` published snapshots themselves (their maps
//! share structure, so a version costs about what changed); a client's version is diffed against
//! the current one when it asks, into one condensed difference. A version no longer held gets
//! the whole zone (RFC 1995 §4). Transfers are allowed to `--transfer-allow` only, at most
//! [`MAX_TRANSFERS`] at once, each written within `--transfer-timeout`, one message at a time.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dns_transport::{IpNet, MessageStream};
use dns_wire::{Answer, EdnsInfo, ResponseContext, opcode, rtype};
use kube_dns_core::ClusterSnapshot;
use kube_dns_core::zone::{ZoneData, ZoneRecord, ZoneWalk, diff, soa};
use prometheus::IntCounterVec;
use tokio_util::sync::CancellationToken;

/// Transfers written at once; more are refused until one ends.
pub const MAX_TRANSFERS: usize = 4;
/// The `result` label of `kubedns_zone_transfers_total`.
pub const RESULTS: [&str; 6] = [
    "full",
    "incremental",
    "current",
    "refused",
    "busy",
    "aborted",
];
/// `--transfer-journal`: published versions kept for IXFR.
pub const DEFAULT_JOURNAL: usize = 64;
/// Record bytes (uncompressed) per transfer message; names are compressed below that, well
/// under the 64 KiB a TCP message holds.
const MESSAGE_BYTES: usize = 16 * 1024;
/// NOTIFY tries per change and secondary, and how long each waits for the answer.
const NOTIFY_TRIES: u32 = 5;
const NOTIFY_WAIT: Duration = Duration::from_secs(1);

/// Who may transfer the zone and whom to tell about changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferConfig {
    /// `--transfer-allow` (default loopback).
    pub allow: Vec<IpNet>,
    /// `--notify`: secondaries sent a NOTIFY after each change.
    pub notify: Vec<SocketAddr>,
    /// `--transfer-journal`.
    pub journal: usize,
    /// `--transfer-timeout`: a whole transfer is written within this.
    pub timeout: Duration,
}

/// The primary's state: the journal, the transfers in progress, the serial to NOTIFY about.
#[derive(Debug)]
pub struct Transfers {
    config: TransferConfig,
    journal: Mutex<VecDeque<Arc<ClusterSnapshot>>>,
    active: Arc<AtomicUsize>,
    serial: tokio::sync::watch::Sender<u32>,
    counts: IntCounterVec,
    notifies: IntCounterVec,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Axfr,
    Ixfr,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Axfr => "axfr",
            Kind::Ixfr => "ixfr",
        }
    }
}

impl Transfers {
    /// `counts` is `kubedns_zone_transfers_total`, `notifies` `kubedns_zone_notify_total`.
    pub fn new(
        config: TransferConfig,
        counts: IntCounterVec,
        notifies: IntCounterVec,
    ) -> Arc<Self> {
        Arc::new(Transfers {
            config,
            journal: Mutex::new(VecDeque::new()),
            active: Arc::new(AtomicUsize::new(0)),
            serial: tokio::sync::watch::Sender::new(0),
            counts,
            notifies,
        })
    }

    /// A snapshot was published: keep it for IXFR and tell the secondaries. Unsynced snapshots
    /// are not a zone and are neither kept nor announced.
    pub fn published(&self, snapshot: &Arc<ClusterSnapshot>) {
        if !snapshot.synced {
            return;
        }
        {
            let mut journal = self.journal.lock().unwrap_or_else(|e| e.into_inner());
            if journal
                .back()
                .is_some_and(|last| last.serial == snapshot.serial)
            {
                journal.pop_back();
            }
            journal.push_back(snapshot.clone());
            while journal.len() > self.config.journal.max(1) {
                journal.pop_front();
            }
        }
        self.serial.send_replace(snapshot.serial);
    }

    fn version(&self, serial: u32) -> Option<Arc<ClusterSnapshot>> {
        let journal = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        journal.iter().rev().find(|s| s.serial == serial).cloned()
    }

    fn allowed(&self, peer: SocketAddr) -> bool {
        self.config.allow.iter().any(|net| net.contains(peer.ip()))
    }

    /// The messages answering an AXFR or IXFR of the zone over TCP, or `None` to answer it as
    /// any query (REFUSED when not allowed or busy, SERVFAIL before the first sync).
    pub fn stream(
        &self,
        current: Arc<ClusterSnapshot>,
        packet: &[u8],
        peer: SocketAddr,
    ) -> Option<MessageStream> {
        let query = dns_wire::parse_query(packet).ok()?;
        let kind = match query.qtype {
            rtype::AXFR => Kind::Axfr,
            rtype::IXFR => Kind::Ixfr,
            _ => return None,
        };
        if query.opcode != 0 || query.name() != &*current.settings.zone || !current.synced {
            return None;
        }
        let count = |result: &str| self.counts.with_label_values(&[kind.label(), result]).inc();
        if !self.allowed(peer) {
            count("refused");
            tracing::info!(%peer, kind = kind.label(), "zone transfer refused: not in --transfer-allow");
            return None;
        }
        if self.active.fetch_add(1, Ordering::AcqRel) >= MAX_TRANSFERS {
            self.active.fetch_sub(1, Ordering::AcqRel);
            count("busy");
            tracing::info!(%peer, "zone transfer refused: {MAX_TRANSFERS} already running");
            return None;
        }
        let guard = TransferGuard {
            active: self.active.clone(),
            counts: self.counts.clone(),
            kind,
            done: false,
        };
        let records: Box<dyn Iterator<Item = ZoneRecord> + Send> = match kind {
            Kind::Axfr => {
                count("full");
                Box::new(ZoneWalk::new(current))
            }
            Kind::Ixfr => {
                let (records, result) = self.incremental(current, packet);
                count(result);
                records
            }
        };
        tracing::debug!(%peer, kind = kind.label(), "zone transfer");
        let header = Header {
            id: query.id,
            recursion_desired: query.recursion_desired,
            question: query.question_bytes().to_vec(),
            edns: query.edns,
        };
        Some(MessageStream {
            messages: Box::new(Messages {
                records,
                held: None,
                header,
                guard,
            }),
            within: self.config.timeout,
        })
    }

    /// The IXFR answer for the client's version (the SOA in the query's authority section):
    /// the current SOA alone when it is current, one condensed difference when the journal
    /// holds its version, the whole zone otherwise.
    fn incremental(
        &self,
        current: Arc<ClusterSnapshot>,
        packet: &[u8],
    ) -> (Box<dyn Iterator<Item = ZoneRecord> + Send>, &'static str) {
        let theirs = client_serial(packet);
        let now = soa(&current);
        if theirs == Some(current.serial) {
            return (Box::new(std::iter::once(now)), "current");
        }
        let Some(old) = theirs.and_then(|serial| self.version(serial)) else {
            return (Box::new(ZoneWalk::new(current)), "full");
        };
        let changes = diff(&old, &current);
        let mut records = Vec::with_capacity(changes.removed.len() + changes.added.len() + 4);
        records.push(now.clone());
        records.push(soa(&old));
        records.extend(changes.removed);
        records.push(now.clone());
        records.extend(changes.added);
        records.push(now);
        (Box::new(records.into_iter()), "incremental")
    }

    /// Sends a NOTIFY to every `--notify` secondary after each change, until `stop`.
    pub async fn notify_loop(self: Arc<Self>, zone: Box<str>, stop: CancellationToken) {
        if self.config.notify.is_empty() {
            return;
        }
        let mut tasks = tokio::task::JoinSet::new();
        for target in self.config.notify.clone() {
            let mut serial = self.serial.subscribe();
            let zone = zone.clone();
            let counts = self.notifies.clone();
            let stop = stop.clone();
            tasks.spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        changed = serial.changed() => if changed.is_err() { return },
                    }
                    let version = *serial.borrow_and_update();
                    let result = match notify(target, &zone, version).await {
                        Ok(0) => "acked",
                        Ok(rcode) => {
                            tracing::warn!(%target, serial = version, rcode, "NOTIFY refused by the secondary");
                            "refused"
                        }
                        Err(error) => {
                            tracing::warn!(%target, serial = version, %error, "NOTIFY not answered");
                            "unanswered"
                        }
                    };
                    counts.with_label_values(&[result]).inc();
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    }
}

/// The serial of the SOA in an IXFR query's authority section.
fn client_serial(packet: &[u8]) -> Option<u32> {
    let message = hickory_proto::op::Message::from_vec(packet).ok()?;
    message
        .authorities
        .iter()
        .find_map(|record| match &record.data {
            hickory_proto::rr::RData::SOA(soa) => Some(soa.serial),
            _ => None,
        })
}

/// One NOTIFY (opcode 4, the zone's SOA as the question and the new SOA serial in the answer
/// section), sent until the secondary answers it or [`NOTIFY_TRIES`] run out; the answer's
/// RCODE. A secondary not listening yet (ICMP port unreachable) is tried again.
async fn notify(target: SocketAddr, zone: &str, serial: u32) -> std::io::Result<u8> {
    let bind: SocketAddr = if target.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = tokio::net::UdpSocket::bind(bind).await?;
    socket.connect(target).await?;
    let id: u16 = rand::random();
    let message = notify_message(id, zone, serial);
    let mut buf = [0u8; 512];
    for _ in 0..NOTIFY_TRIES {
        let waited = tokio::time::timeout(NOTIFY_WAIT, async {
            socket.send(&message).await?;
            loop {
                let len = socket.recv(&mut buf).await?;
                let reply = &buf[..len];
                // The answer: our ID, QR set, opcode NOTIFY.
                if len >= 12
                    && reply[..2] == id.to_be_bytes()
                    && reply[2] & 0x80 != 0
                    && (reply[2] >> 3) & 0x0F == opcode::NOTIFY
                {
                    return Ok::<u8, std::io::Error>(reply[3] & 0x0F);
                }
            }
        })
        .await;
        match waited {
            Ok(Ok(rcode)) => return Ok(rcode),
            Ok(Err(error)) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
                tokio::time::sleep(NOTIFY_WAIT).await;
            }
            Ok(Err(error)) => return Err(error),
            Err(_) => continue,
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("no answer to {NOTIFY_TRIES} tries"),
    ))
}

/// A NOTIFY message for `zone` at `serial`.
pub fn notify_message(id: u16, zone: &str, serial: u32) -> Vec<u8> {
    let mut out = dns_wire::build_query(id, zone, rtype::SOA, None);
    // Opcode NOTIFY, AA set, RD cleared; one answer record follows.
    out[2] = (opcode::NOTIFY << 3) | 0x04;
    out[7] = 1;
    let record = ZoneRecord {
        owner: zone.trim_end_matches('.').into(),
        ttl: 0,
        data: ZoneData::Soa {
            zone: zone.trim_end_matches('.').into(),
            serial,
            ttl: 0,
        },
    };
    // The SOA written through the encoder into a scratch answer, then its record bytes copied.
    let question_end = out.len();
    let mut scratch = Vec::new();
    let ctx = ResponseContext {
        id,
        opcode: 0,
        recursion_desired: false,
        checking_disabled: false,
        question: &out[12..question_end],
        edns: None,
        limit: dns_wire::MAX_TCP_MESSAGE,
    };
    let answer = Answer {
        answers: vec![record.as_wire()],
        ..Answer::authoritative()
    };
    dns_wire::encode_response(&ctx, &answer, &mut scratch);
    out.extend_from_slice(&scratch[question_end..]);
    out
}

/// The query's header fields every message of a transfer repeats.
#[derive(Debug)]
struct Header {
    id: u16,
    recursion_desired: bool,
    question: Vec<u8>,
    edns: Option<EdnsInfo>,
}

/// Counts a transfer once it ends (written whole, or cut off), and frees its place.
#[derive(Debug)]
struct TransferGuard {
    active: Arc<AtomicUsize>,
    counts: IntCounterVec,
    kind: Kind,
    done: bool,
}

impl Drop for TransferGuard {
    fn drop(&mut self) {
        self.active.fetch_sub(1, Ordering::AcqRel);
        if !self.done {
            self.counts
                .with_label_values(&[self.kind.label(), "aborted"])
                .inc();
        }
    }
}

/// The transfer's messages, each made when the previous one has been written.
struct Messages {
    records: Box<dyn Iterator<Item = ZoneRecord> + Send>,
    held: Option<ZoneRecord>,
    header: Header,
    guard: TransferGuard,
}

/// A bound on a record's size on the wire before name compression.
fn wire_size(record: &ZoneRecord) -> usize {
    let name = |n: &str| n.len() + 2;
    let rdata = match &record.data {
        ZoneData::Soa { zone, .. } => name(zone) * 2 + 16 + 20,
        ZoneData::Ns(n) | ZoneData::Cname(n) => name(n),
        ZoneData::A(_) => 4,
        ZoneData::Aaaa(_) => 16,
        ZoneData::Srv { target, .. } => 6 + name(target),
        ZoneData::Txt(text) => text.len() + 1 + text.len() / 255,
    };
    name(&record.owner) + 10 + rdata
}

impl Iterator for Messages {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        let mut batch = Vec::new();
        let mut bytes = 0;
        while let Some(record) = self.held.take().or_else(|| self.records.next()) {
            let size = wire_size(&record);
            if !batch.is_empty() && bytes + size > MESSAGE_BYTES {
                self.held = Some(record);
                break;
            }
            bytes += size;
            batch.push(record);
        }
        if batch.is_empty() {
            self.guard.done = true;
            return None;
        }
        let ctx = ResponseContext {
            id: self.header.id,
            opcode: 0,
            recursion_desired: self.header.recursion_desired,
            checking_disabled: false,
            question: &self.header.question,
            edns: self.header.edns,
            limit: dns_wire::MAX_TCP_MESSAGE,
        };
        let answer = Answer {
            answers: batch.iter().map(ZoneRecord::as_wire).collect(),
            ..Answer::authoritative()
        };
        let mut out = Vec::with_capacity(bytes + self.header.question.len() + 64);
        dns_wire::encode_response(&ctx, &answer, &mut out);
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notify_is_a_valid_message_with_the_serial() {
        let bytes = notify_message(7, "cluster.local", 1234);
        let message = hickory_proto::op::Message::from_vec(&bytes).expect("parses");
        assert_eq!(message.metadata.id, 7);
        assert_eq!(u8::from(message.metadata.op_code), opcode::NOTIFY);
        assert!(message.metadata.authoritative);
        assert_eq!(message.queries.len(), 1);
        assert_eq!(message.answers.len(), 1);
        match &message.answers[0].data {
            hickory_proto::rr::RData::SOA(soa) => assert_eq!(soa.serial, 1234),
            other => panic!("not an SOA: {other:?}"),
        }
    }
}
