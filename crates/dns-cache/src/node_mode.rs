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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

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
    let setup = NodeSetup::new(spec)?;
    let found = match setup.ensure(true) {
        Ok(found) => found,
        Err(error) => {
            // Half a set-up (an address without rules, rules without a listener) must not stay.
            finish(&setup, config.skip_teardown);
            return Err(error);
        }
    };
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
        // A check that is running when the stop comes is waited for (its tools are bounded by
        // node_local::netfilter::TOOL_TIMEOUT), and the teardown takes the set-up's lock after
        // it: nothing is put back once removed.
        let checked = tokio::task::spawn_blocking(move || checking.ensure(false)).await;
        match checked {
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

/// One reuseport group of ours: a duplicate of one of its sockets, how many of the group's
/// sockets are ours, and what to count it by.
#[derive(Debug)]
struct Group {
    fd: OwnedFd,
    own: u32,
    addr: SocketAddr,
    tcp: bool,
}

/// The listening sockets' reuseport groups, kept to steer them to a successor on SIGTERM.
///
/// The group numbers its sockets in the order they joined. An instance that has been alone in
/// its first group since it started ([`OldestWatch`]) is the oldest: the other sockets are a
/// successor's, past its own. One that has not is a newer instance stopped while an older one
/// still runs (a rollback): the other sockets are the older one's, before its own.
#[derive(Debug)]
pub struct Handover {
    groups: Vec<Group>,
    oldest: Arc<AtomicBool>,
}

impl Handover {
    /// Records the UDP sockets (grouped by address) and the TCP listeners, and takes off any
    /// program a predecessor left on their groups.
    pub fn new(
        udp: &[std::net::UdpSocket],
        tcp: &[std::net::TcpListener],
        metrics: Option<&std::net::TcpListener>,
    ) -> std::io::Result<Self> {
        let mut groups: Vec<Group> = Vec::new();
        for socket in udp {
            let addr = socket.local_addr()?;
            match groups.iter_mut().find(|g| g.addr == addr) {
                Some(group) => group.own += 1,
                None => groups.push(Group {
                    fd: socket.as_fd().try_clone_to_owned()?,
                    own: 1,
                    addr,
                    tcp: false,
                }),
            }
        }
        for listener in tcp.iter().chain(metrics) {
            groups.push(Group {
                fd: listener.as_fd().try_clone_to_owned()?,
                own: 1,
                addr: listener.local_addr()?,
                tcp: true,
            });
        }
        for group in &groups {
            if let Err(error) = dns_transport::handover::reset_steering(&group.fd) {
                tracing::warn!(%error, addr = %group.addr, "node-local: cannot reset a socket group's steering");
            }
        }
        let handover = Handover {
            groups,
            oldest: Arc::default(),
        };
        handover.watcher().check();
        Ok(handover)
    }

    /// What [`watch_oldest`] needs: the first group's address and our count, and the flag.
    pub fn watcher(&self) -> OldestWatch {
        OldestWatch {
            first: self.groups.first().map(|g| (g.addr, g.own, g.tcp)),
            oldest: self.oldest.clone(),
        }
    }

    fn check_oldest(&self) -> bool {
        self.watcher().check()
    }

    /// Duplicates of one socket per group, for [`watch_oldest`] to take off the program a
    /// predecessor leaves behind when it goes (it pinned the group to one socket).
    pub fn group_fds(&self) -> Vec<OwnedFd> {
        self.groups
            .iter()
            .filter_map(|g| g.fd.try_clone().ok())
            .collect()
    }

    /// At SIGTERM, sends every group's new packets and connections to the other instance's
    /// sockets, spread over them: the successor's when this is the oldest instance, else (a
    /// newer instance stopped first, a rollback) the older one's.
    pub fn steer(&self) {
        let oldest = self.check_oldest();
        for group in &self.groups {
            let Some(theirs) = theirs(group.addr, group.own, group.tcp).filter(|&n| n > 0) else {
                continue;
            };
            let (steered, to) = if oldest {
                (
                    dns_transport::handover::steer_to_successor(&group.fd, group.own, theirs),
                    "the successor",
                )
            } else {
                (
                    dns_transport::handover::steer_to_predecessor(&group.fd, theirs),
                    "the older instance",
                )
            };
            match steered {
                Ok(()) => {
                    tracing::info!(addr = %group.addr, theirs, to, "node-local: new packets go to the other instance")
                }
                Err(error) => {
                    tracing::warn!(%error, "node-local: cannot steer a socket group to the other instance")
                }
            }
        }
    }

    /// Pins every group to one socket of the other instance (one that does not move while
    /// ours close one by one); the duplicates go with `self` (they must not keep a socket open
    /// once its worker stops).
    pub fn pin(self) {
        let oldest = self.oldest.load(Ordering::Relaxed);
        for group in &self.groups {
            if theirs(group.addr, group.own, group.tcp).is_none_or(|n| n == 0) {
                continue;
            }
            let pinned = if oldest {
                dns_transport::handover::pin_to_successor(&group.fd, group.own)
            } else {
                dns_transport::handover::pin_to_predecessor(&group.fd)
            };
            if let Err(error) = pinned {
                tracing::warn!(%error, "node-local: cannot pin a socket group to the other instance");
            }
        }
    }
}

/// A group's sockets that are not ours (None when /proc cannot tell).
fn theirs(addr: SocketAddr, own: u32, tcp: bool) -> Option<u32> {
    let total = dns_transport::handover::group_size(addr, tcp).ok()?;
    Some((total as u32).saturating_sub(own))
}

/// Whether this instance is the oldest one: it has been alone in its first DNS group at some
/// point since it started (its predecessor, if any, has left).
#[derive(Debug, Clone)]
pub struct OldestWatch {
    first: Option<(SocketAddr, u32, bool)>,
    oldest: Arc<AtomicBool>,
}

impl OldestWatch {
    pub fn check(&self) -> bool {
        if self.oldest.load(Ordering::Relaxed) {
            return true;
        }
        let alone = self
            .first
            .is_some_and(|(addr, own, tcp)| theirs(addr, own, tcp) == Some(0));
        if alone {
            self.oldest.store(true, Ordering::Relaxed);
        }
        alone
    }
}

/// Notes when this instance becomes the oldest (its predecessor gone), every second until
/// then or `stop`; then takes the predecessor's program off the groups (`groups`, dropped at
/// once after: they must not keep a socket open).
pub async fn watch_oldest(watch: OldestWatch, groups: Vec<OwnedFd>, stop: CancellationToken) {
    while !watch.check() {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        }
    }
    for fd in &groups {
        if let Err(error) = dns_transport::handover::reset_steering(fd) {
            tracing::warn!(%error, "node-local: cannot reset a socket group's steering");
        }
    }
    tracing::info!("node-local: alone on the port; a successor will get the handover");
}

/// After the sockets are closed: removes the set-up unless `--skip-teardown` or a successor
/// holds the port.
pub fn finish(setup: &NodeSetup, skip_teardown: bool) {
    if skip_teardown {
        tracing::info!("node-local: leaving the interface and rules in place (--skip-teardown)");
        return;
    }
    if let Some(why) = setup.successor() {
        tracing::info!(
            why,
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
    type Value = fn(&dns_transport::PoolStats) -> i64;
    let families: [(&str, &str, &str, Value); 2] = [
        (
            "dnscache_tcp_pool_connections",
            "gauge",
            "Open pooled TCP connections to a --tcp-upstream server.",
            |s| s.open.load(Ordering::Relaxed),
        ),
        (
            "dnscache_tcp_pool_connects_total",
            "counter",
            "Pooled TCP connections opened to a --tcp-upstream server.",
            |s| s.connects.load(Ordering::Relaxed) as i64,
        ),
    ];
    for (name, kind, help, value) in families {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
        for (addr, stats) in &pooled {
            let _ = writeln!(out, "{name}{{server=\"{addr}\"}} {}", value(stats));
        }
    }
}
