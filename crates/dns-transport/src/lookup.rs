//! Host-name lookups for the control plane: stub-domain nameservers given as names (kube-dns and
//! the nanny) and the sidecar's probe hosts. They go through hickory-resolver with the system's
//! configuration (`/etc/resolv.conf` and the hosts file), read afresh for every lookup: these
//! lookups are rare (a configuration change, a probe's server), and the pod's resolv.conf may
//! change under them.

use std::net::{IpAddr, SocketAddr};

use hickory_resolver::TokioResolver;
use hickory_resolver::net::NetError;
use thiserror::Error;

/// Why a host name gave no address. Every variant is worth retrying later: the resolver or the
/// name may come back.
#[derive(Debug, Error)]
pub enum LookupError {
    #[error("cannot read the system resolver configuration: {0}")]
    SystemConfig(#[source] NetError),
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        host: String,
        #[source]
        source: NetError,
    },
    #[error("{host} has no address")]
    NoAddress { host: String },
}

/// The addresses of `host` (an IP address literal is returned as it is), each with `port`.
pub async fn lookup_host(host: &str, port: u16) -> Result<Vec<SocketAddr>, LookupError> {
    if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let resolver = TokioResolver::builder_tokio()
        .map_err(LookupError::SystemConfig)?
        .build()
        .map_err(LookupError::SystemConfig)?;
    let found = resolver
        .lookup_ip(host)
        .await
        .map_err(|source| LookupError::Resolve {
            host: host.to_owned(),
            source,
        })?;
    let addrs: Vec<SocketAddr> = found.iter().map(|ip| SocketAddr::new(ip, port)).collect();
    if addrs.is_empty() {
        return Err(LookupError::NoAddress {
            host: host.to_owned(),
        });
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn addresses_are_returned_without_a_lookup() {
        let v4 = lookup_host("192.0.2.7", 53).await.expect("v4");
        assert_eq!(v4, vec!["192.0.2.7:53".parse().expect("address")]);
        let v6 = lookup_host("[2001:db8::1]", 5353).await.expect("v6");
        assert_eq!(v6, vec!["[2001:db8::1]:5353".parse().expect("address")]);
    }

    #[tokio::test]
    async fn localhost_comes_from_the_hosts_file() {
        let found = lookup_host("localhost", 5353).await.expect("localhost");
        assert!(
            found
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 5353)
                && !found.is_empty(),
            "{found:?}"
        );
    }

    #[tokio::test]
    async fn a_name_that_cannot_exist_is_an_error_naming_it() {
        // `.invalid` never resolves (RFC 6761); with no network the lookup fails either way.
        let error = lookup_host("no-such-host.invalid", 53)
            .await
            .expect_err("invalid TLD");
        assert!(
            error.to_string().contains("no-such-host.invalid"),
            "{error}"
        );
    }
}
