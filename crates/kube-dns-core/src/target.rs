//! Query-name parsing: a lower-cased query name becomes a typed [`QueryTarget`] before any lookup.
//!
//! Name shapes follow the Kubernetes DNS specification 1.1.0 (§2.3-2.4) plus the pod records
//! kube-dns has always served.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use dns_wire::parse_reverse;

/// What a query name addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryTarget<'n> {
    /// `<zone>`
    Apex,
    /// `dns-version.<zone>` (spec §2.2)
    DnsVersion,
    /// `dns.<zone>` and `ns.dns.<zone>`: the names our SOA and NS records mention.
    NameServer,
    /// `svc.<zone>`
    ServiceRoot,
    /// `<ns>.svc.<zone>`
    Namespace { namespace: &'n str },
    /// `<svc>.<ns>.svc.<zone>`; `key` is `"<svc>.<ns>"`.
    Service { key: &'n str },
    /// `_<proto>.<svc>.<ns>.svc.<zone>`
    ServiceProtocol { key: &'n str, protocol: &'n str },
    /// `_<port>._<proto>.<svc>.<ns>.svc.<zone>`
    ServicePort {
        key: &'n str,
        port: &'n str,
        protocol: &'n str,
    },
    /// `<hostname-or-dashed-ip>.<svc>.<ns>.svc.<zone>`
    Endpoint { key: &'n str, label: &'n str },
    /// `pod.<zone>`
    PodRoot,
    /// `<ns>.pod.<zone>`
    PodNamespace { namespace: &'n str },
    /// `<dashed-ip>.<ns>.pod.<zone>`; `ip` is `None` when the label is not an address.
    Pod {
        namespace: &'n str,
        ip: Option<IpAddr>,
    },
    /// Any other name inside the zone: it does not exist.
    NoSuchName,
    /// A full `in-addr.arpa` or `ip6.arpa` address name.
    Reverse(IpAddr),
    /// Everything else, including partial reverse names: forwarded upstream.
    Outside,
}

/// Parses a lower-cased, dotted query name without the trailing dot against `zone` (same form).
pub fn parse_target<'n>(name: &'n str, zone: &str) -> QueryTarget<'n> {
    let Some(relative) = strip_zone(name, zone) else {
        if let Some(ip) = parse_reverse(name) {
            return QueryTarget::Reverse(ip);
        }
        return QueryTarget::Outside;
    };
    if relative.is_empty() {
        return QueryTarget::Apex;
    }
    // Labels right to left: relative = "... l2.l1.l0".
    let mut labels = relative.rsplit('.');
    let first = labels.next().unwrap_or("");
    match first {
        "dns-version" if !relative.contains('.') => QueryTarget::DnsVersion,
        "dns" if relative == "dns" || relative == "ns.dns" => QueryTarget::NameServer,
        "svc" => parse_service_name(relative),
        "pod" => parse_pod_name(relative),
        _ => QueryTarget::NoSuchName,
    }
}

/// `relative` is the name below the zone, ending in `svc`.
fn parse_service_name(relative: &str) -> QueryTarget<'_> {
    let Some(below) = relative.strip_suffix("svc") else {
        return QueryTarget::NoSuchName;
    };
    if below.is_empty() {
        return QueryTarget::ServiceRoot;
    }
    let below = below.strip_suffix('.').unwrap_or(below);
    let parts: [&str; 5] = {
        let mut parts = [""; 5];
        let mut count = 0;
        for label in below.rsplit('.') {
            if count == 5 {
                return QueryTarget::NoSuchName;
            }
            parts[count] = label;
            count += 1;
        }
        if count == 0 {
            return QueryTarget::NoSuchName;
        }
        parts
    };
    let depth = parts.iter().take_while(|p| !p.is_empty()).count();
    // parts[0] = namespace, parts[1] = service, parts[2..] = deeper labels.
    let namespace = parts[0];
    if depth == 1 {
        return QueryTarget::Namespace { namespace };
    }
    // "<svc>.<ns>" is a contiguous suffix of `below`.
    let key_len = parts[1].len() + 1 + namespace.len();
    let key = &below[below.len() - key_len..];
    match depth {
        2 => QueryTarget::Service { key },
        3 => match parts[2].strip_prefix('_') {
            Some(protocol) => QueryTarget::ServiceProtocol { key, protocol },
            None => QueryTarget::Endpoint {
                key,
                label: parts[2],
            },
        },
        4 => match (parts[3].strip_prefix('_'), parts[2].strip_prefix('_')) {
            (Some(port), Some(protocol)) => QueryTarget::ServicePort {
                key,
                port,
                protocol,
            },
            _ => QueryTarget::NoSuchName,
        },
        _ => QueryTarget::NoSuchName,
    }
}

fn parse_pod_name(relative: &str) -> QueryTarget<'_> {
    let Some(below) = relative.strip_suffix("pod") else {
        return QueryTarget::NoSuchName;
    };
    if below.is_empty() {
        return QueryTarget::PodRoot;
    }
    let below = below.strip_suffix('.').unwrap_or(below);
    let mut labels = below.rsplit('.');
    let namespace = labels.next().unwrap_or("");
    match (labels.next(), labels.next()) {
        (None, _) => QueryTarget::PodNamespace { namespace },
        (Some(label), None) => QueryTarget::Pod {
            namespace,
            ip: parse_dashed_ip(label),
        },
        _ => QueryTarget::NoSuchName,
    }
}

/// `10-0-0-1` -> 10.0.0.1; `2001-db8--1` -> 2001:db8::1.
pub fn parse_dashed_ip(label: &str) -> Option<IpAddr> {
    if label.len() > 39 {
        return None;
    }
    let mut buf = [0u8; 39];
    let bytes = label.as_bytes();
    let dashes = bytes.iter().filter(|&&b| b == b'-').count();
    let is_v4 = dashes == 3 && bytes.iter().all(|b| b.is_ascii_digit() || *b == b'-');
    for (i, &b) in bytes.iter().enumerate() {
        buf[i] = match (b, is_v4) {
            (b'-', true) => b'.',
            (b'-', false) => b':',
            (other, _) => other,
        };
    }
    let text = std::str::from_utf8(&buf[..bytes.len()]).ok()?;
    if is_v4 {
        text.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
    } else {
        text.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
    }
}

/// The dashed form of an address used as an endpoint or pod label (`::` becomes `--`).
pub fn dashed_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    }
}

/// Returns the part of `name` before `zone` (without the joining dot), or None when outside.
pub fn strip_zone<'n>(name: &'n str, zone: &str) -> Option<&'n str> {
    if zone.is_empty() {
        return Some(name);
    }
    if name == zone {
        return Some("");
    }
    let head = name.strip_suffix(zone)?;
    head.strip_suffix('.')
}

#[cfg(test)]
mod tests {
    use super::*;
    use QueryTarget::*;

    const ZONE: &str = "cluster.local";

    #[test]
    fn service_shapes() {
        assert_eq!(parse_target("cluster.local", ZONE), Apex);
        assert_eq!(parse_target("svc.cluster.local", ZONE), ServiceRoot);
        assert_eq!(
            parse_target("default.svc.cluster.local", ZONE),
            Namespace {
                namespace: "default"
            }
        );
        assert_eq!(
            parse_target("kubernetes.default.svc.cluster.local", ZONE),
            Service {
                key: "kubernetes.default"
            }
        );
        assert_eq!(
            parse_target("_https._tcp.kubernetes.default.svc.cluster.local", ZONE),
            ServicePort {
                key: "kubernetes.default",
                port: "https",
                protocol: "tcp"
            }
        );
        assert_eq!(
            parse_target("_tcp.kubernetes.default.svc.cluster.local", ZONE),
            ServiceProtocol {
                key: "kubernetes.default",
                protocol: "tcp"
            }
        );
        assert_eq!(
            parse_target("web-0.web.default.svc.cluster.local", ZONE),
            Endpoint {
                key: "web.default",
                label: "web-0"
            }
        );
        assert_eq!(
            parse_target("a.b.c.d.e.svc.cluster.local", ZONE),
            NoSuchName
        );
        assert_eq!(
            parse_target("x._tcp.a.b.svc.cluster.local", ZONE),
            NoSuchName
        );
    }

    #[test]
    fn other_zone_names() {
        assert_eq!(parse_target("dns-version.cluster.local", ZONE), DnsVersion);
        assert_eq!(parse_target("ns.dns.cluster.local", ZONE), NameServer);
        assert_eq!(parse_target("nope.cluster.local", ZONE), NoSuchName);
        assert_eq!(parse_target("pod.cluster.local", ZONE), PodRoot);
        assert_eq!(parse_target("www.google.com", ZONE), Outside);
        assert_eq!(parse_target("xcluster.local", ZONE), Outside);
        assert_eq!(parse_target("", ZONE), Outside);
    }

    #[test]
    fn pod_names_v4_and_v6() {
        assert_eq!(
            parse_target("10-244-1-7.ns.pod.cluster.local", ZONE),
            Pod {
                namespace: "ns",
                ip: Some("10.244.1.7".parse().expect("ip"))
            }
        );
        assert_eq!(
            parse_target("2001-db8--1.ns.pod.cluster.local", ZONE),
            Pod {
                namespace: "ns",
                ip: Some("2001:db8::1".parse().expect("ip"))
            }
        );
        assert_eq!(
            parse_target("1-2-3.ns.pod.cluster.local", ZONE),
            Pod {
                namespace: "ns",
                ip: None
            }
        );
        assert_eq!(dashed_ip("2001:db8::1".parse().expect("ip")), "2001-db8--1");
    }

    #[test]
    fn reverse_names() {
        assert_eq!(
            parse_target("1.0.0.10.in-addr.arpa", ZONE),
            Reverse("10.0.0.1".parse().expect("ip"))
        );
        assert_eq!(parse_target("0.10.in-addr.arpa", ZONE), Outside);
        assert_eq!(parse_target("1.0.0.010.in-addr.arpa", ZONE), Outside);
        let v6 = dns_wire::reverse_name_v6("fd00::1".parse().expect("ip"));
        assert_eq!(
            parse_target(&v6, ZONE),
            Reverse("fd00::1".parse().expect("ip"))
        );
    }
}
