//! Answer policy: what dnsmasq's `--address`, `--domain-needed`, `--bogus-priv`,
//! `--stop-dns-rebind` (with `--rebind-localhost-ok` and `--rebind-domain-ok`), `--filter-A` and
//! `--filter-AAAA`, and our `--ipv4-only` and `--ipv6-only`, decide: before a query is forwarded
//! (a local answer, [`AnswerPolicy::before`]) or after (the upstream reply changed,
//! [`AnswerPolicy::after`]). The results are dnsmasq 2.90's, compared in the suite against a
//! real dnsmasq.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};

use dns_wire::rewrite::{Drop, answer_addresses, drop_records};
use dns_wire::{Query, ede, rtype};

use crate::config::CacheConfig;
use crate::upstream::RouteTable;

/// Domains looked up by the name's suffixes (one hash lookup per label), so block lists of
/// many thousand `--address` domains cost no more per query than a few.
#[derive(Debug)]
pub struct DomainMap<T> {
    domains: HashMap<String, T>,
}

impl<T> Default for DomainMap<T> {
    fn default() -> Self {
        DomainMap {
            domains: HashMap::new(),
        }
    }
}

impl<T> DomainMap<T> {
    /// The entry of the longest domain holding `name` ("" holds every name), with that domain.
    fn lookup<'a>(&'a self, name: &'a str) -> Option<(&'a str, &'a T)> {
        if self.domains.is_empty() {
            return None;
        }
        let mut suffix = name;
        loop {
            if let Some(entry) = self.domains.get(suffix) {
                return Some((suffix, entry));
            }
            match suffix.split_once('.') {
                Some((_, rest)) => suffix = rest,
                None if suffix.is_empty() => return None,
                None => suffix = "",
            }
        }
    }

    fn contains(&self, name: &str) -> bool {
        self.lookup(name).is_some()
    }

    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }
}

/// A set of domains ("" holds every name).
pub fn domain_set(domains: &[String]) -> DomainMap<()> {
    DomainMap {
        domains: domains.iter().map(|d| (d.clone(), ())).collect(),
    }
}

/// The addresses `--address` gives a domain, by family.
#[derive(Debug, Default)]
struct Addresses {
    v4: Vec<IpAddr>,
    v6: Vec<IpAddr>,
}

/// A local answer decided by policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Local {
    /// `--address`: these addresses, authoritative, TTL `--local-ttl`.
    Addresses(Vec<IpAddr>),
    /// NXDOMAIN: `--domain-needed` (not authoritative) or `--bogus-priv` (authoritative).
    NxDomain { authoritative: bool },
    /// `--ipv4-only`/`--ipv6-only`: NOERROR without records, with the Extended DNS Error
    /// "Filtered" for clients with EDNS.
    NoData,
}

/// What the policy did, by option (`dnscache_policy_answers_total{option}`).
#[derive(Debug, Default)]
pub struct PolicyCounters {
    pub address: AtomicU64,
    pub domain_needed: AtomicU64,
    pub bogus_priv: AtomicU64,
    pub rebind: AtomicU64,
    pub filter_a: AtomicU64,
    pub filter_aaaa: AtomicU64,
    pub ipv4_only: AtomicU64,
    pub ipv6_only: AtomicU64,
}

impl PolicyCounters {
    /// `(option, count)` for the metrics.
    pub fn by_option(&self) -> [(&'static str, u64); 8] {
        let load = |v: &AtomicU64| v.load(Ordering::Relaxed);
        [
            ("address", load(&self.address)),
            ("domain-needed", load(&self.domain_needed)),
            ("bogus-priv", load(&self.bogus_priv)),
            ("stop-dns-rebind", load(&self.rebind)),
            ("filter-A", load(&self.filter_a)),
            ("filter-AAAA", load(&self.filter_aaaa)),
            ("ipv4-only", load(&self.ipv4_only)),
            ("ipv6-only", load(&self.ipv6_only)),
        ]
    }
}

/// The answer policy of one configuration.
#[derive(Debug, Default)]
pub struct AnswerPolicy {
    addresses: DomainMap<Addresses>,
    domain_needed: bool,
    bogus_priv: bool,
    /// `--stop-dns-rebind`: whether loopback and "this network" are allowed, and the domains
    /// not checked.
    rebind: Option<(bool, DomainMap<()>)>,
    filter_a: bool,
    filter_aaaa: bool,
    ipv4_only: DomainMap<()>,
    ipv6_only: DomainMap<()>,
    /// Whether any option of [`Self::before`] is set on the command line.
    decides_before: bool,
    pub counters: PolicyCounters,
}

impl AnswerPolicy {
    pub fn from_config(config: &CacheConfig) -> Self {
        let mut addresses: DomainMap<Addresses> = DomainMap::default();
        for spec in &config.addresses {
            for domain in &spec.domains {
                let entry = addresses.domains.entry(domain.clone()).or_default();
                for ip in &spec.addresses {
                    let family = if ip.is_ipv4() {
                        &mut entry.v4
                    } else {
                        &mut entry.v6
                    };
                    if !family.contains(ip) {
                        family.push(*ip);
                    }
                }
            }
        }
        let decides_before = !addresses.domains.is_empty()
            || config.domain_needed
            || config.bogus_priv
            || !config.ipv4_only.is_empty()
            || !config.ipv6_only.is_empty();
        AnswerPolicy {
            decides_before,
            addresses,
            domain_needed: config.domain_needed,
            bogus_priv: config.bogus_priv,
            rebind: config.stop_dns_rebind.then(|| {
                (
                    config.rebind_localhost_ok,
                    domain_set(&config.rebind_domain_ok),
                )
            }),
            filter_a: config.filter_a,
            filter_aaaa: config.filter_aaaa,
            ipv4_only: domain_set(&config.ipv4_only),
            ipv6_only: domain_set(&config.ipv6_only),
            counters: PolicyCounters::default(),
        }
    }

    /// A local answer for `query` (hosts files already consulted), or `None` to go on to the
    /// cache and the routes.
    pub fn before(&self, query: &Query<'_>, routes: &RouteTable) -> Option<Local> {
        // Without policy options (the usual case) the query path pays one branch here.
        if !self.decides_before && routes.family.is_empty() {
            return None;
        }
        let name = query.name();
        let count = |counter: &AtomicU64| counter.fetch_add(1, Ordering::Relaxed);
        // A route for a domain of its own (`--server=/domain/...`) is more specific than a
        // policy that holds every name, and a longer domain wins over a shorter one.
        let server_domain = || routes.route_for(name).map(|r| r.domain.as_str());
        if self.bogus_priv
            && query.qtype == rtype::PTR
            && dns_wire::parse_reverse(name).is_some_and(|ip| private(ip, true))
            && server_domain().is_none_or(str::is_empty)
        {
            count(&self.counters.bogus_priv);
            return Some(Local::NxDomain {
                authoritative: true,
            });
        }
        if let Some((domain, addresses)) = self.addresses.lookup(name)
            && server_domain().is_none_or(|s| s.len() <= domain.len())
        {
            let found = match query.qtype {
                rtype::A => addresses.v4.clone(),
                rtype::AAAA => addresses.v6.clone(),
                rtype::ANY => [&addresses.v4[..], &addresses.v6[..]].concat(),
                _ => Vec::new(),
            };
            // Other types, and a family the line does not give, are forwarded as usual.
            if !found.is_empty() {
                count(&self.counters.address);
                return Some(Local::Addresses(found));
            }
        }
        // dnsmasq never forwards an A, AAAA or ANY question for a name without a dot that no
        // `--address` answered.
        let address_query = matches!(query.qtype, rtype::A | rtype::AAAA | rtype::ANY);
        if self.domain_needed && address_query && !name.is_empty() && !name.contains('.') {
            count(&self.counters.domain_needed);
            return Some(Local::NxDomain {
                authoritative: false,
            });
        }
        // From the command line, or from the servers file (the nanny's `ipFamily`).
        let family = match query.qtype {
            rtype::AAAA => Some((
                &self.ipv4_only,
                &routes.family.ipv4_only,
                &self.counters.ipv4_only,
            )),
            rtype::A => Some((
                &self.ipv6_only,
                &routes.family.ipv6_only,
                &self.counters.ipv6_only,
            )),
            _ => None,
        };
        if let Some((flag, file, counter)) = family
            && (flag.contains(name) || file.contains(name))
        {
            count(counter);
            return Some(Local::NoData);
        }
        None
    }

    /// Whether replies to `query` may be changed by [`Self::after`] (so the path that has
    /// nothing to change skips the walk).
    pub fn rewrites(&self) -> bool {
        self.rebind.is_some() || self.filter_a || self.filter_aaaa
    }

    /// The upstream reply to `query` as policy changes it, or `None` when it stands: a
    /// rebinding attempt (an A or AAAA answer holding a private address, outside
    /// `--rebind-domain-ok`) becomes an empty reply with EDE "Blocked"; `--filter-A` and
    /// `--filter-AAAA` remove those records, with EDE "Filtered".
    pub fn after(&self, query: &Query<'_>, reply: &[u8]) -> Option<Vec<u8>> {
        let name = query.name();
        // The rebinding check sees the upstream's answer before the filters do, as dnsmasq's:
        // a private address is "Blocked" even where `--filter-A` would remove it.
        if let Some((localhost_ok, ok_domains)) = &self.rebind
            && matches!(query.qtype, rtype::A | rtype::AAAA)
            && !ok_domains.contains(name)
            && answer_addresses(reply)
                .ok()?
                .iter()
                .any(|ip| private(*ip, !localhost_ok))
        {
            self.counters.rebind.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(name, "possible DNS-rebind attack detected");
            return drop_records(reply, Drop::Everything, ede::BLOCKED)
                .ok()
                .flatten();
        }
        let mut out: Option<Vec<u8>> = None;
        for (on, kind, counter) in [
            (self.filter_a, rtype::A, &self.counters.filter_a),
            (self.filter_aaaa, rtype::AAAA, &self.counters.filter_aaaa),
        ] {
            if !on {
                continue;
            }
            let current = out.as_deref().unwrap_or(reply);
            if let Ok(Some(filtered)) = drop_records(current, Drop::Type(kind), ede::FILTERED) {
                counter.fetch_add(1, Ordering::Relaxed);
                out = Some(filtered);
            }
        }
        out
    }
}

/// dnsmasq's private ranges (`--bogus-priv` reverse lookups, `--stop-dns-rebind` answers);
/// loopback and "this network" only when `ban_localhost` (not with `--rebind-localhost-ok`).
pub fn private(ip: IpAddr, ban_localhost: bool) -> bool {
    match ip {
        IpAddr::V4(v4) => private_v4(v4, ban_localhost),
        IpAddr::V6(v6) => private_v6(v6, ban_localhost),
    }
}

fn private_v4(ip: Ipv4Addr, ban_localhost: bool) -> bool {
    let o = ip.octets();
    let local = o[0] == 127 || o[0] == 0;
    (local && ban_localhost)
        || o[0] == 10
        || (o[0] == 172 && (16..32).contains(&o[1]))
        || (o[0] == 192 && o[1] == 168)
        || (o[0] == 169 && o[1] == 254)
        || o[..3] == [192, 0, 2]
        || o[..3] == [198, 51, 100]
        || o[..3] == [203, 0, 113]
        || ip == Ipv4Addr::BROADCAST
}

fn private_v6(ip: Ipv6Addr, ban_localhost: bool) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return private_v4(v4, ban_localhost);
    }
    let s = ip.segments();
    ((ip.is_unspecified() || ip.is_loopback()) && ban_localhost)
        || (s[0] & 0xffc0) == 0xfe80
        || (s[0] & 0xffc0) == 0xfec0
        || (s[0] & 0xff00) == 0xfd00
        || (s[0] == 0x2001 && s[1] == 0x0db8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_ranges_are_dnsmasqs() {
        let blocked = [
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.1.1",
            "192.0.2.1",
            "198.51.100.1",
            "203.0.113.1",
            "255.255.255.255",
            "fe80::1",
            "fec0::1",
            "fd00::1",
            "2001:db8::1",
            "::ffff:10.0.0.1",
        ];
        let open = [
            "172.32.0.1",
            "100.64.0.1",
            "192.0.0.1",
            "93.184.216.34",
            "fc00::1",
            "2001:4860::1",
        ];
        let local = ["127.0.0.5", "0.0.0.0", "::1", "::", "::ffff:127.0.0.1"];
        for ip in blocked {
            let ip: IpAddr = ip.parse().expect("ip");
            assert!(private(ip, true) && private(ip, false), "{ip}");
        }
        for ip in open {
            let ip: IpAddr = ip.parse().expect("ip");
            assert!(!private(ip, true), "{ip}");
        }
        for ip in local {
            let ip: IpAddr = ip.parse().expect("ip");
            assert!(private(ip, true) && !private(ip, false), "{ip}");
        }
    }

    #[test]
    fn domain_maps_match_the_longest_suffix_and_the_root_last() {
        let mut map: DomainMap<u8> = DomainMap::default();
        map.domains.insert("example".into(), 1);
        map.domains.insert("ads.example".into(), 2);
        assert_eq!(map.lookup("x.ads.example"), Some(("ads.example", &2)));
        assert_eq!(map.lookup("ads.example"), Some(("ads.example", &2)));
        assert_eq!(map.lookup("badads.example"), Some(("example", &1)));
        assert_eq!(map.lookup("example.org"), None);
        map.domains.insert(String::new(), 0);
        assert_eq!(map.lookup("example.org"), Some(("", &0)));
        assert_eq!(map.lookup(""), Some(("", &0)));
    }
}
