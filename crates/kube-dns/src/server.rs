//! The DNS handler of kube-dns: the synchronous path (`answer()` from the published snapshot,
//! encoded into the listener's reused buffer, no lock) and the async path for queries that need
//! upstreams (forwarding, ExternalName chasing). Listeners come from `dns-transport`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use dns_transport::query_log::Source;
use dns_transport::{Fast, PacketHandler, Transport};
use hickory_proto::op::Message;

use dns_wire::{self as wire, ResponseContext, WireError};
use dns_wire::{Answer, Rcode};
use kube_dns_core::answer::{Outcome, Question, answer};

use crate::forward;
use crate::metrics::System;
use crate::state::ServerState;

/// What the fast path decided.
enum Action {
    /// `out` holds the reply.
    Reply { rcode: Rcode, system: System },
    /// No reply (a response packet, or garbage shorter than a header).
    Drop,
    /// Needs the network: run [`slow_path`].
    Slow,
}

/// Handles a packet without I/O. Over UDP the reply is cut to the client's size.
fn fast_path(state: &ServerState, packet: &[u8], tcp: bool, out: &mut Vec<u8>) -> Action {
    let query = match wire::parse_query(packet) {
        Ok(query) => query,
        Err(error) => return bad_packet(packet, &error, out),
    };
    let ctx = ResponseContext::for_query(&query, tcp);
    if query.opcode != 0 {
        wire::encode_response(&ctx, &Answer::error(Rcode::NotImp), out);
        return Action::Reply {
            rcode: Rcode::NotImp,
            system: System::Auth,
        };
    }
    let snapshot = state.snapshot.load();
    let question = Question {
        name: query.name(),
        qtype: query.qtype,
        qclass: query.qclass,
    };
    match answer(&snapshot, question, usize::from(query.id)) {
        Outcome::Answer(answer) => {
            wire::encode_response(&ctx, &answer, out);
            state
                .metrics
                .namespaces
                .record(&snapshot, query.name(), answer.rcode);
            Action::Reply {
                rcode: answer.rcode,
                system: system_of(query.name(), false),
            }
        }
        Outcome::Forward | Outcome::Chase { .. } => Action::Slow,
    }
}

fn bad_packet(packet: &[u8], error: &WireError, out: &mut Vec<u8>) -> Action {
    if !error.wants_formerr() {
        return Action::Drop;
    }
    let Some(ctx) = ResponseContext::for_bad_packet(packet) else {
        return Action::Drop;
    };
    tracing::debug!(%error, "malformed query");
    wire::encode_response(&ctx, &Answer::error(Rcode::FormErr), out);
    Action::Reply {
        rcode: Rcode::FormErr,
        system: System::Auth,
    }
}

fn system_of(name: &str, forwarded: bool) -> System {
    if name.ends_with("in-addr.arpa") || name.ends_with("ip6.arpa") {
        System::Reverse
    } else if forwarded {
        System::Recursive
    } else {
        System::Auth
    }
}

/// Answers a query that needs upstreams; always produces a reply (SERVFAIL at worst), and
/// says where it came from.
async fn slow_path(
    state: &ServerState,
    packet: &[u8],
    tcp: bool,
    client: IpAddr,
) -> (Vec<u8>, Rcode, System, Source) {
    let mut out = Vec::with_capacity(512);
    let Ok(query) = wire::parse_query(packet) else {
        return (out, Rcode::FormErr, System::Auth, Source::Zone);
    };
    let ctx = ResponseContext::for_query(&query, tcp);
    let snapshot = state.snapshot.load_full();
    let question = Question {
        name: query.name(),
        qtype: query.qtype,
        qclass: query.qclass,
    };
    let policy = state.forwarding.load_full();
    match answer(&snapshot, question, usize::from(query.id)) {
        Outcome::Answer(answer) => {
            wire::encode_response(&ctx, &answer, &mut out);
            (
                out,
                answer.rcode,
                system_of(query.name(), false),
                Source::Zone,
            )
        }
        Outcome::Forward => {
            let system = system_of(query.name(), true);
            let limits = &state.forward_limits;
            // Our own query (our ID, the client's question byte for byte, our OPT): nothing
            // else the client sent goes upstream.
            let upstream_query = wire::forward_query_for(rand::random(), &query);
            let forwarded =
                forward::exchange(&policy, limits, query.name(), &upstream_query, tcp, client);
            match forwarded.await {
                Ok((reply, server)) => {
                    let source = Source::Upstream(Some(server));
                    // The client's ID, and an OPT only if the client sent one (RFC 6891 §7).
                    let mut reply = match query.edns {
                        Some(_) => reply,
                        None => wire::reply::replace_opt(&reply, None),
                    };
                    wire::set_packet_id(&mut reply, query.id);
                    // Larger than this client takes over UDP (it may have been fetched whole
                    // over TCP after a truncated reply): TC, and the client asks over TCP.
                    if !tcp && reply.len() > query.udp_limit() {
                        wire::encode_header_only(&ctx, Rcode::NoError, true, &mut out);
                        return (out, Rcode::NoError, system, source);
                    }
                    let rcode = wire::response_rcode_tc(&reply)
                        .map_or(Rcode::ServFail, |(r, _)| Rcode::from_low_bits(r));
                    (reply, rcode, system, source)
                }
                Err(error) => {
                    tracing::debug!(%error, "forwarding failed; answering SERVFAIL");
                    wire::encode_response(&ctx, &Answer::error(Rcode::ServFail), &mut out);
                    (out, Rcode::ServFail, system, Source::Upstream(None))
                }
            }
        }
        Outcome::Chase { mut answer, target } => {
            let limits = &state.forward_limits;
            let truncated = chase(&policy, limits, target, &query, client, &mut answer).await;
            wire::encode_response(&ctx, &answer, &mut out);
            state
                .metrics
                .namespaces
                .record(&snapshot, query.name(), answer.rcode);
            if truncated && out.len() > 2 {
                out[2] |= 0x02;
            }
            (out, answer.rcode, System::Auth, Source::Zone)
        }
    }
}

/// Resolves an ExternalName target upstream and appends its answer records to `answer`; the
/// CNAME stays whatever happens. Returns whether the upstream answer was truncated.
async fn chase(
    policy: &forward::ForwardPolicy,
    limits: &forward::Forwarding,
    target: &str,
    query: &wire::Query<'_>,
    client: IpAddr,
    answer: &mut Answer<'_>,
) -> bool {
    let request = wire::build_query(rand::random(), target, query.qtype, query.edns);
    // A truncated UDP reply is fetched again over TCP by the exchange itself.
    let result = forward::exchange(policy, limits, target, &request, false, client).await;
    let reply = match result.map(|(bytes, _)| Message::from_vec(&bytes)) {
        Ok(Ok(message)) => message,
        Ok(Err(error)) => {
            tracing::debug!(target, %error, "unreadable upstream answer for ExternalName target");
            answer.rcode = Rcode::ServFail;
            return false;
        }
        Err(error) => {
            tracing::debug!(target, %error, "ExternalName target did not resolve");
            answer.rcode = Rcode::ServFail;
            return false;
        }
    };
    answer.rcode = Rcode::from_low_bits(u16::from(reply.metadata.response_code) as u8);
    answer
        .answers
        .extend(wire::upstream_records(&reply.answers));
    reply.metadata.truncation
}

/// kube-dns's [`PacketHandler`]: answers, and counts every reply once (UDP and TCP alike).
#[derive(Debug)]
pub struct DnsHandler {
    pub state: Arc<ServerState>,
}

fn truncated(reply: &[u8]) -> bool {
    reply.len() > 2 && reply[2] & 0x02 != 0
}

impl PacketHandler for DnsHandler {
    fn fast(
        &self,
        packet: &[u8],
        transport: Transport,
        peer: SocketAddr,
        out: &mut Vec<u8>,
    ) -> Fast {
        let started = daemon_support::clock::now();
        match fast_path(&self.state, packet, transport == Transport::Tcp, out) {
            Action::Reply { rcode, system } => {
                let seconds = started.elapsed().as_secs_f64();
                let tc = transport == Transport::Udp && truncated(out);
                self.state
                    .metrics
                    .record(system, rcode, tc, out.len(), seconds);
                if let Some(log) = &self.state.query_log {
                    log.offer(peer, out, started, Source::Zone);
                }
                Fast::Reply
            }
            Action::Drop => {
                self.state.metrics.record_dropped();
                Fast::Drop
            }
            Action::Slow => Fast::Slow,
        }
    }

    async fn slow(
        self: Arc<Self>,
        packet: Vec<u8>,
        transport: Transport,
        peer: SocketAddr,
    ) -> Option<Vec<u8>> {
        let started = daemon_support::clock::now();
        let tcp = transport == Transport::Tcp;
        let (reply, rcode, system, source) = slow_path(&self.state, &packet, tcp, peer.ip()).await;
        if reply.is_empty() {
            self.state.metrics.record_dropped();
            return None;
        }
        let seconds = started.elapsed().as_secs_f64();
        let tc = transport == Transport::Udp && truncated(&reply);
        self.state
            .metrics
            .record(system, rcode, tc, reply.len(), seconds);
        if let Some(log) = &self.state.query_log {
            log.offer(peer, &reply, started, source);
        }
        Some(reply)
    }

    /// AXFR and IXFR of the zone, when transfers are on and the client may have them.
    fn stream(&self, packet: &[u8], peer: SocketAddr) -> Option<dns_transport::MessageStream> {
        let transfers = self.state.transfers.as_ref()?;
        transfers.stream(self.state.snapshot.load_full(), packet, peer)
    }

    /// Over the in-flight budget (counted and logged by the budget): SERVFAIL, so the client
    /// tries its next server.
    fn overloaded(&self, packet: &[u8], out: &mut Vec<u8>) -> bool {
        let Ok(query) = wire::parse_query(packet) else {
            return false;
        };
        let ctx = ResponseContext::for_query(&query, false);
        wire::encode_response(&ctx, &Answer::error(Rcode::ServFail), out);
        true
    }
}
