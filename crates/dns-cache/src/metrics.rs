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

use crate::state::CacheState;

/// One unlabelled family: `# HELP`, `# TYPE` and its sample.
fn family(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

/// The exposition text.
pub fn render(state: &CacheState) -> String {
    let mut out = String::with_capacity(2048);
    let s = &state.stats;
    let c = &state.cache.counters;
    let load = |v: &std::sync::atomic::AtomicU64| v.load(Ordering::Relaxed);
    let scalars: [(&str, &str, &str, u64); 11] = [
        (
            "dnscache_hits_total",
            "counter",
            "Queries answered locally (cache, hosts, CHAOS).",
            load(&s.hits),
        ),
        (
            "dnscache_misses_total",
            "counter",
            "Queries forwarded upstream.",
            load(&s.misses),
        ),
        (
            "dnscache_insertions_total",
            "counter",
            "Cache insertions.",
            load(&c.insertions),
        ),
        (
            "dnscache_evictions_total",
            "counter",
            "Live cache entries evicted to make room.",
            load(&c.evictions),
        ),
        (
            "dnscache_coalesced_total",
            "counter",
            "Queries that joined an identical in-flight upstream query.",
            load(&s.coalesced),
        ),
        (
            "dnscache_stale_served_total",
            "counter",
            "Expired entries served while refreshing (--use-stale-cache).",
            load(&s.stale_served),
        ),
        (
            "dnscache_negative_dropped_total",
            "counter",
            "Negative answers dropped because their zone's SOA serial changed (--watch-soa).",
            load(&s.negative_dropped),
        ),
        (
            "dnscache_refused_over_limit_total",
            "counter",
            "Queries refused over --dns-forward-max.",
            load(&s.refused_over_limit),
        ),
        (
            "dnscache_servfail_total",
            "counter",
            "Queries answered SERVFAIL because no upstream answered.",
            load(&s.servfail),
        ),
        (
            "dnscache_entries",
            "gauge",
            "Entries in the cache.",
            state.cache.len() as u64,
        ),
        (
            "dnscache_size",
            "gauge",
            "Configured cache size (--cache-size).",
            state.cache.capacity as u64,
        ),
    ];
    for (name, kind, help, value) in scalars {
        family(&mut out, name, kind, help, value);
    }
    let upstreams = state.routes.load().distinct_upstreams();
    dns_transport::upstream::render_metrics("dnscache", &upstreams, &mut out);
    state.http.render("dnscache", &mut out);
    state.tcp.render("dnscache", "tcp", &mut out);
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
        .route("/healthz", get(|| async { "ok\n" }));
    let http_stats = state.http.clone();
    let router = router.with_state(state);
    daemon_support::serve_http(
        listener,
        router,
        daemon_support::HttpLimits::default(),
        http_stats,
        shutdown,
        "metrics",
    )
    .await;
}
