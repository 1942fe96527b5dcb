//! Where the `kube-dns` ConfigMap comes from (`--config-dir`, `--config-map`, or the static
//! `--nameservers` flag) and how a validated version becomes the forwarding policy.
//!
//! A mounted ConfigMap is watched by `config-volume` (inotify on the directory plus the
//! `--config-period` poll); the version is a content hash, so only real changes count.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kube_dns_config::config_map::{ConfigError, DnsConfig};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::forward::ForwardPolicy;
use crate::state::ServerState;
use crate::watch::{ConfigMapUpdate, config_from_update};

/// Applies a validated config: builds the forwarding policy (resolving stub nameserver
/// hostnames now, on every reload) and publishes it. Returns false when a stub nameserver name
/// did not resolve (that server is left out until a retry resolves it).
pub async fn apply_config(state: &ServerState, config: &DnsConfig, resolv_conf: &Path) -> bool {
    let mut complete = true;
    let mut upstreams = config.upstream_addrs();
    if upstreams.is_empty() {
        upstreams = match tokio::fs::read_to_string(resolv_conf).await {
            Ok(text) => dns_transport::resolv_conf::nameservers(&text),
            Err(error) => {
                tracing::warn!(path = %resolv_conf.display(), %error, "cannot read resolver config; no default upstreams");
                Vec::new()
            }
        };
    }
    let mut stubs = Vec::new();
    for (domain, servers) in &config.stub_domains {
        let mut addrs: Vec<SocketAddr> = Vec::new();
        for server in servers {
            match kube_dns_config::config_map::parse_ip_nameserver(server) {
                Some(addr) => addrs.push(addr),
                None => match dns_transport::lookup_host(server, 53).await {
                    Ok(found) => addrs.extend(found),
                    Err(error) => {
                        complete = false;
                        tracing::warn!(domain, server, %error, "stub domain nameserver does not resolve; skipped until it does")
                    }
                },
            }
        }
        stubs.push((domain.to_ascii_lowercase(), addrs));
    }
    tracing::info!(
        ?upstreams,
        stubs = stubs.len(),
        "forwarding configuration applied"
    );
    let previous = state.forwarding.load_full();
    state
        .forwarding
        .store(Arc::new(ForwardPolicy::new(upstreams, stubs, &previous)));
    complete
}

/// Tracks versions and applies valid ones; invalid ones are logged and counted. When the first
/// version is invalid the defaults (`--resolv-conf`'s nameservers, no stub domains) serve, so
/// kube-dns never runs without upstreams.
struct ConfigApplier<'a> {
    state: &'a ServerState,
    resolv_conf: PathBuf,
    version: Option<String>,
    applied: bool,
    /// A version applied without a stub nameserver whose name did not resolve.
    unresolved: kube_dns_config::ResolveRetry<DnsConfig>,
}

impl<'a> ConfigApplier<'a> {
    fn new(state: &'a ServerState, resolv_conf: PathBuf) -> Self {
        ConfigApplier {
            state,
            resolv_conf,
            version: None,
            applied: false,
            unresolved: kube_dns_config::ResolveRetry::default(),
        }
    }

    async fn offer(&mut self, version: String, parsed: Result<DnsConfig, ConfigError>) {
        if self.version.as_deref() == Some(version.as_str()) {
            return;
        }
        self.version = Some(version.clone());
        match parsed {
            Ok(config) => {
                tracing::info!(version, "applying ConfigMap version");
                let complete = apply_config(self.state, &config, &self.resolv_conf).await;
                self.state.metrics.config_reloads.inc();
                self.applied = true;
                self.unresolved.clear();
                if !complete {
                    self.unresolved.schedule(config);
                }
            }
            Err(reason) if !self.applied => {
                self.state.metrics.config_errors.inc();
                tracing::error!(version, %reason, resolv_conf = %self.resolv_conf.display(), "Invalid configuration; using the defaults (upstreams from the resolver configuration) until a valid version arrives");
                apply_config(self.state, &DnsConfig::default(), &self.resolv_conf).await;
                self.applied = true;
            }
            Err(reason) => {
                self.state.metrics.config_errors.inc();
                tracing::error!(version, %reason, "Invalid configuration, ignoring update (last good configuration stays)");
            }
        }
    }

    /// Applies again a version whose stub nameservers did not resolve (from
    /// `self.unresolved.due()`, awaited alone in a `select!` so the version cannot be dropped
    /// half-way), and schedules the next try while names still do not resolve.
    async fn retry_unresolved(&mut self, config: DnsConfig) {
        tracing::info!("resolving the stub domain nameservers again");
        if apply_config(self.state, &config, &self.resolv_conf).await {
            self.unresolved.clear();
        } else {
            self.unresolved.schedule(config);
        }
    }
}

/// Applies every version of `--config-dir` (inotify plus `--config-period` polling) until
/// shutdown.
pub async fn watch_config_dir(
    state: Arc<ServerState>,
    dir: PathBuf,
    period: Duration,
    resolv_conf: PathBuf,
    shutdown: CancellationToken,
) {
    let mut applier = ConfigApplier::new(&state, resolv_conf);
    let (tx, mut versions) = mpsc::channel(4);
    tokio::spawn(kube_dns_config::watch(dir, period, tx, shutdown.clone()));
    loop {
        tokio::select! {
            files = versions.recv() => {
                let Some(files) = files else { return };
                let parsed = DnsConfig::from_files(&files.files);
                applier.offer(files.version, parsed).await;
            }
            config = applier.unresolved.due() => applier.retry_unresolved(config).await,
        }
    }
}

/// Applies ConfigMap versions received from the API watch until shutdown.
pub async fn apply_config_map_updates(
    state: Arc<ServerState>,
    mut updates: mpsc::UnboundedReceiver<ConfigMapUpdate>,
    resolv_conf: PathBuf,
    shutdown: CancellationToken,
) {
    let mut applier = ConfigApplier::new(&state, resolv_conf);
    loop {
        let update = tokio::select! {
            _ = shutdown.cancelled() => return,
            update = updates.recv() => update,
            config = applier.unresolved.due() => {
                applier.retry_unresolved(config).await;
                continue;
            }
        };
        let Some(update) = update else { return };
        if update.data.is_none() {
            tracing::info!("ConfigMap absent; reverting to default configuration");
        }
        let parsed = config_from_update(&update);
        applier.offer(update.version, parsed).await;
    }
}

/// The static configuration used with neither `--config-dir` nor `--config-map`: upstreams
/// from `--nameservers` (validated by the CLI; the three-server ConfigMap limit does not apply)
/// and federations from `--federations` (validated, otherwise unused).
pub fn static_config(
    nameservers: Vec<String>,
    federations: &str,
) -> Result<DnsConfig, ConfigError> {
    let mut data = BTreeMap::new();
    if !federations.is_empty() {
        data.insert(
            kube_dns_config::config_map::FEDERATIONS_KEY.to_owned(),
            federations.to_owned(),
        );
    }
    let mut config = DnsConfig::from_data(&data)?;
    config.upstream_nameservers = nameservers;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::MetricsEnv;
    use crate::forward::Forwarding;
    use kube_dns_core::ClusterSnapshot;

    fn state() -> ServerState {
        let zone = kube_dns_core::ZoneSettings::new(
            "cluster.local",
            30,
            kube_dns_core::snapshot::PodsMode::default(),
        );
        ServerState::new(
            ClusterSnapshot::empty(Arc::new(zone)),
            ForwardPolicy::default(),
            Forwarding::new(Duration::from_secs(4)),
            crate::metrics::Metrics::new(&MetricsEnv::default()).expect("metrics"),
        )
    }

    fn upstreams(state: &ServerState) -> Vec<SocketAddr> {
        state
            .forwarding
            .load()
            .upstreams
            .iter()
            .map(|u| u.addr)
            .collect()
    }

    /// Issue 13: an invalid first version leaves the resolver configuration's nameservers
    /// serving (counted and logged), where kube-dns used to run with no upstream at all; an
    /// invalid later version keeps the last good one.
    #[tokio::test]
    async fn an_invalid_first_config_falls_back_to_resolv_conf() {
        let dir = std::env::temp_dir().join(format!("kube-dns-applier-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let resolv_conf = dir.join("resolv.conf");
        std::fs::write(&resolv_conf, "nameserver 192.0.2.77\n").expect("write");
        let state = state();
        let mut applier = ConfigApplier::new(&state, resolv_conf);
        let invalid = || {
            DnsConfig::from_data(&BTreeMap::from([(
                "upstreamNameservers".to_owned(),
                "not json".to_owned(),
            )]))
        };
        assert!(invalid().is_err());
        applier.offer("1".into(), invalid()).await;
        let defaults: Vec<SocketAddr> = vec!["192.0.2.77:53".parse().expect("addr")];
        assert_eq!(upstreams(&state), defaults);
        assert_eq!(state.metrics.config_errors.get(), 1);

        let good = DnsConfig::from_data(&BTreeMap::from([(
            "upstreamNameservers".to_owned(),
            r#"["192.0.2.88"]"#.to_owned(),
        )]));
        applier.offer("2".into(), good).await;
        let configured: Vec<SocketAddr> = vec!["192.0.2.88:53".parse().expect("addr")];
        assert_eq!(upstreams(&state), configured);
        applier.offer("3".into(), invalid()).await;
        assert_eq!(upstreams(&state), configured, "the last good version stays");
        assert_eq!(state.metrics.config_errors.get(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
