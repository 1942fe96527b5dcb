//! What the query path reads and counts: the configuration, the cache, the routes and hosts
//! (swapped whole on reload), the in-flight table and the statistics.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64};

use arc_swap::ArcSwap;

use crate::cache::{CacheLimits, ResponseCache, TtlPolicy};
use crate::clock::Clock;
use crate::config::CacheConfig;
use crate::hosts::Hosts;
use crate::policy::AnswerPolicy;
use crate::query::coalesce::Coalescer;
use crate::upstream::routes::{RoutesError, build_routes};
use crate::upstream::{RouteTable, SelectionMode};

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
    /// Queries refused because their question already had `--max-coalesced` waiters.
    pub coalesce_refused: AtomicU64,
    pub servfail: AtomicU64,
}

/// Everything the query path reads.
#[derive(Debug)]
pub struct CacheState {
    pub config: CacheConfig,
    pub cache: ResponseCache,
    pub routes: ArcSwap<RouteTable>,
    pub hosts: ArcSwap<Hosts>,
    /// `--address`, `--bogus-priv`, `--stop-dns-rebind`, `--filter-A(AAA)`, `--ipv4-only`...
    pub policy: AnswerPolicy,
    /// `--secondary` zones and their copies.
    pub secondaries: crate::secondary::Secondaries,
    pub stats: Stats,
    /// Misses being forwarded, by question: identical ones wait for the first.
    pub(crate) inflight: Coalescer<Option<Arc<Vec<u8>>>>,
    /// The process's one in-flight budget (`--max-inflight`, `--max-inflight-bytes`): slow
    /// queries on every socket, pending TCP answers and stale refreshes.
    pub budget: Arc<dns_transport::Budget>,
    /// UDP workers started again after a panic.
    pub udp: Arc<dns_transport::UdpStats>,
    /// Loop-detection probes sent and not yet seen again, by name.
    pub loop_probes: Mutex<HashMap<String, SocketAddr>>,
    clock: Clock,
    pub(crate) runtime: tokio::runtime::Handle,
    /// The over-limit warning is raised per query; at most one line per second is logged.
    pub(crate) over_limit_log: daemon_support::Throttle,
    /// What the metrics server refused.
    pub http: Arc<daemon_support::HttpStats>,
    /// What the DNS-over-TCP listeners admitted and refused (all addresses together).
    pub tcp: Arc<daemon_support::conns::ConnStats>,
    /// SIGTERM arrived: DNS is still answered for `--lameduck`, `/healthz` fails.
    pub lameduck: AtomicBool,
    /// `--log-queries`: the writer thread's handle (None when off).
    pub query_log: Option<Arc<dns_transport::query_log::QueryLog>>,
    /// What the query log wrote and dropped (zero when off).
    pub query_log_stats: Arc<dns_transport::query_log::QueryLogStats>,
    /// What node-local mode's checks restored.
    pub node_local_stats: crate::node_mode::NodeLocalStats,
}

impl CacheState {
    /// Must be called inside a tokio runtime (stale refreshes are spawned on it).
    pub fn new(
        config: CacheConfig,
        cache: ResponseCache,
        routes: RouteTable,
        hosts: Hosts,
    ) -> Self {
        let budget = dns_transport::Budget::new(
            dns_transport::BudgetLimits {
                entries: config.max_inflight,
                bytes: config.max_inflight_bytes,
            },
            Arc::default(),
            "in-flight queries",
        );
        let inflight = Coalescer::with_limit(config.max_coalesced);
        let query_log = config.log_queries.then(|| {
            dns_transport::query_log::QueryLog::start(
                dns_transport::query_log::QueryLogConfig {
                    format: config.log_format,
                    sample: config.log_sample,
                    rate: config.log_rate,
                    // dnsmasq's program name, so parsers of dnsmasq logs keep working.
                    server: match config.log_format {
                        dns_transport::query_log::Format::Dnsmasq => "dnsmasq",
                        dns_transport::query_log::Format::Json => "dns-cache",
                    },
                },
                Box::new(std::io::stderr()),
            )
        });
        let query_log = match query_log {
            Some(Ok(log)) => Some(log),
            Some(Err(error)) => {
                tracing::error!(%error, "cannot start the query log writer; queries are not logged");
                None
            }
            None => None,
        };
        let query_log_stats = query_log
            .as_ref()
            .map_or_else(Arc::default, |log| log.stats.clone());
        CacheState {
            query_log,
            query_log_stats,
            policy: AnswerPolicy::from_config(&config),
            secondaries: crate::secondary::Secondaries::new(
                &config.secondaries,
                config.secondary_max_size,
            ),
            budget,
            udp: Arc::default(),
            inflight,
            config,
            cache,
            routes: ArcSwap::from_pointee(routes),
            hosts: ArcSwap::from_pointee(hosts),
            stats: Stats::default(),
            loop_probes: Mutex::new(HashMap::new()),
            clock: Clock::start(),
            runtime: tokio::runtime::Handle::current(),
            over_limit_log: daemon_support::Throttle::new(daemon_support::OVERLOAD_LOG_PERIOD),
            http: Arc::default(),
            tcp: Arc::default(),
            lameduck: AtomicBool::new(false),
            node_local_stats: Default::default(),
        }
    }

    /// The cache, routes and hosts the configuration names (servers and hosts files read now).
    pub fn from_config(config: CacheConfig) -> Result<Self, RoutesError> {
        let policy = TtlPolicy {
            min_cache_ttl: config.min_cache_ttl,
            max_cache_ttl: config.max_cache_ttl,
            max_ttl: config.max_ttl,
            negative_caching: !config.no_negcache,
            neg_ttl: config.neg_ttl,
            stale_for: config.use_stale_cache,
        };
        let limits = CacheLimits {
            max_bytes: config.cache_max_bytes,
            max_answer: config.cache_max_answer,
        };
        let cache = ResponseCache::with_limits(config.cache_size, limits, policy);
        let routes = build_routes(&config, &HashMap::new())?;
        let hosts = Hosts::for_config(&config);
        Ok(CacheState::new(config, cache, routes, hosts))
    }

    /// Milliseconds since start: the cache's time.
    pub fn now_ms(&self) -> u64 {
        self.clock.elapsed_ms()
    }

    pub(crate) fn selection(&self) -> SelectionMode {
        SelectionMode {
            policy: self.config.upstream_policy,
            strict_order: self.config.strict_order,
            all_servers: self.config.all_servers,
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use super::CacheState;
    use crate::config::CacheConfig;

    /// A state as `run()` builds it, from command-line arguments.
    pub(crate) fn state(args: &[&str]) -> Arc<CacheState> {
        let config = CacheConfig::parse_args(args.iter().copied()).expect("test arguments");
        Arc::new(CacheState::from_config(config).expect("test routes"))
    }

    /// A query's wire bytes.
    pub(crate) fn query(
        name: &str,
        qtype: hickory_proto::rr::RecordType,
        class: hickory_proto::rr::DNSClass,
    ) -> Vec<u8> {
        use hickory_proto::op::{Message, MessageType, OpCode, Query};
        let mut message = Message::new(4242, MessageType::Query, OpCode::Query);
        message.metadata.recursion_desired = true;
        let mut question = Query::query(
            hickory_proto::rr::Name::from_ascii(name).expect("test name"),
            qtype,
        );
        question.set_query_class(class);
        message.add_query(question);
        message.to_vec().expect("test query")
    }
}
