//! dns-cache: a dnsmasq-compatible caching DNS forwarder.
//!
//! [`run`] takes the typed configuration and already-bound listeners, so tests start it on
//! port 0. The layers, from the outside in:
//!
//! - [`config`]: the dnsmasq command line, option table and server specs, into [`CacheConfig`];
//! - [`query`]: dispatch, CHAOS, local answers, and misses (coalesced, forwarded in budget);
//! - [`cache`]: the response cache and its TTL rules;
//! - [`upstream`]: routes, server selection and health;
//! - [`reload`]: SIGHUP reloads and the other signals; [`soa_watch`] and [`loop_probe`];
//! - [`node_mode`]: `--node-local`: the interface, the conntrack bypass rules, the handover;
//! - [`metrics`]: Prometheus text on `--metrics-address`.

pub mod cache;
pub mod clock;
pub mod config;
pub mod health;
pub mod hosts;
pub mod loop_probe;
pub mod metrics;
pub mod node_mode;
pub mod policy;
pub mod query;
pub mod reload;
pub mod secondary;
pub mod soa_watch;
pub mod state;
pub mod upstream;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use thiserror::Error;
use tokio_util::sync::CancellationToken;

pub use crate::config::CacheConfig;
use crate::query::CacheHandler;
pub use crate::reload::{Reloaded, Reloader, handle_signals};
pub use crate::state::{CacheState, Stats};
use crate::upstream::routes::RoutesError;

/// Why the cache could not start.
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
    #[error("cannot write --pid-file {path}: {source}")]
    PidFile {
        path: std::path::PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Routes(#[from] RoutesError),
    #[error("cannot start a UDP thread: {0}")]
    UdpThread(#[source] io::Error),
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] io::Error),
    #[error("node-local set-up failed: {0}")]
    NodeLocal(#[from] node_local::SetupError),
    #[error("cannot keep the sockets for the handover: {0}")]
    Handover(#[source] io::Error),
}

/// Sockets bound before anything runs.
#[derive(Debug)]
pub struct Listeners {
    pub udp: Vec<std::net::UdpSocket>,
    pub tcp: Vec<std::net::TcpListener>,
    pub metrics: Option<std::net::TcpListener>,
    /// `--node-local`: the interface and rules, set up before the sockets were bound.
    pub node: Option<Arc<node_local::NodeSetup>>,
}

impl Listeners {
    /// UDP (`--workers` sockets per address, SO_REUSEPORT) and TCP on every listen address;
    /// in node-local mode after setting up the interface and rules, and with every listener
    /// in a reuseport group so that a successor can bind beside this instance.
    pub fn bind(config: &CacheConfig) -> Result<Self, RunError> {
        let node = crate::node_mode::prepare(config)?;
        let bound = Self::bind_sockets(config, node.is_some());
        if let (Err(_), Some(setup)) = (&bound, &node) {
            // Rules for addresses nobody answers on would cut the node off kube-proxy's path.
            crate::node_mode::finish(setup, config.skip_teardown);
        }
        Ok(Listeners { node, ..bound? })
    }

    /// The sockets alone (`shared`: TCP listeners in reuseport groups too).
    fn bind_sockets(config: &CacheConfig, shared: bool) -> Result<Self, RunError> {
        let workers = dns_transport::default_workers(config.workers);
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        for addr in config.listen_addrs() {
            let port = if shared {
                dns_transport::bind_dns_port_shared(addr, workers)?
            } else {
                dns_transport::bind_dns_port(addr, workers)?
            };
            udp.extend(port.udp);
            tcp.push(port.tcp);
        }
        let bind_metrics = if shared {
            dns_transport::bind_tcp_shared
        } else {
            dns_transport::bind_tcp
        };
        let metrics = match config.metrics_address {
            Some(addr) => Some(bind_metrics(addr).map_err(|source| RunError::Bind {
                what: "metrics",
                addr,
                source,
            })?),
            None => None,
        };
        Ok(Listeners {
            udp,
            tcp,
            metrics,
            node: None,
        })
    }
}

/// The pid file, the state, and (in node-local mode) the sockets kept for the handover.
fn start_state(
    config: CacheConfig,
    listeners: &Listeners,
) -> Result<(Arc<CacheState>, Option<node_mode::Handover>), RunError> {
    if let Some(path) = &config.pid_file {
        std::fs::write(path, format!("{}\n", std::process::id())).map_err(|source| {
            RunError::PidFile {
                path: path.clone(),
                source,
            }
        })?;
    }
    let state = Arc::new(CacheState::from_config(config)?);
    let handover = match &listeners.node {
        Some(_) => Some(
            node_mode::Handover::new(&listeners.udp, &listeners.tcp, listeners.metrics.as_ref())
                .map_err(RunError::Handover)?,
        ),
        None => None,
    };
    Ok((state, handover))
}

/// Runs the cache until `shutdown`, then keeps answering DNS for `--lameduck` (the metrics
/// server's `/healthz` failing) and returns; hands a [`Reloader`] to `ready` once serving.
pub async fn run(
    config: CacheConfig,
    listeners: Listeners,
    shutdown: CancellationToken,
    ready: tokio::sync::oneshot::Sender<Reloader>,
) -> Result<(), RunError> {
    for (option, reason) in &config.ignored {
        tracing::warn!(option, reason, "dnsmasq option accepted without effect");
    }
    let node = listeners.node.clone();
    let skip_teardown = config.skip_teardown;
    let started = start_state(config, &listeners);
    let (state, mut handover) = match started {
        Ok(started) => started,
        Err(error) => {
            // Nothing serves: the rules and addresses set up for these sockets go with them.
            drop(listeners);
            if let Some(setup) = node {
                let _ =
                    tokio::task::spawn_blocking(move || node_mode::finish(&setup, skip_teardown))
                        .await;
            }
            return Err(error);
        }
    };
    let upstreams = state.routes.load().distinct_upstreams();
    for addr in &state.config.tcp_upstreams {
        if !upstreams.iter().any(|u| u.addr == *addr) {
            tracing::warn!(%addr, "--tcp-upstream names no server of any route; it has no effect");
        }
    }
    if state.routes.load().routes.is_empty() {
        tracing::warn!(
            "no upstream servers configured (all names outside local domains get SERVFAIL)"
        );
    }
    let handler = Arc::new(CacheHandler {
        state: state.clone(),
    });
    // Everything below stops on `stop`, which fires after the lameduck period.
    let stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let tcp_connections = dns_transport::TcpConnections::new(
        dns_transport::TcpLimits::with_max(state.config.max_tcp_connections),
        state.tcp.clone(),
    );
    for listener in listeners.tcp {
        let listener =
            tokio::net::TcpListener::from_std(listener).map_err(|source| RunError::Bind {
                what: "DNS over TCP",
                addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                source,
            })?;
        if let Ok(addr) = listener.local_addr() {
            tracing::info!("listening on tcp {addr}");
        }
        tasks.spawn(dns_transport::serve_tcp(
            listener,
            handler.clone(),
            tcp_connections.clone(),
            state.budget.clone(),
            stop.clone(),
        ));
    }
    for socket in &listeners.udp {
        if let Ok(addr) = socket.local_addr() {
            tracing::info!("listening on udp {addr}");
        }
    }
    if let Some(listener) = listeners.metrics {
        let listener =
            tokio::net::TcpListener::from_std(listener).map_err(|source| RunError::Bind {
                what: "metrics",
                addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                source,
            })?;
        if let Ok(addr) = listener.local_addr() {
            tracing::info!("listening on metrics {addr}");
        }
        tasks.spawn(metrics::serve(listener, state.clone(), stop.clone()));
    }
    // Misses are most of a cache's work: each UDP thread forwards them on its own event loop.
    let udp = dns_transport::UdpWorkers::start_with(
        listeners.udp,
        handler,
        tokio::runtime::Handle::current(),
        state.budget.clone(),
        state.udp.clone(),
        "cache",
        dns_transport::UdpMode::EventLoop,
    )
    .map_err(RunError::UdpThread)?;
    let reloader = Reloader::new(state.clone());
    if state.config.dns_loop_detect {
        tokio::spawn(loop_probe::detect_loops(state.clone()));
    }
    for zone in &state.config.watch_soa {
        tracing::info!(zone, interval = ?state.config.watch_soa_interval, "watching the zone's SOA serial");
        tasks.spawn(soa_watch::watch_soa(
            state.clone(),
            zone.clone(),
            stop.clone(),
        ));
    }
    for secondary in &state.secondaries.zones {
        tracing::info!(zone = secondary.spec.zone, primary = ?secondary.spec.primary, "keeping a copy of the zone (--secondary)");
        tasks.spawn(secondary::keep_zone(
            state.clone(),
            secondary.clone(),
            stop.clone(),
        ));
    }
    if let Some(setup) = &node {
        tasks.spawn(node_mode::keep(state.clone(), setup.clone(), stop.clone()));
    }
    if let Some(handover) = &handover {
        tasks.spawn(node_mode::watch_oldest(
            handover.watcher(),
            handover.group_fds(),
            stop.clone(),
        ));
    }
    if let Some(path) = &state.config.health_socket {
        tasks.spawn(health::serve(path.clone(), state.clone(), stop.clone()));
    }
    let _ = ready.send(reloader);
    shutdown.cancelled().await;
    state
        .lameduck
        .store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(handover) = &handover {
        handover.steer();
    }
    tracing::info!(lameduck = ?state.config.lameduck, "shutting down: DNS keeps answering");
    tokio::time::sleep(state.config.lameduck).await;
    if let Some(handover) = handover.take() {
        handover.pin();
    }
    stop.cancel();
    udp.stop().await;
    while tasks.join_next().await.is_some() {}
    // Every socket closed: a successor, if any, holds the port alone now.
    if let Some(setup) = node {
        let skip = state.config.skip_teardown;
        let _ = tokio::task::spawn_blocking(move || node_mode::finish(&setup, skip)).await;
    }
    Ok(())
}
