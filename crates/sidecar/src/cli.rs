//! The `sidecar` command line: the legacy flags of contract §4.1 with their defaults, pflag's
//! `_`/`-` equivalence, the logging flags tolerated.

use std::net::IpAddr;
use std::time::Duration;

use clap::Parser;

use crate::probe::ProbeSpec;

/// sidecar: probes the DNS containers, serves /healthcheck/<label> for liveness probes, and
/// exports the cache's statistics as Prometheus metrics.
#[derive(Debug, Clone, Parser)]
#[command(name = "sidecar", disable_version_flag = true)]
pub struct Cli {
    /// Address of the cache (dnsmasq or dns-cache) asked for its CHAOS TXT statistics.
    #[arg(long, default_value = "127.0.0.1")]
    pub dnsmasq_addr: IpAddr,
    /// Port of the cache.
    #[arg(long, default_value_t = 53)]
    pub dnsmasq_port: u16,
    /// Statistics polling interval in milliseconds; 0 turns polling off.
    #[arg(long, default_value_t = 5000)]
    pub dnsmasq_poll_interval_ms: u64,
    /// `<label>,<server>[:port],<name>[,<interval seconds>][,<type>]`, repeatable. Types: A, AAAA,
    /// ANY (default), SRV, TXT, PTR, CNAME, NS, SOA.
    #[arg(long, value_parser = ProbeSpec::parse)]
    pub probe: Vec<ProbeSpec>,
    /// Address of the HTTP listener (health checks and metrics).
    #[arg(long, default_value = "0.0.0.0")]
    pub prometheus_addr: IpAddr,
    /// Port of the HTTP listener (0 picks a free port).
    #[arg(long, default_value_t = 10054)]
    pub prometheus_port: u16,
    /// Path of the metrics.
    #[arg(long, default_value = "/metrics", value_parser = parse_path)]
    pub prometheus_path: String,
    /// Prefix of every metric name (empty: none).
    #[arg(long, default_value = "kubedns", value_parser = parse_namespace)]
    pub prometheus_namespace: String,
    /// Print `Kube-DNS <version>` and exit.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub version: Option<String>,
    #[command(flatten)]
    pub klog: daemon_support::KlogFlags,
}

impl Cli {
    /// Parses argv with pflag's `_` -> `-` normalisation. Errors name the flag.
    pub fn parse_args<I, S>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        daemon_support::parse_pflag_args(args, Cli::check)
    }

    fn check(&self) -> Result<(), CliError> {
        let mut seen = std::collections::HashSet::new();
        for probe in &self.probe {
            if !seen.insert(probe.label.as_str()) {
                return Err(CliError::DuplicateLabel(probe.label.clone()));
            }
        }
        Ok(())
    }

    /// The statistics polling interval, `None` when turned off.
    pub fn poll_interval(&self) -> Option<Duration> {
        (self.dnsmasq_poll_interval_ms > 0)
            .then(|| Duration::from_millis(self.dnsmasq_poll_interval_ms))
    }
}

/// A flag value the sidecar rejects (beyond what [`ProbeSpec::parse`] checks).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CliError {
    #[error(
        "--probe: duplicate label {0:?} (each label has its own /healthcheck path and metrics)"
    )]
    DuplicateLabel(String),
    #[error("{0:?} must start with / and not be /healthz or under /healthcheck/")]
    MetricsPath(String),
    #[error("{0:?} is not a metric name prefix ([a-zA-Z_:][a-zA-Z0-9_:]*)")]
    MetricsNamespace(String),
}

fn parse_path(s: &str) -> Result<String, CliError> {
    if !s.starts_with('/')
        || s.starts_with(crate::http::HEALTHCHECK_PREFIX)
        || s == crate::http::HEALTHZ_PATH
    {
        return Err(CliError::MetricsPath(s.to_owned()));
    }
    Ok(s.to_owned())
}

fn parse_namespace(s: &str) -> Result<String, CliError> {
    let valid = s.chars().enumerate().all(|(i, c)| {
        c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
    });
    if !valid {
        return Err(CliError::MetricsNamespace(s.to_owned()));
    }
    Ok(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::parse_args(std::iter::once("sidecar").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_match_the_legacy_binary() {
        let cli = parse(&[]).expect("defaults");
        assert_eq!(cli.dnsmasq_addr.to_string(), "127.0.0.1");
        assert_eq!(cli.dnsmasq_port, 53);
        assert_eq!(cli.dnsmasq_poll_interval_ms, 5000);
        assert!(cli.probe.is_empty());
        assert_eq!(cli.prometheus_addr.to_string(), "0.0.0.0");
        assert_eq!(cli.prometheus_port, 10054);
        assert_eq!(cli.prometheus_path, "/metrics");
        assert_eq!(cli.prometheus_namespace, "kubedns");
        assert_eq!(cli.poll_interval(), Some(Duration::from_secs(5)));
    }

    #[test]
    fn legacy_manifest_args_are_accepted() {
        // 1.14.13
        let old = parse(&[
            "--v=2",
            "--logtostderr",
            "--probe=kubedns,127.0.0.1:10053,kubernetes.default.svc.cluster.local,5,A",
            "--probe=dnsmasq,127.0.0.1:53,kubernetes.default.svc.cluster.local,5,A",
        ])
        .expect("1.14.13 args");
        assert_eq!(old.probe.len(), 2);
        // current
        let new = parse(&[
            "--v=2",
            "--logtostderr",
            "--probe=kubedns,127.0.0.1:10053,kubernetes.default.svc.cluster.local,5,SRV",
            "--probe=dnsmasq,127.0.0.1:53,kubernetes.default.svc.cluster.local,5,SRV",
        ])
        .expect("current args");
        assert_eq!(new.probe[1].label, "dnsmasq");
    }

    #[test]
    fn every_flag_parses_with_underscores_too() {
        let cli = parse(&[
            "--dnsmasq_addr=::1",
            "--dnsmasq-port=5353",
            "--dnsmasq-poll-interval-ms=0",
            "--probe",
            "a,127.0.0.1,example.com",
            "--prometheus-addr=127.0.0.1",
            "--prometheus_port=0",
            "--prometheus-path=/m",
            "--prometheus-namespace=ns",
            "--vmodule=x=1",
            "--log-flush-frequency=1s",
            "--alsologtostderr",
        ])
        .expect("all flags");
        assert_eq!(cli.dnsmasq_port, 5353);
        assert_eq!(cli.poll_interval(), None);
        assert_eq!(cli.prometheus_path, "/m");
        assert_eq!(cli.probe[0].label, "a");
    }

    #[test]
    fn bad_flags_name_the_flag() {
        let cases: &[(&[&str], &str)] = &[
            (&["--no-such-flag"], "--no-such-flag"),
            (&["--dnsmasq-port=x"], "--dnsmasq-port"),
            (&["--dnsmasq-addr=dnsmasq.local"], "--dnsmasq-addr"),
            (&["--probe=a,b"], "invalid format to --probe"),
            (&["--probe=a,127.0.0.1,x,0"], "at least 1 second"),
            (
                &["--probe=a,127.0.0.1,x", "--probe=a,127.0.0.2,y"],
                "duplicate label",
            ),
            (&["--prometheus-path=metrics"], "--prometheus-path"),
            (&["--prometheus-namespace=1x"], "--prometheus-namespace"),
        ];
        for (args, needle) in cases {
            let err = parse(args).expect_err("must fail").to_string();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }
}
