//! Misses: joined with an identical one in flight ([`super::coalesce`], at most
//! `--max-coalesced` waiters each, who wait no longer than the query's deadline) or forwarded to
//! the route's servers, with at most `--dns-forward-max` tries open per route, and cached.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use dns_transport::Transport;
use dns_transport::forward::{Outcome, Request, TryPolicy};
use dns_wire::{self as wire, Query};

use super::coalesce::Join;
use super::key_of;
use crate::state::CacheState;
use crate::upstream::{Route, Upstream};

/// The outcome of resolving a miss.
#[derive(Debug, Clone)]
pub enum Resolved {
    /// Upstream bytes (any ID, question as sent upstream), shared by coalesced queries.
    Reply(Arc<Vec<u8>>),
    /// Over `--dns-forward-max`, or over `--max-coalesced` waiters for the question.
    Refused,
    Failed,
}

/// Resolves a packet's question for `client` (used by stale refreshes, which discard the
/// answer).
pub async fn resolve(state: &Arc<CacheState>, packet: &[u8], client: IpAddr) -> Option<Resolved> {
    let query = wire::parse_query(packet).ok()?;
    Some(resolve_with(state, &query, client, Transport::Udp).await.0)
}

/// The in-flight table's key for a question.
pub(super) fn key_hash(query: &Query<'_>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key_of(query).hash(&mut h);
    h.finish()
}

/// Forwards (or joins an identical in-flight forward) and caches the answer; also returns
/// the server that answered (None for a query that joined another).
pub(super) async fn resolve_with(
    state: &Arc<CacheState>,
    query: &Query<'_>,
    client: IpAddr,
    transport: Transport,
) -> (Resolved, Option<SocketAddr>) {
    let key = key_of(query);
    let leader = match state.inflight.join(key_hash(query)) {
        Join::Leader(leader) => leader,
        Join::Waiter(waiter) => {
            state.stats.coalesced.fetch_add(1, Ordering::Relaxed);
            // The leader has the same deadline, but a waiter does not rely on it to return.
            let waited = tokio::time::timeout(state.config.forward_deadline, waiter.wait()).await;
            let resolved = match waited.ok().flatten().flatten() {
                Some(bytes) => Resolved::Reply(bytes),
                None => Resolved::Failed,
            };
            return (resolved, None);
        }
        Join::Full => {
            state.stats.coalesce_refused.fetch_add(1, Ordering::Relaxed);
            if let Some(held_back) = state.over_limit_log.allow() {
                tracing::warn!(
                    name = query.name(),
                    limit = state.config.max_coalesced,
                    held_back,
                    "too many queries waiting for one question; REFUSED"
                );
            }
            return (Resolved::Refused, None);
        }
    };
    let routes = state.routes.load_full();
    let route = routes.route_for(query.name());
    let (mut result, upstream) = match route {
        Some(route) => forward(state, route, query, client, transport).await,
        None => (Resolved::Failed, None),
    };
    // Rebinding protection and the family filters, before the answer is cached or shared.
    if state.policy.rewrites()
        && let Resolved::Reply(bytes) = &result
        && let Some(changed) = state.policy.after(query, bytes)
    {
        result = Resolved::Reply(Arc::new(changed));
    }
    let shared = match &result {
        Resolved::Reply(bytes) => {
            if let Some(route) = route {
                let _ = state
                    .cache
                    .insert(&key, bytes, route.signature, state.now_ms());
            }
            Some(bytes.clone())
        }
        _ => None,
    };
    leader.finish(shared);
    (result, upstream)
}

/// Sends the query to the route's servers as its plan says, with tries that stay open until
/// the deadline ([`dns_transport::forward`]).
async fn forward(
    state: &Arc<CacheState>,
    route: &Route,
    query: &Query<'_>,
    client: IpAddr,
    transport: Transport,
) -> (Resolved, Option<SocketAddr>) {
    let plan = route.plan(
        &state.selection(),
        client,
        query.name(),
        dns_transport::upstream::now_ms(),
    );
    let all = route.servers();
    let servers: Vec<Arc<Upstream>> = plan.order.iter().map(|&i| all[i].clone()).collect();
    let packet = wire::forward_query_for(rand::random(), query);
    let request = Request {
        servers: &servers,
        parallel: plan.parallel,
        transport,
        query: &packet,
        client,
    };
    let policy = TryPolicy {
        deadline: state.config.forward_deadline,
        max_try_timeout: state.config.upstream_timeout,
        max_tries: TryPolicy::tries_for(servers.len()),
    };
    match dns_transport::forward::forward(&request, &policy, &route.slots).await {
        Outcome::Answer { reply, server } => {
            state.stats.misses.fetch_add(1, Ordering::Relaxed);
            if plan.parallel {
                route.race_won(plan.order[server]);
            }
            (Resolved::Reply(Arc::new(reply)), Some(servers[server].addr))
        }
        // SERVFAIL or REFUSED from every server that replied: passed on, as dnsmasq does.
        Outcome::Rejected { reply, server } => {
            state.stats.misses.fetch_add(1, Ordering::Relaxed);
            (Resolved::Reply(Arc::new(reply)), Some(servers[server].addr))
        }
        Outcome::Deadline => {
            state.stats.misses.fetch_add(1, Ordering::Relaxed);
            (Resolved::Failed, None)
        }
        Outcome::NoSlot => {
            state
                .stats
                .refused_over_limit
                .fetch_add(1, Ordering::Relaxed);
            if let Some(held_back) = state.over_limit_log.allow() {
                tracing::warn!(route = %route.domain, limit = state.config.forward_max, held_back, "too many upstream tries open; REFUSED");
            }
            (Resolved::Refused, None)
        }
    }
}
