//! The `kube-dns` ConfigMap: keys, parsing, the legacy validation rules (contract §5.3) and the
//! content-hash version of a mounted ConfigMap directory (contract §5.2).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use sha2::{Digest, Sha256};
use thiserror::Error;

/// JSON object: domain -> list of nameservers.
pub const STUB_DOMAINS_KEY: &str = "stubDomains";
/// JSON array of at most three nameservers.
pub const UPSTREAM_NAMESERVERS_KEY: &str = "upstreamNameservers";
/// `name=domain,...` (not JSON).
pub const FEDERATIONS_KEY: &str = "federations";
/// Ours: `IPv4` or `IPv6` when the cluster has only that family; dns-cache then answers the
/// other family's address questions NODATA without forwarding them (`--ipv4-only`,
/// `--ipv6-only`). kube-dns does not use it.
pub const IP_FAMILY_KEY: &str = "ipFamily";

/// The only address family of a single-stack cluster (`ipFamily`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpFamily {
    IPv4,
    IPv6,
}
/// The legacy limit on `upstreamNameservers`.
pub const MAX_UPSTREAM_NAMESERVERS: usize = 3;
/// Default DNS port for nameservers written without one.
pub const DNS_PORT: u16 = 53;

/// The parsed, validated ConfigMap. The default (empty) value means: no stub domains, no
/// federations, upstreams from `/etc/resolv.conf`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsConfig {
    pub stub_domains: BTreeMap<String, Vec<String>>,
    pub upstream_nameservers: Vec<String>,
    pub federations: BTreeMap<String, String>,
    /// `ipFamily`: unset for dual-stack (the default).
    pub ip_family: Option<IpFamily>,
}

/// Why an update was rejected. The whole update is ignored; the last good config stays.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("invalid JSON in {key}: {reason}")]
    Json { key: &'static str, reason: String },
    #[error(
        "stubDomains key {domain:?} is not a valid DNS subdomain (lower case, no trailing dot)"
    )]
    StubDomain { domain: String },
    #[error("stubDomains {domain:?}: nameserver {server:?} is not an IP, host:port or DNS name")]
    StubNameserver { domain: String, server: String },
    #[error("upstreamNameservers cannot have more than three entries (found {0})")]
    TooManyUpstreams(usize),
    #[error("upstreamNameservers entry {0:?} is not an IP address with an optional port 1-65535")]
    Upstream(String),
    #[error("federations entry {0:?}: invalid format, must be key=value")]
    FederationFormat(String),
    #[error("federations name {0:?} is not a valid DNS label")]
    FederationName(String),
    #[error("federations domain {0:?} is not a valid DNS subdomain")]
    FederationDomain(String),
    #[error("ipFamily {0:?} is not IPv4 or IPv6")]
    IpFamily(String),
    #[error("file {0:?} is not valid UTF-8")]
    NotUtf8(String),
}

impl DnsConfig {
    /// Parses and validates ConfigMap data. Missing keys (and empty values) take defaults.
    pub fn from_data(data: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let mut config = DnsConfig::default();
        if let Some(raw) = data.get(STUB_DOMAINS_KEY).filter(|v| !v.trim().is_empty()) {
            config.stub_domains = serde_json::from_str(raw).map_err(|e| ConfigError::Json {
                key: STUB_DOMAINS_KEY,
                reason: e.to_string(),
            })?;
        }
        if let Some(raw) = data
            .get(UPSTREAM_NAMESERVERS_KEY)
            .filter(|v| !v.trim().is_empty())
        {
            config.upstream_nameservers =
                serde_json::from_str(raw).map_err(|e| ConfigError::Json {
                    key: UPSTREAM_NAMESERVERS_KEY,
                    reason: e.to_string(),
                })?;
        }
        if let Some(raw) = data.get(FEDERATIONS_KEY) {
            config.federations = parse_federations(raw)?;
        }
        config.ip_family = match data.get(IP_FAMILY_KEY).map(|v| v.trim()) {
            None | Some("") => None,
            Some("IPv4") => Some(IpFamily::IPv4),
            Some("IPv6") => Some(IpFamily::IPv6),
            Some(other) => return Err(ConfigError::IpFamily(other.to_owned())),
        };
        config.validate()?;
        Ok(config)
    }

    /// Reads ConfigMap files (name -> bytes), as found in a mounted directory.
    pub fn from_files(files: &BTreeMap<String, Vec<u8>>) -> Result<Self, ConfigError> {
        let mut data = BTreeMap::new();
        for (name, bytes) in files {
            let text =
                std::str::from_utf8(bytes).map_err(|_| ConfigError::NotUtf8(name.clone()))?;
            data.insert(name.clone(), text.to_owned());
        }
        Self::from_data(&data)
    }

    /// The legacy rules of `config.Validate`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (domain, servers) in &self.stub_domains {
            if !is_dns1123_subdomain(domain) {
                return Err(ConfigError::StubDomain {
                    domain: domain.clone(),
                });
            }
            for server in servers {
                if !is_valid_stub_nameserver(server) {
                    return Err(ConfigError::StubNameserver {
                        domain: domain.clone(),
                        server: server.clone(),
                    });
                }
            }
        }
        if self.upstream_nameservers.len() > MAX_UPSTREAM_NAMESERVERS {
            return Err(ConfigError::TooManyUpstreams(
                self.upstream_nameservers.len(),
            ));
        }
        for server in &self.upstream_nameservers {
            parse_ip_nameserver(server).ok_or_else(|| ConfigError::Upstream(server.clone()))?;
        }
        Ok(())
    }

    /// The upstream nameservers as socket addresses (validated already).
    pub fn upstream_addrs(&self) -> Vec<SocketAddr> {
        self.upstream_nameservers
            .iter()
            .filter_map(|s| parse_ip_nameserver(s))
            .collect()
    }

    /// Stub domains whose nameservers are all IP literals, as socket addresses. Hostname
    /// nameservers are resolved by the caller (they need I/O).
    pub fn stub_addrs(&self) -> BTreeMap<String, Vec<SocketAddr>> {
        self.stub_domains
            .iter()
            .map(|(domain, servers)| {
                let addrs = servers
                    .iter()
                    .filter_map(|s| parse_ip_nameserver(s))
                    .collect();
                (domain.clone(), addrs)
            })
            .collect()
    }
}

fn parse_federations(raw: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut out = BTreeMap::new();
    if raw.trim().is_empty() {
        return Ok(out);
    }
    for item in raw.split(',') {
        let item = item.trim();
        let (name, domain) = item
            .split_once('=')
            .ok_or_else(|| ConfigError::FederationFormat(item.to_owned()))?;
        let (name, domain) = (name.trim(), domain.trim());
        if !is_dns1123_label(name) {
            return Err(ConfigError::FederationName(name.to_owned()));
        }
        if !is_dns1123_subdomain(domain) {
            return Err(ConfigError::FederationDomain(domain.to_owned()));
        }
        out.insert(name.to_owned(), domain.to_owned());
    }
    Ok(out)
}

/// Parses `ip`, `ip:port` or `[v6]:port` with an IP literal and a port in 1..=65535.
pub fn parse_ip_nameserver(server: &str) -> Option<SocketAddr> {
    if let Ok(ip) = server.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, DNS_PORT));
    }
    let addr: SocketAddr = server.parse().ok()?;
    (addr.port() != 0).then_some(addr)
}

/// `host`, `host:port` or `[v6]:port`, where the host is an IP, or the whole string is a
/// DNS-1123 subdomain (so `ns.foo.com` passes but `ns.foo.com:53` does not: legacy rule).
fn is_valid_stub_nameserver(server: &str) -> bool {
    if server.parse::<IpAddr>().is_ok() || is_dns1123_subdomain(server) {
        return true;
    }
    let (host, port) = match server.rsplit_once(':') {
        Some((host, port)) => (host, port),
        None => return false,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    port.parse::<u16>().is_ok() && host.parse::<IpAddr>().is_ok()
}

/// A DNS-1123 label: 1-63 of `[a-z0-9-]`, alphanumeric at both ends.
pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// A DNS-1123 subdomain: dot-separated labels, at most 253 characters, no trailing dot.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// The version of a ConfigMap directory: hex SHA-256 over `name 0 data 0` of every file in
/// name order; `""` for no files (contract §5.2).
pub fn config_version(files: &BTreeMap<String, Vec<u8>>) -> String {
    if files.is_empty() {
        return String::new();
    }
    let mut hasher = Sha256::new();
    for (name, data) in files {
        hasher.update(name.as_bytes());
        hasher.update([0]);
        hasher.update(data);
        hasher.update([0]);
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn ip_family_is_ipv4_ipv6_or_unset() {
        let parse = |v: &str| DnsConfig::from_data(&data(&[(IP_FAMILY_KEY, v)]));
        assert_eq!(parse("IPv4").map(|c| c.ip_family), Ok(Some(IpFamily::IPv4)));
        assert_eq!(
            parse(" IPv6 ").map(|c| c.ip_family),
            Ok(Some(IpFamily::IPv6))
        );
        assert_eq!(parse("").map(|c| c.ip_family), Ok(None));
        assert_eq!(
            parse("ipv4"),
            Err(ConfigError::IpFamily("ipv4".into())),
            "the value is case-sensitive, as Kubernetes' ipFamilies"
        );
    }

    #[test]
    fn empty_config_is_default() {
        assert_eq!(DnsConfig::from_data(&data(&[])), Ok(DnsConfig::default()));
    }

    #[test]
    fn valid_config_parses_all_keys() {
        let config = DnsConfig::from_data(&data(&[
            (
                STUB_DOMAINS_KEY,
                r#"{"acme.local": ["1.2.3.4", "10.0.0.5:8600", "ns.foo.com"]}"#,
            ),
            (
                UPSTREAM_NAMESERVERS_KEY,
                r#"["8.8.8.8", "[2001:db8::1]:5353"]"#,
            ),
            (
                FEDERATIONS_KEY,
                " myfed=example.com , other=foo.example.org ",
            ),
        ]))
        .expect("valid");
        assert_eq!(config.stub_domains["acme.local"].len(), 3);
        assert_eq!(
            config.upstream_addrs(),
            vec![
                "8.8.8.8:53".parse().expect("addr"),
                "[2001:db8::1]:5353".parse().expect("addr")
            ]
        );
        assert_eq!(config.federations["other"], "foo.example.org");
    }

    #[test]
    fn legacy_validation_rules_reject() {
        let cases: &[(&str, &str)] = &[
            (STUB_DOMAINS_KEY, r#"{"": ["1.2.3.4"]}"#),
            (STUB_DOMAINS_KEY, r#"{"$$$$": ["1.2.3.4"]}"#),
            (STUB_DOMAINS_KEY, r#"{"acme.local.": ["1.2.3.4"]}"#),
            (STUB_DOMAINS_KEY, r#"{"acme.local": ["1.2.3.4:65564"]}"#),
            (STUB_DOMAINS_KEY, r#"{"acme.local": ["ns.foo.com:53"]}"#),
            (STUB_DOMAINS_KEY, r#"{"acme.local": "1.2.3.4"}"#),
            (
                UPSTREAM_NAMESERVERS_KEY,
                r#"["1.1.1.1", "2.2.2.2", "3.3.3.3", "4.4.4.4"]"#,
            ),
            (UPSTREAM_NAMESERVERS_KEY, r#"["1.1.1.1:abc"]"#),
            (UPSTREAM_NAMESERVERS_KEY, r#"["1.1.1.1:"]"#),
            (UPSTREAM_NAMESERVERS_KEY, r#"["1.1.1.1:123456789"]"#),
            (UPSTREAM_NAMESERVERS_KEY, r#"["dns.google"]"#),
            (UPSTREAM_NAMESERVERS_KEY, "not json"),
            (FEDERATIONS_KEY, "a.b=cdef"),
            (FEDERATIONS_KEY, "novalue"),
            (FEDERATIONS_KEY, "x=UPPER.com"),
        ];
        for (key, value) in cases {
            assert!(
                DnsConfig::from_data(&data(&[(key, value)])).is_err(),
                "{key}={value} should be rejected"
            );
        }
    }

    #[test]
    fn stub_port_zero_passes_as_legacy() {
        assert!(
            DnsConfig::from_data(&data(&[(STUB_DOMAINS_KEY, r#"{"a.b": ["1.2.3.4:0"]}"#)])).is_ok()
        );
    }

    #[test]
    fn version_hash_changes_with_content() {
        let mut files = BTreeMap::new();
        assert_eq!(config_version(&files), "");
        files.insert("a".to_owned(), b"1".to_vec());
        let v1 = config_version(&files);
        files.insert("a".to_owned(), b"2".to_vec());
        let v2 = config_version(&files);
        assert_eq!(v1.len(), 64);
        assert_ne!(v1, v2);
    }
}
