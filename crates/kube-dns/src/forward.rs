//! Forwarding to upstream nameservers: names outside the zone, reverse names we hold no record
//! for, and ExternalName targets. Routing is by longest stub-domain suffix, else the upstreams.
//!
//! The exchange itself is [`dns_transport::forward`], shared with dns-cache: tries stay open until
//! the query's deadline (`--forward-deadline`), each with a fresh socket and random ID, replies
//! are checked whole (RFC 5452 and structure) before they are relayed, and each server keeps its
//! round-trip estimate and health across queries and ConfigMap reloads. Servers are asked
//! quickest first.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use dns_transport::forward::{self as engine, Outcome, Request, TryPolicy};
use dns_transport::upstream::{Upstream, candidates, now_ms};
use dns_transport::{Budget, SuffixRoutes, Transport};
use thiserror::Error;

/// Per-try timeout before a server's round trip is known, and its cap (legacy kube-dns used
/// 2 s per try).
pub const MAX_TRY_TIMEOUT: Duration = Duration::from_secs(2);
/// Upstream tries open at once, over every query.
pub const MAX_OPEN_TRIES: usize = 1024;

/// Where names go.
#[derive(Debug, Clone, Default)]
pub struct ForwardPolicy {
    /// Default upstreams (ConfigMap `upstreamNameservers`, else `/etc/resolv.conf`).
    pub upstreams: Vec<Arc<Upstream>>,
    /// Stub domains (lower-case, no trailing dot).
    pub stubs: SuffixRoutes<Vec<Arc<Upstream>>>,
}

impl ForwardPolicy {
    /// A policy for these addresses, keeping the server objects (round trips, health) of
    /// `previous` for addresses it already had.
    pub fn new(
        upstreams: Vec<SocketAddr>,
        mut stubs: Vec<(String, Vec<SocketAddr>)>,
        previous: &ForwardPolicy,
    ) -> Self {
        let mut known: HashMap<SocketAddr, Arc<Upstream>> =
            previous.servers().map(|u| (u.addr, u.clone())).collect();
        let mut object = |addr: SocketAddr| {
            known
                .entry(addr)
                .or_insert_with(|| Arc::new(Upstream::new(addr, 1)))
                .clone()
        };
        stubs.retain(|(_, servers)| !servers.is_empty());
        stubs.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        ForwardPolicy {
            upstreams: upstreams.into_iter().map(&mut object).collect(),
            stubs: SuffixRoutes::new(
                stubs.into_iter().map(|(domain, servers)| {
                    (domain, servers.into_iter().map(&mut object).collect())
                }),
            ),
        }
    }

    /// The servers for a lower-cased name without trailing dot.
    pub fn servers_for(&self, name: &str) -> &[Arc<Upstream>] {
        self.stubs.route_for(name).unwrap_or(&self.upstreams)
    }

    /// Every server object (a server named twice appears twice).
    pub fn servers(&self) -> impl Iterator<Item = &Arc<Upstream>> {
        self.upstreams
            .iter()
            .chain(self.stubs.iter().flat_map(|(_, servers)| servers))
    }
}

/// How long forwarded queries may wait, and the bound on open tries.
#[derive(Debug)]
pub struct Forwarding {
    pub deadline: Duration,
    pub slots: Arc<Budget>,
}

impl Forwarding {
    pub fn new(deadline: Duration) -> Self {
        Forwarding {
            deadline,
            slots: engine::try_slots(MAX_OPEN_TRIES),
        }
    }
}

/// Why forwarding failed; the caller answers SERVFAIL. Retryable by the client.
#[derive(Debug, Error)]
pub enum ForwardError {
    #[error("no upstream nameserver is configured for {0:?}")]
    NoServers(String),
    #[error("no valid reply from any upstream for {name:?} within {deadline:?}")]
    Deadline { name: String, deadline: Duration },
    #[error("too many upstream queries open ({0}); {1:?} not forwarded")]
    Busy(usize, String),
}

/// Sends `query` (raw bytes) for `name` to the servers `policy` picks and returns the checked
/// reply with the query's ID (and the server it came from), over TCP when `tcp` is set (else UDP, then TCP for a truncated
/// reply). A reply of SERVFAIL or REFUSED from every server asked is returned as it came. The
/// tries are charged to `client`, which may hold at most as many as are left.
pub async fn exchange(
    policy: &ForwardPolicy,
    forwarding: &Forwarding,
    name: &str,
    query: &[u8],
    tcp: bool,
    client: IpAddr,
) -> Result<(Vec<u8>, SocketAddr), ForwardError> {
    let all = policy.servers_for(name);
    if all.is_empty() {
        return Err(ForwardError::NoServers(name.to_owned()));
    }
    // The quickest first (a server not heard from yet counts as quickest, so it gets learnt);
    // a try that times out raises its server's estimate, so a silent or slow server moves back.
    let mut servers: Vec<Arc<Upstream>> = candidates(all, now_ms())
        .into_iter()
        .map(|i| all[i].clone())
        .collect();
    servers.sort_by_key(|u| u.srtt_us());
    let request = Request {
        servers: &servers,
        parallel: false,
        transport: if tcp { Transport::Tcp } else { Transport::Udp },
        query,
        client,
    };
    let tries = TryPolicy {
        deadline: forwarding.deadline,
        max_try_timeout: MAX_TRY_TIMEOUT,
        max_tries: TryPolicy::tries_for(servers.len()),
    };
    match engine::forward(&request, &tries, &forwarding.slots).await {
        Outcome::Answer { reply, server } | Outcome::Rejected { reply, server } => {
            Ok((reply, servers[server].addr))
        }
        Outcome::Deadline => Err(ForwardError::Deadline {
            name: name.to_owned(),
            deadline: forwarding.deadline,
        }),
        Outcome::NoSlot => Err(ForwardError::Busy(
            forwarding.slots.limits().entries,
            name.to_owned(),
        )),
    }
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
                ("x.acme.local".into(), vec![b, up]),
            ],
            &ForwardPolicy::default(),
        );
        let addrs = |name: &str| -> Vec<SocketAddr> {
            policy.servers_for(name).iter().map(|u| u.addr).collect()
        };
        assert_eq!(addrs("www.x.acme.local"), vec![b, up]);
        assert_eq!(addrs("acme.local"), vec![a]);
        assert_eq!(addrs("y.acme.local"), vec![a]);
        assert_eq!(addrs("notacme.local"), vec![up]);
        // One object per address, kept across policies.
        assert!(Arc::ptr_eq(
            &policy.upstreams[0],
            &policy.servers_for("x.acme.local")[1]
        ));
        let next = ForwardPolicy::new(vec![up, b], Vec::new(), &policy);
        assert!(Arc::ptr_eq(&next.upstreams[0], &policy.upstreams[0]));
        assert!(Arc::ptr_eq(
            &next.upstreams[1],
            &policy.servers_for("x.acme.local")[0]
        ));
    }
}
