//! The sidecar's metrics (contract §4.4): the legacy names, types and help texts exactly, under
//! `--prometheus-namespace`, with no suffix added; ours beside them.

use std::time::{Duration, SystemTime};

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// `ExponentialBuckets(0.25, 2, 16)` of the legacy probe latency histograms, in ms.
pub fn latency_buckets() -> Vec<f64> {
    (0..16).map(|k| 0.25 * f64::from(1u32 << k)).collect()
}

/// The cache statistics, in [`crate::stats::STAT_NAMES`] order.
const CACHE_COUNTERS: [(&str, &str); 5] = [
    ("hits", "Number of DNS cache hits (from start of process)"),
    (
        "misses",
        "Number of DNS cache misses (from start of process)",
    ),
    (
        "evictions",
        "Counter of DNS cache evictions (from start of process)",
    ),
    (
        "insertions",
        "Counter of DNS cache insertions (from start of process)",
    ),
    ("max_size", "Maximum size of the DNS cache"),
];

/// Every metric of the process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    namespace: String,
    cache: [IntCounter; 5],
    cache_errors: IntCounter,
    cache_size: IntGauge,
    probe_rcodes: IntCounterVec,
    probe_last_success: GaugeVec,
    probe_consecutive_failures: IntGaugeVec,
    probe_ready: IntGaugeVec,
}

/// One probe's metrics: the legacy two, plus ours.
#[derive(Debug, Clone)]
pub struct ProbeMetrics {
    latency_ms: Histogram,
    errors: IntCounter,
    rcodes: IntCounterVec,
    label: String,
    last_success: Gauge,
    consecutive_failures: IntGauge,
    ready: IntGauge,
}

impl ProbeMetrics {
    pub fn succeeded(&self, latency: Duration, now: SystemTime) {
        self.latency_ms.observe(latency.as_secs_f64() * 1000.0);
        self.consecutive_failures.set(0);
        self.ready.set(1);
        if let Ok(since_epoch) = now.duration_since(SystemTime::UNIX_EPOCH) {
            self.last_success.set(since_epoch.as_secs_f64());
        }
    }

    pub fn failed(&self) {
        self.errors.inc();
        self.consecutive_failures.inc();
        self.ready.set(0);
    }

    /// The server said "Not Ready": a failed lookup (the legacy counter counts it), but a
    /// server that answers, so not a failure in a row.
    pub fn not_ready(&self) {
        self.errors.inc();
        self.consecutive_failures.set(0);
        self.ready.set(0);
    }

    pub fn rcode(&self, rcode: &str) {
        self.rcodes.with_label_values(&[&self.label, rcode]).inc();
    }
}

impl Metrics {
    /// Registers the process-wide metrics under `namespace` (empty: no prefix).
    pub fn new(namespace: &str) -> prometheus::Result<Self> {
        let registry = Registry::new();
        let opts = |subsystem: &str, name: &str, help: &str| {
            Opts::new(name, help)
                .namespace(namespace)
                .subsystem(subsystem)
        };
        let register = |c: Box<dyn prometheus::core::Collector>| registry.register(c);
        let mut cache = Vec::with_capacity(5);
        for (name, help) in CACHE_COUNTERS {
            let counter = IntCounter::with_opts(opts("dnsmasq", name, help))?;
            register(Box::new(counter.clone()))?;
            cache.push(counter);
        }
        let cache: [IntCounter; 5] = cache
            .try_into()
            .map_err(|_| prometheus::Error::Msg("cache counters".into()))?;
        let cache_errors = IntCounter::with_opts(opts(
            "dnsmasq",
            "errors",
            "Number of errors that have occurred getting metrics",
        ))?;
        register(Box::new(cache_errors.clone()))?;
        let cache_size = IntGauge::with_opts(opts(
            "dnsmasq",
            "cache_size",
            "Cache size the DNS cache last reported (cachesize.bind); unlike max_size, follows a resize",
        ))?;
        register(Box::new(cache_size.clone()))?;
        let probe_rcodes = IntCounterVec::new(
            opts(
                "probe",
                "rcodes_total",
                "Replies to the DNS probes, by probe label and response code",
            ),
            &["probe", "rcode"],
        )?;
        register(Box::new(probe_rcodes.clone()))?;
        let probe_last_success = GaugeVec::new(
            opts(
                "probe",
                "last_success_timestamp_seconds",
                "Unix time of the last successful probe, by probe label",
            ),
            &["probe"],
        )?;
        register(Box::new(probe_last_success.clone()))?;
        let probe_consecutive_failures = IntGaugeVec::new(
            opts(
                "probe",
                "consecutive_failures",
                "Probes failed in a row since the last success, by probe label",
            ),
            &["probe"],
        )?;
        register(Box::new(probe_consecutive_failures.clone()))?;
        let probe_ready = IntGaugeVec::new(
            opts(
                "probe",
                "ready",
                "1 when the last probe was answered with records, 0 when it failed or the server said Not Ready, by probe label",
            ),
            &["probe"],
        )?;
        register(Box::new(probe_ready.clone()))?;
        Ok(Metrics {
            registry,
            namespace: namespace.to_owned(),
            cache,
            cache_errors,
            cache_size,
            probe_rcodes,
            probe_last_success,
            probe_consecutive_failures,
            probe_ready,
        })
    }

    /// Registers `kubedns_probe_<label>_latency_ms` and `kubedns_probe_<label>_errors`.
    /// A duplicate label is an error (legacy panicked).
    pub fn probe(&self, label: &str) -> prometheus::Result<ProbeMetrics> {
        let latency_ms = Histogram::with_opts(
            HistogramOpts::new(
                format!("{label}_latency_ms"),
                format!("Latency of the DNS probe request {label}"),
            )
            .namespace(self.namespace.as_str())
            .subsystem("probe")
            .buckets(latency_buckets()),
        )?;
        self.registry.register(Box::new(latency_ms.clone()))?;
        let errors = IntCounter::with_opts(
            Opts::new(
                format!("{label}_errors"),
                format!("Count of errors in name resolution of {label}"),
            )
            .namespace(self.namespace.as_str())
            .subsystem("probe"),
        )?;
        self.registry.register(Box::new(errors.clone()))?;
        let consecutive_failures = self.probe_consecutive_failures.with_label_values(&[label]);
        consecutive_failures.set(0);
        let ready = self.probe_ready.with_label_values(&[label]);
        ready.set(0);
        Ok(ProbeMetrics {
            latency_ms,
            errors,
            rcodes: self.probe_rcodes.clone(),
            label: label.to_owned(),
            last_success: self.probe_last_success.with_label_values(&[label]),
            consecutive_failures,
            ready,
        })
    }

    /// Adds one round's increments; `values` are the absolute numbers it was read as.
    pub fn add_cache_deltas(&self, deltas: [u64; 5], values: [u64; 5]) {
        for (counter, delta) in self.cache.iter().zip(deltas) {
            counter.inc_by(delta);
        }
        self.cache_size
            .set(i64::try_from(values[4]).unwrap_or(i64::MAX));
    }

    pub fn cache_poll_failed(&self) {
        self.cache_errors.inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exposition with fixed values; the legacy names are a contract with dashboards, so
    /// this is compared line for line with the checked-in golden text.
    #[test]
    fn exposition_matches_the_golden_text() {
        let metrics = Metrics::new("kubedns").expect("metrics");
        let kubedns = metrics.probe("kubedns").expect("probe");
        let dnsmasq = metrics.probe("dnsmasq").expect("probe");
        kubedns.rcode("NOERROR");
        kubedns.succeeded(
            Duration::from_micros(1500),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        );
        dnsmasq.rcode("NXDOMAIN");
        dnsmasq.failed();
        dnsmasq.failed();
        metrics.add_cache_deltas([10, 2, 0, 3, 1000], [10, 2, 0, 3, 1000]);
        metrics.cache_poll_failed();
        let golden = include_str!("../tests/golden/metrics.txt");
        let got = metrics.render();
        if got != golden {
            for (i, (g, w)) in got.lines().zip(golden.lines()).enumerate() {
                if g != w {
                    panic!("line {}: got {g:?}, golden {w:?}\n--- got:\n{got}", i + 1);
                }
            }
            panic!(
                "line counts differ: got {}, golden {}\n--- got:\n{got}",
                got.lines().count(),
                golden.lines().count()
            );
        }
    }

    #[test]
    fn the_namespace_prefixes_every_name_and_duplicates_fail() {
        let metrics = Metrics::new("custom").expect("metrics");
        metrics.probe("a").expect("probe");
        let text = metrics.render();
        assert!(text.contains("custom_dnsmasq_hits 0"), "{text}");
        assert!(text.contains("custom_probe_a_errors 0"), "{text}");
        assert!(!text.contains("kubedns_"), "{text}");
        assert!(metrics.probe("a").is_err(), "duplicate label");
        let bare = Metrics::new("").expect("metrics");
        assert!(bare.render().contains("\ndnsmasq_hits 0"));
    }

    #[test]
    fn buckets_are_the_legacy_ones() {
        let b = latency_buckets();
        assert_eq!(b.len(), 16);
        assert_eq!(b[0], 0.25);
        assert_eq!(b[2], 1.0);
        assert_eq!(b[15], 8192.0);
    }
}
