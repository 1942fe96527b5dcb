//! Forwarding to upstream nameservers: names outside the zone, reverse names we hold no record
//! for, and ExternalName targets. Routing is by longest stub-domain suffix, else the upstreams.
//!
//! Each exchange uses a fresh socket (random source port) and a fresh random ID, and accepts a
//! reply only from the server asked, with that ID and the same question (RFC 5452).

use std::net::SocketAddr;
use std::time::Duration;

use thiserror::Error;

use kube_dns_core::wire;

/// Per-try timeout (legacy kube-dns used 2 s).
pub const TRY_TIMEOUT: Duration = Duration::from_secs(2);

/// Where names go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardPolicy {
    /// Default upstreams (ConfigMap `upstreamNameservers`, else `/etc/resolv.conf`).
    pub upstreams: Vec<SocketAddr>,
    /// Stub domains (lower-case, no trailing dot), longest first.
    pub stubs: Vec<(String, Vec<SocketAddr>)>,
}

impl ForwardPolicy {
    pub fn new(upstreams: Vec<SocketAddr>, mut stubs: Vec<(String, Vec<SocketAddr>)>) -> Self {
        stubs.retain(|(_, servers)| !servers.is_empty());
        stubs.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        ForwardPolicy { upstreams, stubs }
    }

    /// The servers for a lower-cased name without trailing dot.
    pub fn servers_for(&self, name: &str) -> &[SocketAddr] {
        for (domain, servers) in &self.stubs {
            let inside = name == domain
                || name
                    .strip_suffix(domain.as_str())
                    .is_some_and(|head| head.ends_with('.'));
            if inside {
                return servers;
            }
        }
        &self.upstreams
    }
}

/// Why forwarding failed; the caller answers SERVFAIL. Retryable by the client.
#[derive(Debug, Error)]
pub enum ForwardError {
    #[error("no upstream nameserver is configured for {0:?}")]
    NoServers(String),
    #[error("every upstream failed for {name:?}; last error: {last}")]
    AllFailed { name: String, last: String },
}

/// Sends `query` (raw bytes) for `name` to the servers `policy` picks and returns the reply with
/// the client's ID restored. UDP replies with TC are retried over TCP when `tcp` is set.
pub async fn exchange(
    policy: &ForwardPolicy,
    name: &str,
    query: &[u8],
    tcp: bool,
) -> Result<Vec<u8>, ForwardError> {
    let servers = policy.servers_for(name);
    if servers.is_empty() {
        return Err(ForwardError::NoServers(name.to_owned()));
    }
    let client_id = wire::packet_id(query).unwrap_or(0);
    let attempts = servers.len().max(2);
    let mut last = String::new();
    for attempt in 0..attempts {
        let server = servers[attempt % servers.len()];
        let mut packet = query.to_vec();
        wire::set_packet_id(&mut packet, rand::random());
        let result = if tcp {
            dns_transport::exchange_tcp(server, &packet, TRY_TIMEOUT).await
        } else {
            dns_transport::exchange_udp(server, &packet, TRY_TIMEOUT).await
        };
        match result {
            Ok(mut reply) => {
                wire::set_packet_id(&mut reply, client_id);
                return Ok(reply);
            }
            Err(e) => {
                tracing::debug!(%server, name, error = %e, "upstream exchange failed");
                last = format!("{server}: {e}");
            }
        }
    }
    Err(ForwardError::AllFailed {
        name: name.to_owned(),
        last,
    })
}

/// Reads `nameserver` lines of a resolv.conf file.
pub fn resolv_conf_nameservers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
        })
        .filter_map(|ip| {
            // Drop an IPv6 zone index (fe80::1%eth0): std cannot parse it.
            let ip = ip.split('%').next().unwrap_or(ip);
            kube_dns_core::config_map::parse_ip_nameserver(ip)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stub_domains_route_by_longest_suffix() {
        let a: SocketAddr = "10.0.0.1:53".parse().expect("addr");
        let b: SocketAddr = "10.0.0.2:53".parse().expect("addr");
        let up: SocketAddr = "8.8.8.8:53".parse().expect("addr");
        let policy = ForwardPolicy::new(
            vec![up],
            vec![
                ("acme.local".into(), vec![a]),
                ("x.acme.local".into(), vec![b]),
            ],
        );
        assert_eq!(policy.servers_for("www.x.acme.local"), &[b]);
        assert_eq!(policy.servers_for("acme.local"), &[a]);
        assert_eq!(policy.servers_for("y.acme.local"), &[a]);
        assert_eq!(policy.servers_for("notacme.local"), &[up]);
    }

    #[test]
    fn resolv_conf_parsing() {
        let text =
            "# c\nsearch a b\nnameserver 10.0.0.10\nnameserver fe80::1%eth0\noptions ndots:5\n";
        let servers = resolv_conf_nameservers(text);
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[0], "10.0.0.10:53".parse().expect("addr"));
    }
}
