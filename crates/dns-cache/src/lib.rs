//! dns-cache: a dnsmasq-compatible caching DNS forwarder.
//!
//! [`run`] takes the parsed command line and already-bound listeners, so tests start it on
//! port 0; SIGHUP (via [`Reloader`]) re-reads the servers file, the resolv file and the hosts
//! files without closing sockets or dropping cache entries whose servers did not change.

pub mod cache;
pub mod cli;
pub mod handler;
pub mod hosts;
pub mod metrics;
pub mod upstream;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use dns_transport::{SuffixRoutes, client};
use hickory_proto::rr::{DNSClass, RecordType};
use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::cache::{ResponseCache, TtlPolicy};
use crate::cli::{CacheConfig, ServerSpec, ServerTarget};
use crate::handler::{CacheHandler, CacheState, LOOP_PROBE_SUFFIX};
use crate::hosts::Hosts;
use crate::upstream::{Route, RouteKind, RouteTable, Upstream};

/// Exchanges waiting on upstreams per UDP socket before new ones are REFUSED at once.
const MAX_SLOW_PER_SOCKET: usize = 4096;
/// The system hosts file.
pub const ETC_HOSTS: &str = "/etc/hosts";

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
    #[error("{0}")]
    Config(String),
}

/// Sockets bound before anything runs.
#[derive(Debug)]
pub struct Listeners {
    pub udp: Vec<std::net::UdpSocket>,
    pub tcp: Vec<std::net::TcpListener>,
    pub metrics: Option<std::net::TcpListener>,
}

impl Listeners {
    /// UDP (`--workers` sockets per address, SO_REUSEPORT) and TCP on every listen address.
    pub fn bind(config: &CacheConfig) -> Result<Self, RunError> {
        let workers = dns_transport::default_workers(config.workers);
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        for addr in config.listen_addrs() {
            let group =
                dns_transport::bind_udp_group(addr, workers).map_err(|source| RunError::Bind {
                    what: "DNS over UDP",
                    addr,
                    source,
                })?;
            let bound = group
                .first()
                .and_then(|s| s.local_addr().ok())
                .unwrap_or(addr);
            tcp.push(
                dns_transport::bind_tcp(bound).map_err(|source| RunError::Bind {
                    what: "DNS over TCP",
                    addr: bound,
                    source,
                })?,
            );
            udp.extend(group);
        }
        let metrics = match config.metrics_address {
            Some(addr) => Some(
                dns_transport::bind_tcp(addr).map_err(|source| RunError::Bind {
                    what: "metrics",
                    addr,
                    source,
                })?,
            ),
            None => None,
        };
        Ok(Listeners { udp, tcp, metrics })
    }
}

/// The servers named by the command line, the servers file and the resolv file.
fn server_specs(config: &CacheConfig) -> Result<Vec<ServerSpec>, String> {
    let mut specs = config.servers.clone();
    if let Some(path) = &config.servers_file {
        match std::fs::read_to_string(path) {
            Ok(text) => specs.extend(
                cli::parse_servers_file(&text)
                    .map_err(|e| format!("--servers-file {}: {e}", path.display()))?,
            ),
            // A servers file that does not exist yet is empty (the nanny writes it later).
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("--servers-file {}: {e}", path.display())),
        }
    }
    let has_default = specs
        .iter()
        .any(|s| s.domains.is_empty() && matches!(s.target, ServerTarget::Address(_)));
    if !has_default && !config.no_resolv {
        match std::fs::read_to_string(&config.resolv_file) {
            Ok(text) => specs.extend(
                dns_transport::resolv_conf::nameservers(&text)
                    .into_iter()
                    .map(|addr| ServerSpec {
                        domains: Vec::new(),
                        target: ServerTarget::Address(addr),
                    }),
            ),
            Err(e) => {
                tracing::warn!(path = %config.resolv_file.display(), error = %e, "cannot read resolv file")
            }
        }
    }
    Ok(specs)
}

/// Builds the route table, reusing `previous` upstream objects (and their statistics).
pub fn build_routes(
    config: &CacheConfig,
    previous: &HashMap<SocketAddr, Arc<Upstream>>,
) -> Result<RouteTable, String> {
    let specs = server_specs(config)?;
    let weight_of = |addr: &SocketAddr| {
        config
            .upstream_weights
            .iter()
            .find(|(a, _)| a == addr)
            .map_or(1, |(_, w)| *w)
    };
    let mut upstreams: HashMap<SocketAddr, Arc<Upstream>> = HashMap::new();
    let mut upstream_for = |addr: SocketAddr| {
        upstreams
            .entry(addr)
            .or_insert_with(|| {
                previous
                    .get(&addr)
                    .filter(|u| u.weight == weight_of(&addr))
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Upstream::new(addr, weight_of(&addr))))
            })
            .clone()
    };
    let mut defaults: Vec<Arc<Upstream>> = Vec::new();
    for spec in specs.iter().filter(|s| s.domains.is_empty()) {
        if let ServerTarget::Address(addr) = spec.target
            && !defaults.iter().any(|u| u.addr == addr)
        {
            defaults.push(upstream_for(addr));
        }
    }
    // Domain routes in first-seen order; several lines for one domain form one pool.
    let mut domains: Vec<(String, Option<Vec<Arc<Upstream>>>)> = Vec::new();
    for spec in specs.iter().filter(|s| !s.domains.is_empty()) {
        for domain in &spec.domains {
            let position = match domains.iter().position(|(d, _)| d == domain) {
                Some(p) => p,
                None => {
                    domains.push((domain.clone(), Some(Vec::new())));
                    domains.len() - 1
                }
            };
            match &spec.target {
                ServerTarget::LocalOnly => domains[position].1 = None,
                ServerTarget::Default => {
                    if let Some(pool) = &mut domains[position].1 {
                        pool.extend(defaults.iter().cloned());
                    }
                }
                ServerTarget::Address(addr) => {
                    if let Some(pool) = &mut domains[position].1
                        && !pool.iter().any(|u| u.addr == *addr)
                    {
                        pool.push(upstream_for(*addr));
                    }
                }
            }
        }
    }
    let mut routes: Vec<Route> = domains
        .into_iter()
        .map(|(domain, pool)| match pool {
            Some(pool) => Route::new(domain, RouteKind::Forward(pool), config.forward_max),
            None => Route::new(domain, RouteKind::LocalOnly, config.forward_max),
        })
        .collect();
    if !defaults.is_empty() {
        routes.push(Route::new(
            String::new(),
            RouteKind::Forward(defaults),
            config.forward_max,
        ));
    }
    let routes = SuffixRoutes::new(routes.into_iter().map(|r| (r.domain.clone(), r)));
    Ok(RouteTable { routes, upstreams })
}

fn load_hosts(config: &CacheConfig) -> Hosts {
    let mut paths: Vec<&Path> = Vec::new();
    if !config.no_hosts {
        paths.push(Path::new(ETC_HOSTS));
    }
    paths.extend(config.addn_hosts.iter().map(|p| p.as_path()));
    Hosts::load(&paths)
}

/// Re-reads the servers, resolv and hosts files (SIGHUP).
#[derive(Debug, Clone)]
pub struct Reloader {
    state: Arc<CacheState>,
}

impl Reloader {
    pub fn reload(&self) {
        let previous = self.state.routes.load_full();
        match build_routes(&self.state.config, &previous.upstreams) {
            Ok(routes) => {
                self.state.routes.store(Arc::new(routes));
                let routes = self.state.routes.load();
                // Keep entries whose route still has the same servers.
                let dropped = self.state.cache.retain_routes(|entry| {
                    routes
                        .route_for(entry.name())
                        .is_some_and(|route| route.signature == entry.route)
                });
                tracing::info!(routes = routes.routes.len(), dropped, "reloaded servers");
            }
            Err(error) => tracing::error!(%error, "reload failed; keeping the current servers"),
        }
        self.state
            .hosts
            .store(Arc::new(load_hosts(&self.state.config)));
        if self.state.config.dns_loop_detect {
            tokio::spawn(detect_loops(self.state.clone()));
        }
    }

    /// Logs the statistics dnsmasq logs on SIGUSR1.
    pub fn log_statistics(&self) {
        let state = &self.state;
        tracing::info!(
            cache_size = state.cache.capacity,
            entries = state.cache.len(),
            insertions = state.cache.counters.insertions.load(Ordering::Relaxed),
            evictions = state.cache.counters.evictions.load(Ordering::Relaxed),
            hits = state.stats.hits.load(Ordering::Relaxed),
            misses = state.stats.misses.load(Ordering::Relaxed),
            stale = state.stats.stale_served.load(Ordering::Relaxed),
            "cache statistics"
        );
        for upstream in state.routes.load().distinct_upstreams() {
            tracing::info!(
                server = %upstream.addr,
                queries = upstream.queries.load(Ordering::Relaxed),
                failed = upstream.failures.load(Ordering::Relaxed),
                srtt_us = upstream.srtt_us(),
                "server statistics"
            );
        }
    }
}

/// How long the zone's servers may fail to answer its SOA before `--watch-soa` says so.
const SOA_WATCH_QUIET: std::time::Duration = std::time::Duration::from_secs(30);

/// `--watch-soa`: asks the zone's servers for its SOA every interval; when the serial changes
/// (kube-dns raises it with every change of its data), the negative answers cached for names in
/// the zone are dropped, so a new Service resolves at once instead of after the negative TTL.
async fn watch_soa(state: Arc<CacheState>, zone: String, shutdown: CancellationToken) {
    let interval = state.config.watch_soa_interval;
    let timeout = interval.clamp(
        std::time::Duration::from_millis(100),
        std::time::Duration::from_secs(1),
    );
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<u32> = None;
    // Reported once the zone's servers have not answered for a while: at pod start kube-dns
    // answers SERVFAIL until its first sync, which is no news.
    let mut failing_since: Option<tokio::time::Instant> = None;
    let mut reported = false;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let servers: Vec<SocketAddr> = match state.routes.load().route_for(&zone) {
            Some(route) => route.servers().iter().map(|s| s.addr).collect(),
            None => Vec::new(),
        };
        let mut serial = None;
        for server in servers {
            if let Ok(reply) =
                client::query(server, &zone, RecordType::SOA, DNSClass::IN, timeout).await
                && let Some(found) = soa_serial(&reply)
            {
                serial = Some(found);
                break;
            }
        }
        if serial.is_some() {
            if reported {
                tracing::info!(zone, "the zone's SOA answers again");
            }
            failing_since = None;
            reported = false;
        }
        match (serial, last) {
            (None, _) => {
                let since = *failing_since.get_or_insert_with(tokio::time::Instant::now);
                if !reported && since.elapsed() >= SOA_WATCH_QUIET {
                    tracing::warn!(
                        zone,
                        "no server of the zone has answered its SOA for {SOA_WATCH_QUIET:?}; its negative answers expire by TTL only"
                    );
                    reported = true;
                }
            }
            (Some(now), Some(before)) if now != before => {
                last = Some(now);
                let dropped = state.cache.drop_negative_in_zone(&zone);
                state
                    .stats
                    .negative_dropped
                    .fetch_add(dropped as u64, Ordering::Relaxed);
                tracing::debug!(
                    zone,
                    before,
                    now,
                    dropped,
                    "zone serial changed; negative answers dropped"
                );
            }
            (Some(now), _) => last = Some(now),
        }
    }
}

/// The serial of the SOA in the answer section of a reply.
fn soa_serial(reply: &hickory_proto::op::Message) -> Option<u32> {
    reply.answers.iter().find_map(|record| match &record.data {
        hickory_proto::rr::RData::SOA(soa) => Some(soa.serial),
        _ => None,
    })
}

/// Sends a TXT probe with a random name through each upstream; one that comes back to us
/// marks that upstream as looping (see `CacheHandler::loop_probe`).
async fn detect_loops(state: Arc<CacheState>) {
    let upstreams = state.routes.load().distinct_upstreams();
    for upstream in upstreams {
        let name = format!("{:016x}.{LOOP_PROBE_SUFFIX}", rand::random::<u64>());
        state
            .loop_probes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name.clone(), upstream.addr);
        let _ = client::query(
            upstream.addr,
            &name,
            RecordType::TXT,
            DNSClass::IN,
            std::time::Duration::from_secs(2),
        )
        .await;
    }
}

/// Runs the cache until `shutdown`; returns a [`Reloader`] through `ready` once serving.
pub async fn run(
    config: CacheConfig,
    listeners: Listeners,
    shutdown: CancellationToken,
    ready: tokio::sync::oneshot::Sender<Reloader>,
) -> Result<(), RunError> {
    for option in &config.ignored {
        tracing::warn!(
            option,
            "dnsmasq option accepted but not implemented; ignored"
        );
    }
    let policy = TtlPolicy {
        min_cache_ttl: config.min_cache_ttl,
        max_cache_ttl: config.max_cache_ttl,
        max_ttl: config.max_ttl,
        negative_caching: !config.no_negcache,
        neg_ttl: config.neg_ttl,
        stale_for: config.use_stale_cache,
    };
    let cache = ResponseCache::new(config.cache_size, policy);
    let routes = build_routes(&config, &HashMap::new()).map_err(RunError::Config)?;
    if routes.routes.is_empty() {
        tracing::warn!(
            "no upstream servers configured (all names outside local domains get SERVFAIL)"
        );
    }
    let hosts = load_hosts(&config);
    let state = Arc::new(CacheState::new(config, cache, routes, hosts));
    let handler = Arc::new(CacheHandler {
        state: state.clone(),
    });
    let mut tasks = tokio::task::JoinSet::new();
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
            shutdown.clone(),
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
        tasks.spawn(metrics::serve(listener, state.clone(), shutdown.clone()));
    }
    // Misses are most of a cache's work: each UDP thread forwards them on its own event loop.
    let udp = dns_transport::UdpWorkers::start_with(
        listeners.udp,
        handler,
        tokio::runtime::Handle::current(),
        MAX_SLOW_PER_SOCKET,
        "cache",
        dns_transport::UdpMode::EventLoop,
    )
    .map_err(|e| RunError::Config(format!("cannot start a UDP thread: {e}")))?;
    let reloader = Reloader {
        state: state.clone(),
    };
    if state.config.dns_loop_detect {
        tokio::spawn(detect_loops(state.clone()));
    }
    for zone in &state.config.watch_soa {
        tracing::info!(zone, interval = ?state.config.watch_soa_interval, "watching the zone's SOA serial");
        tasks.spawn(watch_soa(state.clone(), zone.clone(), shutdown.clone()));
    }
    let _ = ready.send(reloader);
    shutdown.cancelled().await;
    udp.stop().await;
    while tasks.join_next().await.is_some() {}
    Ok(())
}
