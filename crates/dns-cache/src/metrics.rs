//! Prometheus metrics on `--metrics-address`, rendered from the same counters the CHAOS
//! statistics report (the set is small and fixed, so the text format is written directly).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::state::CacheState;

use daemon_support::prom::family;

/// The exposition text.
pub fn render(state: &CacheState) -> String {
    let mut out = String::with_capacity(2048);
    let s = &state.stats;
    let c = &state.cache.counters;
    let load = |v: &std::sync::atomic::AtomicU64| v.load(Ordering::Relaxed);
    let scalars: [(&str, &str, &str, u64); 15] = [
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
            "dnscache_coalesce_refused_total",
            "counter",
            "Queries refused because their question already had --max-coalesced waiters.",
            load(&s.coalesce_refused),
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
        (
            "dnscache_cache_bytes",
            "gauge",
            "What the cache's entries cost against --cache-max-bytes (answers, names, bookkeeping).",
            state.cache.bytes() as u64,
        ),
        (
            "dnscache_cache_max_bytes",
            "gauge",
            "Configured cache byte ceiling (--cache-max-bytes).",
            state.cache.limits.max_bytes as u64,
        ),
        (
            "dnscache_not_cached_too_large_total",
            "counter",
            "Answers served but not cached: over --cache-max-answer.",
            load(&c.too_large),
        ),
    ];
    for (name, kind, help, value) in scalars {
        family(&mut out, name, kind, help, value);
    }
    out.push_str("# HELP dnscache_policy_answers_total Answers decided or changed by an answer-policy option (--address, --domain-needed, --bogus-priv, --stop-dns-rebind, --filter-A, --filter-AAAA, --ipv4-only, --ipv6-only).\n# TYPE dnscache_policy_answers_total counter\n");
    for (option, count) in state.policy.counters.by_option() {
        out.push_str(&format!(
            "dnscache_policy_answers_total{{option=\"{option}\"}} {count}\n"
        ));
    }
    crate::secondary::render_metrics(&state.secondaries, state.now_ms(), &mut out);
    crate::node_mode::render_metrics(state, &mut out);
    state.query_log_stats.render("dnscache", &mut out);
    let upstreams = state.routes.load().distinct_upstreams();
    dns_transport::upstream::render_metrics("dnscache", &upstreams, &mut out);
    state.http.render("dnscache", &mut out);
    state.tcp.render("dnscache", "tcp", &mut out);
    state.budget.stats.render("dnscache", &mut out);
    state.udp.render("dnscache", &mut out);
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
        .route(
            "/healthz",
            get(|State(state): State<Arc<CacheState>>| async move {
                if state.lameduck.load(Ordering::Relaxed) {
                    (StatusCode::SERVICE_UNAVAILABLE, "lameduck\n")
                } else {
                    (StatusCode::OK, "ok\n")
                }
            }),
        );
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
