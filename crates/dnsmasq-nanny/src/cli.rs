//! The nanny's command line in Go `flag` syntax (`-x`, `--x`, `-x=v`, `-x v`, bare booleans),
//! the legacy flags of contract §3.1 with their defaults, klog's flags tolerated, flags of ours,
//! and everything after the first `--` kept verbatim for the child.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use daemon_support::go_flags::{parse_go_bool as parse_bool, parse_go_duration as parse_duration};
use thiserror::Error;

/// The child when `-dnsmasqExec` is not given: the legacy `/usr/sbin/dnsmasq` when it exists,
/// else the `dns-cache` beside the nanny's own executable (the nanny image ships the two side by
/// side, so a legacy manifest that swaps only the image runs dns-cache).
pub fn default_exec() -> PathBuf {
    let legacy = PathBuf::from(DEFAULT_DNSMASQ_EXEC);
    if legacy.exists() {
        return legacy;
    }
    std::env::current_exe()
        .ok()
        .map(|exe| exe.with_file_name(DNS_CACHE_EXEC_NAME))
        .filter(|candidate| candidate.exists())
        .unwrap_or(legacy)
}

/// The file name of dns-cache, which also selects the dns-cache child mode under `auto`.
pub const DNS_CACHE_EXEC_NAME: &str = "dns-cache";

/// Legacy defaults.
pub const DEFAULT_DNSMASQ_EXEC: &str = "/usr/sbin/dnsmasq";
pub const DEFAULT_CONFIG_DIR: &str = "/etc/k8s/dns/dnsmasq-nanny";
pub const DEFAULT_KUBEDNS_SERVER: &str = "127.0.0.1:10053";
/// Where the nanny writes `server=` lines for a dns-cache child (an emptyDir in the pod).
pub const DEFAULT_SERVERS_FILE: &str = "/tmp/dnsmasq-nanny.servers";
/// `-stopGrace`: longer than dns-cache's `--lameduck` (5 s), so a dns-cache child answers
/// through its whole lameduck period after the nanny passes SIGTERM on, and well under the
/// pod's `terminationGracePeriodSeconds` (30 s).
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);

/// Why the command line was rejected (exit 64).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CliError {
    #[error("flag provided but not defined: -{0}")]
    Unknown(String),
    #[error("flag needs an argument: -{0}")]
    MissingValue(String),
    #[error("invalid value {value:?} for flag -{flag}: {reason}")]
    BadValue {
        flag: String,
        value: String,
        reason: String,
    },
    #[error("help requested")]
    Help,
}

/// Which kind of child runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildKind {
    /// Our dns-cache: config changes go to a servers file and SIGHUP (no restart).
    DnsCache,
    /// A real dnsmasq: config changes restart it (with `-restartDnsmasq=true`).
    Dnsmasq,
}

/// Everything the command line says.
#[derive(Debug, Clone, PartialEq)]
pub struct NannyConfig {
    pub dnsmasq_exec: PathBuf,
    pub restart_dnsmasq: bool,
    pub config_dir: PathBuf,
    pub sync_interval: Duration,
    pub kubedns_server: SocketAddr,
    pub log_interval: Duration,
    pub verbosity: u8,
    // ---- ours ----
    pub child_kind: ChildKind,
    pub servers_file: PathBuf,
    pub health_address: Option<SocketAddr>,
    pub restart_backoff_min: Duration,
    pub restart_backoff_max: Duration,
    /// SIGTERM to SIGKILL when stopping the child (`-stopGrace`).
    pub stop_grace: Duration,
    /// Exit when the child exits (legacy behaviour) instead of restarting it.
    pub exit_with_child: bool,
    /// The child's own arguments (after `--`).
    pub child_args: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Value,
}

/// klog flags accepted and ignored (`-v` is used).
const KLOG_FLAGS: &[(&str, Kind)] = &[
    ("vmodule", Kind::Value),
    ("logtostderr", Kind::Bool),
    ("alsologtostderr", Kind::Bool),
    ("log_dir", Kind::Value),
    ("log_file", Kind::Value),
    ("log_file_max_size", Kind::Value),
    ("add_dir_header", Kind::Bool),
    ("skip_headers", Kind::Bool),
    ("skip_log_headers", Kind::Bool),
    ("one_output", Kind::Bool),
    ("stderrthreshold", Kind::Value),
    ("log_backtrace_at", Kind::Value),
    ("log_flush_frequency", Kind::Value),
];

const FLAGS: &[(&str, Kind)] = &[
    ("dnsmasqExec", Kind::Value),
    ("restartDnsmasq", Kind::Bool),
    ("configDir", Kind::Value),
    ("syncInterval", Kind::Value),
    ("kubednsServer", Kind::Value),
    ("logInterval", Kind::Value),
    ("v", Kind::Value),
    ("childMode", Kind::Value),
    ("serversFile", Kind::Value),
    ("healthAddress", Kind::Value),
    ("restartBackoff", Kind::Value),
    ("restartBackoffMax", Kind::Value),
    ("stopGrace", Kind::Value),
    ("exitWithChild", Kind::Bool),
];

/// Every flag this parser knows (klog's last). For the reference
/// documentation's check.
pub fn known_flags() -> impl Iterator<Item = &'static str> {
    FLAGS.iter().chain(KLOG_FLAGS).map(|(name, _)| *name)
}

fn kind_of(name: &str) -> Option<Kind> {
    FLAGS
        .iter()
        .chain(KLOG_FLAGS)
        .find(|(flag, _)| *flag == name)
        .map(|(_, kind)| *kind)
}

impl NannyConfig {
    /// Parses argv without the program name.
    pub fn parse_args<I, S>(args: I) -> Result<Self, CliError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let args: Vec<String> = args.into_iter().map(Into::into).collect();
        let split = args.iter().position(|a| a == "--").unwrap_or(args.len());
        let (own, child) = (&args[..split], args.get(split + 1..).unwrap_or(&[]));
        let mut values: Vec<(String, String)> = Vec::new();
        let mut i = 0;
        while i < own.len() {
            let arg = &own[i];
            i += 1;
            let body = arg
                .strip_prefix("--")
                .or_else(|| arg.strip_prefix('-'))
                .filter(|b| !b.is_empty())
                .ok_or_else(|| CliError::Unknown(arg.clone()))?;
            if body == "h" || body == "help" {
                return Err(CliError::Help);
            }
            let (name, inline) = match body.split_once('=') {
                Some((name, value)) => (name, Some(value.to_owned())),
                None => (body, None),
            };
            let kind = kind_of(name).ok_or_else(|| CliError::Unknown(name.to_owned()))?;
            let value = match (kind, inline) {
                (_, Some(v)) => v,
                (Kind::Bool, None) => "true".to_owned(),
                (Kind::Value, None) => {
                    let v = own
                        .get(i)
                        .cloned()
                        .ok_or_else(|| CliError::MissingValue(name.to_owned()))?;
                    i += 1;
                    v
                }
            };
            values.push((name.to_owned(), value));
        }
        let mut config = NannyConfig {
            dnsmasq_exec: default_exec(),
            restart_dnsmasq: false,
            config_dir: PathBuf::from(DEFAULT_CONFIG_DIR),
            sync_interval: Duration::from_secs(10),
            kubedns_server: DEFAULT_KUBEDNS_SERVER
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 10053))),
            log_interval: Duration::ZERO,
            verbosity: 0,
            child_kind: ChildKind::Dnsmasq,
            servers_file: PathBuf::from(DEFAULT_SERVERS_FILE),
            health_address: None,
            restart_backoff_min: Duration::from_millis(100),
            restart_backoff_max: Duration::from_secs(30),
            stop_grace: DEFAULT_STOP_GRACE,
            exit_with_child: false,
            child_args: child.to_vec(),
        };
        let mut mode = "auto".to_owned();
        for (name, value) in values {
            let bad = |reason: String| CliError::BadValue {
                flag: name.clone(),
                value: value.clone(),
                reason,
            };
            match name.as_str() {
                "dnsmasqExec" => config.dnsmasq_exec = PathBuf::from(&value),
                "restartDnsmasq" => {
                    config.restart_dnsmasq = parse_bool(&value).map_err(|e| bad(e.to_string()))?
                }
                "configDir" => config.config_dir = PathBuf::from(&value),
                "syncInterval" => {
                    config.sync_interval = parse_duration(&value).map_err(|e| bad(e.to_string()))?
                }
                "kubednsServer" => {
                    config.kubedns_server = value.parse().map_err(|_| bad("not ip:port".into()))?
                }
                "logInterval" => {
                    config.log_interval = parse_duration(&value).map_err(|e| bad(e.to_string()))?
                }
                "v" => config.verbosity = value.parse().map_err(|_| bad("not a number".into()))?,
                "childMode" => mode = value.clone(),
                "serversFile" => config.servers_file = PathBuf::from(&value),
                "healthAddress" => {
                    config.health_address = if value.is_empty() {
                        None
                    } else {
                        Some(value.parse().map_err(|_| bad("not ip:port".into()))?)
                    }
                }
                "restartBackoff" => {
                    config.restart_backoff_min =
                        parse_duration(&value).map_err(|e| bad(e.to_string()))?
                }
                "restartBackoffMax" => {
                    config.restart_backoff_max =
                        parse_duration(&value).map_err(|e| bad(e.to_string()))?
                }
                "stopGrace" => {
                    config.stop_grace = parse_duration(&value).map_err(|e| bad(e.to_string()))?
                }
                "exitWithChild" => {
                    config.exit_with_child = parse_bool(&value).map_err(|e| bad(e.to_string()))?
                }
                _ => {} // klog flags
            }
        }
        config.child_kind = match mode.as_str() {
            "auto" => {
                let name = config
                    .dnsmasq_exec
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if name.contains(DNS_CACHE_EXEC_NAME) {
                    ChildKind::DnsCache
                } else {
                    ChildKind::Dnsmasq
                }
            }
            "dns-cache" => ChildKind::DnsCache,
            "dnsmasq" => ChildKind::Dnsmasq,
            other => {
                return Err(CliError::BadValue {
                    flag: "childMode".into(),
                    value: other.into(),
                    reason: "must be auto, dns-cache or dnsmasq".into(),
                });
            }
        };
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_manifest_args_are_accepted() {
        // 1.14.13 and current manifests.
        for args in [
            vec![
                "-v=2",
                "-logtostderr",
                "-configDir=/etc/k8s/dns/dnsmasq-nanny",
                "-restartDnsmasq=true",
                "--",
                "-k",
                "--cache-size=1000",
                "--no-negcache",
                "--log-facility=-",
                "--server=/cluster.local/127.0.0.1#10053",
                "--server=/in-addr.arpa/127.0.0.1#10053",
                "--server=/ip6.arpa/127.0.0.1#10053",
            ],
            vec![
                "-v=2",
                "-logtostderr",
                "-configDir=/etc/k8s/dns/dnsmasq-nanny",
                "-restartDnsmasq=true",
                "--",
                "-k",
                "--cache-size=1000",
                "--dns-forward-max=1500",
                "--no-negcache",
                "--dns-loop-detect",
                "--log-facility=-",
                "--server=/cluster.local/127.0.0.1#10053",
            ],
        ] {
            let config = NannyConfig::parse_args(args.clone()).expect("legacy args");
            assert!(config.restart_dnsmasq);
            assert_eq!(config.verbosity, 2);
            assert_eq!(
                config.config_dir,
                PathBuf::from("/etc/k8s/dns/dnsmasq-nanny")
            );
            assert_eq!(config.child_args[0], "-k");
            assert_eq!(config.child_args.len(), args.len() - 5);
            assert_eq!(config.child_kind, ChildKind::Dnsmasq);
        }
    }

    #[test]
    fn defaults_and_go_flag_forms() {
        let config = NannyConfig::parse_args(Vec::<String>::new()).expect("defaults");
        assert_eq!(config.dnsmasq_exec, PathBuf::from("/usr/sbin/dnsmasq"));
        assert!(!config.restart_dnsmasq);
        assert_eq!(config.sync_interval, Duration::from_secs(10));
        assert_eq!(config.kubedns_server.to_string(), "127.0.0.1:10053");
        assert_eq!(config.log_interval, Duration::ZERO);
        let config = NannyConfig::parse_args([
            "--dnsmasqExec",
            "/bin/dns-cache",
            "-syncInterval=500ms",
            "-restartDnsmasq",
            "-logInterval",
            "1m",
        ])
        .expect("forms");
        assert_eq!(config.child_kind, ChildKind::DnsCache);
        assert_eq!(config.sync_interval, Duration::from_millis(500));
        assert!(config.restart_dnsmasq);
        assert_eq!(config.log_interval, Duration::from_secs(60));
    }

    #[test]
    fn bad_flags_are_named() {
        assert_eq!(
            NannyConfig::parse_args(["-bogus"]),
            Err(CliError::Unknown("bogus".into()))
        );
        assert_eq!(
            NannyConfig::parse_args(["-configDir"]),
            Err(CliError::MissingValue("configDir".into()))
        );
        let err = NannyConfig::parse_args(["-syncInterval=10"]).expect_err("no unit");
        assert!(err.to_string().contains("-syncInterval"));
        let err = NannyConfig::parse_args(["-childMode=other"]).expect_err("bad mode");
        assert!(err.to_string().contains("childMode"));
    }
}
