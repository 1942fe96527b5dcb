//! DNS over TCP (RFC 7766): one task per connection, length-prefixed messages. Answers from
//! the fast path are written at once, in order; queries that need the network run
//! concurrently, up to [`MAX_PIPELINED`] per connection, and their answers are written as they
//! come (RFC 7766 §6.2.1.1), so one slow upstream does not hold up a pipelining client's other
//! queries.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use daemon_support::conns::{ConnLimits, ConnStats, ConnectionGuard, ConnectionTable};

use crate::budget::Budget;
use crate::handler::{Fast, MessageStream, PacketHandler, SlowQuery, Transport};

/// How long an idle TCP connection stays open while there is room (RFC 7766 §6.2.3).
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a TCP query's buffer starts at; it grows only as the client's bytes arrive.
const INITIAL_QUERY_CAPACITY: usize = 512;

/// The most a connection's read buffer grows by at a time, and what it keeps between messages:
/// room for a few dozen pipelined queries per read.
const READ_CHUNK: usize = 4096;

/// Queries of one connection waiting on the network at once; the next query is read when one
/// of them is answered. (Each is charged to the process's budget as well.)
pub const MAX_PIPELINED: usize = 32;

/// How long a connection that is owed answers waits for its next query: the answers come
/// within their deadline, and then the idle timeout applies again.
const OWED_READ: Duration = Duration::from_secs(60);

/// How many DNS-over-TCP connections a listener keeps, and for how long (RFC 7766 §6.2.3, §10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpLimits {
    pub conns: ConnLimits,
    /// The idle timeout while the listener is at most half full; it shrinks beyond that.
    pub idle_timeout: Duration,
}

impl TcpLimits {
    /// `max_connections` in all, an eighth of them (at least one) per client address, and
    /// [`TCP_IDLE_TIMEOUT`].
    pub fn with_max(max_connections: usize) -> Self {
        let max_connections = max_connections.max(1);
        TcpLimits {
            conns: ConnLimits {
                max_connections,
                max_per_client: (max_connections / 8).max(1),
            },
            idle_timeout: TCP_IDLE_TIMEOUT,
        }
    }

    /// The idle timeout with `open` connections: the full timeout up to half the cap, then
    /// down in proportion to the room left, to a tenth of it at the cap.
    pub fn idle_for(&self, open: usize) -> Duration {
        let max = self.conns.max_connections.max(1);
        if open.saturating_mul(2) <= max {
            return self.idle_timeout;
        }
        let left = u32::try_from(max.saturating_sub(open)).unwrap_or(u32::MAX);
        let half = u32::try_from((max / 2).max(1)).unwrap_or(u32::MAX);
        (self.idle_timeout * left / half).max(self.idle_timeout / 10)
    }
}

/// The DNS-over-TCP connections of a process, shared by all its TCP listeners.
#[derive(Debug)]
pub struct TcpConnections {
    table: Arc<ConnectionTable>,
    limits: TcpLimits,
}

impl TcpConnections {
    /// A table within `limits`; `stats` counts what it admits and refuses.
    pub fn new(limits: TcpLimits, stats: Arc<ConnStats>) -> Arc<Self> {
        Arc::new(TcpConnections {
            table: ConnectionTable::new(limits.conns, stats),
            limits,
        })
    }
}

/// Accepts TCP connections into `connections` until `shutdown` is cancelled. Slow queries and
/// answers being written are charged to `budget`.
pub async fn serve_tcp<H: PacketHandler>(
    listener: TcpListener,
    handler: Arc<H>,
    connections: Arc<TcpConnections>,
    budget: Arc<Budget>,
    shutdown: CancellationToken,
) {
    let (table, limits) = (connections.table.clone(), connections.limits);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                // A client at its maximum is closed at once.
                let Ok(guard) = table.admit(peer.ip()) else {
                    continue;
                };
                let handler = handler.clone();
                let shutdown = shutdown.clone();
                let table = table.clone();
                let budget = budget.clone();
                tokio::spawn(async move {
                    let evicted = guard.evicted.clone();
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        _ = evicted.cancelled() => {}
                        result = serve_tcp_connection(stream, peer, handler, &guard, &table, &budget, limits) => {
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

/// The bytes read from a connection and not yet taken as messages: `buf[start..]`.
#[derive(Default)]
struct Inbox {
    buf: Vec<u8>,
    start: usize,
}

impl Inbox {
    /// The next complete message, if the bytes hold one.
    fn take(&mut self) -> Option<Vec<u8>> {
        let pending = &self.buf[self.start..];
        if pending.len() < 2 {
            return None;
        }
        let want = usize::from(u16::from_be_bytes([pending[0], pending[1]]));
        if pending.len() < 2 + want {
            return None;
        }
        let packet = pending[2..2 + want].to_vec();
        self.start += 2 + want;
        if self.start == self.buf.len() {
            // All taken: start over, and give back what a large message made it hold.
            self.buf.clear();
            self.start = 0;
            if self.buf.capacity() > 4 * READ_CHUNK {
                self.buf.shrink_to(READ_CHUNK);
            }
        }
        Some(packet)
    }

    /// Room for the next read: what the message being read still lacks, at most
    /// [`READ_CHUNK`] at a time (so a length prefix alone reserves little, and a pipelining
    /// client's queries come in a few reads), the bytes already taken moved out of the way
    /// first.
    fn make_room(&mut self) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let missing = match self.buf.as_slice() {
            [hi, lo, rest @ ..] => (2 + usize::from(u16::from_be_bytes([*hi, *lo])))
                .saturating_sub(2 + rest.len())
                .max(1),
            _ => READ_CHUNK,
        };
        self.buf
            .reserve(missing.clamp(INITIAL_QUERY_CAPACITY, READ_CHUNK));
    }
}

/// Reads the next length-prefixed message. Cancel safe: bytes read stay in `inbox` when the
/// future is dropped. None at the end of the stream (or when it ends inside a message).
async fn next_message<R: AsyncReadExt + Unpin>(
    reader: &mut R,
    inbox: &mut Inbox,
) -> io::Result<Option<Vec<u8>>> {
    loop {
        if let Some(packet) = inbox.take() {
            return Ok(Some(packet));
        }
        inbox.make_room();
        if reader.read_buf(&mut inbox.buf).await? == 0 {
            return Ok(None);
        }
    }
}

/// Writes one framed answer (charged to the budget while it waits for the reader).
async fn write_answer<W: AsyncWriteExt + Unpin>(
    writer: &mut W,
    out: &[u8],
    peer: SocketAddr,
    budget: &Arc<Budget>,
    idle: Duration,
) -> io::Result<bool> {
    let frame_len = u16::try_from(out.len()).unwrap_or(u16::MAX);
    // An answer waiting for a slow reader is work in flight too; over budget, the connection
    // is closed (the client may retry).
    let Ok(_pending) = budget.charge(peer.ip(), 1, usize::from(frame_len) + 2) else {
        return Ok(false);
    };
    let mut frame = Vec::with_capacity(usize::from(frame_len) + 2);
    frame.extend_from_slice(&frame_len.to_be_bytes());
    frame.extend_from_slice(&out[..usize::from(frame_len)]);
    tokio::time::timeout(idle, writer.write_all(&frame))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "answer not read in time"))??;
    Ok(true)
}

/// Reads length-prefixed queries and answers them until the peer closes or idles (then the
/// queries still waiting on the network are answered before the connection closes).
async fn serve_tcp_connection<H: PacketHandler>(
    mut stream: TcpStream,
    peer: SocketAddr,
    handler: Arc<H>,
    guard: &ConnectionGuard,
    table: &ConnectionTable,
    budget: &Arc<Budget>,
    limits: TcpLimits,
) -> io::Result<()> {
    use futures::StreamExt;
    stream.set_nodelay(true)?;
    let (mut reader, mut writer) = stream.split();
    let mut inbox = Inbox::default();
    let mut out = Vec::with_capacity(4096);
    let mut waiting = futures::stream::FuturesUnordered::new();
    let mut reading = true;
    loop {
        if !reading && waiting.is_empty() {
            return Ok(());
        }
        // Reading a message, and writing its answer, each get the idle timeout as it is now;
        // a connection with answers still owed is not idle (RFC 7766 6.2.3).
        let idle = limits.idle_for(table.len());
        let read_for = if waiting.is_empty() { idle } else { OWED_READ };
        let can_read = reading && waiting.len() < MAX_PIPELINED;
        tokio::select! {
            read = tokio::time::timeout(read_for, next_message(&mut reader, &mut inbox)), if can_read => {
                let packet = match read {
                    // Idle, or the peer is done sending: answer what is waiting, then close.
                    Err(_) | Ok(Ok(None)) => {
                        reading = false;
                        continue;
                    }
                    Ok(Err(e)) => return Err(e),
                    Ok(Ok(Some(packet))) => packet,
                };
                guard.touch();
                if let Some(messages) = handler.stream(&packet, peer) {
                    drop(packet);
                    write_stream(&mut writer, messages, idle).await?;
                    continue;
                }
                match handler.fast(&packet, Transport::Tcp, peer, &mut out) {
                    Fast::Reply => {}
                    // Garbage: read no more, but the answers owed still go out.
                    Fast::Drop => {
                        reading = false;
                        continue;
                    }
                    Fast::Slow => match crate::handler::admit_slow(budget, &packet, peer) {
                        Ok(Some(SlowQuery { packet, charge })) => {
                            let handler = handler.clone();
                            waiting.push(async move {
                                let reply = handler.slow(packet, Transport::Tcp, peer).await;
                                drop(charge);
                                reply
                            });
                            continue;
                        }
                        Ok(None) => {
                            reading = false;
                            continue;
                        }
                        Err(_refusal) => {
                            out.clear();
                            if !handler.overloaded(&packet, &mut out) {
                                reading = false;
                                continue;
                            }
                        }
                    },
                }
                drop(packet);
                if !write_answer(&mut writer, &out, peer, budget, idle).await? {
                    return Ok(());
                }
            }
            Some(reply) = waiting.next(), if !waiting.is_empty() => {
                guard.touch();
                // No answer for this one (the handler chose silence); the others still go.
                let Some(reply) = reply else {
                    continue;
                };
                if !write_answer(&mut writer, &reply, peer, budget, idle).await? {
                    return Ok(());
                }
            }
        }
    }
}

/// Writes every message of `messages`, each framed, within its deadline and each write within
/// `idle`; the connection is closed (an error) when either runs out.
async fn write_stream<W: AsyncWriteExt + Unpin>(
    stream: &mut W,
    messages: MessageStream,
    idle: Duration,
) -> io::Result<()> {
    let MessageStream { messages, within } = messages;
    let deadline = crate::clock::now() + within;
    let mut frame = Vec::new();
    for message in messages {
        let Ok(len) = u16::try_from(message.len()) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "stream message over 64 KiB",
            ));
        };
        frame.clear();
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(&message);
        drop(message);
        let until = deadline.min(crate::clock::now() + idle);
        tokio::time::timeout_at(until, stream.write_all(&frame))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "stream not read in time"))??;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every query goes slow; a query with ID 1 takes 300 ms, the others none. Answers echo
    /// the query.
    struct Slowly;

    impl PacketHandler for Slowly {
        fn fast(&self, _: &[u8], _: Transport, _: SocketAddr, _: &mut Vec<u8>) -> Fast {
            Fast::Slow
        }

        async fn slow(
            self: Arc<Self>,
            packet: Vec<u8>,
            _: Transport,
            _: SocketAddr,
        ) -> Option<Vec<u8>> {
            if dns_wire::packet_id(&packet) == Some(1) {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Some(packet)
        }

        fn overloaded(&self, _: &[u8], _: &mut Vec<u8>) -> bool {
            false
        }
    }

    #[test]
    fn the_inbox_takes_whole_messages_and_keeps_the_rest() {
        let mut inbox = Inbox::default();
        inbox.buf.extend_from_slice(&[0, 2, 7, 8, 0, 3, 1]);
        assert_eq!(inbox.take(), Some(vec![7, 8]));
        assert_eq!(inbox.take(), None, "the second message is not all there");
        inbox.make_room();
        assert_eq!(inbox.buf, vec![0, 3, 1], "taken bytes moved out of the way");
        inbox.buf.extend_from_slice(&[2, 3]);
        assert_eq!(inbox.take(), Some(vec![1, 2, 3]));
        assert!(inbox.buf.is_empty());
        // A large message's buffer is given back once it is taken.
        inbox.buf.extend_from_slice(&[0xff, 0xff]);
        inbox.buf.resize(2 + 0xffff, 0);
        assert_eq!(inbox.take().map(|p| p.len()), Some(0xffff));
        assert!(inbox.buf.capacity() <= 4 * READ_CHUNK);
    }

    /// Every query waits 100 ms on the "network"; counts how many wait at once.
    #[derive(Default)]
    struct Counting {
        now: std::sync::atomic::AtomicUsize,
        most: std::sync::atomic::AtomicUsize,
    }

    impl PacketHandler for Counting {
        fn fast(&self, _: &[u8], _: Transport, _: SocketAddr, _: &mut Vec<u8>) -> Fast {
            Fast::Slow
        }

        async fn slow(
            self: Arc<Self>,
            packet: Vec<u8>,
            _: Transport,
            _: SocketAddr,
        ) -> Option<Vec<u8>> {
            use std::sync::atomic::Ordering::SeqCst;
            let now = self.now.fetch_add(1, SeqCst) + 1;
            self.most.fetch_max(now, SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            self.now.fetch_sub(1, SeqCst);
            Some(packet)
        }

        fn overloaded(&self, _: &[u8], _: &mut Vec<u8>) -> bool {
            false
        }
    }

    async fn serve<H: PacketHandler>(
        handler: Arc<H>,
    ) -> io::Result<(SocketAddr, CancellationToken, tokio::task::JoinHandle<()>)> {
        let listener =
            TcpListener::from_std(crate::bind::bind_tcp("127.0.0.1:0".parse().expect("addr"))?)?;
        let addr = listener.local_addr()?;
        let budget = Budget::new(
            crate::budget::BudgetLimits::entries(4096),
            Arc::default(),
            "test",
        );
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve_tcp(
            listener,
            handler,
            TcpConnections::new(TcpLimits::with_max(8), Arc::default()),
            budget,
            shutdown.clone(),
        ));
        Ok((addr, shutdown, task))
    }

    fn framed(id: u16) -> Vec<u8> {
        let query = dns_wire::build::build_query(id, "example.com", 1, None);
        let mut out = (query.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(&query);
        out
    }

    /// The answers' IDs until the server closes.
    async fn answers(client: &mut TcpStream) -> io::Result<Vec<u16>> {
        let mut ids = Vec::new();
        let mut len = [0u8; 2];
        while client.read_exact(&mut len).await.is_ok() {
            let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
            client.read_exact(&mut answer).await?;
            ids.push(dns_wire::packet_id(&answer).unwrap_or(0));
        }
        Ok(ids)
    }

    #[tokio::test]
    async fn a_client_pipelining_hundreds_of_slow_queries_holds_at_most_the_cap_open()
    -> io::Result<()> {
        let handler = Arc::new(Counting::default());
        let (addr, shutdown, server) = serve(handler.clone()).await?;
        let mut client = TcpStream::connect(addr).await?;
        let sent: Vec<u8> = (1..=200u16).flat_map(framed).collect();
        client.write_all(&sent).await?;
        client.shutdown().await?;
        let ids = answers(&mut client).await?;
        assert_eq!(ids.len(), 200, "every query answered before the close");
        let most = handler.most.load(std::sync::atomic::Ordering::SeqCst);
        assert!(most > 1, "pipelined queries ran concurrently ({most})");
        assert!(
            most <= MAX_PIPELINED,
            "{most} at once, over {MAX_PIPELINED}"
        );
        shutdown.cancel();
        let _ = server.await;
        Ok(())
    }

    #[tokio::test]
    async fn garbage_after_a_slow_query_ends_the_reading_but_not_the_answer_owed() -> io::Result<()>
    {
        let (addr, shutdown, server) = serve(Arc::new(Counting::default())).await?;
        let mut client = TcpStream::connect(addr).await?;
        let mut sent = framed(7);
        // A frame that is no query, then a query the server must not read any more.
        sent.extend_from_slice(&[0, 3, 0xde, 0xad, 0xbe]);
        sent.extend_from_slice(&framed(8));
        client.write_all(&sent).await?;
        let ids = tokio::time::timeout(Duration::from_secs(5), answers(&mut client))
            .await
            .map_err(io::Error::other)??;
        assert_eq!(ids, vec![7], "the owed answer, then the close");
        shutdown.cancel();
        let _ = server.await;
        Ok(())
    }

    #[tokio::test]
    async fn pipelined_queries_are_answered_as_they_are_ready_and_all_before_the_close()
    -> io::Result<()> {
        let (addr, shutdown, server) = serve(Arc::new(Slowly)).await?;
        let mut client = TcpStream::connect(addr).await?;
        let sent: Vec<u8> = [1u16, 2, 3].into_iter().flat_map(framed).collect();
        client.write_all(&sent).await?;
        // The client is done sending: the slow answer still comes before the close.
        client.shutdown().await?;
        let ids = answers(&mut client).await?;
        assert_eq!(ids.len(), 3, "{ids:?}");
        assert_eq!(
            ids.last(),
            Some(&1),
            "the slow one last, the others not held up: {ids:?}"
        );
        shutdown.cancel();
        let _ = server.await;
        Ok(())
    }

    #[test]
    fn the_idle_timeout_shrinks_past_half_full_down_to_a_tenth() {
        let limits = TcpLimits::with_max(100);
        assert_eq!(limits.conns.max_per_client, 12);
        assert_eq!(limits.idle_for(0), TCP_IDLE_TIMEOUT);
        assert_eq!(limits.idle_for(50), TCP_IDLE_TIMEOUT);
        assert_eq!(limits.idle_for(75), TCP_IDLE_TIMEOUT / 2);
        assert_eq!(limits.idle_for(100), TCP_IDLE_TIMEOUT / 10);
        assert_eq!(limits.idle_for(500), TCP_IDLE_TIMEOUT / 10);
        assert_eq!(TcpLimits::with_max(0).conns.max_per_client, 1);
    }
}
