//! What [`crate::run`] takes: the command line and the `PROMETHEUS_*` environment, validated
//! into types. Every rejection is a [`CliError`] that names the flag; `main` maps it to exit 64.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use kube_dns_config::config_map::{ConfigError, DnsConfig};
use kube_dns_core::{PodsMode, ZoneSettings};
use thiserror::Error;

use crate::cli::{Cli, MetricsEnv};

/// Where the `kube-dns` ConfigMap comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// Neither `--config-dir` nor `--config-map`: upstreams from `--nameservers` and
    /// federations from `--federations`, applied once at start.
    Static(DnsConfig),
    /// A mounted ConfigMap (`--config-dir`), watched with inotify and polled every `period`.
    Dir { path: PathBuf, period: Duration },
    /// A ConfigMap watched through the API (`--config-map`, `--config-map-namespace`).
    ConfigMap { namespace: String, name: String },
}

/// How the API client is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiSource {
    /// `--kubecfg-file`.
    Kubeconfig(PathBuf),
    /// `--kube-master-url`, with `$VARS` expanded.
    MasterUrl(String),
    /// `$KUBECONFIG`, `~/.kube/config`, then the in-cluster service account.
    Infer,
}

/// The addresses to bind before [`crate::run`] starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenConfig {
    /// DNS over UDP and TCP (`--dns-bind-address`, `--dns-port`).
    pub dns: SocketAddr,
    /// UDP sockets with SO_REUSEPORT, one thread each (`--dns-workers`, 0 = one per CPU).
    pub dns_workers: usize,
    /// `/readiness`, `/healthz`, `/metrics` (and `/cache` with `--cache-dump`).
    pub http: SocketAddr,
    /// The extra metrics listener, when `PROMETHEUS_PORT` is set.
    pub metrics: Option<SocketAddr>,
    /// `/cache` served to loopback clients (`--cache-dump`); otherwise 404.
    pub cache_dump: bool,
    /// DNS over TCP: connection caps and idle timeout (`--max-tcp-connections`).
    pub tcp: dns_transport::TcpLimits,
    /// Queries waiting on upstreams and TCP answers being written, in all (`--max-inflight`,
    /// `--max-inflight-bytes`); a client holds at most what is left (half, when alone).
    pub inflight: dns_transport::BudgetLimits,
}

/// kube-dns's whole configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub zone: ZoneSettings,
    pub listen: ListenConfig,
    pub metrics: MetricsEnv,
    pub source: ConfigSource,
    pub api: ApiSource,
    pub resolv_conf: PathBuf,
    pub watch_endpoints: bool,
    pub initial_sync_timeout: Duration,
    pub lameduck: Duration,
    pub forward_deadline: Duration,
    /// `--log-queries` (with `--log-sample`, `--log-rate`); None: off.
    pub query_log: Option<dns_transport::query_log::QueryLogConfig>,
    /// `--watch-timeout`, in whole seconds (at least one).
    pub watch_timeout: Duration,
    /// `--snapshot-dir` and its settings; None: no saved zone.
    pub saved_zone: Option<SavedZoneConfig>,
    /// `--transfer-allow`, `--notify`, `--transfer-journal`, `--transfer-timeout`.
    pub transfer: crate::transfer::TransferConfig,
}

/// Where and how the last good zone is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedZoneConfig {
    pub dir: PathBuf,
    pub max_age: Duration,
    pub interval: Duration,
}

/// A command line kube-dns refuses to start with.
#[derive(Debug, Error)]
pub enum CliError {
    #[error("Cannot use both ConfigMap and ConfigDir (--config-map and --config-dir)")]
    BothConfigSources,
    #[error("--nameservers: {0:?} is not ip[:port]")]
    Nameserver(String),
    #[error("invalid --federations: {0}")]
    Federations(#[source] ConfigError),
    #[error("invalid kube-master-url specified: {0:?}")]
    MasterUrl(String),
    #[error("--ttl must be at least 1")]
    Ttl,
}

impl Config {
    /// Validates the parsed flags and the metrics environment.
    pub fn from_cli(cli: &Cli, metrics: MetricsEnv) -> Result<Config, CliError> {
        if cli.ttl == 0 {
            return Err(CliError::Ttl);
        }
        let listen = ListenConfig {
            dns: SocketAddr::new(cli.dns_bind_address, cli.dns_port),
            dns_workers: cli.dns_workers,
            http: SocketAddr::new(cli.healthz_bind_address, cli.healthz_port),
            metrics: metrics
                .port
                .map(|port| SocketAddr::new(cli.healthz_bind_address, port)),
            cache_dump: cli.cache_dump,
            tcp: dns_transport::TcpLimits::with_max(cli.max_tcp_connections),
            inflight: dns_transport::BudgetLimits {
                entries: cli.max_inflight.max(1),
                bytes: cli.max_inflight_bytes.max(1),
            },
        };
        Ok(Config {
            zone: ZoneSettings::new(&cli.domain, cli.ttl, cli.pods),
            listen,
            metrics,
            source: config_source(cli)?,
            api: api_source(cli)?,
            resolv_conf: cli.resolv_conf.clone(),
            watch_endpoints: cli.watch_endpoints,
            initial_sync_timeout: cli.initial_sync_timeout,
            lameduck: cli.lameduck,
            forward_deadline: cli.forward_deadline,
            watch_timeout: Duration::from_secs(cli.watch_timeout.as_secs().max(1)),
            query_log: cli
                .log_queries
                .then(|| dns_transport::query_log::QueryLogConfig {
                    format: dns_transport::query_log::Format::Json,
                    sample: cli.log_sample.max(1),
                    rate: cli.log_rate,
                    server: "kube-dns",
                }),
            saved_zone: cli
                .snapshot_dir
                .as_ref()
                .filter(|dir| !dir.as_os_str().is_empty())
                .map(|dir| SavedZoneConfig {
                    dir: dir.clone(),
                    max_age: cli.snapshot_max_age,
                    interval: cli.snapshot_interval.max(Duration::from_secs(1)),
                }),
            transfer: crate::transfer::TransferConfig {
                allow: cli.transfer_allow.0.clone(),
                notify: cli.notify.0.clone(),
                journal: cli.transfer_journal.max(1),
                timeout: cli.transfer_timeout.max(Duration::from_secs(1)),
            },
        })
    }

    /// Whether Pods are watched (`--pods=verified`).
    pub fn watches_pods(&self) -> bool {
        self.zone.pods == PodsMode::Verified
    }
}

fn config_source(cli: &Cli) -> Result<ConfigSource, CliError> {
    match (cli.config_dir.is_empty(), cli.config_map.is_empty()) {
        (false, false) => Err(CliError::BothConfigSources),
        (false, true) => Ok(ConfigSource::Dir {
            path: PathBuf::from(&cli.config_dir),
            period: cli.config_period,
        }),
        (true, false) => Ok(ConfigSource::ConfigMap {
            namespace: cli.config_map_namespace.clone(),
            name: cli.config_map.clone(),
        }),
        (true, true) => {
            let nameservers: Vec<String> = cli
                .nameservers
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            if let Some(bad) = nameservers
                .iter()
                .find(|s| kube_dns_config::config_map::parse_ip_nameserver(s).is_none())
            {
                return Err(CliError::Nameserver(bad.clone()));
            }
            crate::config_source::static_config(nameservers, &cli.federations)
                .map(ConfigSource::Static)
                .map_err(CliError::Federations)
        }
    }
}

fn api_source(cli: &Cli) -> Result<ApiSource, CliError> {
    if !cli.kubecfg_file.is_empty() {
        return Ok(ApiSource::Kubeconfig(PathBuf::from(&cli.kubecfg_file)));
    }
    if cli.kube_master_url.is_empty() {
        return Ok(ApiSource::Infer);
    }
    let url = cli.master_url();
    let ok = url
        .split_once("://")
        .is_some_and(|(scheme, rest)| !scheme.is_empty() && !rest.is_empty());
    if ok {
        Ok(ApiSource::MasterUrl(url))
    } else {
        Err(CliError::MasterUrl(url))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Result<Config, CliError> {
        let cli =
            clap::Parser::try_parse_from(std::iter::once("kube-dns").chain(args.iter().copied()))
                .expect("clap accepts the flags");
        Config::from_cli(&cli, MetricsEnv::default())
    }

    #[test]
    fn sources_are_typed() {
        let dir = config(&["--config-dir=/cfg", "--config-period=2s"]).expect("ok");
        assert_eq!(
            dir.source,
            ConfigSource::Dir {
                path: "/cfg".into(),
                period: Duration::from_secs(2)
            }
        );
        let map = config(&["--config-map=kube-dns"]).expect("ok");
        assert_eq!(
            map.source,
            ConfigSource::ConfigMap {
                namespace: "kube-system".into(),
                name: "kube-dns".into()
            }
        );
        let ConfigSource::Static(stat) = config(&["--nameservers=8.8.8.8, 1.1.1.1:5353"])
            .expect("ok")
            .source
        else {
            panic!("static source expected")
        };
        assert_eq!(stat.upstream_nameservers, ["8.8.8.8", "1.1.1.1:5353"]);
        assert_eq!(config(&[]).expect("ok").api, ApiSource::Infer);
        assert_eq!(
            config(&["--kubecfg-file=/k", "--kube-master-url=http://x"])
                .expect("ok")
                .api,
            ApiSource::Kubeconfig("/k".into())
        );
    }

    #[test]
    fn rejections_are_specific() {
        assert!(matches!(
            config(&["--config-dir=/a", "--config-map=b"]),
            Err(CliError::BothConfigSources)
        ));
        assert!(matches!(
            config(&["--nameservers=8.8.8.8,nope"]),
            Err(CliError::Nameserver(s)) if s == "nope"
        ));
        assert!(matches!(
            config(&["--federations=bad"]),
            Err(CliError::Federations(_))
        ));
        assert!(matches!(config(&["--ttl=0"]), Err(CliError::Ttl)));
        assert!(matches!(
            config(&["--kube-master-url=nourl"]),
            Err(CliError::MasterUrl(_))
        ));
    }

    #[test]
    fn the_metrics_listener_follows_the_environment() {
        let cli = clap::Parser::try_parse_from(["kube-dns", "--healthz-bind-address=127.0.0.1"])
            .expect("ok");
        let env = MetricsEnv {
            port: Some(10055),
            ..MetricsEnv::default()
        };
        let config = Config::from_cli(&cli, env).expect("ok");
        assert_eq!(
            config.listen.metrics,
            Some("127.0.0.1:10055".parse().expect("addr"))
        );
    }
}
