//! Prometheus metrics on `--metrics-address`, rendered from the same counters the CHAOS
//! statistics report (the set is small and fixed, so the text format is written directly).

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::handler::CacheState;

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
    );
}

fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}

/// The exposition text.
pub fn render(state: &CacheState) -> String {
    let mut out = String::with_capacity(2048);
    let s = &state.stats;
    let c = &state.cache.counters;
    counter(
        &mut out,
        "dnscache_hits_total",
        "Queries answered locally (cache, hosts, CHAOS).",
        s.hits.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "dnscache_misses_total",
        "Queries forwarded upstream.",
        s.misses.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "dnscache_insertions_total",
        "Cache insertions.",
        c.insertions.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "dnscache_evictions_total",
        "Live cache entries evicted to make room.",
        c.evictions.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "dnscache_coalesced_total",
        "Queries that joined an identical in-flight upstream query.",
        s.coalesced.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "dnscache_stale_served_total",
        "Expired entries served while refreshing (--use-stale-cache).",
        s.stale_served.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "dnscache_negative_dropped_total",
        "Negative answers dropped because their zone's SOA serial changed (--watch-soa).",
        s.negative_dropped.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "dnscache_refused_over_limit_total",
        "Queries refused over --dns-forward-max.",
        s.refused_over_limit.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "dnscache_servfail_total",
        "Queries answered SERVFAIL because no upstream answered.",
        s.servfail.load(Ordering::Relaxed),
    );
    gauge(
        &mut out,
        "dnscache_entries",
        "Entries in the cache.",
        state.cache.len() as u64,
    );
    gauge(
        &mut out,
        "dnscache_size",
        "Configured cache size (--cache-size).",
        state.cache.capacity as u64,
    );
    let upstreams = state.routes.load().distinct_upstreams();
    let mut families = [
        (
            "dnscache_upstream_queries_total",
            "counter",
            "Queries sent to an upstream.",
            String::new(),
        ),
        (
            "dnscache_upstream_failures_total",
            "counter",
            "Upstream exchanges that failed.",
            String::new(),
        ),
        (
            "dnscache_upstream_outstanding",
            "gauge",
            "Queries waiting on an upstream.",
            String::new(),
        ),
        (
            "dnscache_upstream_srtt_seconds",
            "gauge",
            "Smoothed upstream round-trip time.",
            String::new(),
        ),
        (
            "dnscache_upstream_up",
            "gauge",
            "0 while an upstream is disabled by loop detection.",
            String::new(),
        ),
    ];
    for u in &upstreams {
        let label = format!("{{server=\"{}\"}}", u.addr);
        let values = [
            u.queries.load(Ordering::Relaxed).to_string(),
            u.failures.load(Ordering::Relaxed).to_string(),
            u.outstanding().to_string(),
            format!("{}", f64::from(u.srtt_us()) / 1e6),
            u8::from(!u.is_looping()).to_string(),
        ];
        for (family, value) in families.iter_mut().zip(values) {
            let _ = writeln!(family.3, "{}{label} {value}", family.0);
        }
    }
    for (name, kind, help, lines) in families {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{lines}");
    }
    out
}

/// Serves `/metrics` (and `/healthz`) until `shutdown`.
pub async fn serve(listener: TcpListener, state: Arc<CacheState>, shutdown: CancellationToken) {
    let router = Router::new()
        .route(
            "/metrics",
            get(|State(state): State<Arc<CacheState>>| async move {
                daemon_support::metrics_response(render(&state))
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(state);
    daemon_support::serve_http(listener, router, shutdown, "metrics").await;
}
