//! Forwarding one query to upstream servers, shared by `kube-dns` and `dns-cache`.
//!
//! A query has a deadline ([`TryPolicy::deadline`]). Its first try goes to the first server of
//! the plan (or to every server at once for a race); when a try's timeout passes without a valid
//! reply, the next try starts (the next server, or the same one again with a new ID and source
//! port) and **the earlier tries stay open**: the first valid reply from any of them answers.
//! A slow server therefore costs its own latency, not a SERVFAIL.
//!
//! Replies are checked completely ([`upstream_reply::check_reply`]); a broken one is counted and
//! ignored, and the query keeps waiting for its other tries. SERVFAIL and REFUSED replies start a
//! try on a server not asked yet and are returned only when nothing better comes.
//!
//! Health: after the answer, tries still open on servers that have not replied keep listening
//! in the background until the deadline, holding their slot. A late reply teaches the server's
//! round-trip estimate (so its per-try timeout grows); a server that sent no valid reply to a
//! query before the deadline gets one failure ([`Upstream::query_failed`]). Slow is not down.
//!
//! Open tries are bounded by a [`Budget`] of entries (`--dns-forward-max`), shared fairly
//! between the queries' clients: one client's flood holds at most half the tries of a route, so
//! the others' queries still get theirs. The number of tries per query is bounded by
//! [`TryPolicy::max_tries`].

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use dns_wire as wire;
use dns_wire::reply::{self as upstream_reply, ReplyInfo};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::Transport;
use crate::budget::{Budget, Charge};
use crate::clock;
use crate::upstream::{Upstream, now_ms};

/// The shortest per-try timeout. A lost UDP packet should cost a fraction of a second, not the
/// client's 5 s; but 50 ms proved too short on a loaded node.
pub const MIN_TRY_TIMEOUT: Duration = Duration::from_millis(200);
/// The largest UDP datagram.
const MAX_DATAGRAM: usize = 65535;

/// How long a query may wait and how often it may ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TryPolicy {
    /// From the first try to SERVFAIL.
    pub deadline: Duration,
    /// The cap of the adaptive per-try timeout (and the timeout before anything is learnt).
    pub max_try_timeout: Duration,
    /// Tries per query, counting every server of a race.
    pub max_tries: usize,
}

impl TryPolicy {
    /// Four smoothed round trips, at least [`MIN_TRY_TIMEOUT`], at most the cap.
    pub fn try_timeout(&self, upstream: &Upstream) -> Duration {
        let cap = self.max_try_timeout;
        match upstream.srtt_us() {
            0 => cap,
            srtt => Duration::from_micros(u64::from(srtt) * 4).clamp(MIN_TRY_TIMEOUT.min(cap), cap),
        }
    }

    /// Tries for a plan of `servers`: each server once, and two more.
    pub fn tries_for(servers: usize) -> usize {
        (servers + 2).clamp(3, 8)
    }
}

/// A budget of `limit` open tries (at least one), shared fairly between clients: a route's or
/// a server's `--dns-forward-max`.
pub fn try_slots(limit: usize) -> Arc<Budget> {
    Budget::new(
        crate::budget::BudgetLimits::entries(limit.max(1)),
        Arc::default(),
        "upstream tries",
    )
}

/// One query to forward.
#[derive(Debug)]
pub struct Request<'a> {
    /// The servers in the order to ask them.
    pub servers: &'a [Arc<Upstream>],
    /// Ask every server at once first (a race, or `--all-servers`).
    pub parallel: bool,
    /// UDP (TCP when a reply is truncated) or TCP only.
    pub transport: Transport,
    /// The query to send; every try gets its own random ID.
    pub query: &'a [u8],
    /// Whose query it is: its tries are charged to this client.
    pub client: IpAddr,
}

/// How a forwarded query ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A valid reply that is not SERVFAIL or REFUSED, from `servers[server]`. The ID is the
    /// request's, the upstream's OPT is replaced by ours (or removed when the query had none).
    Answer { reply: Vec<u8>, server: usize },
    /// Only SERVFAIL or REFUSED came back; the first of them, shaped like an answer.
    Rejected { reply: Vec<u8>, server: usize },
    /// No slot for a first try: too many tries open already.
    NoSlot,
    /// No valid reply before the deadline (or no server to ask).
    Deadline,
}

enum TryResult {
    /// A checked reply.
    Reply(Vec<u8>, ReplyInfo),
    /// The exchange failed before the deadline (port unreachable, connection refused, a broken
    /// reply over TCP). A try that hears nothing simply stays open: the query's timer ends it.
    Failed,
}

struct TryEnd {
    server: usize,
    result: TryResult,
}

type TryFuture = Pin<Box<dyn Future<Output = TryEnd> + Send>>;

/// The most servers one query considers (bit sets of u64).
const MAX_SERVERS: usize = 64;

/// What one query knows about its servers, one bit per server.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    tried: u64,
    replied: u64,
    rejected: u64,
}

fn bit(server: usize) -> u64 {
    1 << server
}

impl Tally {
    fn record(&mut self, end: &TryEnd) {
        if let TryResult::Reply(_, info) = &end.result {
            self.replied |= bit(end.server);
            if !info.is_usable() {
                self.rejected |= bit(end.server);
            }
        }
    }

    fn has(set: u64, server: usize) -> bool {
        set & bit(server) != 0
    }

    /// One failure for every server asked that sent nothing valid.
    fn settle(&self, servers: &[Arc<Upstream>]) {
        let now = now_ms();
        for (i, server) in servers.iter().enumerate() {
            if Tally::has(self.tried, i) && !Tally::has(self.replied, i) {
                server.query_failed(now);
            }
        }
    }
}

/// Forwards `request` under `policy`, charging each try to `slots` (a budget of entries).
pub async fn forward(request: &Request<'_>, policy: &TryPolicy, slots: &Arc<Budget>) -> Outcome {
    let servers = &request.servers[..request.servers.len().min(MAX_SERVERS)];
    let n = servers.len();
    if n == 0 {
        return Outcome::Deadline;
    }
    let acquire = || slots.charge(request.client, 1, 0).ok();
    let Some(first_slot) = acquire() else {
        return Outcome::NoSlot;
    };
    let deadline = clock::now() + policy.deadline;
    let max_tries = policy.max_tries.max(1);
    let mut tally = Tally::default();
    // Read once from the query: what every try may receive, and whether it carries EDNS.
    let (limit, edns) = match wire::parse_query(request.query) {
        Ok(q) => (q.udp_limit().min(MAX_DATAGRAM), q.edns.map(|e| e.dnssec_ok)),
        Err(_) => (MAX_DATAGRAM, None),
    };
    let mut tries: FuturesUnordered<TryFuture> = FuturesUnordered::new();
    let mut launched = 0usize;
    let mut cursor = 0usize;
    let mut next_at = deadline;
    let launch = |server: usize,
                  slot: Charge,
                  tries: &mut FuturesUnordered<TryFuture>,
                  tally: &mut Tally|
     -> Duration {
        let upstream = servers[server].clone();
        let timeout = policy.try_timeout(&upstream);
        let mut packet = request.query.to_vec();
        wire::set_packet_id(&mut packet, rand::random());
        tally.tried |= bit(server);
        tries.push(Box::pin(one_try(
            upstream,
            packet,
            request.transport,
            limit,
            timeout,
            slot,
            server,
        )));
        timeout
    };
    let first_wave = if request.parallel { n } else { 1 };
    let mut slot = Some(first_slot);
    let mut soonest = policy.max_try_timeout;
    for server in 0..first_wave.min(max_tries) {
        let Some(place) = slot.take().or_else(acquire) else {
            break;
        };
        soonest = soonest.min(launch(server, place, &mut tries, &mut tally));
        launched += 1;
        cursor = (server + 1) % n;
    }
    next_at = next_at.min(clock::now() + soonest);
    let mut fallback: Option<(Vec<u8>, ReplyInfo, usize)> = None;
    let mut winner: Option<(Vec<u8>, ReplyInfo, usize)> = None;
    let mut starved = false;
    // The try whose timeout `next_at` is: (server, its timeout).
    let mut timing: Option<(usize, Duration)> = None;
    if !request.parallel && launched == 1 {
        timing = Some((0, soonest));
    }
    // One timer per query: the next try or the deadline, whichever is first. (Each timer that
    // becomes the earliest one costs the event loop a wake-up, so the tries have none.)
    let timer = tokio::time::sleep_until(next_at.min(deadline));
    tokio::pin!(timer);
    loop {
        let askable = tally.rejected.count_ones() < n as u32;
        let can_launch = launched < max_tries && askable && !starved;
        if tries.is_empty() && !can_launch {
            break;
        }
        let wake = if can_launch {
            next_at.min(deadline)
        } else {
            deadline
        };
        if timer.deadline() != wake {
            timer.as_mut().reset(wake);
        }
        tokio::select! {
            biased;
            Some(end) = tries.next() => {
                tally.record(&end);
                match end.result {
                    TryResult::Reply(reply, info) if info.is_usable() => {
                        winner = Some((reply, info, end.server));
                        break;
                    }
                    TryResult::Reply(reply, info) => {
                        fallback.get_or_insert((reply, info, end.server));
                        // Ask a server not asked yet, now (dnsmasq does the same).
                        next_at = match (0..n).find(|&i| !Tally::has(tally.tried, i)) {
                            Some(untried) => {
                                cursor = untried;
                                timing = None;
                                clock::now()
                            }
                            None => next_at,
                        };
                    }
                    TryResult::Failed => {
                        timing = None;
                        next_at = clock::now();
                    }
                }
            }
            () = &mut timer => {
                if clock::now() >= deadline {
                    break;
                }
                if let Some((server, timeout)) = timing.take()
                    && !Tally::has(tally.replied, server)
                {
                    servers[server]
                        .try_timed_out(timeout.as_micros().min(u128::from(u32::MAX)) as u32);
                }
                // The next server in plan order that has not refused us.
                let server = (0..n)
                    .map(|k| (cursor + k) % n)
                    .find(|&i| !Tally::has(tally.rejected, i))
                    .unwrap_or(cursor);
                match acquire() {
                    Some(place) => {
                        let timeout = launch(server, place, &mut tries, &mut tally);
                        launched += 1;
                        cursor = (server + 1) % n;
                        next_at = clock::now() + timeout;
                        timing = Some((server, timeout));
                    }
                    None => starved = true,
                }
            }
        }
    }
    let id = wire::packet_id(request.query).unwrap_or(0);
    let shape = |(mut reply, info, server): (Vec<u8>, ReplyInfo, usize)| {
        upstream_reply::replace_opt_in_place(&mut reply, &info, edns);
        wire::set_packet_id(&mut reply, id);
        (reply, server)
    };
    let answered = winner.is_some();
    let outcome = match (winner.map(shape), fallback.map(shape)) {
        (Some((reply, server)), _) => Outcome::Answer { reply, server },
        (None, Some((reply, server))) => Outcome::Rejected { reply, server },
        (None, None) => Outcome::Deadline,
    };
    if answered && !tries.is_empty() {
        // Keep listening for the others, to learn who is slow and who is silent.
        let servers: Vec<Arc<Upstream>> = servers.to_vec();
        tokio::spawn(async move {
            let _ = tokio::time::timeout_at(deadline, async {
                while let Some(end) = tries.next().await {
                    tally.record(&end);
                }
            })
            .await;
            tally.settle(&servers);
        });
    } else {
        // At the deadline (or with every try ended) nothing more can come.
        drop(tries);
        tally.settle(servers);
    }
    outcome
}

/// One try: send, then wait for a valid reply (ignoring broken ones) for as long as the caller
/// polls it (until the query's deadline). A truncated UDP reply is followed by a TCP exchange
/// with the same server.
async fn one_try(
    upstream: Arc<Upstream>,
    packet: Vec<u8>,
    transport: Transport,
    limit: usize,
    timeout: Duration,
    slot: Charge,
    server: usize,
) -> TryEnd {
    let _slot = slot;
    let _outstanding = upstream.begin();
    let started = clock::now();
    let broken = || upstream.broken_reply();
    let exchanged = match (&upstream.pool, transport) {
        (Some(pool), _) => pooled_exchange(pool, &packet, &broken).await,
        (None, Transport::Udp) => {
            udp_exchange_untimed(upstream.addr, &packet, limit, &broken).await
        }
        (None, Transport::Tcp) => tcp_exchange(upstream.addr, &packet, &broken).await,
    };
    let result = match exchanged {
        Ok((reply, info)) => {
            let rtt = started.elapsed();
            upstream.answered(
                rtt.as_micros().min(u128::from(u32::MAX)) as u32,
                rtt > timeout,
            );
            if info.truncated && transport == Transport::Udp {
                match tcp_exchange(upstream.addr, &packet, &broken).await {
                    Ok((whole, info)) => TryResult::Reply(whole, info),
                    // The client can still ask us over TCP.
                    Err(_) => TryResult::Reply(reply, info),
                }
            } else {
                TryResult::Reply(reply, info)
            }
        }
        Err(error) => {
            tracing::debug!(server = %upstream.addr, %error, "upstream try failed");
            TryResult::Failed
        }
    };
    TryEnd { server, result }
}

fn timed_out() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "no valid reply before the deadline",
    )
}

/// UDP from a fresh socket (random source port), connected to the server so only its
/// datagrams arrive; every datagram is checked ([`upstream_reply::check_reply`]), and broken ones
/// are reported to `broken` and skipped until the deadline.
pub async fn udp_exchange(
    server: SocketAddr,
    packet: &[u8],
    deadline: Instant,
    broken: &(dyn Fn() + Sync),
) -> io::Result<(Vec<u8>, ReplyInfo)> {
    let limit = reply_limit(packet);
    tokio::time::timeout_at(
        deadline,
        udp_exchange_untimed(server, packet, limit, broken),
    )
    .await
    .map_err(|_| timed_out())?
}

/// The largest UDP reply to `packet`: the payload size it advertises (512 without EDNS), which
/// the upstream honours.
fn reply_limit(packet: &[u8]) -> usize {
    wire::parse_query(packet)
        .map(|q| q.udp_limit())
        .unwrap_or(MAX_DATAGRAM)
        .min(MAX_DATAGRAM)
}

/// [`udp_exchange`] without a deadline (the caller bounds it); replies over `limit` bytes are
/// dropped as broken.
async fn udp_exchange_untimed(
    server: SocketAddr,
    packet: &[u8],
    limit: usize,
    broken: &(dyn Fn() + Sync),
) -> io::Result<(Vec<u8>, ReplyInfo)> {
    // Non-blocking from the start and not bound: connect() binds a random ephemeral port (one
    // system call fewer than bind + connect). The query goes out before the socket joins the
    // event loop, which watches it for reading only: no wake-up for writability, and a reply
    // that is already there when it joins is still reported (edge-triggered epoll reports the
    // state at registration).
    let socket = Socket::new(
        Domain::for_address(server),
        Type::DGRAM.nonblocking().cloexec(),
        Some(Protocol::UDP),
    )?;
    socket.connect(&server.into())?;
    socket.send(packet)?;
    let socket = crate::udp::register_readable(socket.into())?;
    // One spare byte tells a reply over the advertised size.
    let mut buf = vec![0u8; limit + 1];
    loop {
        let mut ready = socket
            .ready(tokio::io::Interest::READABLE | tokio::io::Interest::ERROR)
            .await?;
        let n = match ready.try_io(|fd| fd.get_ref().recv(&mut buf)) {
            Ok(received) => received?,
            Err(_would_block) => continue,
        };
        if n > limit {
            broken();
            tracing::debug!(%server, n, limit, "reply larger than the advertised payload size; dropped");
            continue;
        }
        match upstream_reply::check_reply(packet, &buf[..n]) {
            Ok(info) => {
                buf.truncate(n);
                return Ok((buf, info));
            }
            Err(error) => {
                broken();
                tracing::debug!(%server, %error, "upstream reply dropped");
            }
        }
    }
}

/// One exchange over a pooled connection, checked like [`tcp_exchange`].
async fn pooled_exchange(
    pool: &crate::tcp_pool::TcpPool,
    packet: &[u8],
    broken: &(dyn Fn() + Sync),
) -> io::Result<(Vec<u8>, ReplyInfo)> {
    let reply = pool.exchange(packet).await?;
    check_tcp_reply(packet, reply, broken)
}

fn check_tcp_reply(
    packet: &[u8],
    reply: Vec<u8>,
    broken: &(dyn Fn() + Sync),
) -> io::Result<(Vec<u8>, ReplyInfo)> {
    match upstream_reply::check_reply(packet, &reply) {
        Ok(info) => Ok((reply, info)),
        Err(error) => {
            broken();
            Err(io::Error::new(io::ErrorKind::InvalidData, error))
        }
    }
}

/// One TCP exchange (RFC 7766 framing), checked like [`udp_exchange`]; a broken reply ends it.
/// No deadline: the caller bounds it.
async fn tcp_exchange(
    server: SocketAddr,
    packet: &[u8],
    broken: &(dyn Fn() + Sync),
) -> io::Result<(Vec<u8>, ReplyInfo)> {
    let mut stream = TcpStream::connect(server).await?;
    let len = u16::try_from(packet.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "query too large"))?;
    let mut framed = Vec::with_capacity(packet.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(packet);
    stream.write_all(&framed).await?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut reply).await?;
    check_tcp_reply(packet, reply, broken)
}
