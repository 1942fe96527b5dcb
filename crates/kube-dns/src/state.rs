//! State shared by the listeners, the watchers and the HTTP endpoints.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use kube_dns_core::ClusterSnapshot;

use crate::forward::{ForwardPolicy, Forwarding};
use crate::metrics::Metrics;

/// Read by every query without locking; written by the watch and config tasks.
#[derive(Debug)]
pub struct ServerState {
    pub snapshot: ArcSwap<ClusterSnapshot>,
    pub forwarding: ArcSwap<ForwardPolicy>,
    /// The deadline and open-try bound of forwarded queries.
    pub forward_limits: Forwarding,
    pub metrics: Metrics,
    /// What the HTTP listeners refused (both ports count here).
    pub http: Arc<daemon_support::HttpStats>,
    /// What the DNS-over-TCP listener admitted and refused.
    pub tcp: Arc<daemon_support::conns::ConnStats>,
    /// What the in-flight budget (slow queries, pending TCP answers) admitted and refused.
    pub inflight: Arc<dns_transport::BudgetStats>,
    /// UDP workers started again after a panic.
    pub udp: Arc<dns_transport::UdpStats>,
    lameduck: AtomicBool,
    /// Answers come from the zone saved in `--snapshot-dir`, until the first sync.
    saved_zone: AtomicBool,
    /// `--log-queries`: the writer thread's handle (None when off).
    pub query_log: Option<Arc<dns_transport::query_log::QueryLog>>,
    /// What the query log wrote and dropped (zero when off).
    pub query_log_stats: Arc<dns_transport::query_log::QueryLogStats>,
    /// Zone transfers and NOTIFY (`--transfer-allow`, `--notify`); None: transfers refused.
    pub transfers: Option<Arc<crate::transfer::Transfers>>,
}

impl ServerState {
    pub fn new(
        snapshot: ClusterSnapshot,
        forwarding: ForwardPolicy,
        forward_limits: Forwarding,
        metrics: Metrics,
    ) -> Self {
        ServerState {
            snapshot: ArcSwap::from_pointee(snapshot),
            forwarding: ArcSwap::from_pointee(forwarding),
            forward_limits,
            metrics,
            http: Arc::default(),
            tcp: Arc::default(),
            inflight: Arc::default(),
            udp: Arc::default(),
            lameduck: AtomicBool::new(false),
            saved_zone: AtomicBool::new(false),
            query_log: None,
            query_log_stats: Arc::default(),
            transfers: None,
        }
    }

    /// The state with a query log (`--log-queries`).
    pub fn with_query_log(mut self, log: Arc<dns_transport::query_log::QueryLog>) -> Self {
        self.query_log_stats = log.stats.clone();
        self.query_log = Some(log);
        self
    }

    /// The state serving zone transfers.
    pub fn with_transfers(mut self, transfers: Arc<crate::transfer::Transfers>) -> Self {
        self.transfers = Some(transfers);
        self
    }

    /// Publishes a new snapshot to queries (and to the transfer journal).
    pub fn publish(&self, snapshot: Arc<ClusterSnapshot>) {
        self.snapshot.store(snapshot.clone());
        if let Some(transfers) = &self.transfers {
            transfers.published(&snapshot);
        }
    }

    /// Whether answers come from the saved zone (not yet synced with the API).
    pub fn serving_saved_zone(&self) -> bool {
        self.saved_zone.load(Ordering::Relaxed)
    }

    /// Answers come from the saved zone from now on (`true`), or from the API's data.
    pub fn set_serving_saved_zone(&self, serving: bool) {
        self.saved_zone.store(serving, Ordering::Relaxed);
        self.metrics.saved_zone_serving.set(i64::from(serving));
    }

    /// Ready once every watch has synced, until shutdown begins.
    pub fn is_ready(&self) -> bool {
        self.snapshot.load().synced && !self.lameduck.load(Ordering::Relaxed)
    }

    /// Readiness fails from now on; DNS keeps answering.
    pub fn enter_lameduck(&self) {
        self.lameduck.store(true, Ordering::Relaxed);
    }
}
