//! The kube-dns sidecar (contract §4): DNS probes of the resolver and the cache behind
//! `/healthcheck/<label>` (the pod's liveness probes), and the cache's CHAOS TXT statistics as
//! Prometheus counters.

pub mod cli;
pub mod http;
pub mod metrics;
pub mod probe;
pub mod stats;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cli::Cli;
use crate::metrics::Metrics;
use crate::probe::Probe;

/// Binds the HTTP listener (port 0 picks a free one).
pub async fn bind(cli: &Cli) -> anyhow::Result<TcpListener> {
    let addr = SocketAddr::new(cli.prometheus_addr, cli.prometheus_port);
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (--prometheus-addr/--prometheus-port)"))
}

/// Runs the probes, the statistics poller and the HTTP server until `shutdown`.
pub async fn run(
    cli: Cli,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new(&cli.prometheus_namespace).context("registering metrics")?);
    let mut probes = Vec::with_capacity(cli.probe.len());
    for spec in &cli.probe {
        let probe_metrics = metrics
            .probe(&spec.label)
            .with_context(|| format!("registering the metrics of probe {:?}", spec.label))?;
        probes.push(Arc::new(Probe::new(spec.clone(), probe_metrics)));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for probe in &probes {
        tracing::info!(probe = %probe.spec.label, server = %probe.spec.server, name = %probe.spec.name, rtype = %probe.spec.rtype, interval = ?probe.spec.interval, "probing");
        tasks.spawn(probe.clone().run(shutdown.clone()));
    }
    let cache = SocketAddr::new(cli.dnsmasq_addr, cli.dnsmasq_port);
    match cli.poll_interval() {
        Some(interval) => {
            tracing::info!(%cache, ?interval, "polling cache statistics");
            tasks.spawn(stats::run(
                cache,
                interval,
                metrics.clone(),
                shutdown.clone(),
            ));
        }
        None => tracing::info!("cache statistics polling off (--dnsmasq-poll-interval-ms=0)"),
    }
    tracing::info!("listening on http {}", listener.local_addr()?);
    let http_stats = Arc::new(daemon_support::HttpStats::default());
    let router = http::router(&probes, metrics, http_stats.clone(), &cli.prometheus_path);
    daemon_support::serve_http(
        listener,
        router,
        daemon_support::HttpLimits::default(),
        http_stats,
        shutdown.clone(),
        "HTTP",
    )
    .await;
    shutdown.cancel();
    while tasks.join_next().await.is_some() {}
    Ok(())
}
