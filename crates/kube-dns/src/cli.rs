//! The `kube-dns` command line: every legacy flag (contract §2.1) with its default, pflag's
//! `_`/`-` equivalence, Go durations and booleans, the klog flags tolerated, and flags of ours.

use std::net::IpAddr;
use std::time::Duration;

use clap::Parser;
pub use daemon_support::go_flags::{normalize_pflag_args, parse_go_bool, parse_go_duration};
use kube_dns_core::PodsMode;

use crate::config::{CliError, Config};

/// Legacy default of `--domain`.
pub const DEFAULT_DOMAIN: &str = "cluster.local.";
/// Legacy default of `--dns-port`.
pub const DEFAULT_DNS_PORT: u16 = 53;
/// `--max-tcp-connections`: 1,024 connections of at most one 64 KiB query each stay well under
/// the memory the manifest allows; a node-local cache keeps only a few.
pub const DEFAULT_MAX_TCP_CONNECTIONS: usize = 1024;
/// `--max-inflight`: queries waiting on upstreams (and TCP answers being written) at once.
pub const DEFAULT_MAX_INFLIGHT: usize = 4096;
/// `--max-inflight-bytes`: 16 MiB, what those hold at most (each query is charged its compact
/// copy and 4 KiB for its task and answer), well under the manifest's 170Mi.
pub const DEFAULT_MAX_INFLIGHT_BYTES: usize = 16 << 20;

/// `--log-rate`: at most this many queries a second are logged.
pub const DEFAULT_LOG_RATE: u64 = 5000;

/// Legacy default of `--healthz-port` (`/readiness`, `/cache`).
pub const DEFAULT_HEALTHZ_PORT: u16 = 8081;
/// Metrics listener port, when set (the manifest sets 10055).
pub const ENV_PROMETHEUS_PORT: &str = "PROMETHEUS_PORT";
pub const ENV_PROMETHEUS_PATH: &str = "PROMETHEUS_PATH";
pub const ENV_PROMETHEUS_NAMESPACE: &str = "PROMETHEUS_NAMESPACE";
pub const ENV_PROMETHEUS_SUBSYSTEM: &str = "PROMETHEUS_SUBSYSTEM";

/// kube-dns: answers the Kubernetes cluster zone from the API server.
#[derive(Debug, Clone, Parser)]
#[command(name = "kube-dns", disable_version_flag = true)]
pub struct Cli {
    /// Cluster domain; a trailing dot is added when missing.
    #[arg(long, default_value = DEFAULT_DOMAIN, value_parser = parse_domain)]
    pub domain: String,
    /// Address the DNS UDP and TCP listeners bind.
    #[arg(long, default_value = "0.0.0.0")]
    pub dns_bind_address: IpAddr,
    /// DNS port (the manifest uses 10053; 0 picks a free port).
    #[arg(long, default_value_t = DEFAULT_DNS_PORT)]
    pub dns_port: u16,
    /// HTTP port for /readiness, /healthz, /cache and /metrics (0 picks a free port).
    #[arg(long, default_value_t = DEFAULT_HEALTHZ_PORT)]
    pub healthz_port: u16,
    /// Address the HTTP listeners bind (ours; legacy binds every address).
    #[arg(long, default_value = "0.0.0.0")]
    pub healthz_bind_address: IpAddr,
    /// How long to wait for the first list of Services and endpoints before logging an error.
    /// Unlike legacy kube-dns we keep waiting (and answer SERVFAIL) instead of exiting.
    #[arg(long, default_value = "60s", value_parser = parse_go_duration)]
    pub initial_sync_timeout: Duration,
    /// Directory holding the kube-dns ConfigMap keys as files.
    #[arg(long, default_value = "")]
    pub config_dir: String,
    /// Poll period of --config-dir (inotify notices changes sooner).
    #[arg(long, default_value = "10s", value_parser = parse_go_duration)]
    pub config_period: Duration,
    /// Name of a ConfigMap to watch through the API instead of --config-dir.
    #[arg(long, default_value = "")]
    pub config_map: String,
    /// Namespace of --config-map.
    #[arg(long, default_value = "kube-system")]
    pub config_map_namespace: String,
    /// Comma-separated ip[:port] upstreams, used when neither config source is set.
    #[arg(long, default_value = "")]
    pub nameservers: String,
    /// Deprecated federations (name=domain,...), used when neither config source is set.
    #[arg(long, default_value = "")]
    pub federations: String,
    /// Path of a kubeconfig file.
    #[arg(long, default_value = "")]
    pub kubecfg_file: String,
    /// API server URL; $VARS are expanded from the environment.
    #[arg(long, default_value = "")]
    pub kube_master_url: String,
    /// Accepted for compatibility; Go's pprof has no Rust equivalent here.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
          default_value = "false", value_parser = parse_go_bool)]
    pub profiling: bool,
    /// Print `Kube-DNS <version>` (or the quoted version with --version=raw) and exit.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub version: Option<String>,
    #[command(flatten)]
    pub klog: daemon_support::KlogFlags,

    // ---- ours ----
    /// TTL of cluster records.
    #[arg(long, default_value_t = kube_dns_core::snapshot::DEFAULT_TTL)]
    pub ttl: u32,
    /// Pod records: disabled, insecure (legacy default) or verified (watches Pods).
    #[arg(long, default_value = "insecure")]
    pub pods: PodsMode,
    /// Watch core/v1 Endpoints instead of EndpointSlices (clusters older than 1.21).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
          default_value = "false", value_parser = parse_go_bool)]
    pub watch_endpoints: bool,
    /// Serve `/cache` (a JSON dump of every Service and endpoint, built per request) on the
    /// HTTP ports, to loopback clients only. Off by default: it is large, and it tells any pod
    /// the whole cluster's topology.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
          default_value = "false", value_parser = parse_go_bool)]
    pub cache_dump: bool,
    /// DNS-over-TCP connections kept open at most; an eighth of them per client address. At
    /// the cap the busiest client's idlest connection is closed (RFC 7766 §10).
    #[arg(long, default_value_t = DEFAULT_MAX_TCP_CONNECTIONS)]
    pub max_tcp_connections: usize,
    /// Queries waiting on upstreams and TCP answers being written, at most, over every
    /// listener; a client address holds at most as many as are left (half, when alone), so a
    /// flood from one pod is refused (SERVFAIL) before the others' queries are.
    #[arg(long, default_value_t = DEFAULT_MAX_INFLIGHT)]
    pub max_inflight: usize,
    /// The bytes those hold at most (the same fairness applies).
    #[arg(long, default_value_t = DEFAULT_MAX_INFLIGHT_BYTES)]
    pub max_inflight_bytes: usize,
    /// After SIGTERM: readiness fails at once, DNS keeps answering this long, then exit 0.
    #[arg(long, default_value = "5s", value_parser = parse_go_duration)]
    pub lameduck: Duration,
    /// How long a forwarded query may wait for any valid upstream reply before SERVFAIL (ours;
    /// under glibc's 5 s resolver timeout, see docs/reference.md).
    #[arg(long, default_value = "4s", value_parser = parse_go_duration)]
    pub forward_deadline: Duration,
    /// UDP sockets (SO_REUSEPORT), each served by its own thread; 0 = one per CPU.
    #[arg(long, default_value_t = 0)]
    pub dns_workers: usize,
    /// Resolver configuration whose nameservers are the upstreams when none are configured.
    #[arg(long, default_value = "/etc/resolv.conf")]
    pub resolv_conf: std::path::PathBuf,
    /// Keep the last good zone in this directory (an emptyDir survives container restarts)
    /// and answer from it at start while syncing; unset or empty: nothing is written.
    #[arg(long)]
    pub snapshot_dir: Option<std::path::PathBuf>,
    /// A saved zone older than this is not used.
    #[arg(long, default_value = "24h", value_parser = parse_go_duration)]
    pub snapshot_max_age: Duration,
    /// The zone is saved at most this often, when it changed.
    #[arg(long, default_value = "10s", value_parser = parse_go_duration)]
    pub snapshot_interval: Duration,
    /// Log every query (sampled and rate-limited below) as one JSON object on stderr: time,
    /// client, name, type, rcode, answer count, latency, and the zone or upstream that answered.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
          default_value = "false", value_parser = parse_go_bool)]
    pub log_queries: bool,
    /// Log one query in this many.
    #[arg(long, default_value_t = 1)]
    pub log_sample: u64,
    /// Logged queries per second at most (0: no limit); the rest are counted.
    #[arg(long, default_value_t = DEFAULT_LOG_RATE)]
    pub log_rate: u64,
    /// The API server ends each watch after this long (`timeoutSeconds`) and it is resumed
    /// from where it was; a watch that stays silent 5 s longer is taken as dead and restarted.
    #[arg(long, default_value = "1m", value_parser = parse_go_duration)]
    pub watch_timeout: Duration,
    /// Address ranges allowed to transfer the cluster zone (AXFR, IXFR over TCP), comma
    /// separated; empty refuses every transfer.
    #[arg(long, default_value = "127.0.0.0/8,::1", value_parser = parse_nets)]
    pub transfer_allow: Nets,
    /// Secondaries (ip:port, comma separated) sent a NOTIFY after each change of the zone.
    #[arg(long, default_value = "", value_parser = parse_addrs)]
    pub notify: Addrs,
    /// Versions of the zone kept for IXFR; older versions get the whole zone.
    #[arg(long, default_value_t = crate::transfer::DEFAULT_JOURNAL)]
    pub transfer_journal: usize,
    /// A zone transfer not written within this is cut off.
    #[arg(long, default_value = "60s", value_parser = parse_go_duration)]
    pub transfer_timeout: Duration,
}

/// `--transfer-allow`'s ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nets(pub Vec<dns_transport::IpNet>);

/// `--notify`'s addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addrs(pub Vec<std::net::SocketAddr>);

fn parse_nets(text: &str) -> Result<Nets, String> {
    let parts = text.split(',').map(str::trim).filter(|p| !p.is_empty());
    parts.map(str::parse).collect::<Result<_, _>>().map(Nets)
}

fn parse_addrs(text: &str) -> Result<Addrs, String> {
    let parts = text.split(',').map(str::trim).filter(|p| !p.is_empty());
    parts
        .map(|p| {
            p.parse()
                .map_err(|_| format!("{p:?} is not ip:port ([ip]:port for IPv6)"))
        })
        .collect::<Result<_, _>>()
        .map(Addrs)
}

/// Settings from the environment (legacy `PROMETHEUS_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsEnv {
    pub port: Option<u16>,
    pub path: String,
    pub namespace: String,
    pub subsystem: String,
}

/// A `PROMETHEUS_*` variable kube-dns cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("{ENV_PROMETHEUS_PORT}={0:?} is not a port number")]
    Port(String),
    #[error("{ENV_PROMETHEUS_PATH}={0:?} must start with /")]
    Path(String),
}

/// A `--domain` that is not a DNS name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{label:?} in {domain:?}: Not a valid DNS label")]
pub struct DomainError {
    label: String,
    domain: String,
}

impl Default for MetricsEnv {
    /// Legacy defaults: no extra listener, `/metrics`, `skydns_skydns_*` names.
    fn default() -> Self {
        MetricsEnv {
            port: None,
            path: "/metrics".into(),
            namespace: "skydns".into(),
            subsystem: "skydns".into(),
        }
    }
}

impl MetricsEnv {
    /// Reads the variables; an unparsable port is an error naming the variable.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Self, EnvError> {
        let defaults = MetricsEnv::default();
        let port = match get(ENV_PROMETHEUS_PORT).filter(|p| !p.is_empty()) {
            Some(p) => Some(p.parse().map_err(|_| EnvError::Port(p))?),
            None => None,
        };
        let path = get(ENV_PROMETHEUS_PATH).unwrap_or(defaults.path);
        if !path.starts_with('/') {
            return Err(EnvError::Path(path));
        }
        Ok(MetricsEnv {
            port,
            path,
            namespace: get(ENV_PROMETHEUS_NAMESPACE).unwrap_or(defaults.namespace),
            subsystem: get(ENV_PROMETHEUS_SUBSYSTEM).unwrap_or(defaults.subsystem),
        })
    }
}

impl Cli {
    /// Parses argv with pflag's `_` -> `-` normalisation. Errors carry clap's message, which
    /// names the flag.
    pub fn parse_args<I, S>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        daemon_support::parse_pflag_args(args, Cli::check)
    }

    /// What clap cannot check alone: the flags together, as [`Config::from_cli`] validates
    /// them (the environment is read later, by `main`).
    fn check(&self) -> Result<(), CliError> {
        Config::from_cli(self, MetricsEnv::default()).map(drop)
    }

    /// The zone without its trailing dot, lower-cased.
    pub fn zone(&self) -> String {
        kube_dns_core::ZoneSettings::new(&self.domain, self.ttl, self.pods)
            .zone
            .into()
    }

    /// `--kube-master-url` with `$VAR` and `${VAR}` expanded from the environment.
    pub fn master_url(&self) -> String {
        expand_env(&self.kube_master_url, |name| std::env::var(name).ok())
    }
}

fn parse_domain(s: &str) -> Result<String, DomainError> {
    let trimmed = s.trim_end_matches('.');
    for label in trimmed.split('.') {
        if !kube_dns_config::config_map::is_dns1123_label(&label.to_ascii_lowercase()) {
            return Err(DomainError {
                label: label.to_owned(),
                domain: s.to_owned(),
            });
        }
    }
    Ok(format!("{trimmed}."))
}

fn expand_env(s: &str, get: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        let rest = &s[i + 1..];
        let (name, skip) = if let Some(inner) = rest.strip_prefix('{') {
            match inner.find('}') {
                Some(end) => (&inner[..end], end + 2),
                None => ("", 0),
            }
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            (&rest[..end], end)
        };
        if name.is_empty() {
            out.push('$');
            continue;
        }
        out.push_str(&get(name).unwrap_or_default());
        for _ in 0..skip {
            chars.next();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::parse_args(std::iter::once("kube-dns").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_match_the_legacy_binary() {
        let cli = parse(&[]).expect("defaults parse");
        assert_eq!(cli.domain, "cluster.local.");
        assert_eq!(cli.dns_bind_address.to_string(), "0.0.0.0");
        assert_eq!(cli.dns_port, 53);
        assert_eq!(cli.healthz_port, 8081);
        assert_eq!(cli.initial_sync_timeout, Duration::from_secs(60));
        assert_eq!(cli.config_dir, "");
        assert_eq!(cli.config_period, Duration::from_secs(10));
        assert_eq!(cli.config_map, "");
        assert_eq!(cli.config_map_namespace, "kube-system");
        assert_eq!(cli.nameservers, "");
        assert_eq!(cli.federations, "");
        assert_eq!(cli.kubecfg_file, "");
        assert_eq!(cli.kube_master_url, "");
        assert!(!cli.profiling);
        assert_eq!(cli.version, None);
        assert_eq!(cli.klog.v, 0);
        assert_eq!(cli.klog.log_flush_frequency, Duration::from_secs(5));
        assert_eq!(cli.ttl, 30);
        assert_eq!(cli.pods, PodsMode::Insecure);
        assert_eq!(cli.lameduck, Duration::from_secs(5));
    }

    #[test]
    fn legacy_manifest_args_are_accepted() {
        let cli = parse(&[
            "--domain=cluster.local.",
            "--dns-port=10053",
            "--config-dir=/kube-dns-config",
            "--v=2",
        ])
        .expect("manifest args");
        assert_eq!(cli.zone(), "cluster.local");
        assert_eq!(cli.dns_port, 10053);
        assert_eq!(cli.config_dir, "/kube-dns-config");
        assert_eq!(cli.klog.v, 2);
        let old = parse(&[
            "--domain=cluster.local",
            "--dns-port=10053",
            "--config-map=kube-dns",
            "--v=2",
            "--logtostderr",
        ]);
        assert!(old.is_ok());
    }

    #[test]
    fn every_legacy_flag_parses() {
        let cli = parse(&[
            "--domain=example.org",
            "--dns-bind-address=127.0.0.1",
            "--dns_port=5353",
            "--healthz-port=9090",
            "--initial-sync-timeout=1m30s",
            "--config-period=500ms",
            "--config-map=kube-dns",
            "--config-map-namespace=dns",
            "--nameservers=8.8.8.8,1.1.1.1:5353",
            "--federations=a=b.example",
            "--kubecfg-file=/k",
            "--kube-master-url=https://$HOME_NOT_SET_X:6443",
            "--profiling",
            "--v=4",
            "--vmodule=x=2",
            "--log-flush-frequency=2s",
        ])
        .expect("all flags");
        assert_eq!(cli.domain, "example.org.");
        assert_eq!(cli.dns_port, 5353);
        assert_eq!(cli.initial_sync_timeout, Duration::from_secs(90));
        assert_eq!(cli.config_period, Duration::from_millis(500));
        assert!(cli.profiling);
        assert_eq!(cli.master_url(), "https://:6443");
    }

    #[test]
    fn underscores_equal_dashes() {
        let cli = parse(&["--dns_bind_address=127.0.0.2", "--config_map_namespace=x"]).expect("ok");
        assert_eq!(cli.dns_bind_address.to_string(), "127.0.0.2");
        assert_eq!(cli.config_map_namespace, "x");
    }

    #[test]
    fn bad_flags_name_the_flag() {
        let cases: &[(&[&str], &str)] = &[
            (&["--no-such-flag"], "--no-such-flag"),
            (&["--dns-port=abc"], "--dns-port"),
            (&["--initial-sync-timeout=10"], "--initial-sync-timeout"),
            (&["--domain=bad_label.local"], "--domain"),
            (&["--pods=maybe"], "--pods"),
            (&["--config-dir=/a", "--config-map=b"], "--config-map"),
            (&["--nameservers=not-an-ip"], "--nameservers"),
            (&["--kube-master-url=nourl"], "kube-master-url"),
        ];
        for (args, needle) in cases {
            let err = parse(args).expect_err("must fail").to_string();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }

    #[test]
    fn version_flag_forms() {
        assert_eq!(
            parse(&["--version"]).expect("ok").version.as_deref(),
            Some("true")
        );
        assert_eq!(
            parse(&["--version=raw"]).expect("ok").version.as_deref(),
            Some("raw")
        );
    }

    #[test]
    fn prometheus_env() {
        let env = MetricsEnv::from_env(|k| (k == ENV_PROMETHEUS_PORT).then(|| "10055".into()))
            .expect("ok");
        assert_eq!(env.port, Some(10055));
        assert_eq!(env.path, "/metrics");
        assert_eq!(env.namespace, "skydns");
        assert!(MetricsEnv::from_env(|k| (k == ENV_PROMETHEUS_PORT).then(|| "x".into())).is_err());
    }
}
