//! The query path of dns-cache: CHAOS statistics, hosts, local-only domains and cache hits on
//! the synchronous path; misses forwarded upstream on the async path, with identical queries
//! coalesced into one upstream exchange and at most `--dns-forward-max` exchanges per route.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;
use dns_transport::forward::{Outcome, Request, TryPolicy};
use dns_transport::{Fast, PacketHandler, Transport};
use dns_wire::{self as wire, Query, ResponseContext, class, rtype};
use dns_wire::{Answer, DnsName, RData as LocalData, Rcode, ResourceRecord};
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::{DNSClass, RData, Record};
use tokio::sync::broadcast;

use crate::cache::{CacheKey, Lookup, ResponseCache, ServeAs, shape_reply};
use crate::cli::CacheConfig;
use crate::hosts::Hosts;
use crate::upstream::{Route, RouteKind, RouteTable, SelectionMode, Upstream};

/// The suffix of our loop-detection probes (`--dns-loop-detect`).
pub const LOOP_PROBE_SUFFIX: &str = "loop-probe.dns-cache.test";
/// The version string of `version.bind`, in dnsmasq's `<name>-<version>` form.
pub const VERSION: &str = concat!("dns-cache-", env!("CARGO_PKG_VERSION"));

/// Counters beyond the cache's own.
#[derive(Debug, Default)]
pub struct Stats {
    /// Queries answered locally: cache, hosts, local-only domains, CHAOS (dnsmasq's `hits`).
    pub hits: AtomicU64,
    /// Queries forwarded upstream (dnsmasq's `misses`).
    pub misses: AtomicU64,
    pub coalesced: AtomicU64,
    pub stale_served: AtomicU64,
    /// Negative answers dropped because their zone's SOA serial changed (`--watch-soa`).
    pub negative_dropped: AtomicU64,
    pub refused_over_limit: AtomicU64,
    pub servfail: AtomicU64,
}

type Waiters = broadcast::Sender<Arc<Option<Vec<u8>>>>;

/// Everything the query path reads.
#[derive(Debug)]
pub struct CacheState {
    pub config: CacheConfig,
    pub cache: ResponseCache,
    pub routes: ArcSwap<RouteTable>,
    pub hosts: ArcSwap<Hosts>,
    pub stats: Stats,
    inflight: Mutex<HashMap<u64, Waiters>>,
    pub loop_probes: Mutex<HashMap<String, SocketAddr>>,
    clock: Instant,
    runtime: tokio::runtime::Handle,
    /// The over-limit warning is raised per query; at most one line per second is logged.
    over_limit_log: daemon_support::Throttle,
}

impl CacheState {
    pub fn new(
        config: CacheConfig,
        cache: ResponseCache,
        routes: RouteTable,
        hosts: Hosts,
    ) -> Self {
        CacheState {
            config,
            cache,
            routes: ArcSwap::from_pointee(routes),
            hosts: ArcSwap::from_pointee(hosts),
            stats: Stats::default(),
            inflight: Mutex::new(HashMap::new()),
            loop_probes: Mutex::new(HashMap::new()),
            clock: Instant::now(),
            runtime: tokio::runtime::Handle::current(),
            over_limit_log: daemon_support::Throttle::new(daemon_support::OVERLOAD_LOG_PERIOD),
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    fn selection(&self) -> SelectionMode {
        SelectionMode {
            policy: self.config.upstream_policy,
            strict_order: self.config.strict_order,
            all_servers: self.config.all_servers,
        }
    }
}

fn key_of<'q>(query: &'q Query<'_>) -> CacheKey<'q> {
    CacheKey {
        name: query.name(),
        qtype: query.qtype,
        qclass: query.qclass,
        dnssec_ok: query.edns.is_some_and(|e| e.dnssec_ok),
        checking_disabled: query.checking_disabled,
    }
}

fn serve_as<'q>(query: &'q Query<'_>, transport: Transport, rotate: bool) -> ServeAs<'q> {
    ServeAs {
        id: query.id,
        question: query.question_bytes(),
        client_has_edns: query.edns.is_some(),
        limit: match transport {
            Transport::Tcp => wire::MAX_TCP_MESSAGE,
            Transport::Udp => query.udp_limit(),
        },
        rotate,
    }
}

/// dns-cache's [`PacketHandler`].
#[derive(Debug)]
pub struct CacheHandler {
    pub state: Arc<CacheState>,
}

impl CacheHandler {
    fn local_answer(
        &self,
        query: &Query<'_>,
        transport: Transport,
        answer: &Answer<'_>,
        out: &mut Vec<u8>,
    ) -> Fast {
        let ctx = ResponseContext::for_query(query, transport == Transport::Tcp);
        wire::encode_response(&ctx, answer, out);
        self.state.stats.hits.fetch_add(1, Ordering::Relaxed);
        Fast::Reply
    }

    /// `/etc/hosts` names and addresses.
    fn hosts_answer(
        &self,
        query: &Query<'_>,
        transport: Transport,
        out: &mut Vec<u8>,
    ) -> Option<Fast> {
        let hosts = self.state.hosts.load();
        if hosts.is_empty() || query.qclass != class::IN {
            return None;
        }
        let ttl = self.state.config.local_ttl;
        let mut answer = Answer::error(Rcode::NoError);
        answer.authoritative = true;
        if let Some(ips) = hosts.addresses(query.name()) {
            for ip in ips {
                let data = match (ip, query.qtype) {
                    (IpAddr::V4(v4), rtype::A | rtype::ANY) => LocalData::A(*v4),
                    (IpAddr::V6(v6), rtype::AAAA | rtype::ANY) => LocalData::Aaaa(*v6),
                    _ => continue,
                };
                answer.answers.push(ResourceRecord {
                    owner: DnsName::Query,
                    ttl,
                    data,
                });
            }
            return Some(self.local_answer(query, transport, &answer, out));
        }
        if query.qtype == rtype::PTR
            && let Some(ip) = dns_wire::parse_reverse(query.name())
            && let Some(name) = hosts.name_of(&ip)
        {
            answer.answers.push(ResourceRecord {
                owner: DnsName::Query,
                ttl,
                data: LocalData::Ptr(DnsName::Text(name.into())),
            });
            return Some(self.local_answer(query, transport, &answer, out));
        }
        None
    }

    /// CHAOS TXT statistics, in dnsmasq 2.90's formats.
    fn chaos(&self, query: &Query<'_>, transport: Transport, out: &mut Vec<u8>) -> Fast {
        let strings: Option<Vec<String>> = match query.name() {
            "cachesize.bind" => Some(vec![self.state.cache.capacity.to_string()]),
            "insertions.bind" => Some(vec![
                self.state
                    .cache
                    .counters
                    .insertions
                    .load(Ordering::Relaxed)
                    .to_string(),
            ]),
            "evictions.bind" => Some(vec![
                self.state
                    .cache
                    .counters
                    .evictions
                    .load(Ordering::Relaxed)
                    .to_string(),
            ]),
            "misses.bind" => Some(vec![
                self.state.stats.misses.load(Ordering::Relaxed).to_string(),
            ]),
            "hits.bind" => Some(vec![
                self.state.stats.hits.load(Ordering::Relaxed).to_string(),
            ]),
            "auth.bind" => Some(vec!["0".to_owned()]),
            "version.bind" => Some(vec![VERSION.to_owned()]),
            "servers.bind" => Some(
                self.state
                    .routes
                    .load()
                    .distinct_upstreams()
                    .iter()
                    .map(|u| {
                        format!(
                            "{}#{} {} {}",
                            u.addr.ip(),
                            u.addr.port(),
                            u.queries.load(Ordering::Relaxed),
                            u.failures.load(Ordering::Relaxed)
                        )
                    })
                    .collect(),
            ),
            _ => None,
        };
        // dnsmasq counts these queries as hits once answered: hits.bind does not include itself
        // (checked against dnsmasq 2.90 by the sidecar's process tests).
        self.state.stats.hits.fetch_add(1, Ordering::Relaxed);
        // dnsmasq 2.90 answers unknown `.bind` names NOTIMP.
        let rcode = match (&strings, query.qtype) {
            (None, _) => ResponseCode::NotImp,
            (Some(_), rtype::TXT | rtype::ANY) => ResponseCode::NoError,
            (Some(_), _) => ResponseCode::NotImp,
        };
        let mut reply = Message::new(query.id, MessageType::Response, OpCode::Query);
        reply.metadata.response_code = rcode;
        reply.metadata.recursion_desired = query.recursion_desired;
        reply.metadata.recursion_available = true;
        reply.metadata.authoritative = rcode == ResponseCode::NoError;
        let mut bytes = Vec::new();
        if let Ok(name) = hickory_proto::rr::Name::from_ascii(format!("{}.", query.name())) {
            let mut q = hickory_proto::op::Query::query(name.clone(), query.qtype.into());
            q.set_query_class(DNSClass::CH);
            reply.add_query(q);
            if let (Some(strings), ResponseCode::NoError) = (strings, rcode) {
                let mut record = Record::from_rdata(name, 0, RData::TXT(TXT::new(strings)));
                record.dns_class = DNSClass::CH;
                reply.add_answer(record);
            }
            bytes = reply.to_vec().unwrap_or_default();
        }
        if bytes.is_empty() {
            let ctx = ResponseContext::for_query(query, transport == Transport::Tcp);
            wire::encode_header_only(&ctx, Rcode::ServFail, false, out);
        } else {
            out.clear();
            out.extend_from_slice(&bytes);
        }
        Fast::Reply
    }

    /// A query for one of our loop probes came back: that upstream forwards to us.
    fn loop_probe(&self, query: &Query<'_>, transport: Transport, out: &mut Vec<u8>) -> Fast {
        let server = self
            .state
            .loop_probes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(query.name());
        if let Some(server) = server
            && let Some(upstream) = self.state.routes.load().upstreams.get(&server)
        {
            upstream.mark_looping();
            tracing::error!(%server, "forwarding loop detected: this upstream sends queries back to us; disabled");
        }
        let ctx = ResponseContext::for_query(query, transport == Transport::Tcp);
        wire::encode_header_only(&ctx, Rcode::Refused, false, out);
        Fast::Reply
    }
}

impl PacketHandler for CacheHandler {
    fn fast(
        &self,
        packet: &[u8],
        transport: Transport,
        _peer: SocketAddr,
        out: &mut Vec<u8>,
    ) -> Fast {
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
        if self.state.config.log_queries {
            tracing::info!(name = query.name(), qtype = query.qtype, "query");
        }
        if query.opcode != 0 {
            let ctx = ResponseContext::for_query(&query, transport == Transport::Tcp);
            wire::encode_header_only(&ctx, Rcode::NotImp, false, out);
            return Fast::Reply;
        }
        // Like dnsmasq, `*.bind` is answered here and other CHAOS names are forwarded.
        if query.qclass == class::CH && query.name().ends_with(".bind") {
            return self.chaos(&query, transport, out);
        }
        if query.name().ends_with(LOOP_PROBE_SUFFIX) {
            return self.loop_probe(&query, transport, out);
        }
        if let Some(done) = self.hosts_answer(&query, transport, out) {
            return done;
        }
        let routes = self.state.routes.load();
        match routes.route_for(query.name()).map(|r| &r.kind) {
            Some(RouteKind::LocalOnly) => {
                let mut answer = Answer::error(Rcode::NxDomain);
                answer.authoritative = true;
                return self.local_answer(&query, transport, &answer, out);
            }
            None => {
                self.state.stats.servfail.fetch_add(1, Ordering::Relaxed);
                let ctx = ResponseContext::for_query(&query, transport == Transport::Tcp);
                wire::encode_header_only(&ctx, Rcode::ServFail, false, out);
                return Fast::Reply;
            }
            Some(RouteKind::Forward(_)) => {}
        }
        let key = key_of(&query);
        let now = self.state.now_ms();
        let how = serve_as(&query, transport, !self.state.config.no_round_robin);
        let entry = match self.state.cache.get(&key, now) {
            Lookup::Miss => return Fast::Slow,
            Lookup::Fresh(entry) => entry,
            Lookup::Stale(entry) => {
                self.state
                    .stats
                    .stale_served
                    .fetch_add(1, Ordering::Relaxed);
                let (state, packet) = (self.state.clone(), packet.to_vec());
                self.state.runtime.spawn(async move {
                    let _ = resolve(&state, &packet).await;
                });
                entry
            }
        };
        self.state.stats.hits.fetch_add(1, Ordering::Relaxed);
        if !crate::cache::serve(&entry, &self.state.cache.policy, how, now, out) {
            let ctx = ResponseContext::for_query(&query, false);
            wire::encode_header_only(&ctx, Rcode::NoError, true, out);
        }
        Fast::Reply
    }

    async fn slow(
        self: Arc<Self>,
        packet: Vec<u8>,
        transport: Transport,
        peer: SocketAddr,
    ) -> Option<Vec<u8>> {
        let query = wire::parse_query(&packet).ok()?;
        let mut out = Vec::with_capacity(512);
        let how = serve_as(&query, transport, !self.state.config.no_round_robin);
        let ctx = ResponseContext::for_query(&query, transport == Transport::Tcp);
        match resolve_with(&self.state, &query, peer.ip(), transport).await {
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

/// The outcome of resolving a miss.
pub enum Resolved {
    /// Upstream bytes (any ID, question as sent upstream).
    Reply(Arc<Vec<u8>>),
    /// Over `--dns-forward-max`.
    Refused,
    Failed,
}

/// Resolves a packet's question (used by stale refreshes, which discard the answer).
pub async fn resolve(state: &Arc<CacheState>, packet: &[u8]) -> Option<()> {
    let query = wire::parse_query(packet).ok()?;
    let _ = resolve_with(state, &query, IpAddr::from([0, 0, 0, 0]), Transport::Udp).await;
    Some(())
}

/// Forwards (or joins an identical in-flight forward) and caches the answer.
async fn resolve_with(
    state: &Arc<CacheState>,
    query: &Query<'_>,
    client: IpAddr,
    transport: Transport,
) -> Resolved {
    let key = key_of(query);
    let hash = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        h.finish()
    };
    let mut waiter = None;
    {
        let mut inflight = state
            .inflight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match inflight.get(&hash) {
            Some(sender) => waiter = Some(sender.subscribe()),
            None => {
                inflight.insert(hash, broadcast::channel(1).0);
            }
        }
    }
    if let Some(mut waiter) = waiter {
        state.stats.coalesced.fetch_add(1, Ordering::Relaxed);
        return match waiter.recv().await {
            Ok(result) => match result.as_ref() {
                Some(bytes) => Resolved::Reply(Arc::new(bytes.clone())),
                None => Resolved::Failed,
            },
            Err(_) => Resolved::Failed,
        };
    }
    let routes = state.routes.load_full();
    let result = match routes.route_for(query.name()) {
        Some(route) => forward(state, route, query, client, transport).await,
        None => Resolved::Failed,
    };
    let shared: Arc<Option<Vec<u8>>> = Arc::new(match &result {
        Resolved::Reply(bytes) => Some(bytes.as_ref().clone()),
        _ => None,
    });
    if let (Resolved::Reply(bytes), Some(route)) = (&result, routes.route_for(query.name())) {
        let _ = state
            .cache
            .insert(&key, bytes, route.signature, state.now_ms());
    }
    let sender = state
        .inflight
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .remove(&hash);
    if let Some(sender) = sender {
        let _ = sender.send(shared);
    }
    result
}

/// Sends the query to the route's servers as its plan says, with tries that stay open until
/// the deadline ([`dns_transport::forward`]).
async fn forward(
    state: &Arc<CacheState>,
    route: &Route,
    query: &Query<'_>,
    client: IpAddr,
    transport: Transport,
) -> Resolved {
    let plan = route.plan(
        &state.selection(),
        client,
        query.name(),
        dns_transport::upstream::now_ms(),
    );
    let all = route.servers();
    let servers: Vec<Arc<Upstream>> = plan.order.iter().map(|&i| all[i].clone()).collect();
    let packet = wire::build_forward_query(
        rand::random(),
        query.question_bytes(),
        query.recursion_desired,
        query.checking_disabled,
        query.edns.is_some_and(|e| e.dnssec_ok),
    );
    let request = Request {
        servers: &servers,
        parallel: plan.parallel,
        transport,
        query: &packet,
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
            Resolved::Reply(Arc::new(reply))
        }
        // SERVFAIL or REFUSED from every server that replied: passed on, as dnsmasq does.
        Outcome::Rejected { reply, .. } => {
            state.stats.misses.fetch_add(1, Ordering::Relaxed);
            Resolved::Reply(Arc::new(reply))
        }
        Outcome::Deadline => {
            state.stats.misses.fetch_add(1, Ordering::Relaxed);
            Resolved::Failed
        }
        Outcome::NoSlot => {
            state
                .stats
                .refused_over_limit
                .fetch_add(1, Ordering::Relaxed);
            if let Some(held_back) = state.over_limit_log.allow() {
                tracing::warn!(route = %route.domain, limit = state.config.forward_max, held_back, "too many upstream tries open; REFUSED");
            }
            Resolved::Refused
        }
    }
}
