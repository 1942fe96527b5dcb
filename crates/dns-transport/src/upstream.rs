//! One upstream server as every query that uses it sees it: round-trip estimate, what happened
//! to the tries sent to it, and health. A server is marked down only after
//! [`FAILURES_BEFORE_DOWN`] queries in a row got no valid reply from it at all before their
//! deadline; a late reply is an answer (and teaches the round-trip estimate), not a failure.
//!
//! Health times are milliseconds on [`now_ms`], which follows tokio's clock (so a test with a
//! paused clock drives it).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// Consecutive failed queries before a server is marked down.
pub const FAILURES_BEFORE_DOWN: u32 = 3;
/// Backoff of a down server: 1 s doubling to 30 s.
const DOWN_MIN_MS: u64 = 1_000;
const DOWN_MAX_MS: u64 = 30_000;

pub use crate::clock::now_ms;

/// One upstream server and its statistics (shared by every route that names it).
#[derive(Debug)]
pub struct Upstream {
    pub addr: SocketAddr,
    pub weight: u32,
    outstanding: AtomicU32,
    /// Smoothed round-trip time, microseconds (0 = nothing learnt yet).
    srtt_us: AtomicU32,
    consecutive_failures: AtomicU32,
    down_until_ms: AtomicU64,
    /// Disabled by loop detection.
    looping: AtomicBool,
    /// Tries sent (dnsmasq's `queries` in `servers.bind`).
    pub queries: AtomicU64,
    /// Valid replies received (any RCODE).
    pub answered: AtomicU64,
    /// Valid replies that came after their try's timeout had started another try.
    pub late: AtomicU64,
    /// Replies dropped as malformed or not matching the query.
    pub broken: AtomicU64,
    /// Queries that got no valid reply from this server before their deadline (dnsmasq's
    /// `failed queries`).
    pub failures: AtomicU64,
    /// `--tcp-upstream`: asked over these pooled TCP connections instead of UDP.
    pub pool: Option<Arc<crate::tcp_pool::TcpPool>>,
}

impl Upstream {
    pub fn new(addr: SocketAddr, weight: u32) -> Self {
        Upstream {
            addr,
            weight: weight.max(1),
            outstanding: AtomicU32::new(0),
            srtt_us: AtomicU32::new(0),
            consecutive_failures: AtomicU32::new(0),
            down_until_ms: AtomicU64::new(0),
            looping: AtomicBool::new(false),
            queries: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            late: AtomicU64::new(0),
            broken: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            pool: None,
        }
    }

    /// Asked over a pool of `size` long-lived, pipelined TCP connections.
    pub fn with_tcp_pool(mut self, size: usize) -> Self {
        self.pool = Some(Arc::new(crate::tcp_pool::TcpPool::new(self.addr, size)));
        self
    }

    /// Tries waiting on this server now.
    pub fn outstanding(&self) -> u32 {
        self.outstanding.load(Ordering::Relaxed)
    }

    pub fn srtt_us(&self) -> u32 {
        self.srtt_us.load(Ordering::Relaxed)
    }

    pub fn is_up(&self, now_ms: u64) -> bool {
        !self.is_looping() && self.down_until_ms.load(Ordering::Relaxed) <= now_ms
    }

    /// Marks a try sent; the guard ends it.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        self.queries.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// A valid reply after `rtt_us`; `late` when its try's timeout had already passed.
    pub fn answered(&self, rtt_us: u32, late: bool) {
        self.answered.fetch_add(1, Ordering::Relaxed);
        if late {
            self.late.fetch_add(1, Ordering::Relaxed);
        }
        let was_down = self.consecutive_failures.swap(0, Ordering::Relaxed) >= FAILURES_BEFORE_DOWN;
        self.down_until_ms.store(0, Ordering::Relaxed);
        if was_down {
            tracing::info!(server = %self.addr, "upstream answers again; marked up");
        }
        let old = self.srtt_us.load(Ordering::Relaxed);
        let new = if old == 0 {
            rtt_us
        } else {
            ((u64::from(old) * 7 + u64::from(rtt_us)) / 8) as u32
        };
        self.srtt_us.store(new.max(1), Ordering::Relaxed);
    }

    /// A try's timeout passed with no reply: the server takes at least that long for now (the
    /// estimate falls again with the next replies, late ones included).
    pub fn try_timed_out(&self, timeout_us: u32) {
        self.srtt_us.fetch_max(timeout_us.max(1), Ordering::Relaxed);
    }

    /// A reply that was dropped (malformed, or not an answer to what was asked).
    pub fn broken_reply(&self) {
        self.broken.fetch_add(1, Ordering::Relaxed);
    }

    /// A query ended without any valid reply from this server.
    pub fn query_failed(&self, now_ms: u64) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= FAILURES_BEFORE_DOWN {
            let steps = (failures - FAILURES_BEFORE_DOWN).min(5);
            let backoff = (DOWN_MIN_MS << steps).min(DOWN_MAX_MS);
            self.down_until_ms
                .store(now_ms + backoff, Ordering::Relaxed);
            if failures == FAILURES_BEFORE_DOWN {
                tracing::warn!(server = %self.addr, "upstream marked down: {failures} queries in a row got no valid reply before their deadline");
            }
        }
    }

    /// Disables the server for good (a forwarding loop back to us).
    pub fn mark_looping(&self) {
        self.looping.store(true, Ordering::Relaxed);
    }

    pub fn is_looping(&self) -> bool {
        self.looping.load(Ordering::Relaxed)
    }
}

/// Ends an outstanding try when dropped.
#[derive(Debug)]
pub struct InFlight(Arc<Upstream>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Appends Prometheus families for `upstreams` (labelled `server`), named `<prefix>_upstream_*`.
pub fn render_metrics(prefix: &str, upstreams: &[Arc<Upstream>], out: &mut String) {
    use std::fmt::Write as _;
    let now = now_ms();
    type Value = fn(&Upstream, u64) -> String;
    let families: [(&str, &str, &str, Value); 8] = [
        (
            "queries_total",
            "counter",
            "Tries sent to an upstream (a query may send several).",
            |u, _| u.queries.load(Ordering::Relaxed).to_string(),
        ),
        (
            "answered_total",
            "counter",
            "Valid replies from an upstream, any RCODE.",
            |u, _| u.answered.load(Ordering::Relaxed).to_string(),
        ),
        (
            "late_total",
            "counter",
            "Valid replies that came after their try's timeout (used, not failures).",
            |u, _| u.late.load(Ordering::Relaxed).to_string(),
        ),
        (
            "broken_total",
            "counter",
            "Replies dropped as malformed or not matching the query.",
            |u, _| u.broken.load(Ordering::Relaxed).to_string(),
        ),
        (
            "failures_total",
            "counter",
            "Queries that got no valid reply from an upstream before their deadline.",
            |u, _| u.failures.load(Ordering::Relaxed).to_string(),
        ),
        (
            "outstanding",
            "gauge",
            "Tries waiting on an upstream.",
            |u, _| u.outstanding().to_string(),
        ),
        (
            "srtt_seconds",
            "gauge",
            "Smoothed upstream round-trip time.",
            |u, _| format!("{}", f64::from(u.srtt_us()) / 1e6),
        ),
        (
            "up",
            "gauge",
            "0 while an upstream is marked down or disabled by loop detection.",
            |u, now| u8::from(u.is_up(now)).to_string(),
        ),
    ];
    for (suffix, kind, help, value) in families {
        let name = format!("{prefix}_upstream_{suffix}");
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
        for u in upstreams {
            let _ = writeln!(out, "{name}{{server=\"{}\"}} {}", u.addr, value(u, now));
        }
    }
}

/// The servers worth asking, by index: those up, or when none is, every one that does not loop
/// back to us (asking a server believed down beats failing without asking).
pub fn candidates(servers: &[Arc<Upstream>], now_ms: u64) -> Vec<usize> {
    let up: Vec<usize> = (0..servers.len())
        .filter(|&i| servers[i].is_up(now_ms))
        .collect();
    if up.is_empty() {
        (0..servers.len())
            .filter(|&i| !servers[i].is_looping())
            .collect()
    } else {
        up
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream() -> Upstream {
        Upstream::new(SocketAddr::from(([10, 0, 0, 1], 53)), 1)
    }

    #[test]
    fn failed_queries_mark_down_and_an_answer_marks_up() {
        let u = upstream();
        for _ in 0..FAILURES_BEFORE_DOWN - 1 {
            u.query_failed(1_000);
        }
        assert!(u.is_up(1_000));
        u.query_failed(1_000);
        assert!(!u.is_up(1_500));
        assert!(u.is_up(2_000), "back after the backoff");
        u.query_failed(2_000);
        assert!(!u.is_up(3_999), "backoff doubles");
        u.answered(1_000_000, true);
        assert!(u.is_up(2_001));
        assert_eq!(u.late.load(Ordering::Relaxed), 1);
        assert_eq!(u.failures.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn late_replies_teach_the_round_trip() {
        let u = upstream();
        u.answered(2_000, false);
        assert_eq!(u.srtt_us(), 2_000);
        for _ in 0..40 {
            u.answered(1_000_000, true);
        }
        assert!(u.srtt_us() > 900_000, "{}", u.srtt_us());
    }

    #[test]
    fn candidates_skip_down_servers_unless_all_are() {
        let servers: Vec<Arc<Upstream>> = (1..=2)
            .map(|i| Arc::new(Upstream::new(SocketAddr::from(([10, 0, 0, i], 53)), 1)))
            .collect();
        for _ in 0..FAILURES_BEFORE_DOWN {
            servers[0].query_failed(0);
        }
        assert_eq!(candidates(&servers, 10), vec![1]);
        for _ in 0..FAILURES_BEFORE_DOWN {
            servers[1].query_failed(0);
        }
        assert_eq!(candidates(&servers, 10), vec![0, 1]);
        servers[0].mark_looping();
        assert_eq!(candidates(&servers, 10), vec![1]);
    }
}
