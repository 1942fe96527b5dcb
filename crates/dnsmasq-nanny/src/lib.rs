//! dnsmasq-nanny: supervises the DNS cache and applies the `kube-dns` ConfigMap to it.
//!
//! Unlike the legacy nanny (contract §3.3), a child that exits is restarted with capped
//! exponential backoff; a config change reaches a dns-cache child as a rewritten servers file and
//! SIGHUP (no restart, cache and sockets kept); a real dnsmasq child is stopped, waited for, and
//! started again (no two processes racing for port 53).

pub mod child_args;
pub mod cli;
pub mod process;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use kube_dns_config::config_map::DnsConfig;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::child_args::ForwardingConfig;
use crate::cli::{ChildKind, NannyConfig};

/// A child that ran this long has its restart backoff reset.
const STABLE_RUN: Duration = Duration::from_secs(60);

/// What `/healthz` and `/metrics` report.
#[derive(Debug, Default)]
pub struct NannyStatus {
    pub running: AtomicBool,
    pub pid: AtomicU32,
    pub restarts: AtomicU64,
    pub reloads: AtomicU64,
    pub config_errors: AtomicU64,
    pub version: Mutex<String>,
    pub last_error: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Why a ConfigMap version was not applied (the previous one keeps serving). Both are worth
/// retrying: a new version may be valid, and a name may resolve later.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Invalid(#[from] kube_dns_config::config_map::ConfigError),
    #[error("stubDomains {domain}: nameserver {server:?} does not resolve")]
    Unresolved { domain: String, server: String },
}

/// Resolves stub-domain nameserver hostnames (every reload): names under `cluster.local`
/// through kube-dns at `kubedns`, others through the system resolver. A name that does not
/// resolve rejects the whole update.
pub async fn resolve(
    config: &DnsConfig,
    kubedns: SocketAddr,
) -> Result<ForwardingConfig, ApplyError> {
    let mut out = ForwardingConfig {
        upstreams: config.upstream_nameservers.clone(),
        ..ForwardingConfig::default()
    };
    for (domain, servers) in &config.stub_domains {
        let mut resolved = Vec::new();
        for server in servers {
            let is_address = server.parse::<std::net::IpAddr>().is_ok()
                || server.parse::<SocketAddr>().is_ok()
                || server.rsplit_once(':').is_some_and(|(h, _)| {
                    h.trim_matches(['[', ']'])
                        .parse::<std::net::IpAddr>()
                        .is_ok()
                });
            if is_address {
                resolved.push(server.clone());
                continue;
            }
            let ip = if server.ends_with("cluster.local") {
                resolve_via(kubedns, server).await
            } else {
                dns_transport::lookup_host(server, 53)
                    .await
                    .ok()
                    .and_then(|addrs| addrs.first().map(|a| a.ip()))
            };
            match ip {
                Some(ip) => resolved.push(ip.to_string()),
                None => {
                    return Err(ApplyError::Unresolved {
                        domain: domain.clone(),
                        server: server.clone(),
                    });
                }
            }
        }
        out.stub_domains.insert(domain.clone(), resolved);
    }
    Ok(out)
}

async fn resolve_via(server: SocketAddr, name: &str) -> Option<std::net::IpAddr> {
    use hickory_proto::rr::{DNSClass, RData, RecordType};
    let message = dns_transport::client::query(
        server,
        name,
        RecordType::A,
        DNSClass::IN,
        Duration::from_secs(2),
    )
    .await
    .ok()?;
    message
        .answers
        .iter()
        .find_map(|record| match &record.data {
            RData::A(a) => Some(std::net::IpAddr::V4(a.0)),
            _ => None,
        })
}

/// Runs the nanny until `shutdown`; returns the child's last exit code when `exitWithChild`.
pub async fn run(
    config: NannyConfig,
    status: Arc<NannyStatus>,
    health: Option<tokio::net::TcpListener>,
    shutdown: CancellationToken,
) -> i32 {
    if let Some(listener) = health {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!("listening on http {addr}");
        }
        tokio::spawn(serve_health(listener, status.clone(), shutdown.clone()));
    }
    let (tx, mut versions) = mpsc::channel(4);
    tokio::spawn(kube_dns_config::watch(
        config.config_dir.clone(),
        config.sync_interval,
        tx,
        shutdown.clone(),
    ));
    // The first version decides the first argv (defaults when missing or invalid).
    let mut forwarding = ForwardingConfig::default();
    if let Some(files) = versions.recv().await {
        match apply_version(&config, &status, &files).await {
            Ok(resolved) => forwarding = resolved,
            Err(error) => tracing::error!(%error, "Error getting initial config, using default"),
        }
    }
    let mut backoff = config.restart_backoff_min;
    let mut log_ticker =
        (!config.log_interval.is_zero()).then(|| tokio::time::interval(config.log_interval));
    let mut sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()).ok();
    let pid1 = std::process::id() == 1;
    loop {
        let argv = child_argv(&config, &forwarding);
        if config.child_kind == ChildKind::DnsCache
            && let Err(error) = write_servers_file(&config, &forwarding)
        {
            tracing::error!(%error, path = %config.servers_file.display(), "cannot write the servers file");
        }
        tracing::info!(exec = %config.dnsmasq_exec.display(), ?argv, "Starting dnsmasq");
        let mut child = match process::spawn(&config.dnsmasq_exec, &argv) {
            Ok(child) => child,
            Err(error) => {
                tracing::error!(%error, "cannot start the child; retrying after {backoff:?}");
                status.restarts.fetch_add(1, Ordering::Relaxed);
                tokio::select! {
                    _ = shutdown.cancelled() => return 0,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(config.restart_backoff_max);
                continue;
            }
        };
        let pid = child.id().unwrap_or(0);
        status.pid.store(pid, Ordering::Relaxed);
        status.running.store(true, Ordering::Relaxed);
        let started = daemon_support::clock::now();
        let exit = loop {
            tokio::select! {
                exit = child.wait() => break exit,
                _ = shutdown.cancelled() => {
                    stop_child(&mut child, pid, config.stop_grace).await;
                    status.running.store(false, Ordering::Relaxed);
                    return 0;
                }
                Some(files) = versions.recv() => {
                    match apply_version(&config, &status, &files).await {
                        Ok(resolved) if resolved == forwarding => {}
                        Ok(resolved) => {
                            forwarding = resolved;
                            match config.child_kind {
                                ChildKind::DnsCache => {
                                    if let Err(error) = write_servers_file(&config, &forwarding) {
                                        tracing::error!(%error, "cannot write the servers file");
                                    }
                                    tracing::info!("configuration changed; reloading the cache with SIGHUP");
                                    let _ = process::signal_group(pid, libc::SIGHUP);
                                }
                                ChildKind::Dnsmasq if config.restart_dnsmasq => {
                                    tracing::info!("Restarting dnsmasq with new configuration");
                                    stop_child(&mut child, pid, config.stop_grace).await;
                                    status.running.store(false, Ordering::Relaxed);
                                    backoff = config.restart_backoff_min;
                                    break Err(std::io::Error::other("restart for a new configuration"));
                                }
                                ChildKind::Dnsmasq => tracing::info!("Not restarting dnsmasq (--restartDnsmasq=false)"),
                            }
                        }
                        Err(error) => tracing::error!(%error, "Invalid configuration, ignoring update"),
                    }
                }
                _ = async { match log_ticker.as_mut() { Some(t) => { t.tick().await; } None => std::future::pending().await } } => {
                    let _ = process::signal_group(pid, libc::SIGUSR1);
                }
                _ = async { match sigchld.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {
                    if pid1 {
                        process::reap_orphans(Some(pid));
                    }
                }
            }
        };
        status.running.store(false, Ordering::Relaxed);
        let planned = exit.is_err();
        if !planned {
            let code = exit.as_ref().ok().and_then(|s| s.code()).unwrap_or(-1);
            tracing::error!(code, "dnsmasq exited");
            if config.exit_with_child {
                return code;
            }
            status.restarts.fetch_add(1, Ordering::Relaxed);
            if started.elapsed() >= STABLE_RUN {
                backoff = config.restart_backoff_min;
            }
            tracing::info!("restarting the child after {backoff:?}");
            tokio::select! {
                _ = shutdown.cancelled() => return 0,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(config.restart_backoff_max);
        }
    }
}

fn child_argv(config: &NannyConfig, forwarding: &ForwardingConfig) -> Vec<String> {
    match config.child_kind {
        ChildKind::DnsCache => child_args::dns_cache_argv(&config.child_args, &config.servers_file),
        ChildKind::Dnsmasq => child_args::dnsmasq_argv(&config.child_args, forwarding),
    }
}

fn write_servers_file(config: &NannyConfig, forwarding: &ForwardingConfig) -> std::io::Result<()> {
    // Write then rename, so the child never reads half a file.
    let tmp = config.servers_file.with_extension("tmp");
    std::fs::write(&tmp, child_args::servers_file(forwarding))?;
    std::fs::rename(&tmp, &config.servers_file)
}

/// Validates and resolves one ConfigMap version, recording the outcome.
async fn apply_version(
    config: &NannyConfig,
    status: &NannyStatus,
    files: &kube_dns_config::ConfigFiles,
) -> Result<ForwardingConfig, ApplyError> {
    let result = match DnsConfig::from_files(&files.files) {
        Ok(parsed) => resolve(&parsed, config.kubedns_server).await,
        Err(error) => Err(error.into()),
    };
    match &result {
        Ok(_) => {
            status.reloads.fetch_add(1, Ordering::Relaxed);
            *lock(&status.version) = files.version.clone();
            *lock(&status.last_error) = None;
        }
        Err(error) => {
            status.config_errors.fetch_add(1, Ordering::Relaxed);
            *lock(&status.last_error) = Some(format!("version {}: {error}", files.version));
        }
    }
    result
}

/// SIGTERM to the child's group, a grace period, then SIGKILL; always waits for the exit.
async fn stop_child(child: &mut tokio::process::Child, pid: u32, grace: Duration) {
    let _ = process::signal_group(pid, libc::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        tracing::warn!(pid, "child ignored SIGTERM for {grace:?}; killing it");
        let _ = process::signal_group(pid, libc::SIGKILL);
        let _ = child.wait().await;
    }
}

async fn serve_health(
    listener: tokio::net::TcpListener,
    status: Arc<NannyStatus>,
    shutdown: CancellationToken,
) {
    let router = Router::new()
        .route(
            "/healthz",
            get(|State(status): State<Arc<NannyStatus>>| async move {
                let running = status.running.load(Ordering::Relaxed);
                let body = serde_json::json!({
                    "childRunning": running,
                    "pid": status.pid.load(Ordering::Relaxed),
                    "restarts": status.restarts.load(Ordering::Relaxed),
                    "configVersion": *lock(&status.version),
                    "lastConfigError": *lock(&status.last_error),
                });
                let code = if running { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                (code, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
            }),
        )
        .route(
            "/metrics",
            get(|State(status): State<Arc<NannyStatus>>| async move {
                let text = format!(
                    "# HELP dnsmasq_nanny_child_restarts_total Child restarts after it exited.\n# TYPE dnsmasq_nanny_child_restarts_total counter\ndnsmasq_nanny_child_restarts_total {}\n\
                     # HELP dnsmasq_nanny_config_reloads_total ConfigMap versions applied.\n# TYPE dnsmasq_nanny_config_reloads_total counter\ndnsmasq_nanny_config_reloads_total {}\n\
                     # HELP dnsmasq_nanny_config_errors_total ConfigMap versions rejected.\n# TYPE dnsmasq_nanny_config_errors_total counter\ndnsmasq_nanny_config_errors_total {}\n\
                     # HELP dnsmasq_nanny_child_running 1 while the child runs.\n# TYPE dnsmasq_nanny_child_running gauge\ndnsmasq_nanny_child_running {}\n",
                    status.restarts.load(Ordering::Relaxed),
                    status.reloads.load(Ordering::Relaxed),
                    status.config_errors.load(Ordering::Relaxed),
                    u8::from(status.running.load(Ordering::Relaxed)),
                );
                daemon_support::metrics_response(text)
            }),
        )
        .with_state(status);
    daemon_support::serve_http(listener, router, shutdown, "health").await;
}
