//! `--server`/`--local` specs (`[/<domain>/[<domain>/]][<ip>[#<port>]]`) and the
//! `--servers-file` the nanny writes.

use std::net::{IpAddr, SocketAddr};

use thiserror::Error;

use super::DEFAULT_PORT;

/// Why a server spec or a servers file was rejected.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ServerError {
    #[error("{0:?} is not a port")]
    Port(String),
    #[error("{0:?} is not an IP address")]
    Address(String),
    #[error("{0:?}: a domain list must end with /")]
    UnclosedDomains(String),
    #[error("{0:?} names no domain (/domain/...)")]
    NoDomains(String),
    #[error("--server needs an address")]
    NoAddress,
    #[error("line {line}: expected server=..., local=..., ipv4-only or ipv6-only")]
    NotAServerLine { line: usize },
    #[error("line {line}: {source}")]
    Line {
        line: usize,
        #[source]
        source: Box<ServerError>,
    },
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

/// `ip`, `ip#port`, `[v6]`-less IPv6 (`fd00::1#53`); `@interface`/`@source` parts are dropped.
pub fn parse_address(text: &str) -> Result<SocketAddr, ServerError> {
    let text = text.split('@').next().unwrap_or(text);
    let (ip, port) = match text.split_once('#') {
        Some((ip, port)) => (
            ip,
            port.parse::<u16>()
                .map_err(|_| ServerError::Port(port.to_owned()))?,
        ),
        None => (text, DEFAULT_PORT),
    };
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| ServerError::Address(ip.to_owned()))?;
    Ok(SocketAddr::new(ip, port))
}

/// dnsmasq's `--server` syntax: `[/<domain>/[<domain>/]][<ip>[#<port>]]`, also `/<domain>/#`.
pub fn parse_server(text: &str) -> Result<ServerSpec, ServerError> {
    let (domains, target) = split_domains(text)?;
    let target = match target {
        "" if !domains.is_empty() => ServerTarget::LocalOnly,
        "#" if !domains.is_empty() => ServerTarget::Default,
        "" => return Err(ServerError::NoAddress),
        address => ServerTarget::Address(parse_address(address)?),
    };
    Ok(ServerSpec { domains, target })
}

/// One `--address=/<domain>/[<domain>/...]<ip>` line (an empty address is a local-only
/// domain, handled as a `--server`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressSpec {
    /// Lower-case domains without dots at the ends; "" (written `#`) matches every name.
    pub domains: Vec<String>,
    /// `#` is both null addresses, 0.0.0.0 and ::.
    pub addresses: Vec<IpAddr>,
}

/// `/domain/[domain/...]` split into lower-case domains without dots at the ends, and the rest.
fn split_domains(text: &str) -> Result<(Vec<String>, &str), ServerError> {
    let Some(rest) = text.strip_prefix('/') else {
        return Ok((Vec::new(), text));
    };
    let Some(last) = rest.rfind('/') else {
        return Err(ServerError::UnclosedDomains(text.to_owned()));
    };
    let domains = rest[..last]
        .split('/')
        .map(|d| d.trim_matches('.').to_ascii_lowercase())
        .collect();
    Ok((domains, &rest[last + 1..]))
}

/// `--secondary=/<zone>/[<zone>/...][<ip>[#<port>]]`: one spec per zone, the primary when given.
pub fn parse_secondary(text: &str) -> Result<Vec<crate::secondary::SecondarySpec>, ServerError> {
    let (domains, target) = split_domains(text)?;
    if domains.is_empty() || domains.iter().any(String::is_empty) {
        return Err(ServerError::NoDomains(text.to_owned()));
    }
    let primary = match target {
        "" => None,
        address => Some(parse_address(address)?),
    };
    Ok(domains
        .into_iter()
        .map(|zone| crate::secondary::SecondarySpec { zone, primary })
        .collect())
}

/// dnsmasq's `--address` syntax: `/<domain>/[<domain>/...][<ip>|#]`, `#` as a domain matching
/// every name.
pub fn parse_address_rule(text: &str) -> Result<AddressSpec, ServerError> {
    let (domains, address) = split_domains(text)?;
    // `//` (dnsmasq's "names without a dot") is not supported; taken as "every name" it would
    // turn a typo into an answer for every question.
    if domains.is_empty() || domains.iter().any(String::is_empty) {
        return Err(ServerError::NoDomains(text.to_owned()));
    }
    let domains = domains
        .into_iter()
        .map(|d| if d == "#" { String::new() } else { d })
        .collect();
    let addresses = match address {
        "" => Vec::new(),
        "#" => vec![
            IpAddr::from([0, 0, 0, 0]),
            IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 0]),
        ],
        ip => vec![
            ip.parse()
                .map_err(|_| ServerError::Address(ip.to_owned()))?,
        ],
    };
    Ok(AddressSpec { domains, addresses })
}

/// A domain list: `domain` or `/domain/[domain/...]` (`--rebind-domain-ok`, `--ipv4-only`).
pub fn parse_domain_list(text: &str) -> Result<Vec<String>, ServerError> {
    let (domains, rest) = split_domains(text)?;
    let domains = if domains.is_empty() {
        vec![rest.trim_matches('.').to_ascii_lowercase()]
    } else if rest.is_empty() {
        domains
    } else {
        return Err(ServerError::UnclosedDomains(text.to_owned()));
    };
    if domains.iter().any(String::is_empty) {
        return Err(ServerError::NoDomains(text.to_owned()));
    }
    Ok(domains)
}

/// What a `--servers-file` holds: `server=` (or `local=`) lines, and the nanny's `ipv4-only`
/// and `ipv6-only` lines (the ConfigMap's `ipFamily`), with `=domain` or `=/domain/.../`
/// optional as on the command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServersFile {
    pub servers: Vec<ServerSpec>,
    pub ipv4_only: Vec<String>,
    pub ipv6_only: Vec<String>,
}

/// Reads a `--servers-file`.
pub fn parse_servers_file(text: &str) -> Result<ServersFile, ServerError> {
    let mut file = ServersFile::default();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at_line = |e: ServerError| ServerError::Line {
            line: n + 1,
            source: Box::new(e),
        };
        let (key, value) = line.split_once('=').unwrap_or((line, ""));
        match key {
            "server" | "local" => file.servers.push(parse_server(value).map_err(at_line)?),
            "ipv4-only" | "ipv6-only" => {
                let domains = match value {
                    "" => vec![String::new()],
                    v => parse_domain_list(v).map_err(at_line)?,
                };
                match key {
                    "ipv4-only" => file.ipv4_only.extend(domains),
                    _ => file.ipv6_only.extend(domains),
                }
            }
            _ => return Err(ServerError::NotAServerLine { line: n + 1 }),
        }
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn servers_file_lines() {
        let file = parse_servers_file(
            "server=/a/1.1.1.1\n\n# x\nserver=2.2.2.2#5353\nipv4-only\nipv6-only=/b/c/\n",
        )
        .expect("ok");
        assert_eq!(file.servers.len(), 2);
        assert_eq!(file.ipv4_only, [""]);
        assert_eq!(file.ipv6_only, ["b", "c"]);
        assert!(parse_servers_file("nonsense").is_err());
        assert!(parse_servers_file("ipv4-only=/unclosed").is_err());
    }
}
