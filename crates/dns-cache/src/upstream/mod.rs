//! Upstream selection: routes ([`routes`] builds them from the configuration) and the selection
//! policies (`--upstream-policy`, `--strict-order`, `--all-servers`). Each server's health (down
//! after queries that got no valid reply, probed back after a backoff) is
//! [`dns_transport::upstream::Upstream`], shared with kube-dns.

pub mod routes;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use dns_transport::Budget;
use dns_transport::SuffixRoutes;
pub use dns_transport::upstream::{FAILURES_BEFORE_DOWN, Upstream};

use crate::config::UpstreamPolicy;

/// dnsmasq re-races its servers every 50 queries or 20 s (`FORWARD_TEST`, `FORWARD_TIME`).
const RACE_EVERY_QUERIES: u64 = 50;
const RACE_EVERY_MS: u64 = 20_000;
/// How a route forwards.
#[derive(Debug)]
pub enum RouteKind {
    Forward(Vec<Arc<Upstream>>),
    /// `--server=/domain/`: local answers only.
    LocalOnly,
}

/// A domain (or the default) and its servers.
#[derive(Debug)]
pub struct Route {
    /// Lower-case suffix without dots at the ends; "" is the default route.
    pub domain: String,
    pub kind: RouteKind,
    /// Identity of the server set, so reloads can keep entries whose servers did not change.
    pub signature: u64,
    counter: AtomicU64,
    fastest: AtomicUsize,
    last_race_ms: AtomicU64,
    wrr_schedule: Vec<usize>,
    /// Open upstream tries of this route's queries (`--dns-forward-max`).
    pub slots: Arc<Budget>,
}

/// Which servers to ask, in order, and whether to ask them all at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub order: Vec<usize>,
    pub parallel: bool,
}

impl Route {
    pub fn new(domain: String, kind: RouteKind, forward_max: usize) -> Self {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        domain.hash(&mut hasher);
        let mut wrr_schedule = Vec::new();
        match &kind {
            RouteKind::Forward(servers) => {
                for server in servers {
                    server.addr.hash(&mut hasher);
                }
                wrr_schedule = smooth_wrr(&servers.iter().map(|s| s.weight).collect::<Vec<_>>());
            }
            RouteKind::LocalOnly => "local".hash(&mut hasher),
        }
        Route {
            domain,
            kind,
            signature: hasher.finish(),
            counter: AtomicU64::new(0),
            fastest: AtomicUsize::new(usize::MAX),
            last_race_ms: AtomicU64::new(0),
            wrr_schedule,
            slots: dns_transport::forward::try_slots(forward_max),
        }
    }

    pub fn servers(&self) -> &[Arc<Upstream>] {
        match &self.kind {
            RouteKind::Forward(servers) => servers,
            RouteKind::LocalOnly => &[],
        }
    }

    /// Chooses the servers for one query.
    pub fn plan(&self, mode: &SelectionMode, client: IpAddr, qname: &str, now_ms: u64) -> Plan {
        let servers = self.servers();
        let n = servers.len();
        if n == 0 {
            return Plan {
                order: Vec::new(),
                parallel: false,
            };
        }
        let candidates = dns_transport::upstream::candidates(servers, now_ms);
        if candidates.is_empty() {
            return Plan {
                order: Vec::new(),
                parallel: false,
            };
        }
        let count = self.counter.fetch_add(1, Ordering::Relaxed);
        if mode.all_servers {
            return Plan {
                order: candidates,
                parallel: true,
            };
        }
        if mode.strict_order {
            return Plan {
                order: candidates,
                parallel: false,
            };
        }
        let first = match mode.policy {
            UpstreamPolicy::Fastest => {
                let fastest = self.fastest.load(Ordering::Relaxed);
                let last = self.last_race_ms.load(Ordering::Relaxed);
                let race = fastest == usize::MAX
                    || !candidates.contains(&fastest)
                    || count.is_multiple_of(RACE_EVERY_QUERIES)
                    || now_ms.saturating_sub(last) >= RACE_EVERY_MS;
                if race {
                    self.last_race_ms.store(now_ms, Ordering::Relaxed);
                    return Plan {
                        order: candidates,
                        parallel: true,
                    };
                }
                fastest
            }
            UpstreamPolicy::RoundRobin => candidates[(count as usize) % candidates.len()],
            UpstreamPolicy::WeightedRoundRobin => {
                let schedule: Vec<usize> = self
                    .wrr_schedule
                    .iter()
                    .copied()
                    .filter(|i| candidates.contains(i))
                    .collect();
                if schedule.is_empty() {
                    candidates[0]
                } else {
                    schedule[(count as usize) % schedule.len()]
                }
            }
            UpstreamPolicy::LeastConnections => {
                min_by(&candidates, |i| (u64::from(servers[i].outstanding()), 1))
            }
            UpstreamPolicy::WeightedLeastConnections => min_by(&candidates, |i| {
                (
                    u64::from(servers[i].outstanding()),
                    u64::from(servers[i].weight),
                )
            }),
            UpstreamPolicy::ShortestExpectedDelay => min_by(&candidates, |i| {
                (
                    u64::from(servers[i].outstanding()) + 1,
                    u64::from(servers[i].weight),
                )
            }),
            UpstreamPolicy::NeverQueue => {
                let idle: Vec<usize> = candidates
                    .iter()
                    .copied()
                    .filter(|&i| servers[i].outstanding() == 0)
                    .collect();
                if idle.is_empty() {
                    min_by(&candidates, |i| {
                        (
                            u64::from(servers[i].outstanding()) + 1,
                            u64::from(servers[i].weight),
                        )
                    })
                } else {
                    // Among idle servers, the heaviest first (IPVS nq).
                    idle.iter()
                        .copied()
                        .max_by_key(|&i| (servers[i].weight, usize::MAX - i))
                        .unwrap_or(idle[0])
                }
            }
            UpstreamPolicy::SourceHashing => {
                candidates[(hash_of(&client) as usize) % candidates.len()]
            }
            UpstreamPolicy::DestinationHashing => {
                candidates[(hash_of(&qname) as usize) % candidates.len()]
            }
        };
        let mut order = vec![first];
        order.extend(candidates.iter().copied().filter(|&i| i != first));
        Plan {
            order,
            parallel: false,
        }
    }

    /// Records which server won a race (the `fastest` policy sticks with it).
    pub fn race_won(&self, index: usize) {
        self.fastest.store(index, Ordering::Relaxed);
    }
}

/// The route-independent selection switches.
#[derive(Debug, Clone, Copy)]
pub struct SelectionMode {
    pub policy: UpstreamPolicy,
    pub strict_order: bool,
    pub all_servers: bool,
}

/// Picks the candidate minimising a/b (compared exactly, without division).
fn min_by(candidates: &[usize], ratio: impl Fn(usize) -> (u64, u64)) -> usize {
    let mut best = candidates[0];
    let (mut bn, mut bd) = ratio(best);
    for &i in &candidates[1..] {
        let (n, d) = ratio(i);
        if n * bd < bn * d {
            best = i;
            bn = n;
            bd = d;
        }
    }
    best
}

fn hash_of<T: Hash + ?Sized>(value: &T) -> u64 {
    // `DefaultHasher::new()` has fixed keys: a client (or name) keeps its server across restarts.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// Nginx's smooth weighted round robin, unrolled into one cycle of server indexes.
fn smooth_wrr(weights: &[u32]) -> Vec<usize> {
    let total: i64 = weights.iter().map(|w| i64::from(*w)).sum();
    let mut current = vec![0i64; weights.len()];
    let mut schedule = Vec::with_capacity(total as usize);
    for _ in 0..total.min(10_000) {
        for (c, w) in current.iter_mut().zip(weights) {
            *c += i64::from(*w);
        }
        let Some((best, _)) = current
            .iter()
            .enumerate()
            .max_by_key(|(i, c)| (**c, usize::MAX - *i))
        else {
            break;
        };
        current[best] -= total;
        schedule.push(best);
    }
    schedule
}

/// All routes, longest domain first, plus the shared upstream objects by address.
#[derive(Debug, Default)]
pub struct RouteTable {
    /// By domain, longest first; the default route has domain "".
    pub routes: SuffixRoutes<Route>,
    pub upstreams: HashMap<SocketAddr, Arc<Upstream>>,
    /// The servers file's `ipv4-only`/`ipv6-only` lines (the ConfigMap's `ipFamily`), read
    /// with the servers and replaced with them on reload.
    pub family: Family,
}

/// Domains whose AAAA (`ipv4_only`) or A (`ipv6_only`) questions are answered NODATA here.
#[derive(Debug, Default)]
pub struct Family {
    pub ipv4_only: crate::policy::DomainMap<()>,
    pub ipv6_only: crate::policy::DomainMap<()>,
}

impl Family {
    pub fn is_empty(&self) -> bool {
        self.ipv4_only.is_empty() && self.ipv6_only.is_empty()
    }
}

impl RouteTable {
    /// The route for a lower-case name (the default route has domain "").
    pub fn route_for(&self, name: &str) -> Option<&Route> {
        self.routes.route_for(name)
    }

    /// Every distinct upstream in configuration order (for `servers.bind`).
    pub fn distinct_upstreams(&self) -> Vec<Arc<Upstream>> {
        let mut seen = Vec::<Arc<Upstream>>::new();
        for (_, route) in self.routes.iter() {
            for server in route.servers() {
                if !seen.iter().any(|s| s.addr == server.addr) {
                    seen.push(server.clone());
                }
            }
        }
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(weights: &[u32]) -> Route {
        let servers = weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                Arc::new(Upstream::new(
                    SocketAddr::from(([10, 0, 0, i as u8 + 1], 53)),
                    *w,
                ))
            })
            .collect();
        Route::new(String::new(), RouteKind::Forward(servers), 150)
    }

    fn mode(policy: UpstreamPolicy) -> SelectionMode {
        SelectionMode {
            policy,
            strict_order: false,
            all_servers: false,
        }
    }

    fn firsts(route: &Route, policy: UpstreamPolicy, n: usize) -> Vec<usize> {
        let mut counts = vec![0; route.servers().len()];
        for i in 0..n {
            let client = IpAddr::from([10, 1, 0, (i % 7) as u8]);
            let plan = route.plan(&mode(policy), client, &format!("n{i}.example"), 1_000);
            counts[plan.order[0]] += 1;
        }
        counts
    }

    #[test]
    fn round_robin_and_weighted_round_robin_share_by_weight() {
        assert_eq!(
            firsts(&route(&[1, 1, 1]), UpstreamPolicy::RoundRobin, 300),
            vec![100, 100, 100]
        );
        assert_eq!(
            firsts(&route(&[3, 1]), UpstreamPolicy::WeightedRoundRobin, 400),
            vec![300, 100]
        );
        assert_eq!(smooth_wrr(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn least_connection_family_prefers_idle_and_heavy_servers() {
        let r = route(&[1, 4]);
        let busy = r.servers()[1].begin();
        let _b2 = r.servers()[1].begin();
        // lc: server 0 has none outstanding.
        assert_eq!(
            r.plan(
                &mode(UpstreamPolicy::LeastConnections),
                IpAddr::from([1, 1, 1, 1]),
                "x",
                0
            )
            .order[0],
            0
        );
        // wlc: 2/4 > 0/1 still favours 0; sed: (2+1)/4 = 0.75 < (0+1)/1 = 1 favours 1.
        assert_eq!(
            r.plan(
                &mode(UpstreamPolicy::WeightedLeastConnections),
                IpAddr::from([1, 1, 1, 1]),
                "x",
                0
            )
            .order[0],
            0
        );
        assert_eq!(
            r.plan(
                &mode(UpstreamPolicy::ShortestExpectedDelay),
                IpAddr::from([1, 1, 1, 1]),
                "x",
                0
            )
            .order[0],
            1
        );
        // nq: an idle server wins over sed's choice.
        assert_eq!(
            r.plan(
                &mode(UpstreamPolicy::NeverQueue),
                IpAddr::from([1, 1, 1, 1]),
                "x",
                0
            )
            .order[0],
            0
        );
        drop(busy);
    }

    #[test]
    fn hashing_policies_are_sticky() {
        let r = route(&[1, 1, 1, 1]);
        let a = r
            .plan(
                &mode(UpstreamPolicy::SourceHashing),
                IpAddr::from([10, 9, 9, 9]),
                "x",
                0,
            )
            .order[0];
        for name in ["a", "b", "c", "d"] {
            assert_eq!(
                r.plan(
                    &mode(UpstreamPolicy::SourceHashing),
                    IpAddr::from([10, 9, 9, 9]),
                    name,
                    0
                )
                .order[0],
                a
            );
        }
        let d = r
            .plan(
                &mode(UpstreamPolicy::DestinationHashing),
                IpAddr::from([1, 0, 0, 1]),
                "svc.example",
                0,
            )
            .order[0];
        for client in 0..8u8 {
            assert_eq!(
                r.plan(
                    &mode(UpstreamPolicy::DestinationHashing),
                    IpAddr::from([1, 0, 0, client]),
                    "svc.example",
                    0
                )
                .order[0],
                d
            );
        }
        let spread = firsts(&r, UpstreamPolicy::DestinationHashing, 400);
        assert!(
            spread.iter().all(|&c| c > 50),
            "names spread over servers: {spread:?}"
        );
    }

    #[test]
    fn fastest_races_then_sticks() {
        let r = route(&[1, 1]);
        let first = r.plan(
            &mode(UpstreamPolicy::Fastest),
            IpAddr::from([1, 1, 1, 1]),
            "x",
            1_000,
        );
        assert!(first.parallel);
        r.race_won(1);
        let next = r.plan(
            &mode(UpstreamPolicy::Fastest),
            IpAddr::from([1, 1, 1, 1]),
            "x",
            1_001,
        );
        assert_eq!((next.parallel, next.order[0]), (false, 1));
        let later = r.plan(
            &mode(UpstreamPolicy::Fastest),
            IpAddr::from([1, 1, 1, 1]),
            "x",
            30_000,
        );
        assert!(later.parallel, "re-race after 20 s");
    }

    #[test]
    fn down_servers_are_skipped_then_probed_back() {
        let r = route(&[1, 1]);
        for _ in 0..FAILURES_BEFORE_DOWN {
            r.servers()[0].query_failed(1_000);
        }
        let plan = r.plan(
            &mode(UpstreamPolicy::RoundRobin),
            IpAddr::from([1, 1, 1, 1]),
            "x",
            1_500,
        );
        assert_eq!(plan.order, vec![1]);
        let plan = r.plan(
            &mode(UpstreamPolicy::RoundRobin),
            IpAddr::from([1, 1, 1, 1]),
            "x",
            2_001,
        );
        assert_eq!(plan.order.len(), 2, "back after the backoff");
        let strict = SelectionMode {
            policy: UpstreamPolicy::RoundRobin,
            strict_order: true,
            all_servers: false,
        };
        assert_eq!(
            r.plan(&strict, IpAddr::from([1, 1, 1, 1]), "x", 2_001)
                .order,
            vec![0, 1]
        );
    }
}
