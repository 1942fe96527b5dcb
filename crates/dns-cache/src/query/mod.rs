//! The query path: CHAOS statistics ([`chaos`]), hosts and local-only domains ([`local`]) and
//! cache hits on the synchronous path; misses forwarded upstream on the async path
//! ([`resolve`]), with identical queries coalesced ([`coalesce`]) into one upstream exchange and
//! at most `--dns-forward-max` tries open per route.

pub mod chaos;
pub mod coalesce;
pub mod local;
pub mod resolve;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use dns_transport::query_log::Source;
use dns_transport::{Fast, PacketHandler, Transport};
use dns_wire::{self as wire, Query, Rcode, ResponseContext, class};

pub use self::chaos::VERSION;
pub use self::resolve::{Resolved, resolve};
use crate::cache::{CacheKey, Lookup, ServeAs, shape_reply};
use crate::loop_probe::{self, LOOP_PROBE_SUFFIX};
use crate::state::CacheState;
use crate::upstream::RouteKind;

fn key_of<'q>(query: &'q Query<'_>) -> CacheKey<'q> {
    CacheKey {
        name: query.name(),
        qtype: query.qtype,
        qclass: query.qclass,
        dnssec_ok: query.edns.is_some_and(|e| e.dnssec_ok),
        checking_disabled: query.checking_disabled,
    }
}

fn serve_as<'q>(state: &CacheState, query: &'q Query<'_>, transport: Transport) -> ServeAs<'q> {
    ServeAs {
        id: query.id,
        question: query.question_bytes(),
        client_has_edns: query.edns.is_some(),
        limit: reply_limit(state, query, transport),
        rotate: !state.config.no_round_robin,
    }
}

/// The size a reply must fit in: the client's UDP size, at most `--edns-packet-max`.
fn reply_limit(state: &CacheState, query: &Query<'_>, transport: Transport) -> usize {
    match transport {
        Transport::Tcp => wire::MAX_TCP_MESSAGE,
        Transport::Udp => state
            .config
            .edns_packet_max
            .map_or(query.udp_limit(), |max| query.udp_limit().min(max)),
    }
}

/// The encoder's context for answering `query` here.
pub(crate) fn context<'q>(
    state: &CacheState,
    query: &Query<'q>,
    transport: Transport,
) -> ResponseContext<'q> {
    let mut ctx = ResponseContext::for_query(query, transport == Transport::Tcp);
    ctx.limit = reply_limit(state, query, transport);
    ctx
}

fn header_only(query: &Query<'_>, transport: Transport, rcode: Rcode, out: &mut Vec<u8>) -> Fast {
    let ctx = ResponseContext::for_query(query, transport == Transport::Tcp);
    wire::encode_header_only(&ctx, rcode, false, out);
    Fast::Reply
}

/// Refreshes a stale entry in the background, for the client that asked (charged to the
/// in-flight budget as its query would be). Skipped when the question is already in flight or
/// the client has no room left: the stale answer is served either way.
fn refresh_stale(state: &Arc<CacheState>, query: &Query<'_>, peer: SocketAddr) {
    if state.inflight.contains(resolve::key_hash(query)) {
        return;
    }
    let packet = wire::compact_query(query);
    let Ok(charge) = state.budget.charge(
        peer.ip(),
        1,
        packet.len() + dns_transport::SLOW_QUERY_OVERHEAD,
    ) else {
        return;
    };
    let refresh = state.clone();
    state.runtime.spawn(async move {
        let _ = resolve(&refresh, &packet, peer.ip()).await;
        drop(charge);
    });
}

/// dns-cache's [`PacketHandler`].
#[derive(Debug)]
pub struct CacheHandler {
    pub state: Arc<CacheState>,
}

impl CacheHandler {
    /// The synchronous path; `source` says where an answer came from (for the query log).
    fn answer_fast(
        &self,
        packet: &[u8],
        transport: Transport,
        peer: SocketAddr,
        out: &mut Vec<u8>,
        source: &mut Source,
    ) -> Fast {
        let state = &self.state;
        let query = match wire::parse_query(packet) {
            Ok(query) => query,
            Err(error) if error.wants_formerr() => {
                let Some(ctx) = ResponseContext::for_bad_packet(packet) else {
                    return Fast::Drop;
                };
                wire::encode_header_only(&ctx, Rcode::FormErr, false, out);
                return Fast::Reply;
            }
            Err(_) => return Fast::Drop,
        };
        if query.opcode == dns_wire::opcode::NOTIFY {
            return crate::secondary::notify(state, &query, transport, peer, out);
        }
        if query.opcode != 0 {
            return header_only(&query, transport, Rcode::NotImp, out);
        }
        // Like dnsmasq, `*.bind` is answered here (NOTIMP with `--no-ident`) and other CHAOS
        // names are forwarded.
        if query.qclass == class::CH && query.name().ends_with(".bind") {
            if state.config.no_ident {
                return header_only(&query, transport, Rcode::NotImp, out);
            }
            return chaos::answer(state, &query, transport, out);
        }
        if query.name().ends_with(LOOP_PROBE_SUFFIX) {
            loop_probe::returned(state, query.name());
            return header_only(&query, transport, Rcode::Refused, out);
        }
        if let Some(done) = local::hosts(state, &query, transport, out) {
            *source = Source::Hosts;
            return done;
        }
        let routes = state.routes.load();
        if let Some(decided) = state.policy.before(&query, &routes) {
            return local::policy(state, &query, transport, decided, out);
        }
        // The route is looked up once: the secondary zone and forwarding both go by it.
        let route = routes.route_for(query.name());
        if let Some(done) = crate::secondary::answer(state, route, &query, transport, out) {
            *source = Source::Zone;
            return done;
        }
        match route.map(|r| &r.kind) {
            Some(RouteKind::LocalOnly) => return local::local_only(state, &query, transport, out),
            None => {
                state.stats.servfail.fetch_add(1, Ordering::Relaxed);
                return header_only(&query, transport, Rcode::ServFail, out);
            }
            Some(RouteKind::Forward(_)) => {}
        }
        let key = key_of(&query);
        let now = state.now_ms();
        let how = serve_as(state, &query, transport);
        let entry = match state.cache.get(&key, now) {
            Lookup::Miss => return Fast::Slow,
            Lookup::Fresh(entry) => entry,
            Lookup::Stale(entry) => {
                state.stats.stale_served.fetch_add(1, Ordering::Relaxed);
                refresh_stale(state, &query, peer);
                entry
            }
        };
        state.stats.hits.fetch_add(1, Ordering::Relaxed);
        *source = Source::Cache;
        if !crate::cache::serve(&entry, &state.cache.policy, how, now, out) {
            let ctx = ResponseContext::for_query(&query, false);
            wire::encode_header_only(&ctx, Rcode::NoError, true, out);
        }
        Fast::Reply
    }
}

impl PacketHandler for CacheHandler {
    fn fast(
        &self,
        packet: &[u8],
        transport: Transport,
        peer: SocketAddr,
        out: &mut Vec<u8>,
    ) -> Fast {
        let mut source = Source::Config;
        let Some(log) = &self.state.query_log else {
            return self.answer_fast(packet, transport, peer, out, &mut source);
        };
        let started = daemon_support::clock::now();
        let fast = self.answer_fast(packet, transport, peer, out, &mut source);
        if fast == Fast::Reply {
            log.offer(peer, out, started, source);
        }
        fast
    }

    async fn slow(
        self: Arc<Self>,
        packet: Vec<u8>,
        transport: Transport,
        peer: SocketAddr,
    ) -> Option<Vec<u8>> {
        let started = daemon_support::clock::now();
        let query = wire::parse_query(&packet).ok()?;
        let mut out = Vec::with_capacity(512);
        let how = serve_as(&self.state, &query, transport);
        let ctx = ResponseContext::for_query(&query, transport == Transport::Tcp);
        let (resolved, upstream) =
            resolve::resolve_with(&self.state, &query, peer.ip(), transport).await;
        match resolved {
            Resolved::Reply(bytes) => {
                let fits = match wire::response_layout(&bytes) {
                    Ok(layout) => {
                        let max_ttl = self.state.cache.policy.max_ttl;
                        shape_reply(
                            &bytes,
                            &layout,
                            |ttl| max_ttl.map_or(ttl, |m| ttl.min(m)),
                            None,
                            how,
                            &mut out,
                        )
                    }
                    Err(_) => {
                        wire::encode_header_only(&ctx, Rcode::ServFail, false, &mut out);
                        true
                    }
                };
                if !fits {
                    wire::encode_header_only(&ctx, Rcode::NoError, true, &mut out);
                }
            }
            Resolved::Refused => wire::encode_header_only(&ctx, Rcode::Refused, false, &mut out),
            Resolved::Failed => {
                self.state.stats.servfail.fetch_add(1, Ordering::Relaxed);
                wire::encode_header_only(&ctx, Rcode::ServFail, false, &mut out);
            }
        }
        if let Some(log) = &self.state.query_log {
            log.offer(peer, &out, started, Source::Upstream(upstream));
        }
        Some(out)
    }

    fn overloaded(&self, packet: &[u8], out: &mut Vec<u8>) -> bool {
        let Ok(query) = wire::parse_query(packet) else {
            return false;
        };
        self.state
            .stats
            .refused_over_limit
            .fetch_add(1, Ordering::Relaxed);
        let ctx = ResponseContext::for_query(&query, false);
        wire::encode_header_only(&ctx, Rcode::Refused, false, out);
        true
    }
}
