//! DNS over TCP (RFC 7766): one task per connection, length-prefixed messages answered in order.

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

/// Reads length-prefixed queries and answers each in order until the peer closes or idles.
async fn serve_tcp_connection<H: PacketHandler>(
    mut stream: TcpStream,
    peer: SocketAddr,
    handler: Arc<H>,
    guard: &ConnectionGuard,
    table: &ConnectionTable,
    budget: &Arc<Budget>,
    limits: TcpLimits,
) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut out = Vec::with_capacity(4096);
    loop {
        // Reading a message, and writing its answer, each get the idle timeout as it is now.
        let idle = limits.idle_for(table.len());
        let mut len = [0u8; 2];
        match tokio::time::timeout(idle, stream.read_exact(&mut len)).await {
            Err(_) => return Ok(()),
            Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(result) => {
                result?;
            }
        }
        // The buffer grows as bytes arrive: a length prefix alone reserves nothing.
        let want = usize::from(u16::from_be_bytes(len));
        let mut packet = Vec::with_capacity(want.min(INITIAL_QUERY_CAPACITY));
        let mut body = (&mut stream).take(want as u64);
        tokio::time::timeout(idle, body.read_to_end(&mut packet))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "query body timed out"))??;
        if packet.len() < want {
            return Ok(());
        }
        guard.touch();
        if let Some(messages) = handler.stream(&packet, peer) {
            drop(packet);
            write_stream(&mut stream, messages, idle).await?;
            continue;
        }
        match handler.fast(&packet, Transport::Tcp, peer, &mut out) {
            Fast::Reply => {}
            Fast::Drop => return Ok(()),
            Fast::Slow => match crate::handler::admit_slow(budget, &packet, peer) {
                Ok(Some(SlowQuery { packet, charge })) => {
                    let reply = handler.clone().slow(packet, Transport::Tcp, peer).await;
                    drop(charge);
                    match reply {
                        Some(reply) => out = reply,
                        None => return Ok(()),
                    }
                }
                Ok(None) => return Ok(()),
                Err(_refusal) => {
                    out.clear();
                    if !handler.overloaded(&packet, &mut out) {
                        return Ok(());
                    }
                }
            },
        }
        drop(packet);
        let frame_len = u16::try_from(out.len()).unwrap_or(u16::MAX);
        // An answer waiting for a slow reader is work in flight too; over budget, the
        // connection is closed (the client may retry).
        let Ok(_pending) = budget.charge(peer.ip(), 1, usize::from(frame_len) + 2) else {
            return Ok(());
        };
        let mut frame = Vec::with_capacity(usize::from(frame_len) + 2);
        frame.extend_from_slice(&frame_len.to_be_bytes());
        frame.extend_from_slice(&out[..usize::from(frame_len)]);
        tokio::time::timeout(idle, stream.write_all(&frame))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "answer not read in time"))??;
    }
}

/// Writes every message of `messages`, each framed, within its deadline and each write within
/// `idle`; the connection is closed (an error) when either runs out.
async fn write_stream(
    stream: &mut TcpStream,
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
