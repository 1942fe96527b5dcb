//! Node-local mode (`--node-local`): the cache as the node's DNS, in place of NodeLocal
//! DNSCache.
//!
//! - Before binding, [`prepare`] puts the interface, its addresses and the conntrack bypass
//!   rules in place ([`node_local::NodeSetup`]).
//! - While serving, [`keep`] checks them every `--node-sync-interval` and restores what
//!   something deleted (counted in `dnscache_node_local_restored_total`).
//! - On SIGTERM, [`Handover::steer`] sends new packets and connections to a successor that
//!   joined the sockets' reuseport groups, so this instance only drains during the lameduck.
//! - On exit, [`finish`] removes the rules and interface, unless `--skip-teardown` or a
//!   successor holds the port (a rolling update): then they stay for it.

use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use node_local::{NodeSetup, SetupError};
use tokio_util::sync::CancellationToken;

use crate::state::CacheState;

/// What the periodic checks found (metrics).
#[derive(Debug, Default)]
pub struct NodeLocalStats {
    /// Checks that had to create the interface, bring it up or add an address.
    pub restored_interface: AtomicU64,
    /// Rules found missing and put back.
    pub restored_rules: AtomicU64,
    /// Checks that failed (the error is logged).
    pub check_errors: AtomicU64,
}

/// Sets up the interface and rules (before the sockets are bound on the addresses).
pub fn prepare(config: &crate::CacheConfig) -> Result<Option<Arc<NodeSetup>>, SetupError> {
    let Some(spec) = config.node_local_spec() else {
        return Ok(None);
    };
    let setup = NodeSetup::new(spec);
    let found = setup.ensure()?;
    tracing::info!(
        interface = setup.spec.interface.name,
        addresses = ?setup.spec.ips,
        rules = setup.backend().map_or("none", |b| b.name()),
        created_interface = found.interface,
        rules_added = found.rules,
        "node-local: interface and conntrack bypass rules in place"
    );
    Ok(Some(Arc::new(setup)))
}

/// Checks the set-up every `--node-sync-interval` until `stop`.
pub async fn keep(state: Arc<CacheState>, setup: Arc<NodeSetup>, stop: CancellationToken) {
    let interval = state.config.node_sync_interval;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        let checking = setup.clone();
        let stats = &state.node_local_stats;
        match tokio::task::spawn_blocking(move || checking.ensure()).await {
            Ok(Ok(restored)) => {
                if restored.interface {
                    stats.restored_interface.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        interface = setup.spec.interface.name,
                        "node-local: the interface or an address was missing; restored"
                    );
                }
                if restored.rules > 0 {
                    stats
                        .restored_rules
                        .fetch_add(restored.rules as u64, Ordering::Relaxed);
                    tracing::warn!(
                        missing = restored.rules,
                        "node-local: conntrack bypass rules were missing; restored"
                    );
                }
            }
            Ok(Err(error)) => {
                stats.check_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(%error, "node-local: cannot check the interface and rules");
            }
            Err(error) => {
                stats.check_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(%error, "node-local: the check panicked");
            }
        }
    }
}

/// The listening sockets' reuseport groups, kept to steer them on SIGTERM: a duplicate of one
/// socket per group and how many sockets of ours the group holds.
#[derive(Debug, Default)]
pub struct Handover {
    groups: Vec<(OwnedFd, u32)>,
}

impl Handover {
    /// Records the UDP sockets (grouped by address) and the TCP listeners.
    pub fn new(
        udp: &[std::net::UdpSocket],
        tcp: &[std::net::TcpListener],
        metrics: Option<&std::net::TcpListener>,
    ) -> std::io::Result<Self> {
        let mut by_addr: Vec<(SocketAddr, OwnedFd, u32)> = Vec::new();
        for socket in udp {
            let addr = socket.local_addr()?;
            match by_addr.iter_mut().find(|(a, ..)| *a == addr) {
                Some((_, _, n)) => *n += 1,
                None => by_addr.push((addr, socket.as_fd().try_clone_to_owned()?, 1)),
            }
        }
        let mut groups: Vec<(OwnedFd, u32)> =
            by_addr.into_iter().map(|(_, fd, n)| (fd, n)).collect();
        for listener in tcp.iter().chain(metrics) {
            groups.push((listener.as_fd().try_clone_to_owned()?, 1));
        }
        Ok(Handover { groups })
    }

    /// Sends every group's new packets and connections to the sockets that joined after ours
    /// (at SIGTERM).
    pub fn steer(&self) {
        for (fd, own) in &self.groups {
            if let Err(error) = dns_transport::handover::steer_to_successor(fd, *own) {
                tracing::warn!(%error, "node-local: cannot steer a socket group to a successor");
            }
        }
    }

    /// Pins every group to the successor's first socket, before our sockets close one by one.
    pub fn pin(&self) {
        for (fd, own) in &self.groups {
            if let Err(error) = dns_transport::handover::pin_to_successor(fd, *own) {
                tracing::warn!(%error, "node-local: cannot pin a socket group to a successor");
            }
        }
    }
}

/// After the sockets are closed: removes the set-up unless `--skip-teardown` or a successor
/// holds the port.
pub fn finish(setup: &NodeSetup, skip_teardown: bool) {
    if skip_teardown {
        tracing::info!("node-local: leaving the interface and rules in place (--skip-teardown)");
        return;
    }
    if setup.successor_present() {
        tracing::info!(
            "node-local: a successor holds the port; leaving the interface and rules to it"
        );
        return;
    }
    match setup.teardown() {
        Ok(()) => tracing::info!("node-local: interface and rules removed"),
        Err(error) => tracing::error!(%error, "node-local: cannot remove the interface and rules"),
    }
}

/// The metrics of node-local mode and of the pooled TCP upstreams.
pub fn render_metrics(state: &CacheState, out: &mut String) {
    use std::fmt::Write as _;
    let s = &state.node_local_stats;
    let _ = write!(
        out,
        "# HELP dnscache_node_local_restored_total Node-local checks that found the interface (or an address) or rules missing and restored them.\n# TYPE dnscache_node_local_restored_total counter\n"
    );
    for (what, value) in [
        ("interface", &s.restored_interface),
        ("rules", &s.restored_rules),
    ] {
        let _ = writeln!(
            out,
            "dnscache_node_local_restored_total{{what=\"{what}\"}} {}",
            value.load(Ordering::Relaxed)
        );
    }
    daemon_support::prom::family(
        out,
        "dnscache_node_local_check_errors_total",
        "counter",
        "Node-local checks that failed (logged).",
        s.check_errors.load(Ordering::Relaxed),
    );
    let upstreams = state.routes.load().distinct_upstreams();
    let pooled: Vec<_> = upstreams
        .iter()
        .filter_map(|u| u.pool.as_ref().map(|p| (u.addr, p.stats.clone())))
        .collect();
    let _ = write!(
        out,
        "# HELP dnscache_tcp_pool_connections Open pooled TCP connections to a --tcp-upstream server.\n# TYPE dnscache_tcp_pool_connections gauge\n"
    );
    for (addr, stats) in &pooled {
        let _ = writeln!(
            out,
            "dnscache_tcp_pool_connections{{server=\"{addr}\"}} {}",
            stats.open.load(Ordering::Relaxed)
        );
    }
    let _ = write!(
        out,
        "# HELP dnscache_tcp_pool_connects_total Pooled TCP connections opened to a --tcp-upstream server.\n# TYPE dnscache_tcp_pool_connects_total counter\n"
    );
    for (addr, stats) in &pooled {
        let _ = writeln!(
            out,
            "dnscache_tcp_pool_connects_total{{server=\"{addr}\"}} {}",
            stats.connects.load(Ordering::Relaxed)
        );
    }
}
