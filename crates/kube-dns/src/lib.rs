//! kube-dns: watches the Kubernetes API and answers the cluster zone.
//!
//! [`run`] takes a validated [`Config`], already-bound [`Listeners`] and an API client, so tests
//! start it in-process on port 0; `main.rs` only parses, binds, and maps errors to exit codes.

pub mod cli;
pub mod config;
pub mod config_source;
pub mod forward;
pub mod http;
pub mod memory;
pub mod metrics;
pub mod namespace_stats;
pub mod saved_zone;
pub mod server;
pub mod state;
pub mod transfer;
pub mod watch;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use kube_dns_core::{ClusterSnapshot, SnapshotBuilder};
use thiserror::Error;
use tokio_util::sync::CancellationToken;

pub use crate::config::{ApiSource, Config, ConfigSource, ListenConfig};
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
    #[error(transparent)]
    DnsPort(#[from] dns_transport::DnsPortError),
    #[error("cannot build the Kubernetes client: {0}")]
    Client(#[from] ClientError),
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot start a UDP thread: {0}")]
    UdpThread(#[source] io::Error),
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] io::Error),
}

/// Why the API client could not be built; none of these is retried (the flags or the pod's
/// service account are wrong).
#[derive(Debug, Error)]
pub enum ClientError {
    #[error("--kubecfg-file {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("failed to parse kube-master-url {url:?}: {source}")]
    MasterUrl {
        url: String,
        #[source]
        source: axum::http::uri::InvalidUri,
    },
    #[error("no kubeconfig and not in a cluster: {0}")]
    Infer(#[source] kube::config::InferConfigError),
    #[error(transparent)]
    Build(#[from] kube::Error),
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
    pub fn bind(listen: &ListenConfig) -> Result<Self, RunError> {
        let bind_error = |what: &'static str, addr: SocketAddr| {
            move |source: io::Error| RunError::Bind { what, addr, source }
        };
        let workers = dns_transport::default_workers(listen.dns_workers);
        let dns_transport::DnsPort { udp, tcp } =
            dns_transport::bind_dns_port(listen.dns, workers)?;
        let http = dns_transport::bind_tcp(listen.http).map_err(bind_error("HTTP", listen.http))?;
        let metrics = match listen.metrics {
            Some(addr) => Some(dns_transport::bind_tcp(addr).map_err(bind_error("metrics", addr))?),
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
pub async fn api_client(api: &ApiSource) -> Result<kube::Client, ClientError> {
    let config = match api {
        ApiSource::Kubeconfig(path) => {
            let kubeconfig_error = |source| ClientError::Kubeconfig {
                path: path.clone(),
                source,
            };
            let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(kubeconfig_error)?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .map_err(kubeconfig_error)?
        }
        ApiSource::MasterUrl(url) => {
            let uri = url.parse().map_err(|source| ClientError::MasterUrl {
                url: url.clone(),
                source,
            })?;
            kube::Config::new(uri)
        }
        ApiSource::Infer => kube::Config::infer().await.map_err(ClientError::Infer)?,
    };
    Ok(kube::Client::try_from(config)?)
}

/// Runs kube-dns until `shutdown` is cancelled, then keeps answering DNS for `--lameduck`
/// with readiness failing, and returns.
pub async fn run(
    config: Config,
    listeners: Listeners,
    client: kube::Client,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let metrics = Metrics::new(&config.metrics)?;
    // The last good zone, when one is saved: answered at once, replaced once the API's data
    // is in (the watches relist over it, so nothing disappears in between).
    let saved = config
        .saved_zone
        .as_ref()
        .and_then(|saved| saved_zone::load(saved, &config.zone, &metrics));
    let serving_saved = saved.is_some();
    let builder = saved.unwrap_or_else(|| SnapshotBuilder::new(config.zone.clone()));
    let first = if serving_saved {
        let now = daemon_support::clock::unix_secs().max(1) as u32;
        builder.snapshot(kube_dns_core::snapshot::next_serial(0, now), true)
    } else {
        ClusterSnapshot::empty(Arc::new(config.zone.clone()))
    };
    let transfers = transfer::Transfers::new(
        config.transfer.clone(),
        metrics.transfers.clone(),
        metrics.notifies.clone(),
    );
    let mut state = ServerState::new(
        first,
        ForwardPolicy::default(),
        Forwarding::new(config.forward_deadline),
        metrics,
    )
    .with_transfers(transfers.clone());
    if let Some(log) = &config.query_log {
        match dns_transport::query_log::QueryLog::start(log.clone(), Box::new(std::io::stderr())) {
            Ok(log) => state = state.with_query_log(log),
            Err(error) => {
                tracing::error!(%error, "cannot start the query log writer; queries are not logged")
            }
        }
    }
    let state = Arc::new(state);
    state.set_serving_saved_zone(serving_saved);
    // A saved zone is a version secondaries may already hold.
    transfers.published(&state.snapshot.load_full());
    let resolv_conf = config.resolv_conf.clone();
    if let ConfigSource::Static(dns_config) = &config.source {
        config_source::apply_config(&state, dns_config, &resolv_conf).await;
    }

    // Everything below stops on `stop`, which fires after the lameduck period.
    let stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();

    let mut kinds = vec!["services", watch::ENDPOINTS];
    if config.watches_pods() {
        kinds.push("pods");
    }
    let watches = Watches {
        client: client.clone(),
        state: state.clone(),
        builder: Arc::new(Mutex::new(builder)),
        sync: Arc::new(SyncTracker::new(&kinds)),
        watch_timeout: config.watch_timeout,
    };
    tasks.spawn(watches.clone().services(stop.clone()));
    tasks.spawn(
        watches
            .clone()
            .endpoints_any(config.watch_endpoints, stop.clone()),
    );
    if config.watches_pods() {
        tasks.spawn(watches.clone().pods(stop.clone()));
    }
    if let Some(saved) = &config.saved_zone {
        tasks.spawn(saved_zone::keep_saved(
            saved.clone(),
            watches.clone(),
            stop.clone(),
        ));
    }
    {
        let (sync, timeout, stop) = (
            watches.sync.clone(),
            config.initial_sync_timeout,
            stop.clone(),
        );
        tasks.spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(timeout) => {
                    if !sync.all_synced() {
                        tracing::error!(pending = ?sync.pending(), "Timeout waiting for initialization; still waiting (answering SERVFAIL, or from the saved zone, until synced)");
                    }
                }
            }
        });
    }

    tasks.spawn(transfers.notify_loop(config.zone.zone.clone(), stop.clone()));

    match &config.source {
        ConfigSource::Static(_) => {}
        ConfigSource::Dir { path, period } => {
            tasks.spawn(config_source::watch_config_dir(
                state.clone(),
                path.clone(),
                *period,
                resolv_conf.clone(),
                stop.clone(),
            ));
        }
        ConfigSource::ConfigMap { namespace, name } => {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            tasks.spawn(watch::watch_config_map(
                client.clone(),
                namespace.clone(),
                name.clone(),
                config.watch_timeout,
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
    }

    let router = http::router(
        state.clone(),
        &config.metrics.path,
        config.listen.cache_dump,
    );
    let http_listener = to_tokio(listeners.http)?;
    tracing::info!("listening on http {}", local(&http_listener));
    tasks.spawn(daemon_support::serve_http(
        http_listener,
        router.clone(),
        daemon_support::HttpLimits::default(),
        state.http.clone(),
        stop.clone(),
        "HTTP",
    ));
    if let Some(listener) = listeners.metrics {
        let listener = to_tokio(listener)?;
        tracing::info!("listening on metrics {}", local(&listener));
        tasks.spawn(daemon_support::serve_http(
            listener,
            router,
            daemon_support::HttpLimits::default(),
            state.http.clone(),
            stop.clone(),
            "metrics",
        ));
    }

    let handler = Arc::new(server::DnsHandler {
        state: state.clone(),
    });
    // One budget for every query waiting on upstreams and every pending TCP answer.
    let budget = dns_transport::Budget::new(
        config.listen.inflight,
        state.inflight.clone(),
        "in-flight queries",
    );
    let tcp = to_tokio(listeners.tcp)?;
    tracing::info!("listening on tcp {}", local(&tcp));
    tasks.spawn(dns_transport::serve_tcp(
        tcp,
        handler.clone(),
        dns_transport::TcpConnections::new(config.listen.tcp, state.tcp.clone()),
        budget.clone(),
        stop.clone(),
    ));
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
        budget,
        state.udp.clone(),
        "dns",
    )
    .map_err(RunError::UdpThread)?;

    shutdown.cancelled().await;
    state.enter_lameduck();
    tracing::info!(lameduck = ?config.lameduck, "shutting down: readiness fails now, DNS keeps answering");
    tokio::time::sleep(config.lameduck).await;
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
