//! The server side's one interface: how a query arrived, and the handler that answers it on a
//! synchronous fast path or an async slow path.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::budget::{Budget, Charge, Refusal};

/// How a query arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// What the synchronous path decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fast {
    /// `out` holds the reply.
    Reply,
    /// Send nothing (responses, garbage shorter than a header).
    Drop,
    /// Needs the network: run [`PacketHandler::slow`].
    Slow,
}

/// Several messages answering one TCP query, written in order (a zone transfer, RFC 5936).
/// Messages are made as they are written, so a connection holds one at a time.
pub struct MessageStream {
    pub messages: Box<dyn Iterator<Item = Vec<u8>> + Send>,
    /// The whole stream is written within this, or the connection is closed.
    pub within: Duration,
}

impl std::fmt::Debug for MessageStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageStream")
            .field("within", &self.within)
            .finish_non_exhaustive()
    }
}

/// Answers DNS packets.
pub trait PacketHandler: Send + Sync + 'static {
    /// Answers without I/O (or decides to drop, or to go slow), writing the reply to `out`.
    fn fast(
        &self,
        packet: &[u8],
        transport: Transport,
        peer: SocketAddr,
        out: &mut Vec<u8>,
    ) -> Fast;

    /// Answers a packet that needs the network. `None` sends nothing.
    fn slow(
        self: Arc<Self>,
        packet: Vec<u8>,
        transport: Transport,
        peer: SocketAddr,
    ) -> impl Future<Output = Option<Vec<u8>>> + Send;

    /// The reply when the in-flight budget refuses a slow query (e.g. SERVFAIL or REFUSED);
    /// `false` sends nothing.
    fn overloaded(&self, packet: &[u8], out: &mut Vec<u8>) -> bool;

    /// A TCP query answered by several messages (zone transfers); `None` (the default) sends
    /// it down the fast path like any other.
    fn stream(&self, _packet: &[u8], _peer: SocketAddr) -> Option<MessageStream> {
        None
    }
}

/// What a slow query is charged beyond its bytes: its task, the handler's state for it and the
/// answer it builds (measured: a forwarded query's task and tries come to a few KiB).
pub const SLOW_QUERY_OVERHEAD: usize = 4096;

/// A query admitted to the slow path: what it keeps of its datagram (the header, the question
/// and a plain OPT, [`dns_wire::compact_query`], never the rest of the up to 64 KB buffer) and
/// its charge to the process's in-flight budget, held until its answer is sent.
#[derive(Debug)]
pub(crate) struct SlowQuery {
    pub packet: Vec<u8>,
    pub charge: Charge,
}

/// Charges a slow query to `budget` for its client. `Ok(None)` for a packet that does not parse
/// (the fast path answers or drops those first); `Err` when the budget refuses it.
pub(crate) fn admit_slow(
    budget: &Arc<Budget>,
    packet: &[u8],
    peer: SocketAddr,
) -> Result<Option<SlowQuery>, Refusal> {
    let Ok(query) = dns_wire::parse_query(packet) else {
        return Ok(None);
    };
    let packet = dns_wire::compact_query(&query);
    let charge = budget.charge(peer.ip(), 1, packet.len() + SLOW_QUERY_OVERHEAD)?;
    Ok(Some(SlowQuery { packet, charge }))
}
