//! The node side of a node-local DNS cache: the interface carrying its addresses
//! ([`interface`], over route netlink: [`netlink`]) and the conntrack bypass rules
//! ([`netfilter`]). [`NodeSetup`] puts both in place before the cache binds, checks them
//! periodically (restoring what something deleted), and removes them on exit unless told not
//! to or unless a successor holds the port ([`successor_holds`]).
//!
//! | module | job |
//! |---|---|
//! | [`netlink`] | route-netlink messages and the socket that sends them |
//! | [`interface`] | the dummy or existing interface and its addresses |
//! | [`netfilter`] | NOTRACK/ACCEPT rules through iptables or nftables |

pub mod interface;
pub mod netfilter;
pub mod netlink;

use std::net::{IpAddr, SocketAddr};

pub use interface::{InterfaceKind, InterfaceSpec};
pub use netfilter::{Backend, NetfilterMode, Rules, Tools};

/// What node-local mode is asked to set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLocalSpec {
    /// The addresses to carry and listen on (`--local-ip`).
    pub ips: Vec<IpAddr>,
    /// The DNS port the rules cover.
    pub port: u16,
    pub interface: InterfaceSpec,
    pub netfilter: NetfilterMode,
    pub tools: Tools,
}

/// Why set-up failed.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Interface(#[from] interface::InterfaceError),
    #[error("{backend} rules: {source}")]
    Rules {
        backend: &'static str,
        #[source]
        source: netfilter::NetfilterError,
    },
}

/// What a check had to put back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Restored {
    /// The interface was created, brought up or given an address.
    pub interface: bool,
    /// Rules that were missing.
    pub rules: usize,
}

/// The interface and rules of one node-local instance.
#[derive(Debug)]
pub struct NodeSetup {
    pub spec: NodeLocalSpec,
    pub rules: Option<Rules>,
}

impl NodeSetup {
    /// Picks the rules' backend (detected for `--netfilter=auto`).
    pub fn new(spec: NodeLocalSpec) -> Self {
        let rules = netfilter::detect(spec.netfilter, &spec.tools).map(|backend| Rules {
            backend,
            ips: spec.ips.clone(),
            port: spec.port,
            tools: spec.tools.clone(),
        });
        NodeSetup { spec, rules }
    }

    pub fn backend(&self) -> Option<Backend> {
        self.rules.as_ref().map(|r| r.backend)
    }

    /// Makes sure everything is in place; says what was missing. The first call at start-up
    /// finds everything missing (or left by a predecessor); later calls restore what something
    /// deleted.
    pub fn ensure(&self) -> Result<Restored, SetupError> {
        let changes = interface::ensure(&self.spec.interface, &self.spec.ips)?;
        let rules = match &self.rules {
            Some(rules) => rules.ensure().map_err(|source| SetupError::Rules {
                backend: rules.backend.name(),
                source,
            })?,
            None => 0,
        };
        Ok(Restored {
            interface: changes.any(),
            rules,
        })
    }

    /// Removes the rules and the interface (or its addresses). Both are tried; the first error
    /// is returned.
    pub fn teardown(&self) -> Result<(), SetupError> {
        let rules = match &self.rules {
            Some(rules) => rules.remove().map_err(|source| SetupError::Rules {
                backend: rules.backend.name(),
                source,
            }),
            None => Ok(()),
        };
        let interface = interface::teardown(&self.spec.interface, &self.spec.ips);
        rules?;
        interface?;
        Ok(())
    }

    /// Whether another process holds the DNS port on any of our addresses (a successor that
    /// took the sockets over). Call after closing our own sockets.
    pub fn successor_present(&self) -> bool {
        self.spec
            .ips
            .iter()
            .any(|ip| successor_holds(SocketAddr::new(*ip, self.spec.port)))
    }
}

/// Whether a UDP socket is bound to `addr` by someone else: binding it without SO_REUSEPORT
/// fails with EADDRINUSE while any socket holds it.
pub fn successor_holds(addr: SocketAddr) -> bool {
    matches!(
        std::net::UdpSocket::bind(addr),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_port_is_seen_and_a_free_one_is_not() -> std::io::Result<()> {
        let held = dns_reuseport_socket()?;
        let addr = held.local_addr()?;
        assert!(successor_holds(addr));
        drop(held);
        assert!(!successor_holds(addr));
        Ok(())
    }

    fn dns_reuseport_socket() -> std::io::Result<std::net::UdpSocket> {
        let socket = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )?;
        socket.set_reuse_port(true)?;
        socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
        Ok(socket.into())
    }
}
