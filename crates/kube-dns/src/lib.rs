//! kube-dns: watches the Kubernetes API and answers the cluster zone.
//!
//! [`run`] takes parsed flags, already-bound [`Listeners`] and an API client, so tests start it
//! in-process on port 0; `main.rs` only parses, binds, and maps errors to exit codes.

pub mod cli;
pub mod config_source;
pub mod forward;
pub mod http;
pub mod memory;
pub mod metrics;
pub mod server;
pub mod state;
pub mod watch;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use kube_dns_core::{ClusterSnapshot, SnapshotBuilder, ZoneSettings};
use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, MetricsEnv};
use crate::forward::{ForwardPolicy, Forwarding};
use crate::metrics::Metrics;
use crate::state::ServerState;
use crate::watch::{SyncTracker, Watches};

/// Why the server could not start or stopped abnormally.
#[derive(Debug, Error)]
pub enum RunError {
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot build the Kubernetes client: {0}")]
    Client(String),
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("invalid --federations: {0}")]
    Federations(#[source] kube_dns_config::config_map::ConfigError),
    #[error("cannot start a UDP thread: {0}")]
    UdpThread(#[source] io::Error),
}

/// Sockets bound before anything runs (tests bind port 0 and read the ports back).
#[derive(Debug)]
pub struct Listeners {
    pub udp: Vec<std::net::UdpSocket>,
    pub tcp: std::net::TcpListener,
    pub http: std::net::TcpListener,
    pub metrics: Option<std::net::TcpListener>,
}

impl Listeners {
    /// Binds the DNS port (UDP with SO_REUSEPORT, `workers` sockets, and TCP), the HTTP port,
    /// and the metrics port when `PROMETHEUS_PORT` is set.
    pub fn bind(cli: &Cli, env: &MetricsEnv) -> Result<Self, RunError> {
        let addr = SocketAddr::new(cli.dns_bind_address, cli.dns_port);
        let bind_error = |what: &'static str, addr: SocketAddr| {
            move |source: io::Error| RunError::Bind { what, addr, source }
        };
        let workers = dns_transport::default_workers(cli.dns_workers);
        let udp = dns_transport::bind_udp_group(addr, workers)
            .map_err(bind_error("DNS over UDP", addr))?;
        // TCP joins the port UDP got (it may have been 0).
        let addr = udp
            .first()
            .and_then(|s| s.local_addr().ok())
            .unwrap_or(addr);
        let tcp = dns_transport::bind_tcp(addr).map_err(bind_error("DNS over TCP", addr))?;
        let http_addr = SocketAddr::new(cli.healthz_bind_address, cli.healthz_port);
        let http = dns_transport::bind_tcp(http_addr).map_err(bind_error("HTTP", http_addr))?;
        let metrics = match env.port {
            Some(port) => {
                let addr = SocketAddr::new(cli.healthz_bind_address, port);
                Some(dns_transport::bind_tcp(addr).map_err(bind_error("metrics", addr))?)
            }
            None => None,
        };
        Ok(Listeners {
            udp,
            tcp,
            http,
            metrics,
        })
    }
}

/// Builds the API client from `--kubecfg-file`, `--kube-master-url`, else the environment
/// (`$KUBECONFIG`, `~/.kube/config`, then the in-cluster service account).
pub async fn client_from_cli(cli: &Cli) -> Result<kube::Client, RunError> {
    let config = if !cli.kubecfg_file.is_empty() {
        let kubeconfig = kube::config::Kubeconfig::read_from(&cli.kubecfg_file)
            .map_err(|e| RunError::Client(format!("--kubecfg-file {}: {e}", cli.kubecfg_file)))?;
        kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .map_err(|e| RunError::Client(format!("--kubecfg-file {}: {e}", cli.kubecfg_file)))?
    } else if !cli.kube_master_url.is_empty() {
        let url = cli.master_url();
        let uri = url.parse().map_err(|e| {
            RunError::Client(format!("failed to parse kube-master-url {url:?}: {e}"))
        })?;
        kube::Config::new(uri)
    } else {
        kube::Config::infer()
            .await
            .map_err(|e| RunError::Client(e.to_string()))?
    };
    kube::Client::try_from(config).map_err(|e| RunError::Client(e.to_string()))
}

/// Runs kube-dns until `shutdown` is cancelled, then keeps answering DNS for `--lameduck`
/// with readiness failing, and returns.
pub async fn run(
    cli: Cli,
    env: MetricsEnv,
    listeners: Listeners,
    client: kube::Client,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let settings = ZoneSettings::new(&cli.zone(), cli.ttl, cli.pods);
    let builder = SnapshotBuilder::new(settings.clone());
    let metrics = Metrics::new(&env)?;
    let state = Arc::new(ServerState::new(
        ClusterSnapshot::empty(Arc::new(settings)),
        ForwardPolicy::default(),
        Forwarding::new(cli.forward_deadline),
        metrics,
    ));
    let resolv_conf = cli.resolv_conf.clone();
    if cli.config_dir.is_empty() && cli.config_map.is_empty() {
        let config = config_source::static_config(&cli.nameservers, &cli.federations)
            .map_err(RunError::Federations)?;
        config_source::apply_config(&state, &config, &resolv_conf).await;
    }

    // Everything below stops on `stop`, which fires after the lameduck period.
    let stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();

    let mut kinds = vec!["services", watch::ENDPOINTS];
    if cli.pods == kube_dns_core::PodsMode::Verified {
        kinds.push("pods");
    }
    let watches = Watches {
        client: client.clone(),
        state: state.clone(),
        builder: Arc::new(Mutex::new(builder)),
        sync: Arc::new(SyncTracker::new(&kinds)),
    };
    tasks.spawn(watches.clone().services(stop.clone()));
    tasks.spawn(
        watches
            .clone()
            .endpoints_any(cli.watch_endpoints, stop.clone()),
    );
    if cli.pods == kube_dns_core::PodsMode::Verified {
        tasks.spawn(watches.clone().pods(stop.clone()));
    }
    {
        let (sync, timeout, stop) = (watches.sync.clone(), cli.initial_sync_timeout, stop.clone());
        tasks.spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(timeout) => {
                    if !sync.all_synced() {
                        tracing::error!(pending = ?sync.pending(), "Timeout waiting for initialization; still waiting (answering SERVFAIL until synced)");
                    }
                }
            }
        });
    }

    if !cli.config_dir.is_empty() {
        tasks.spawn(config_source::watch_config_dir(
            state.clone(),
            PathBuf::from(&cli.config_dir),
            cli.config_period,
            resolv_conf.clone(),
            stop.clone(),
        ));
    } else if !cli.config_map.is_empty() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tasks.spawn(watch::watch_config_map(
            client.clone(),
            cli.config_map_namespace.clone(),
            cli.config_map.clone(),
            tx,
            stop.clone(),
        ));
        tasks.spawn(config_source::apply_config_map_updates(
            state.clone(),
            rx,
            resolv_conf.clone(),
            stop.clone(),
        ));
    }

    let router = http::router(state.clone(), &env.path);
    let http_listener = to_tokio(listeners.http)?;
    tracing::info!("listening on http {}", local(&http_listener));
    tasks.spawn(daemon_support::serve_http(
        http_listener,
        router.clone(),
        stop.clone(),
        "HTTP",
    ));
    if let Some(listener) = listeners.metrics {
        let listener = to_tokio(listener)?;
        tracing::info!("listening on metrics {}", local(&listener));
        tasks.spawn(daemon_support::serve_http(
            listener,
            router,
            stop.clone(),
            "metrics",
        ));
    }

    let handler = Arc::new(server::DnsHandler {
        state: state.clone(),
        overload_log: daemon_support::Throttle::new(daemon_support::OVERLOAD_LOG_PERIOD),
    });
    let tcp = to_tokio(listeners.tcp)?;
    tracing::info!("listening on tcp {}", local(&tcp));
    tasks.spawn(dns_transport::serve_tcp(tcp, handler.clone(), stop.clone()));
    if let Some(first) = listeners.udp.first() {
        tracing::info!(
            "listening on udp {} ({} sockets)",
            first
                .local_addr()
                .map_or_else(|e| e.to_string(), |a| a.to_string()),
            listeners.udp.len()
        );
    }
    let udp = dns_transport::UdpWorkers::start(
        listeners.udp,
        handler,
        tokio::runtime::Handle::current(),
        server::MAX_SLOW_QUERIES,
        "dns",
    )
    .map_err(RunError::UdpThread)?;

    shutdown.cancelled().await;
    state.enter_lameduck();
    tracing::info!(lameduck = ?cli.lameduck, "shutting down: readiness fails now, DNS keeps answering");
    tokio::time::sleep(cli.lameduck).await;
    stop.cancel();
    udp.stop().await;
    while tasks.join_next().await.is_some() {}
    tracing::info!("stopped");
    Ok(())
}

fn to_tokio(listener: std::net::TcpListener) -> Result<tokio::net::TcpListener, RunError> {
    let addr = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    tokio::net::TcpListener::from_std(listener).map_err(|source| RunError::Bind {
        what: "listener",
        addr,
        source,
    })
}

fn local(listener: &tokio::net::TcpListener) -> String {
    listener
        .local_addr()
        .map_or_else(|e| e.to_string(), |a| a.to_string())
}
