//! The DNS listeners. Each UDP socket (SO_REUSEPORT) is served by its own OS thread doing
//! blocking `recv_from` -> `answer()` -> encode -> `send_to` with reused buffers and no lock;
//! only queries that need the network (forwarding, ExternalName chasing) go to the tokio
//! runtime, bounded by a semaphore. TCP (RFC 7766) runs on tokio, one task per connection.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use kube_dns_core::answer::{Answer, Outcome, Question, Rcode, answer};
use kube_dns_core::wire::{self, ResponseContext, WireError};

use crate::forward;
use crate::metrics::System;
use crate::state::ServerState;

/// Queries waiting on upstreams at once; beyond this we answer SERVFAIL at once.
const MAX_SLOW_QUERIES: usize = 1024;
/// How long an idle TCP connection stays open (RFC 7766 §6.2.3 suggests seconds).
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often blocking UDP threads look at the stop flag.
const UDP_POLL: Duration = Duration::from_millis(200);

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

/// Answers a query that needs upstreams; always produces a reply (SERVFAIL at worst).
async fn slow_path(state: &ServerState, packet: &[u8], tcp: bool) -> (Vec<u8>, Rcode, System) {
    let mut out = Vec::with_capacity(512);
    let Ok(query) = wire::parse_query(packet) else {
        return (out, Rcode::FormErr, System::Auth);
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
            (out, answer.rcode, system_of(query.name(), false))
        }
        Outcome::Forward => {
            let system = system_of(query.name(), true);
            match forward::exchange(&policy, query.name(), packet, tcp).await {
                Ok(reply) => {
                    let rcode = wire::response_rcode_tc(&reply)
                        .map_or(Rcode::ServFail, |(r, _)| Rcode::from_low_bits(r));
                    (reply, rcode, system)
                }
                Err(error) => {
                    tracing::debug!(%error, "forwarding failed; answering SERVFAIL");
                    wire::encode_response(&ctx, &Answer::error(Rcode::ServFail), &mut out);
                    (out, Rcode::ServFail, system)
                }
            }
        }
        Outcome::Chase { mut answer, target } => {
            let truncated = chase(&policy, target, &query, &mut answer).await;
            wire::encode_response(&ctx, &answer, &mut out);
            if truncated && out.len() > 2 {
                out[2] |= 0x02;
            }
            (out, answer.rcode, System::Auth)
        }
    }
}

/// Resolves an ExternalName target upstream and appends its answer records to `answer`; the
/// CNAME stays whatever happens. Returns whether the upstream answer was truncated.
async fn chase(
    policy: &forward::ForwardPolicy,
    target: &str,
    query: &wire::Query<'_>,
    answer: &mut Answer<'_>,
) -> bool {
    let request = wire::build_query(rand::random(), target, query.qtype, query.edns);
    let mut result = forward::exchange(policy, target, &request, false).await;
    if let Ok(reply) = &result
        && wire::response_rcode_tc(reply).is_some_and(|(_, tc)| tc)
    {
        result = forward::exchange(policy, target, &request, true).await;
    }
    let reply = match result.map(|bytes| Message::from_vec(&bytes)) {
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

/// Serves one UDP socket on the calling thread until `stop` is set.
pub fn serve_udp_blocking(
    socket: UdpSocket,
    state: Arc<ServerState>,
    runtime: tokio::runtime::Handle,
    stop: Arc<AtomicBool>,
) {
    if let Err(error) = socket.set_read_timeout(Some(UDP_POLL)) {
        tracing::error!(%error, "cannot set a read timeout on the UDP socket");
    }
    let socket = Arc::new(socket);
    let slow = Arc::new(Semaphore::new(MAX_SLOW_QUERIES));
    let mut buf = vec![0u8; 65535];
    let mut out = Vec::with_capacity(4096);
    while !stop.load(Ordering::Relaxed) {
        let (len, peer) = match socket.recv_from(&mut buf) {
            Ok(received) => received,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(error) => {
                tracing::warn!(%error, "UDP receive failed");
                continue;
            }
        };
        let started = Instant::now();
        let packet = &buf[..len];
        match fast_path(&state, packet, false, &mut out) {
            Action::Reply { rcode, system } => {
                send_udp(&socket, &out, peer);
                let truncated = out.len() > 2 && out[2] & 0x02 != 0;
                let elapsed = started.elapsed().as_secs_f64();
                state
                    .metrics
                    .record(system, rcode, truncated, out.len(), elapsed);
            }
            Action::Drop => state.metrics.record_dropped(),
            Action::Slow => {
                let Ok(permit) = slow.clone().try_acquire_owned() else {
                    tracing::warn!("too many queries waiting on upstreams; answering SERVFAIL");
                    if let Ok(query) = wire::parse_query(packet) {
                        let ctx = ResponseContext::for_query(&query, false);
                        wire::encode_response(&ctx, &Answer::error(Rcode::ServFail), &mut out);
                        send_udp(&socket, &out, peer);
                    }
                    continue;
                };
                let packet = packet.to_vec();
                let (socket, state) = (socket.clone(), state.clone());
                runtime.spawn(async move {
                    let (reply, rcode, system) = slow_path(&state, &packet, false).await;
                    if !reply.is_empty() {
                        send_udp(&socket, &reply, peer);
                    }
                    let truncated = reply.len() > 2 && reply[2] & 0x02 != 0;
                    let elapsed = started.elapsed().as_secs_f64();
                    state
                        .metrics
                        .record(system, rcode, truncated, reply.len(), elapsed);
                    drop(permit);
                });
            }
        }
    }
}

fn send_udp(socket: &UdpSocket, reply: &[u8], peer: SocketAddr) {
    if let Err(error) = socket.send_to(reply, peer) {
        tracing::debug!(%error, %peer, "UDP send failed");
    }
}

/// Accepts TCP connections until `shutdown` is cancelled.
pub async fn serve_tcp(
    listener: TcpListener,
    state: Arc<ServerState>,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let state = state.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        result = serve_tcp_connection(stream, &state) => {
                            if let Err(error) = result {
                                tracing::debug!(%peer, %error, "TCP connection ended");
                            }
                        }
                    }
                });
            }
            Err(error) => {
                tracing::warn!(%error, "TCP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Reads length-prefixed queries and answers each in order until the peer closes or idles.
async fn serve_tcp_connection(mut stream: TcpStream, state: &ServerState) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut out = Vec::with_capacity(4096);
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE_TIMEOUT, stream.read_exact(&mut len)).await {
            Err(_) => return Ok(()),
            Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(result) => {
                result?;
            }
        }
        let mut packet = vec![0u8; usize::from(u16::from_be_bytes(len))];
        tokio::time::timeout(TCP_IDLE_TIMEOUT, stream.read_exact(&mut packet))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "query body timed out"))??;
        let started = Instant::now();
        let (rcode, system) = match fast_path(state, &packet, true, &mut out) {
            Action::Reply { rcode, system } => (rcode, system),
            Action::Drop => {
                state.metrics.record_dropped();
                return Ok(());
            }
            Action::Slow => {
                let (reply, rcode, system) = slow_path(state, &packet, true).await;
                out = reply;
                (rcode, system)
            }
        };
        if out.is_empty() {
            return Ok(());
        }
        let frame_len = u16::try_from(out.len()).unwrap_or(u16::MAX);
        stream.write_all(&frame_len.to_be_bytes()).await?;
        stream.write_all(&out[..usize::from(frame_len)]).await?;
        let elapsed = started.elapsed().as_secs_f64();
        state
            .metrics
            .record(system, rcode, false, out.len(), elapsed);
    }
}
