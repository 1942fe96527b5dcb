//! Prometheus metrics: the legacy `skydns_skydns_dns_*` names (contract §2.5, names exact, no
//! suffix added) and richer ones of ours beside them. Label children used on the query path are
//! resolved once at start-up, so counting a query is a few atomic adds.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

use crate::cli::MetricsEnv;
use dns_wire::Rcode;

/// The `system` label: which part of the server answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    Auth,
    Recursive,
    Reverse,
}

impl System {
    const ALL: [System; 3] = [System::Auth, System::Recursive, System::Reverse];
    fn label(self) -> &'static str {
        match self {
            System::Auth => "auth",
            System::Recursive => "recursive",
            System::Reverse => "reverse",
        }
    }
}

const CAUSES: [&str; 4] = ["nxdomain", "servfail", "refused", "truncated"];
/// The RCODEs kube-dns answers with, in the order of the per-rcode counters.
pub(crate) const RCODES: [Rcode; 6] = [
    Rcode::NoError,
    Rcode::FormErr,
    Rcode::ServFail,
    Rcode::NxDomain,
    Rcode::NotImp,
    Rcode::Refused,
];

struct SystemMetrics {
    requests: IntCounter,
    duration: Histogram,
    size: Histogram,
    errors: [IntCounter; 4],
}

/// Every metric of the process.
pub struct Metrics {
    registry: Registry,
    /// `kubedns_namespace_queries_total`, rendered after the registry's families.
    pub namespaces: crate::namespace_stats::NamespaceQueries,
    systems: [SystemMetrics; 3],
    cache_miss: IntCounter,
    rcodes: [IntCounter; 6],
    dropped: IntCounter,
    pub services: IntGauge,
    pub endpoints: IntGauge,
    pub watch_restarts: IntCounterVec,
    pub watch_events: IntCounterVec,
    pub objects_skipped: IntCounterVec,
    pub programming_latency: Histogram,
    pub config_reloads: IntCounter,
    pub config_errors: IntCounter,
    pub ready: IntGauge,
    pub saved_zone_serving: IntGauge,
    pub saved_zone_writes: IntCounter,
    pub saved_zone_write_errors: IntCounter,
    pub saved_zone_refused: IntCounter,
    /// `kubedns_zone_transfers_total{kind,result}`.
    pub transfers: IntCounterVec,
    /// `kubedns_zone_notify_total{result}`.
    pub notifies: IntCounterVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn legacy_opts(env: &MetricsEnv, name: &str, help: &str) -> Opts {
    Opts::new(name, help)
        .namespace(env.namespace.clone())
        .subsystem(env.subsystem.clone())
}

impl Metrics {
    pub fn new(env: &MetricsEnv) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            legacy_opts(
                env,
                "dns_request_count_total",
                "Counter of DNS requests made.",
            ),
            &["system"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::from(legacy_opts(
                env,
                "dns_request_duration_seconds",
                "Histogram of the time (in seconds) each request took to resolve.",
            ))
            .buckets(
                [0.001, 0.003]
                    .into_iter()
                    .chain(prometheus::DEFAULT_BUCKETS.iter().copied())
                    .collect(),
            ),
            &["system"],
        )?;
        let mut size_buckets = vec![0.0, 512.0, 1024.0, 1500.0, 2048.0];
        size_buckets.extend((1..=16).map(|i| f64::from(i) * 4096.0));
        let size = HistogramVec::new(
            HistogramOpts::from(legacy_opts(
                env,
                "dns_response_size_bytes",
                "Size of the returns response in bytes.",
            ))
            .buckets(size_buckets),
            &["system"],
        )?;
        let errors = IntCounterVec::new(
            legacy_opts(
                env,
                "dns_error_count_total",
                "Counter of DNS requests resulting in an error.",
            ),
            &["system", "cause"],
        )?;
        let cache_miss = IntCounterVec::new(
            legacy_opts(
                env,
                "dns_cachemiss_count_total",
                "Counter of DNS requests that result in a cache miss.",
            ),
            &["cache"],
        )?;
        let rcodes = IntCounterVec::new(
            Opts::new(
                "kubedns_dns_responses_total",
                "DNS responses sent, by response code.",
            ),
            &["rcode"],
        )?;
        let dropped = IntCounter::new(
            "kubedns_dns_dropped_total",
            "Packets dropped without a reply (responses, packets shorter than a header).",
        )?;
        let services = IntGauge::new(
            "kubedns_snapshot_services",
            "Services in the published snapshot.",
        )?;
        let endpoints = IntGauge::new(
            "kubedns_snapshot_endpoints",
            "Ready headless endpoints in the published snapshot.",
        )?;
        let watch_restarts = IntCounterVec::new(
            Opts::new(
                "kubedns_watch_restarts_total",
                "Watch errors and relists, by resource.",
            ),
            &["resource"],
        )?;
        let watch_events = IntCounterVec::new(
            Opts::new(
                "kubedns_watch_events_total",
                "Watch events applied, by resource.",
            ),
            &["resource"],
        )?;
        let objects_skipped = IntCounterVec::new(
            Opts::new(
                "kubedns_objects_skipped_total",
                "API objects skipped because a field DNS needs is missing or invalid.",
            ),
            &["resource"],
        )?;
        let programming_latency = Histogram::with_opts(
            HistogramOpts::new(
                "kubedns_programming_latency_seconds",
                "Time from receiving an API watch event to answering from it.",
            )
            .buckets(prometheus::exponential_buckets(0.0001, 2.0, 16)?),
        )?;
        let config_reloads = IntCounter::new(
            "kubedns_config_reloads_total",
            "ConfigMap versions applied.",
        )?;
        let config_errors = IntCounter::new(
            "kubedns_config_errors_total",
            "ConfigMap versions rejected as invalid (the last good one stays).",
        )?;
        let ready = IntGauge::new(
            "kubedns_ready",
            "1 once every watch has synced, 0 otherwise.",
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(size.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(cache_miss.clone()))?;
        registry.register(Box::new(rcodes.clone()))?;
        registry.register(Box::new(dropped.clone()))?;
        registry.register(Box::new(services.clone()))?;
        registry.register(Box::new(endpoints.clone()))?;
        registry.register(Box::new(watch_restarts.clone()))?;
        registry.register(Box::new(watch_events.clone()))?;
        registry.register(Box::new(objects_skipped.clone()))?;
        registry.register(Box::new(programming_latency.clone()))?;
        registry.register(Box::new(config_reloads.clone()))?;
        registry.register(Box::new(config_errors.clone()))?;
        registry.register(Box::new(ready.clone()))?;
        let saved_zone_serving = IntGauge::new(
            "kubedns_saved_zone_serving",
            "1 while answers come from the zone saved in --snapshot-dir (before the first sync with the API).",
        )?;
        let saved_zone_writes = IntCounter::new(
            "kubedns_saved_zone_writes_total",
            "Times the zone was saved to --snapshot-dir.",
        )?;
        let saved_zone_write_errors = IntCounter::new(
            "kubedns_saved_zone_write_errors_total",
            "Failed saves of the zone to --snapshot-dir.",
        )?;
        let saved_zone_refused = IntCounter::new(
            "kubedns_saved_zone_refused_total",
            "Saved zones found at start but not used (damaged, another format version or zone, too old).",
        )?;
        registry.register(Box::new(saved_zone_serving.clone()))?;
        registry.register(Box::new(saved_zone_writes.clone()))?;
        registry.register(Box::new(saved_zone_write_errors.clone()))?;
        registry.register(Box::new(saved_zone_refused.clone()))?;
        let transfers = IntCounterVec::new(
            Opts::new(
                "kubedns_zone_transfers_total",
                "Zone transfers asked for, by kind (axfr, ixfr) and result (full, incremental, current, refused, busy, aborted).",
            ),
            &["kind", "result"],
        )?;
        let notifies = IntCounterVec::new(
            Opts::new(
                "kubedns_zone_notify_total",
                "NOTIFY messages sent to --notify secondaries, by result (acked, refused, unanswered).",
            ),
            &["result"],
        )?;
        // Every series exists from the start (at 0), transfers or not.
        for kind in ["axfr", "ixfr"] {
            for result in crate::transfer::RESULTS {
                transfers.with_label_values(&[kind, result]);
            }
        }
        for result in ["acked", "refused", "unanswered"] {
            notifies.with_label_values(&[result]);
        }
        registry.register(Box::new(transfers.clone()))?;
        registry.register(Box::new(notifies.clone()))?;
        let systems = System::ALL.map(|system| {
            let label = system.label();
            SystemMetrics {
                requests: requests.with_label_values(&[label]),
                duration: duration.with_label_values(&[label]),
                size: size.with_label_values(&[label]),
                errors: CAUSES.map(|cause| errors.with_label_values(&[label, cause])),
            }
        });
        Ok(Metrics {
            namespaces: Default::default(),
            registry,
            systems,
            cache_miss: cache_miss.with_label_values(&["response"]),
            rcodes: RCODES.map(|r| rcodes.with_label_values(&[r.as_str()])),
            dropped,
            services,
            endpoints,
            watch_restarts,
            watch_events,
            objects_skipped,
            programming_latency,
            config_reloads,
            config_errors,
            ready,
            saved_zone_serving,
            saved_zone_writes,
            saved_zone_write_errors,
            saved_zone_refused,
            transfers,
            notifies,
        })
    }

    /// Counts one answered query (once, over UDP and TCP alike).
    pub fn record(&self, system: System, rcode: Rcode, truncated: bool, size: usize, seconds: f64) {
        let m = &self.systems[system as usize];
        m.requests.inc();
        m.duration.observe(seconds);
        m.size.observe(size as f64);
        let cause = match rcode {
            Rcode::NxDomain => Some(0),
            Rcode::ServFail => Some(1),
            Rcode::Refused => Some(2),
            _ => None,
        };
        if let Some(cause) = cause {
            m.errors[cause].inc();
        }
        if truncated {
            m.errors[3].inc();
        }
        if system == System::Auth {
            self.cache_miss.inc();
        }
        if let Some(index) = RCODES.iter().position(|r| *r == rcode) {
            self.rcodes[index].inc();
        }
    }

    pub fn record_dropped(&self) {
        self.dropped.inc();
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if encoder.encode(&self.registry.gather(), &mut buf).is_err() {
            return String::new();
        }
        let mut text = String::from_utf8(buf).unwrap_or_default();
        self.namespaces.render(&mut text);
        text
    }
}
