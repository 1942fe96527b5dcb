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

use std::fs::File;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

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
    /// `--handover-lock`: a file every instance on the node holds shared; only the last one
    /// out (who can take it exclusively) tears down.
    pub lock: Option<PathBuf>,
}

/// Why set-up failed.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Interface(#[from] interface::InterfaceError),
    #[error("cannot take --handover-lock {path}: {source}")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
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

/// The shared lock of `--handover-lock`, held from before the set-up until the process exits.
/// A starting instance holds it before it touches anything, so an exiting one that cannot
/// take it exclusively knows another instance is there (or coming), even before that one has
/// bound a socket.
#[derive(Debug)]
pub struct HandoverLock {
    file: File,
}

impl HandoverLock {
    /// Takes the lock shared (waiting while an exiting instance holds it exclusively for its
    /// teardown), creating the file and its directory.
    pub fn acquire(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        match file.try_lock_shared() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                tracing::info!(path = %path.display(), "an exiting instance is tearing down; waiting for the handover lock");
                file.lock_shared()?;
            }
            Err(std::fs::TryLockError::Error(error)) => return Err(error),
        }
        Ok(HandoverLock { file })
    }

    /// Whether this is the last instance: the lock can be taken exclusively (it is then held
    /// until the process exits, so a new instance waits for the teardown to finish).
    ///
    /// Linux converts a shared flock to an exclusive one by dropping it first: when the
    /// conversion fails this instance holds no lock any more. That is what it wants at exit,
    /// and it is why two instances exiting at once end with exactly one teardown.
    pub fn last_out(&self) -> bool {
        match self.file.try_lock() {
            Ok(()) => true,
            Err(std::fs::TryLockError::WouldBlock) => false,
            Err(std::fs::TryLockError::Error(error)) => {
                tracing::warn!(%error, "cannot check the handover lock; assuming another instance");
                false
            }
        }
    }
}

/// The interface and rules of one node-local instance.
#[derive(Debug)]
pub struct NodeSetup {
    pub spec: NodeLocalSpec,
    pub rules: Option<Rules>,
    lock: Option<HandoverLock>,
    /// One ensure or teardown at a time: a check still running when the process stops must
    /// not put back what the teardown removed.
    busy: std::sync::Mutex<()>,
}

impl NodeSetup {
    /// Takes the handover lock, then picks the rules' backend (detected for
    /// `--netfilter=auto`).
    pub fn new(spec: NodeLocalSpec) -> Result<Self, SetupError> {
        let lock = match &spec.lock {
            Some(path) => Some(
                HandoverLock::acquire(path).map_err(|source| SetupError::Lock {
                    path: path.clone(),
                    source,
                })?,
            ),
            None => None,
        };
        let rules = netfilter::detect(spec.netfilter, &spec.tools).map(|backend| Rules {
            backend,
            ips: spec.ips.clone(),
            port: spec.port,
            tools: spec.tools.clone(),
        });
        Ok(NodeSetup {
            spec,
            rules,
            lock,
            busy: std::sync::Mutex::new(()),
        })
    }

    pub fn backend(&self) -> Option<Backend> {
        self.rules.as_ref().map(|r| r.backend)
    }

    /// Makes sure everything is in place; says what was missing. The first call at start-up
    /// finds everything missing (or left by a predecessor); later calls restore what something
    /// deleted.
    ///
    /// `prune` (at start only) also removes what an earlier `--local-ip` left: addresses on
    /// our dummy link and nftables rules of addresses no longer ours. The periodic checks do
    /// not, so two instances with different addresses side by side during a rollout do not
    /// undo each other.
    pub fn ensure(&self, prune: bool) -> Result<Restored, SetupError> {
        let _busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        let changes = interface::ensure(&self.spec.interface, &self.spec.ips, prune)?;
        let rules = match &self.rules {
            Some(rules) => rules.ensure(prune).map_err(|source| SetupError::Rules {
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
        let _busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
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

    /// Whether another instance is there, and how it shows: it holds the handover lock, or
    /// the DNS port on one of our addresses (a successor that took the sockets over). Call
    /// after closing our own sockets.
    pub fn successor(&self) -> Option<&'static str> {
        if let Some(lock) = &self.lock
            && !lock.last_out()
        {
            return Some("another instance holds the handover lock");
        }
        self.spec
            .ips
            .iter()
            .any(|ip| successor_holds(SocketAddr::new(*ip, self.spec.port)))
            .then_some("another socket holds the port")
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
    fn only_the_last_holder_of_the_handover_lock_is_last_out() -> std::io::Result<()> {
        let dir = std::env::temp_dir().join(format!("node-local-lock-{}", std::process::id()));
        let path = dir.join("sub").join("lock");
        let first = HandoverLock::acquire(&path)?;
        let second = HandoverLock::acquire(&path)?;
        assert!(!first.last_out(), "the second instance holds it too");
        drop(second);
        assert!(first.last_out());
        // The exclusive lock is kept: a new instance waits for the teardown.
        let third = File::options().write(true).open(&path)?;
        assert!(matches!(
            third.try_lock_shared(),
            Err(std::fs::TryLockError::WouldBlock)
        ));
        drop(first);
        third.try_lock_shared().map_err(std::io::Error::other)?;
        let _ = std::fs::remove_dir_all(dir);
        Ok(())
    }

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
