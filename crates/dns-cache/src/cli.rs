//! The dnsmasq-compatible command line (dnsmasq 2.90 syntax: short and long options, `=` or a
//! separate argument, `--conf-file` lines without dashes) plus the options of ours.
//!
//! An unknown option is an error naming it; a dnsmasq option we do not implement is accepted
//! with one warning so existing manifests keep starting.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

/// dnsmasq's default `--cache-size`.
pub const DEFAULT_CACHE_SIZE: usize = 150;
/// dnsmasq's default `--dns-forward-max`.
pub const DEFAULT_FORWARD_MAX: usize = 150;
/// dnsmasq's default port.
pub const DEFAULT_PORT: u16 = 53;
/// `--forward-deadline`: under glibc's 5 s resolver timeout, so a client that gets nothing
/// from upstreams hears SERVFAIL (and moves on to its next search suffix or server) before it
/// would time out and resend, while a slow upstream still has 4 s to answer.
pub const DEFAULT_FORWARD_DEADLINE: Duration = Duration::from_secs(4);
/// Where dnsmasq reads upstreams by default.
pub const DEFAULT_RESOLV_FILE: &str = "/etc/resolv.conf";
/// dnsmasq's default for `--use-stale-cache` without a value: one day.
pub const DEFAULT_STALE_SECS: u32 = 86400;

/// Why the command line was rejected (exit 64).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CliError {
    #[error("unknown option {0}")]
    Unknown(String),
    #[error("option {0} needs a value")]
    MissingValue(String),
    #[error("option {option}: {reason}")]
    BadValue { option: String, reason: String },
    #[error("cannot read --conf-file {path}: {reason}")]
    ConfFile { path: String, reason: String },
}

/// How a route picks among its upstreams (`--upstream-policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamPolicy {
    /// dnsmasq: race all servers now and then, stick with the fastest.
    #[default]
    Fastest,
    RoundRobin,
    WeightedRoundRobin,
    LeastConnections,
    WeightedLeastConnections,
    ShortestExpectedDelay,
    NeverQueue,
    SourceHashing,
    DestinationHashing,
}

impl std::str::FromStr for UpstreamPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "fastest" => UpstreamPolicy::Fastest,
            "rr" => UpstreamPolicy::RoundRobin,
            "wrr" => UpstreamPolicy::WeightedRoundRobin,
            "lc" => UpstreamPolicy::LeastConnections,
            "wlc" => UpstreamPolicy::WeightedLeastConnections,
            "sed" => UpstreamPolicy::ShortestExpectedDelay,
            "nq" => UpstreamPolicy::NeverQueue,
            "sh" => UpstreamPolicy::SourceHashing,
            "dh" => UpstreamPolicy::DestinationHashing,
            other => {
                return Err(format!(
                    "{other:?} is not one of fastest, rr, wrr, lc, wlc, sed, nq, sh, dh"
                ));
            }
        })
    }
}

/// One `--server` (or `--local`) line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSpec {
    /// Lower-case domains without dots at the ends; empty for a default server.
    pub domains: Vec<String>,
    pub target: ServerTarget,
}

/// What a `--server` line points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerTarget {
    Address(SocketAddr),
    /// `--server=/domain/`: answered locally only (hosts, else NXDOMAIN).
    LocalOnly,
    /// `--server=/domain/#`: the default servers.
    Default,
}

/// Everything the command line says.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    /// `-v`/`--version`: print the version and exit.
    pub version: bool,
    pub keep_in_foreground: bool,
    pub port: u16,
    pub listen_addresses: Vec<IpAddr>,
    pub cache_size: usize,
    pub no_negcache: bool,
    pub neg_ttl: Option<u32>,
    pub min_cache_ttl: u32,
    pub max_cache_ttl: Option<u32>,
    pub max_ttl: Option<u32>,
    pub dns_loop_detect: bool,
    pub log_queries: bool,
    pub servers: Vec<ServerSpec>,
    pub no_resolv: bool,
    pub resolv_file: PathBuf,
    pub servers_file: Option<PathBuf>,
    pub no_hosts: bool,
    pub addn_hosts: Vec<PathBuf>,
    pub forward_max: usize,
    pub all_servers: bool,
    pub strict_order: bool,
    /// Seconds past expiry an entry may still be served (`--use-stale-cache`); 0 = unlimited.
    pub use_stale_cache: Option<u32>,
    pub no_round_robin: bool,
    pub local_ttl: u32,
    // ---- ours ----
    pub upstream_policy: UpstreamPolicy,
    pub upstream_weights: Vec<(SocketAddr, u32)>,
    pub metrics_address: Option<SocketAddr>,
    pub workers: usize,
    pub upstream_timeout: Duration,
    /// How long a forwarded query may wait for any valid reply before SERVFAIL
    /// (`--forward-deadline`, ms).
    pub forward_deadline: Duration,
    /// Zones whose SOA serial is watched (`--watch-soa`): lower case, without dots at the ends.
    pub watch_soa: Vec<String>,
    pub watch_soa_interval: Duration,
    /// Options accepted but not implemented (warned about once).
    pub ignored: Vec<String>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            version: false,
            keep_in_foreground: false,
            port: DEFAULT_PORT,
            listen_addresses: Vec::new(),
            cache_size: DEFAULT_CACHE_SIZE,
            no_negcache: false,
            neg_ttl: None,
            min_cache_ttl: 0,
            max_cache_ttl: None,
            max_ttl: None,
            dns_loop_detect: false,
            log_queries: false,
            servers: Vec::new(),
            no_resolv: false,
            resolv_file: PathBuf::from(DEFAULT_RESOLV_FILE),
            servers_file: None,
            no_hosts: false,
            addn_hosts: Vec::new(),
            forward_max: DEFAULT_FORWARD_MAX,
            all_servers: false,
            strict_order: false,
            use_stale_cache: None,
            no_round_robin: false,
            local_ttl: 0,
            upstream_policy: UpstreamPolicy::default(),
            upstream_weights: Vec::new(),
            metrics_address: None,
            workers: 0,
            upstream_timeout: Duration::from_millis(1500),
            forward_deadline: DEFAULT_FORWARD_DEADLINE,
            watch_soa: Vec::new(),
            watch_soa_interval: Duration::from_millis(250),
            ignored: Vec::new(),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Arg {
    None,
    Required,
    Optional,
}

/// (long name, short letter, argument) of every option we implement.
const OPTIONS: &[(&str, Option<char>, Arg)] = &[
    ("keep-in-foreground", Some('k'), Arg::None),
    ("no-daemon", Some('d'), Arg::None),
    ("port", Some('p'), Arg::Required),
    ("listen-address", Some('a'), Arg::Required),
    ("bind-interfaces", Some('z'), Arg::None),
    ("bind-dynamic", None, Arg::None),
    ("cache-size", Some('c'), Arg::Required),
    ("no-negcache", Some('N'), Arg::None),
    ("neg-ttl", None, Arg::Required),
    ("min-cache-ttl", None, Arg::Required),
    ("max-cache-ttl", None, Arg::Required),
    ("max-ttl", None, Arg::Required),
    ("local-ttl", Some('T'), Arg::Required),
    ("dns-loop-detect", None, Arg::None),
    ("log-facility", Some('8'), Arg::Required),
    ("log-queries", Some('q'), Arg::Optional),
    ("server", Some('S'), Arg::Required),
    ("local", None, Arg::Required),
    ("no-resolv", Some('R'), Arg::None),
    ("resolv-file", Some('r'), Arg::Required),
    ("servers-file", None, Arg::Required),
    ("no-hosts", Some('h'), Arg::None),
    ("addn-hosts", Some('H'), Arg::Required),
    ("dns-forward-max", Some('0'), Arg::Required),
    ("all-servers", None, Arg::None),
    ("strict-order", Some('o'), Arg::None),
    ("use-stale-cache", None, Arg::Optional),
    ("no-round-robin", None, Arg::None),
    ("conf-file", Some('C'), Arg::Optional),
    ("upstream-policy", None, Arg::Required),
    ("upstream-weight", None, Arg::Required),
    ("upstream-timeout", None, Arg::Required),
    ("forward-deadline", None, Arg::Required),
    ("metrics-address", None, Arg::Required),
    ("workers", None, Arg::Required),
    ("version", Some('v'), Arg::None),
    ("watch-soa", None, Arg::Required),
    ("watch-soa-interval", None, Arg::Required),
];

/// dnsmasq options accepted with a warning (their effect does not apply to this cache).
const IGNORED: &[(&str, Option<char>, Arg)] = &[
    ("user", Some('u'), Arg::Required),
    ("group", Some('g'), Arg::Required),
    ("pid-file", Some('x'), Arg::Optional),
    ("interface", Some('i'), Arg::Required),
    ("except-interface", Some('I'), Arg::Required),
    ("no-dhcp-interface", Some('2'), Arg::Required),
    ("domain-needed", None, Arg::None),
    ("bogus-priv", Some('b'), Arg::None),
    ("domain", Some('s'), Arg::Required),
    ("expand-hosts", Some('E'), Arg::None),
    ("local-service", None, Arg::Optional),
    ("edns-packet-max", Some('P'), Arg::Required),
    ("query-port", Some('Q'), Arg::Required),
    ("min-port", None, Arg::Required),
    ("max-port", None, Arg::Required),
    ("cache-rr", None, Arg::Required),
    ("clear-on-reload", None, Arg::None),
    ("no-poll", Some('n'), Arg::None),
    ("log-async", None, Arg::Optional),
    ("fast-dns-retry", None, Arg::Optional),
    ("no-ident", None, Arg::None),
    ("stop-dns-rebind", None, Arg::None),
    ("filterwin2k", Some('f'), Arg::None),
    ("address", Some('A'), Arg::Required),
    ("max-tcp-connections", None, Arg::Required),
    ("auth-ttl", None, Arg::Required),
];

/// Every option this parser knows, as `(long name, short letter, implemented)`; the options that
/// are not implemented are accepted with a warning. For the reference documentation's check.
pub fn known_options() -> impl Iterator<Item = (&'static str, Option<char>, bool)> {
    OPTIONS
        .iter()
        .map(|(long, short, _)| (*long, *short, true))
        .chain(
            IGNORED
                .iter()
                .map(|(long, short, _)| (*long, *short, false)),
        )
}

fn find_long(name: &str) -> Option<(&'static str, Arg, bool)> {
    OPTIONS
        .iter()
        .map(|o| (o, false))
        .chain(IGNORED.iter().map(|o| (o, true)))
        .find(|((long, _, _), _)| *long == name)
        .map(|((long, _, arg), ignored)| (*long, *arg, ignored))
}

fn find_short(c: char) -> Option<(&'static str, Arg, bool)> {
    OPTIONS
        .iter()
        .map(|o| (o, false))
        .chain(IGNORED.iter().map(|o| (o, true)))
        .find(|((_, short, _), _)| *short == Some(c))
        .map(|((long, _, arg), ignored)| (*long, *arg, ignored))
}

impl CacheConfig {
    /// Parses argv (without the program name).
    pub fn parse_args<I, S>(args: I) -> Result<Self, CliError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let args = expand_short_bundles(args.into_iter().map(Into::into).collect())?;
        let mut config = CacheConfig::default();
        let mut i = 0;
        while i < args.len() {
            let arg = &args[i];
            i += 1;
            let (long, inline) = if let Some(body) = arg.strip_prefix("--") {
                let (name, value) = match body.split_once('=') {
                    Some((name, value)) => (name, Some(value.to_owned())),
                    None => (body, None),
                };
                let (long, ..) =
                    find_long(name).ok_or_else(|| CliError::Unknown(format!("--{name}")))?;
                (long, value)
            } else {
                // After expansion a short option is exactly `-c`.
                let c = arg.chars().nth(1).unwrap_or('-');
                let (long, ..) = find_short(c).ok_or_else(|| CliError::Unknown(arg.clone()))?;
                (long, None)
            };
            let (_, kind, _) = find_long(long).ok_or_else(|| CliError::Unknown(arg.clone()))?;
            let value = match (kind, inline) {
                (Arg::None, Some(_)) => {
                    return Err(CliError::BadValue {
                        option: format!("--{long}"),
                        reason: "takes no value".into(),
                    });
                }
                (Arg::None, None) => None,
                (Arg::Required, Some(v)) => Some(v),
                (Arg::Required, None) => {
                    let v = args
                        .get(i)
                        .cloned()
                        .ok_or_else(|| CliError::MissingValue(format!("--{long}")))?;
                    i += 1;
                    Some(v)
                }
                (Arg::Optional, v) => v,
            };
            config.apply(long, value.as_deref())?;
        }
        Ok(config)
    }

    /// Applies one option (long name) with its value.
    fn apply(&mut self, long: &str, value: Option<&str>) -> Result<(), CliError> {
        let bad = |reason: String| CliError::BadValue {
            option: format!("--{long}"),
            reason,
        };
        let need = || value.ok_or_else(|| CliError::MissingValue(format!("--{long}")));
        let number = |v: &str| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| bad(format!("{v:?} is not a number")))
        };
        if let Some((_, _, true)) = find_long(long) {
            self.ignored.push(format!("--{long}"));
            return Ok(());
        }
        match long {
            "keep-in-foreground" | "no-daemon" => self.keep_in_foreground = true,
            "port" => {
                self.port =
                    u16::try_from(number(need()?)?).map_err(|_| bad("port out of range".into()))?
            }
            "listen-address" => {
                for part in need()?.split(',').filter(|p| !p.is_empty()) {
                    let ip = part
                        .trim()
                        .parse()
                        .map_err(|_| bad(format!("{part:?} is not an IP address")))?;
                    self.listen_addresses.push(ip);
                }
            }
            "bind-interfaces" | "bind-dynamic" => {}
            "cache-size" => self.cache_size = number(need()?)? as usize,
            "no-negcache" => self.no_negcache = true,
            "neg-ttl" => self.neg_ttl = Some(number(need()?)? as u32),
            "min-cache-ttl" => {
                // dnsmasq limits it to one hour.
                self.min_cache_ttl = (number(need()?)? as u32).min(3600);
            }
            "max-cache-ttl" => self.max_cache_ttl = Some(number(need()?)? as u32),
            "max-ttl" => self.max_ttl = Some(number(need()?)? as u32),
            "local-ttl" => self.local_ttl = number(need()?)? as u32,
            "dns-loop-detect" => self.dns_loop_detect = true,
            "log-facility" => {}
            "log-queries" => self.log_queries = true,
            "server" | "local" => self.servers.push(parse_server(need()?).map_err(bad)?),
            "no-resolv" => self.no_resolv = true,
            "resolv-file" => self.resolv_file = PathBuf::from(need()?),
            "servers-file" => self.servers_file = Some(PathBuf::from(need()?)),
            "no-hosts" => self.no_hosts = true,
            "addn-hosts" => self.addn_hosts.push(PathBuf::from(need()?)),
            "dns-forward-max" => self.forward_max = (number(need()?)? as usize).max(1),
            "all-servers" => self.all_servers = true,
            "strict-order" => self.strict_order = true,
            "use-stale-cache" => {
                self.use_stale_cache = Some(match value {
                    Some(v) => number(v)? as u32,
                    None => DEFAULT_STALE_SECS,
                })
            }
            "no-round-robin" => self.no_round_robin = true,
            "conf-file" => {
                if let Some(path) = value {
                    self.read_conf_file(path)?;
                }
            }
            "upstream-policy" => self.upstream_policy = need()?.parse().map_err(bad)?,
            "upstream-weight" => {
                let v = need()?;
                let (server, weight) = v
                    .rsplit_once('=')
                    .ok_or_else(|| bad(format!("{v:?} is not <ip>[#port]=<weight>")))?;
                let addr = parse_address(server).map_err(bad)?;
                let weight = number(weight)? as u32;
                self.upstream_weights.push((addr, weight.max(1)));
            }
            "upstream-timeout" => {
                self.upstream_timeout = Duration::from_millis(number(need()?)?.max(10))
            }
            "forward-deadline" => {
                self.forward_deadline = Duration::from_millis(number(need()?)?.max(100))
            }
            "metrics-address" => {
                let v = need()?;
                self.metrics_address = Some(
                    v.parse()
                        .map_err(|_| bad(format!("{v:?} is not ip:port")))?,
                )
            }
            "workers" => self.workers = number(need()?)? as usize,
            "version" => self.version = true,
            "watch-soa" => {
                let domain = need()?
                    .trim_matches(|c| c == '/' || c == '.')
                    .to_ascii_lowercase();
                if domain.is_empty() {
                    return Err(CliError::BadValue {
                        option: "--watch-soa".into(),
                        reason: "needs a zone such as cluster.local".into(),
                    });
                }
                self.watch_soa.push(domain);
            }
            "watch-soa-interval" => {
                self.watch_soa_interval = Duration::from_millis(number(need()?)?.max(10))
            }
            other => return Err(CliError::Unknown(format!("--{other}"))),
        }
        Ok(())
    }

    /// Reads `option[=value]` lines (dnsmasq.conf syntax; `#` comments).
    fn read_conf_file(&mut self, path: &str) -> Result<(), CliError> {
        let text = std::fs::read_to_string(path).map_err(|e| CliError::ConfFile {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, value) = match line.split_once('=') {
                Some((name, value)) => (name.trim(), Some(value.trim())),
                None => (line, None),
            };
            let Some((long, _, _)) = find_long(name) else {
                return Err(CliError::ConfFile {
                    path: path.to_owned(),
                    reason: format!("line {}: unknown option {name:?}", n + 1),
                });
            };
            self.apply(long, value)?;
        }
        Ok(())
    }

    /// The addresses to listen on (dnsmasq listens on every address by default).
    pub fn listen_addrs(&self) -> Vec<SocketAddr> {
        if self.listen_addresses.is_empty() {
            return vec![SocketAddr::new(IpAddr::from([0, 0, 0, 0]), self.port)];
        }
        self.listen_addresses
            .iter()
            .map(|ip| SocketAddr::new(*ip, self.port))
            .collect()
    }
}

/// Splits getopt bundles: `-kN` becomes `-k -N`, `-p5353` becomes `-p 5353`.
fn expand_short_bundles(args: Vec<String>) -> Result<Vec<String>, CliError> {
    let mut out = Vec::with_capacity(args.len());
    for arg in args {
        if arg.starts_with("--") || !arg.starts_with('-') || arg.len() <= 2 {
            out.push(arg);
            continue;
        }
        let mut rest = &arg[1..];
        while let Some(c) = rest.chars().next() {
            let (_, kind, _) = find_short(c).ok_or_else(|| CliError::Unknown(format!("-{c}")))?;
            out.push(format!("-{c}"));
            rest = &rest[c.len_utf8()..];
            if kind != Arg::None && !rest.is_empty() {
                out.push(rest.to_owned());
                break;
            }
        }
    }
    Ok(out)
}

/// `ip`, `ip#port`, `[v6]`-less IPv6 (`fd00::1#53`); `@interface`/`@source` parts are dropped.
pub fn parse_address(text: &str) -> Result<SocketAddr, String> {
    let text = text.split('@').next().unwrap_or(text);
    let (ip, port) = match text.split_once('#') {
        Some((ip, port)) => (
            ip,
            port.parse::<u16>()
                .map_err(|_| format!("{port:?} is not a port"))?,
        ),
        None => (text, DEFAULT_PORT),
    };
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| format!("{ip:?} is not an IP address"))?;
    Ok(SocketAddr::new(ip, port))
}

/// dnsmasq's `--server` syntax: `[/<domain>/[<domain>/]][<ip>[#<port>]]`, also `/<domain>/#`.
pub fn parse_server(text: &str) -> Result<ServerSpec, String> {
    let (domains, target) = if let Some(rest) = text.strip_prefix('/') {
        let Some(last) = rest.rfind('/') else {
            return Err(format!("{text:?}: a domain list must end with /"));
        };
        let domains: Vec<String> = rest[..last]
            .split('/')
            .map(|d| d.trim_matches('.').to_ascii_lowercase())
            .collect();
        (domains, &rest[last + 1..])
    } else {
        (Vec::new(), text)
    };
    let target = match target {
        "" if !domains.is_empty() => ServerTarget::LocalOnly,
        "#" if !domains.is_empty() => ServerTarget::Default,
        "" => return Err("--server needs an address".into()),
        address => ServerTarget::Address(parse_address(address)?),
    };
    Ok(ServerSpec { domains, target })
}

/// Reads a `--servers-file`: `server=...` (or `local=...`) lines.
pub fn parse_servers_file(text: &str) -> Result<Vec<ServerSpec>, String> {
    let mut servers = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let value = line
            .strip_prefix("server=")
            .or_else(|| line.strip_prefix("local="))
            .ok_or_else(|| format!("line {}: expected server=...", n + 1))?;
        servers.push(parse_server(value).map_err(|e| format!("line {}: {e}", n + 1))?);
    }
    Ok(servers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<CacheConfig, CliError> {
        CacheConfig::parse_args(args.iter().copied())
    }

    #[test]
    fn legacy_manifest_args_are_accepted() {
        let config = parse(&[
            "-k",
            "--cache-size=1000",
            "--no-negcache",
            "--dns-loop-detect",
            "--log-facility=-",
            "--server=/cluster.local/127.0.0.1#10053",
            "--server=/in-addr.arpa/127.0.0.1#10053",
            "--server=/ip6.arpa/127.0.0.1#10053",
        ])
        .expect("legacy args");
        assert!(config.keep_in_foreground && config.no_negcache && config.dns_loop_detect);
        assert_eq!(config.cache_size, 1000);
        assert_eq!(config.servers.len(), 3);
        assert_eq!(config.servers[0].domains, vec!["cluster.local"]);
        assert_eq!(
            config.servers[0].target,
            ServerTarget::Address("127.0.0.1:10053".parse().expect("addr"))
        );
        let nanny = parse(&[
            "-k",
            "--cache-size=1000",
            "--server",
            "8.8.8.8",
            "--no-resolv",
        ])
        .expect("nanny");
        assert_eq!(
            nanny.servers[0].target,
            ServerTarget::Address("8.8.8.8:53".parse().expect("addr"))
        );
        assert!(nanny.no_resolv);
    }

    #[test]
    fn defaults_match_dnsmasq() {
        let config = parse(&[]).expect("defaults");
        assert_eq!(config.cache_size, 150);
        assert_eq!(config.forward_max, 150);
        assert_eq!(config.port, 53);
        assert_eq!(config.resolv_file, PathBuf::from("/etc/resolv.conf"));
        assert_eq!(config.upstream_policy, UpstreamPolicy::Fastest);
    }

    #[test]
    fn short_forms_with_separate_attached_and_bundled_values() {
        let config = parse(&[
            "-p",
            "5353",
            "-c500",
            "-kN",
            "-a",
            "127.0.0.1,::1",
            "-S",
            "/x/1.2.3.4",
        ])
        .expect("short forms");
        assert_eq!(config.port, 5353);
        assert_eq!(config.cache_size, 500);
        assert!(config.keep_in_foreground && config.no_negcache);
        assert_eq!(config.listen_addresses.len(), 2);
        assert_eq!(config.servers.len(), 1);
    }

    #[test]
    fn server_syntax() {
        assert_eq!(
            parse_server("/a.b/c.d/10.0.0.1#5353").expect("ok"),
            ServerSpec {
                domains: vec!["a.b".into(), "c.d".into()],
                target: ServerTarget::Address("10.0.0.1:5353".parse().expect("addr")),
            }
        );
        assert_eq!(
            parse_server("/local/").expect("ok").target,
            ServerTarget::LocalOnly
        );
        assert_eq!(
            parse_server("/x/#").expect("ok").target,
            ServerTarget::Default
        );
        assert_eq!(
            parse_server("fd00::1#53").expect("ok").target,
            ServerTarget::Address("[fd00::1]:53".parse().expect("addr"))
        );
        assert_eq!(
            parse_server("10.0.0.1@eth0").expect("ok").target,
            ServerTarget::Address("10.0.0.1:53".parse().expect("addr"))
        );
        assert!(parse_server("/x").is_err());
        assert!(parse_server("nothost#53").is_err());
    }

    #[test]
    fn unknown_and_bad_options_are_named() {
        assert_eq!(
            parse(&["--bogus"]),
            Err(CliError::Unknown("--bogus".into()))
        );
        assert_eq!(parse(&["-Y"]), Err(CliError::Unknown("-Y".into())));
        let err = parse(&["--cache-size=lots"]).expect_err("bad");
        assert!(err.to_string().contains("--cache-size"), "{err}");
        assert_eq!(
            parse(&["--port"]),
            Err(CliError::MissingValue("--port".into()))
        );
        let err = parse(&["--upstream-policy=random"]).expect_err("bad");
        assert!(err.to_string().contains("--upstream-policy"));
    }

    #[test]
    fn known_unimplemented_options_are_accepted_and_listed() {
        let config =
            parse(&["--user=root", "--domain-needed", "-b", "--cache-size=10"]).expect("ok");
        assert_eq!(
            config.ignored,
            vec!["--user", "--domain-needed", "--bogus-priv"]
        );
        assert_eq!(config.cache_size, 10);
    }

    #[test]
    fn stale_weights_and_conf_file() {
        let dir = std::env::temp_dir().join(format!("dns-cache-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let conf = dir.join("dnsmasq.conf");
        std::fs::write(
            &conf,
            "# comment\nno-negcache\nserver=/corp/10.1.1.1\ncache-size=42\n",
        )
        .expect("write");
        let config = parse(&[
            "--use-stale-cache",
            "--upstream-policy=wrr",
            "--upstream-weight=10.0.0.1#53=3",
            &format!("--conf-file={}", conf.display()),
        ])
        .expect("ok");
        assert_eq!(config.use_stale_cache, Some(DEFAULT_STALE_SECS));
        assert_eq!(
            config.upstream_weights,
            vec![("10.0.0.1:53".parse().expect("addr"), 3)]
        );
        assert!(config.no_negcache);
        assert_eq!(config.cache_size, 42);
        assert_eq!(config.servers.len(), 1);
        let err = parse(&["--conf-file=/nonexistent/x.conf"]).expect_err("missing file");
        assert!(err.to_string().contains("/nonexistent/x.conf"));
    }

    #[test]
    fn servers_file_lines() {
        let servers =
            parse_servers_file("server=/a/1.1.1.1\n\n# x\nserver=2.2.2.2#5353\n").expect("ok");
        assert_eq!(servers.len(), 2);
        assert!(parse_servers_file("nonsense").is_err());
    }
}
