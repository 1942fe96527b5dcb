//! DNS listeners shared by `kube-dns` and `dns-cache`.
//!
//! Each UDP socket (SO_REUSEPORT, several bound to one port) is served by its own OS thread: a
//! synchronous [`PacketHandler::fast`] path writing into a reused buffer and `send_to`. Queries
//! that need the network go to [`PacketHandler::slow`], each charged to the process's one
//! [`Budget`] (entries and bytes, shared fairly between client addresses), so memory stays
//! bounded under load whatever a client sends. In [`UdpMode::Blocking`] the thread blocks in `recv_from`
//! and the slow path runs on the shared tokio runtime; in [`UdpMode::EventLoop`] the thread runs
//! its own single-threaded runtime and the slow path runs there, on the thread that received the
//! query. TCP follows RFC 7766: one task per connection, length-prefixed messages, answers
//! from the fast path in order and those that need the network as they come (pipelining, up to
//! [`tcp::MAX_PIPELINED`] per connection). [`forward`] sends queries upstream with tries that stay open until the query's
//! deadline; [`upstream`] keeps each server's health.

//!
//! | module | job |
//! |---|---|
//! | [`handler`] | the [`PacketHandler`] a server implements: fast path, slow path, overload, multi-message TCP answers |
//! | [`acl`] | address ranges for access lists |
//! | [`bind`] | binding UDP groups and TCP listeners before anything runs |
//! | [`budget`] | one budget for work in flight, in entries and bytes, fair between clients |
//! | [`udp`] | UDP worker threads |
//! | [`tcp`] | DNS over TCP |
//! | [`tcp_pool`] | long-lived, pipelined TCP connections to an upstream |
//! | [`handover`] | steering a reuseport group to a successor instance |
//! | [`forward`] | the forwarding engine: tries, deadline, reply checks |
//! | [`upstream`] | each upstream server's health and statistics |
//! | [`clock`] | the one reading of the clock (tokio's, pausable) |
//! | [`client`] | the one-shot client for control-plane queries |
//! | [`routes`] | longest-suffix routing of names |
//! | [`resolv_conf`] | the `nameserver` lines of resolv.conf |
//! | [`lookup`] | control-plane host-name lookups (hickory-resolver) |

pub mod acl;
pub mod bind;
pub mod budget;
pub mod client;
pub mod clock;
pub mod forward;
pub mod handler;
pub mod handover;
pub mod lookup;
pub mod query_log;
pub mod resolv_conf;
pub mod routes;
pub mod tcp;
pub mod tcp_pool;
pub mod udp;
pub mod upstream;

pub use acl::IpNet;
pub use bind::{
    DnsPort, DnsPortError, bind_dns_port, bind_dns_port_shared, bind_tcp, bind_tcp_shared,
    bind_udp, bind_udp_group, default_workers,
};
pub use budget::{Budget, BudgetLimits, BudgetStats, Charge, Refusal};
pub use client::exchange_udp;
pub use handler::{Fast, MessageStream, PacketHandler, SLOW_QUERY_OVERHEAD, Transport};
pub use lookup::{LookupError, lookup_host};
pub use routes::SuffixRoutes;
pub use tcp::{TCP_IDLE_TIMEOUT, TcpConnections, TcpLimits, serve_tcp};
pub use tcp_pool::{PoolStats, TcpPool};
pub use udp::{UdpMode, UdpStats, UdpWorkers};
