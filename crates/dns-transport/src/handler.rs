//! The server side's one interface: how a query arrived, and the handler that answers it on a
//! synchronous fast path or an async slow path.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

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

    /// The reply when too many slow queries are pending (e.g. SERVFAIL or REFUSED); `false`
    /// sends nothing.
    fn overloaded(&self, packet: &[u8], out: &mut Vec<u8>) -> bool;
}

/// What a query waiting for the slow path keeps of its datagram: the header, the question and
/// a plain OPT ([`dns_wire::compact_query`]), never the rest of the (up to 64 KB) buffer.
/// `None` for a packet that does not parse (the fast path answers or drops those first).
pub(crate) fn slow_copy(packet: &[u8]) -> Option<Vec<u8>> {
    dns_wire::parse_query(packet)
        .ok()
        .map(|query| dns_wire::compact_query(&query))
}
