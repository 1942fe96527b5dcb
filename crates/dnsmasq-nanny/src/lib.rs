//! dnsmasq-nanny: supervises the DNS cache and applies the `kube-dns` ConfigMap to it.
//!
//! Unlike the legacy nanny (contract §3.3), a child that exits is restarted with capped
//! exponential backoff; a config change reaches a dns-cache child as a rewritten servers file and
//! SIGHUP (no restart, cache and sockets kept); a real dnsmasq child is stopped, waited for, and
//! started again (no two processes racing for port 53).

pub mod child_args;
pub mod cli;
pub mod process;
pub mod supervisor;

use std::net::SocketAddr;
use std::pin::Pin;
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
use crate::supervisor::{Action, ChildSignal, Event, Phase, Policy};

/// The soonest a child gets its first `-logInterval` SIGUSR1 after it starts.
pub const FIRST_LOG_TICK: Duration = Duration::from_secs(1);

/// What `/healthz` and `/metrics` report.
#[derive(Debug, Default)]
pub struct NannyStatus {
    pub running: AtomicBool,
    pub pid: AtomicU32,
    pub restarts: AtomicU64,
    pub reloads: AtomicU64,
    pub config_errors: AtomicU64,
    /// Failed writes of the servers file (the child keeps the previous one).
    pub servers_file_errors: AtomicU64,
    pub version: Mutex<String>,
    pub last_error: Mutex<Option<String>>,
    /// What the health server refused.
    pub http: Arc<daemon_support::HttpStats>,
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
        ip_family: config.ip_family,
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
/// The decisions are [`supervisor::step`]'s; this loop turns signals, exits, timers and
/// ConfigMap versions into its events and carries out its actions.
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
    // The first version decides the first argv (defaults when missing or invalid; when a stub
    // nameserver's name does not resolve yet, defaults until a retry resolves it).
    let mut forwarding = ForwardingConfig::default();
    // A version whose stub nameserver names did not resolve, tried again with backoff.
    let mut retry = kube_dns_config::ResolveRetry::default();
    if let Some(files) = versions.recv().await {
        match apply_version(&config, &status, &files).await {
            Ok(resolved) => forwarding = resolved,
            Err(error) => {
                tracing::error!(%error, "Error getting initial config, using default");
                schedule_unresolved(&mut retry, &error, files);
            }
        }
    }
    let policy = Policy {
        child_kind: config.child_kind,
        restart_dnsmasq: config.restart_dnsmasq,
        exit_with_child: config.exit_with_child,
        backoff_min: config.restart_backoff_min,
        backoff_max: config.restart_backoff_max,
        stop_grace: config.stop_grace,
        reap_orphans: std::process::id() == 1,
    };
    let mut child = Supervised::default();
    let mut timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
    // SIGUSR1's default action kills a process, so a child gets its first one no sooner than
    // FIRST_LOG_TICK after it starts, when it has long installed its handlers.
    let first_tick = config.log_interval.max(FIRST_LOG_TICK);
    let mut log_ticker = (!config.log_interval.is_zero()).then(|| {
        let mut ticker = tokio::time::interval(config.log_interval);
        ticker.reset_after(first_tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker
    });
    let mut sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()).ok();
    let mut shutdown_seen = false;
    let (mut phase, mut actions) = Phase::start(&policy);
    loop {
        // Carry out the actions; a spawn's outcome is the next event at once.
        let mut next = None;
        for action in actions.drain(..) {
            match action {
                Action::Spawn => {
                    next = Some(child.spawn(&config, &status, &forwarding));
                    if let Some(ticker) = log_ticker.as_mut() {
                        ticker.reset_after(first_tick);
                    }
                }
                Action::WriteServersFile => {
                    write_servers_file_logged(&config, &status, &forwarding)
                }
                Action::Signal { pid, signal } => {
                    match signal {
                        ChildSignal::Hangup => {
                            tracing::info!("configuration changed; reloading the cache with SIGHUP")
                        }
                        ChildSignal::Kill => tracing::warn!(
                            pid,
                            "child ignored SIGTERM for {:?}; killing it",
                            config.stop_grace
                        ),
                        ChildSignal::User1 | ChildSignal::Terminate => {}
                    }
                    if let Err(error) = process::signal_group(pid, signal) {
                        tracing::debug!(pid, ?signal, %error, "cannot signal the child");
                    }
                }
                Action::Wait(duration) => timer = Some(Box::pin(tokio::time::sleep(duration))),
                Action::CountRestart => {
                    status.restarts.fetch_add(1, Ordering::Relaxed);
                }
                Action::ReapOrphans { keep } => {
                    let reaped = process::reap_orphans(Some(keep));
                    if reaped > 0 {
                        tracing::debug!(reaped, "reaped orphaned processes");
                    }
                }
                Action::Exit(code) => return code,
            }
        }
        if !phase.waits() {
            timer = None;
        }
        status
            .running
            .store(matches!(phase, Phase::Running { .. }), Ordering::Relaxed);
        if let Some(pid) = phase.pid() {
            status.pid.store(pid, Ordering::Relaxed);
        }
        let event = match next {
            Some(event) => event,
            None => tokio::select! {
                exit = child.wait() => exit,
                _ = shutdown.cancelled(), if !shutdown_seen => {
                    shutdown_seen = true;
                    Event::Shutdown
                }
                Some(files) = versions.recv() => {
                    retry.clear();
                    match offer(&config, &status, files, &mut forwarding, &mut retry).await {
                        Some(event) => event,
                        None => continue,
                    }
                }
                files = retry.due() => {
                    tracing::info!(version = %files.version, "resolving the stub domain nameservers again");
                    match offer(&config, &status, files, &mut forwarding, &mut retry).await {
                        Some(event) => event,
                        None => continue,
                    }
                }
                _ = pending_unless(timer.as_mut()) => {
                    timer = None;
                    Event::TimerElapsed
                }
                _ = async { match log_ticker.as_mut() { Some(t) => { t.tick().await; } None => std::future::pending().await } } => Event::LogTick,
                _ = async { match sigchld.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => Event::ChildSignal,
            },
        };
        if let (Phase::Running { .. }, Event::Exited { code, .. }) = (phase, event) {
            tracing::error!(code = code.unwrap_or(-1), "dnsmasq exited");
        }
        (phase, actions) = supervisor::step(&policy, phase, event);
        if let (Phase::BackingOff { backoff }, Event::Exited { .. }) = (phase, event) {
            tracing::info!("restarting the child after {backoff:?}");
        }
    }
}

/// Applies one version (new, or retried): the event for the supervisor when the forwarding
/// changes, nothing when it does not or the version is rejected (a name that does not resolve
/// is retried).
async fn offer(
    config: &NannyConfig,
    status: &NannyStatus,
    files: kube_dns_config::ConfigFiles,
    forwarding: &mut ForwardingConfig,
    retry: &mut kube_dns_config::ResolveRetry<kube_dns_config::ConfigFiles>,
) -> Option<Event> {
    match apply_version(config, status, &files).await {
        Ok(resolved) => {
            retry.clear();
            if resolved == *forwarding {
                return None;
            }
            *forwarding = resolved;
            match (config.child_kind, config.restart_dnsmasq) {
                (ChildKind::Dnsmasq, true) => {
                    tracing::info!("Restarting dnsmasq with new configuration")
                }
                (ChildKind::Dnsmasq, false) => {
                    tracing::info!("Not restarting dnsmasq (--restartDnsmasq=false)")
                }
                (ChildKind::DnsCache, _) => {}
            }
            Some(Event::ConfigChanged)
        }
        Err(error) => {
            tracing::error!(%error, "Invalid configuration, ignoring update");
            schedule_unresolved(retry, &error, files);
            None
        }
    }
}

/// Schedules `files` again when `error` is a stub nameserver name that does not resolve yet;
/// an invalid version is not retried.
fn schedule_unresolved(
    retry: &mut kube_dns_config::ResolveRetry<kube_dns_config::ConfigFiles>,
    error: &ApplyError,
    files: kube_dns_config::ConfigFiles,
) {
    if matches!(error, ApplyError::Unresolved { .. }) {
        let wait = retry.schedule(files);
        tracing::info!(retry_in = ?wait, "will resolve the stub domain nameservers again");
    } else {
        retry.clear();
    }
}

/// `future`, or never when there is none.
async fn pending_unless<F: std::future::Future + Unpin>(future: Option<&mut F>) {
    match future {
        Some(future) => {
            future.await;
        }
        None => std::future::pending().await,
    }
}

/// The child process, when there is one, and when it started.
#[derive(Default)]
struct Supervised {
    child: Option<(tokio::process::Child, std::time::Instant)>,
}

impl Supervised {
    fn spawn(
        &mut self,
        config: &NannyConfig,
        status: &NannyStatus,
        forwarding: &ForwardingConfig,
    ) -> Event {
        let argv = child_argv(config, forwarding);
        if config.child_kind == ChildKind::DnsCache {
            write_servers_file_logged(config, status, forwarding);
        }
        tracing::info!(exec = %config.dnsmasq_exec.display(), ?argv, "Starting dnsmasq");
        match process::spawn(&config.dnsmasq_exec, &argv) {
            Ok(child) => {
                let pid = child.id().unwrap_or(0);
                self.child = Some((child, daemon_support::clock::now()));
                Event::Spawned { pid }
            }
            Err(error) => {
                tracing::error!(%error, "cannot start the child; retrying after the backoff");
                Event::SpawnFailed
            }
        }
    }

    /// Waits for the child to exit (forever when there is none).
    async fn wait(&mut self) -> Event {
        let Some((child, started)) = self.child.as_mut() else {
            return std::future::pending().await;
        };
        let code = match child.wait().await {
            Ok(status) => status.code(),
            Err(error) => {
                tracing::error!(%error, "cannot wait for the child");
                None
            }
        };
        let ran = started.elapsed();
        self.child = None;
        Event::Exited { code, ran }
    }
}

/// Writes the servers file; a failure is logged, counted and shown in `/healthz` as the last
/// configuration error (the child keeps serving the previous file).
fn write_servers_file_logged(
    config: &NannyConfig,
    status: &NannyStatus,
    forwarding: &ForwardingConfig,
) {
    if let Err(error) = write_servers_file(config, forwarding) {
        let path = config.servers_file.display();
        tracing::error!(%error, %path, "cannot write the servers file; the cache keeps the previous one");
        status.servers_file_errors.fetch_add(1, Ordering::Relaxed);
        *lock(&status.last_error) = Some(format!("cannot write the servers file {path}: {error}"));
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

async fn serve_health(
    listener: tokio::net::TcpListener,
    status: Arc<NannyStatus>,
    shutdown: CancellationToken,
) {
    let http_stats = status.http.clone();
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
                     # HELP dnsmasq_nanny_child_running 1 while the child runs.\n# TYPE dnsmasq_nanny_child_running gauge\ndnsmasq_nanny_child_running {}\n\
                     # HELP dnsmasq_nanny_servers_file_errors_total Failed writes of the servers file.\n# TYPE dnsmasq_nanny_servers_file_errors_total counter\ndnsmasq_nanny_servers_file_errors_total {}\n",
                    status.restarts.load(Ordering::Relaxed),
                    status.reloads.load(Ordering::Relaxed),
                    status.config_errors.load(Ordering::Relaxed),
                    u8::from(status.running.load(Ordering::Relaxed)),
                    status.servers_file_errors.load(Ordering::Relaxed),
                );
                let mut text = text;
                status.http.render("dnsmasq_nanny", &mut text);
                daemon_support::metrics_response(text)
            }),
        )
        .with_state(status);
    daemon_support::serve_http(
        listener,
        router,
        daemon_support::HttpLimits::default(),
        http_stats,
        shutdown,
        "health",
    )
    .await;
}
