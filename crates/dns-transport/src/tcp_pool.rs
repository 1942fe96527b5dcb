//! A small pool of long-lived, pipelined TCP connections to one upstream (RFC 7766 §6.2.1):
//! queries go out on a connection without waiting for earlier answers, and answers are matched
//! to their queries by ID, in whatever order they come.
//!
//! Each connection has a writer task (fed by a bounded channel) and a reader task (dispatching
//! answers to their waiters), spawned on the runtime of the query that opens it: a UDP worker's
//! own event loop, so that a miss's write, answer and wake-up stay on one thread (spawning them
//! on the shared runtime halved a node cache's miss throughput). If that runtime goes (the
//! worker restarted), the tasks go with it, the connection's queue closes, and the next query
//! opens a new connection. A connection that fails or is closed by the server fails
//! its waiting queries (the forwarding engine then tries again, at once) and is replaced on the
//! next query; so is one on which a query gave up after [`SILENT`] or more while nothing at all
//! was read on it since the query was sent (a peer gone without a word), and one older than
//! [`MAX_AGE`] (so connections spread
//! over the upstream's endpoints again after they change). Queries are spread round robin over
//! `size` connections, opened lazily, each with at most [`MAX_WAITING`] queries waiting.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

/// Queries queued for one connection's writer at most; more wait for room.
const WRITE_QUEUE: usize = 256;
/// Queries waiting for answers on one connection at most; more fail at once (and are tried
/// again elsewhere).
pub const MAX_WAITING: usize = 1024;
/// A connection is replaced once it is this old.
pub const MAX_AGE: Duration = Duration::from_secs(60);
/// How long a connect may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A query that gave up after this long with nothing read on its connection since it was sent
/// takes the connection for dead.
pub const SILENT: Duration = Duration::from_secs(2);
/// Unacknowledged data older than this ends a connection (TCP_USER_TIMEOUT).
const USER_TIMEOUT: Duration = Duration::from_secs(10);

/// The pool's counters (exported as metrics by the server).
#[derive(Debug, Default)]
pub struct PoolStats {
    /// Connections open now.
    pub open: AtomicI64,
    /// Connections opened so far.
    pub connects: AtomicU64,
}

/// Waiting queries by wire ID: a token (so a late cleanup cannot remove a later query that
/// reused the ID) and where the answer goes.
type Waiting = HashMap<u16, (u64, oneshot::Sender<Vec<u8>>)>;

struct Conn {
    queue: mpsc::Sender<Vec<u8>>,
    waiting: Mutex<Waiting>,
    closed: AtomicBool,
    /// Tokens of the queries, in order.
    next_token: AtomicU64,
    /// When a message was last read on the connection ([`crate::clock::now_ms`]).
    last_read_ms: AtomicU64,
    opened: tokio::time::Instant,
}

impl Conn {
    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn usable(&self) -> bool {
        !self.closed.load(Ordering::Acquire)
            && !self.queue.is_closed()
            && crate::clock::now().saturating_duration_since(self.opened) < MAX_AGE
    }

    /// Ends the connection: every waiting query fails.
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.lock().clear();
    }
}

/// The pool for one upstream server.
pub struct TcpPool {
    addr: SocketAddr,
    slots: Box<[tokio::sync::Mutex<Option<Arc<Conn>>>]>,
    next: AtomicUsize,
    pub stats: Arc<PoolStats>,
}

impl std::fmt::Debug for TcpPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpPool")
            .field("addr", &self.addr)
            .field("size", &self.slots.len())
            .finish()
    }
}

fn closed_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "the pooled connection closed before the answer",
    )
}

impl TcpPool {
    pub fn new(addr: SocketAddr, size: usize) -> Self {
        TcpPool {
            addr,
            slots: (0..size.max(1))
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
            next: AtomicUsize::new(0),
            stats: Arc::default(),
        }
    }

    pub fn size(&self) -> usize {
        self.slots.len()
    }

    /// The next connection round robin, opened if it is missing or closed.
    async fn conn(&self) -> io::Result<Arc<Conn>> {
        let slot = &self.slots[self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len()];
        let mut slot = slot.lock().await;
        if let Some(conn) = slot.as_ref()
            && conn.usable()
        {
            return Ok(conn.clone());
        }
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(self.addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        let _ = stream.set_nodelay(true);
        let _ = socket2::SockRef::from(&stream).set_tcp_user_timeout(Some(USER_TIMEOUT));
        let (mut reader, mut writer) = stream.into_split();
        let (queue, mut outgoing) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
        let conn = Arc::new(Conn {
            queue,
            waiting: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
            next_token: AtomicU64::new(1),
            last_read_ms: AtomicU64::new(crate::clock::now_ms()),
            opened: crate::clock::now(),
        });
        self.stats.connects.fetch_add(1, Ordering::Relaxed);
        self.stats.open.fetch_add(1, Ordering::Relaxed);
        // The tasks hold the connection weakly: when the pool lets it go, the queue's sender
        // goes with it, the writer ends and closes its half, and the server's close ends the
        // reader.
        let writer_conn = Arc::downgrade(&conn);
        tokio::spawn(async move {
            while let Some(framed) = outgoing.recv().await {
                if writer.write_all(&framed).await.is_err() {
                    break;
                }
            }
            if let Some(conn) = writer_conn.upgrade() {
                conn.close();
            }
        });
        let reader_conn = Arc::downgrade(&conn);
        let stats = self.stats.clone();
        tokio::spawn(async move {
            // The gauge goes down however the task ends (its runtime going away included).
            struct Open(Arc<PoolStats>);
            impl Drop for Open {
                fn drop(&mut self) {
                    self.0.open.fetch_sub(1, Ordering::Relaxed);
                }
            }
            let _open = Open(stats);
            let mut len = [0u8; 2];
            loop {
                if reader.read_exact(&mut len).await.is_err() {
                    break;
                }
                let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
                if reader.read_exact(&mut reply).await.is_err() {
                    break;
                }
                let Some(id) = dns_wire::packet_id(&reply) else {
                    continue;
                };
                let Some(conn) = reader_conn.upgrade() else {
                    break;
                };
                conn.last_read_ms
                    .store(crate::clock::now_ms(), Ordering::Relaxed);
                // An ID nobody waits for (a late answer to a failed query) is dropped.
                let waiter = conn.lock().remove(&id);
                if let Some((_, waiter)) = waiter {
                    let _ = waiter.send(reply);
                }
            }
            if let Some(conn) = reader_conn.upgrade() {
                conn.close();
            }
        });
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Sends `packet` on a pooled connection and waits for the answer with its ID (the
    /// caller bounds the wait). The ID on the wire may differ when the packet's is already
    /// waiting on that connection; the answer comes back with the packet's own.
    pub async fn exchange(&self, packet: &[u8]) -> io::Result<Vec<u8>> {
        let len = u16::try_from(packet.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "query too large"))?;
        let own_id = dns_wire::packet_id(packet)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "query too short"))?;
        let conn = self.conn().await?;
        let (tx, rx) = oneshot::channel();
        let token = conn.next_token.fetch_add(1, Ordering::Relaxed);
        let wire_id = {
            let mut waiting = conn.lock();
            if waiting.len() >= MAX_WAITING {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "too many queries waiting on the pooled connection",
                ));
            }
            // Free IDs abound below MAX_WAITING: a few draws find one.
            let mut id = own_id;
            while waiting.contains_key(&id) {
                id = rand::random();
            }
            waiting.insert(id, (token, tx));
            id
        };
        // If this future is dropped unanswered (the query's deadline, or another try won), the
        // waiter goes; and if it waited SILENT or more while nothing at all was read on the
        // connection, the connection is taken for dead and replaced.
        struct Forget<'a> {
            conn: &'a Conn,
            id: u16,
            token: u64,
            sent_ms: u64,
            answered: bool,
        }
        impl Drop for Forget<'_> {
            fn drop(&mut self) {
                if self.answered {
                    return;
                }
                let mut waiting = self.conn.lock();
                if waiting.get(&self.id).is_some_and(|(t, _)| *t == self.token) {
                    waiting.remove(&self.id);
                }
                drop(waiting);
                let silent_since_sent =
                    self.conn.last_read_ms.load(Ordering::Relaxed) < self.sent_ms;
                let waited = crate::clock::now_ms().saturating_sub(self.sent_ms);
                if silent_since_sent && waited >= SILENT.as_millis() as u64 {
                    self.conn.close();
                }
            }
        }
        let mut forget = Forget {
            conn: &conn,
            id: wire_id,
            token,
            sent_ms: crate::clock::now_ms(),
            answered: false,
        };
        let mut framed = Vec::with_capacity(packet.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(packet);
        dns_wire::set_packet_id(&mut framed[2..], wire_id);
        if conn.closed.load(Ordering::Acquire) || conn.queue.send(framed).await.is_err() {
            return Err(closed_error());
        }
        let reply = rx.await;
        forget.answered = reply.is_ok();
        let mut reply = reply.map_err(|_| closed_error())?;
        dns_wire::set_packet_id(&mut reply, own_id);
        Ok(reply)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::net::TcpListener;

    use super::*;

    /// A server that reads `n` queries before answering any, then answers them in reverse
    /// order: only a pipelining client with ID matching gets every answer right.
    async fn reversing_server(
        n: usize,
    ) -> io::Result<(SocketAddr, tokio::task::JoinHandle<usize>)> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let Ok((mut stream, _)) = listener.accept().await else {
                return 0;
            };
            let mut queries = Vec::new();
            for _ in 0..n {
                let mut len = [0u8; 2];
                if stream.read_exact(&mut len).await.is_err() {
                    return 0;
                }
                let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
                if stream.read_exact(&mut q).await.is_err() {
                    return 0;
                }
                queries.push(q);
            }
            for q in queries.iter().rev() {
                let mut framed = (q.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(q);
                if stream.write_all(&framed).await.is_err() {
                    return 0;
                }
            }
            // Stay open until the client is done.
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest).await;
            n
        });
        Ok((addr, task))
    }

    fn query(id: u16, marker: u8) -> Vec<u8> {
        let mut q = vec![0u8; 13];
        q[..2].copy_from_slice(&id.to_be_bytes());
        q[12] = marker;
        q
    }

    #[tokio::test]
    async fn pipelined_answers_in_any_order_reach_their_queries() -> io::Result<()> {
        let (addr, server) = reversing_server(8).await?;
        let pool = Arc::new(TcpPool::new(addr, 1));
        let mut tasks = Vec::new();
        for i in 0..8u8 {
            let pool = pool.clone();
            // Two queries share ID 7: the pool must tell them apart on the wire.
            let id = if i < 2 { 7 } else { 100 + u16::from(i) };
            tasks.push(tokio::spawn(async move {
                (id, i, pool.exchange(&query(id, i)).await)
            }));
        }
        for task in tasks {
            let (id, marker, reply) = task.await.map_err(io::Error::other)?;
            let reply = reply?;
            assert_eq!(dns_wire::packet_id(&reply), Some(id));
            assert_eq!(reply[12], marker, "the answer to this query, not another");
        }
        assert_eq!(
            pool.stats.connects.load(Ordering::Relaxed),
            1,
            "one connection"
        );
        drop(pool);
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(5), server)
                .await
                .map_err(io::Error::other)?
                .map_err(io::Error::other)?,
            8
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_silent_connection_is_replaced_after_a_query_gives_up() -> io::Result<()> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            // The first connection reads and never answers (a peer gone silent); the second
            // answers.
            let (mut silent, _) = listener.accept().await?;
            let mut buf = [0u8; 15];
            silent.read_exact(&mut buf).await?;
            let (mut second, _) = listener.accept().await?;
            second.read_exact(&mut buf).await?;
            second.write_all(&buf).await?;
            let mut rest = Vec::new();
            let _ = second.read_to_end(&mut rest).await;
            drop(silent);
            io::Result::Ok(())
        });
        let pool = TcpPool::new(addr, 1);
        // Given up before SILENT: the connection is kept (a slow answer is not a dead peer).
        let early =
            tokio::time::timeout(Duration::from_millis(200), pool.exchange(&query(1, 1))).await;
        assert!(early.is_err(), "nothing was answered");
        assert_eq!(pool.stats.connects.load(Ordering::Relaxed), 1);
        // Given up after SILENT with nothing read since: taken for dead, replaced.
        let late = tokio::time::timeout(
            SILENT + Duration::from_millis(100),
            pool.exchange(&query(3, 3)),
        )
        .await;
        assert!(late.is_err(), "nothing was answered");
        let reply = tokio::time::timeout(Duration::from_secs(5), pool.exchange(&query(2, 2)))
            .await
            .map_err(io::Error::other)??;
        assert_eq!(reply[12], 2);
        assert_eq!(pool.stats.connects.load(Ordering::Relaxed), 2);
        drop(pool);
        let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        Ok(())
    }

    #[tokio::test]
    async fn a_connection_holds_at_most_max_waiting_queries() -> io::Result<()> {
        // A server that reads everything and answers nothing.
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            if let Ok((mut stream, _)) = listener.accept().await {
                let mut sink = Vec::new();
                let _ = stream.read_to_end(&mut sink).await;
            }
        });
        let pool = Arc::new(TcpPool::new(addr, 1));
        let mut waiting = Vec::new();
        for i in 0..MAX_WAITING + 50 {
            let pool = pool.clone();
            waiting.push(tokio::spawn(async move {
                tokio::time::timeout(
                    Duration::from_millis(1500),
                    pool.exchange(&query(i as u16, 0)),
                )
                .await
            }));
        }
        let mut refused = 0;
        for task in waiting {
            if let Ok(Err(error)) = task.await.map_err(io::Error::other)? {
                assert_eq!(error.kind(), io::ErrorKind::WouldBlock, "{error}");
                refused += 1;
            }
        }
        assert_eq!(
            refused, 50,
            "the queries over the cap fail at once, the rest wait"
        );
        drop(pool);
        server.abort();
        Ok(())
    }

    #[tokio::test]
    async fn a_closed_connection_fails_its_queries_and_is_replaced() -> io::Result<()> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            // The first connection is closed after reading a query; the second answers.
            let (mut first, _) = listener.accept().await?;
            let mut buf = [0u8; 15];
            first.read_exact(&mut buf).await?;
            drop(first);
            let (mut second, _) = listener.accept().await?;
            second.read_exact(&mut buf).await?;
            second.write_all(&buf).await?;
            let mut rest = Vec::new();
            let _ = second.read_to_end(&mut rest).await;
            io::Result::Ok(())
        });
        let pool = TcpPool::new(addr, 1);
        let failed = pool.exchange(&query(1, 1)).await;
        assert!(failed.is_err(), "{failed:?}");
        let reply = pool.exchange(&query(2, 2)).await?;
        assert_eq!(reply[12], 2);
        assert_eq!(pool.stats.connects.load(Ordering::Relaxed), 2);
        drop(pool);
        let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        Ok(())
    }
}
