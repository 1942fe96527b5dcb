//! The one module that talks to the Kubernetes API: watches Services, EndpointSlices (or core/v1
//! Endpoints), Pods in verified mode and the named ConfigMap; strips objects at ingest and
//! applies them to the [`SnapshotBuilder`], publishing a new snapshot after each event.
//!
//! kube-rs's watcher relists after 410 Gone or a broken stream (Init, InitApply..., InitDone);
//! a relist marks what it sees and deletes the rest at InitDone, so objects removed while the
//! watch was down vanish, and everything else keeps answering throughout.
//!
//! Every watch asks the API server to end it after `--watch-timeout`; it is then resumed from
//! its resourceVersion (no relist). A stream that stays silent 5 s past that (a connection that
//! died without a FIN, a proxy that holds it open) is dropped by kube-runtime's idle timeout and
//! resumed the same way, so a dead stream delays changes by at most `--watch-timeout` + 5 s.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use kube_dns_config::config_map::DnsConfig;
use kube_dns_core::SnapshotBuilder;
use kube_dns_core::model::{PodModel, ServiceModel, SliceModel};
use kube_dns_core::snapshot::ObjectKind;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::state::ServerState;

/// The resources a run waits for before it is ready.
#[derive(Debug)]
pub struct SyncTracker {
    kinds: Vec<(&'static str, AtomicBool)>,
}

impl SyncTracker {
    pub fn new(kinds: &[&'static str]) -> Self {
        SyncTracker {
            kinds: kinds.iter().map(|k| (*k, AtomicBool::new(false))).collect(),
        }
    }

    /// Marks a resource synced; EndpointSlices and core Endpoints both sync the `endpoints` kind.
    fn mark(&self, kind: &str) {
        let kind = if kind == ENDPOINTSLICES {
            ENDPOINTS
        } else {
            kind
        };
        for (name, flag) in &self.kinds {
            if *name == kind {
                flag.store(true, Ordering::Relaxed);
            }
        }
    }

    pub fn all_synced(&self) -> bool {
        self.kinds
            .iter()
            .all(|(_, flag)| flag.load(Ordering::Relaxed))
    }

    /// The resources still waiting for their first list.
    pub fn pending(&self) -> Vec<&'static str> {
        self.kinds
            .iter()
            .filter(|(_, flag)| !flag.load(Ordering::Relaxed))
            .map(|(name, _)| *name)
            .collect()
    }
}

/// The sync kind of endpoint data, whichever resource carries it.
pub const ENDPOINTS: &str = "endpoints";
const ENDPOINTSLICES: &str = "endpointslices";

/// Whether the API server serves EndpointSlices to us: asks until it gets an answer (the API
/// may be down at start); `false` on 403 or 404, with the reason logged.
async fn endpoint_slices_served(client: &Client) -> bool {
    let api = Api::<EndpointSlice>::all(client.clone());
    let mut backoff = std::time::Duration::from_millis(500);
    loop {
        match api.list(&kube::api::ListParams::default().limit(1)).await {
            Ok(_) => return true,
            Err(kube::Error::Api(status)) if status.code == 403 || status.code == 404 => {
                tracing::warn!(
                    code = status.code,
                    message = %status.message,
                    "cannot list EndpointSlices; watching core/v1 Endpoints instead (grant list/watch on discovery.k8s.io endpointslices to use them)"
                );
                return false;
            }
            Err(error) => {
                tracing::debug!(%error, "cannot ask for EndpointSlices yet; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(10));
            }
        }
    }
}

/// Everything a watch task needs.
#[derive(Clone)]
pub struct Watches {
    pub client: Client,
    pub state: Arc<ServerState>,
    pub builder: Arc<Mutex<SnapshotBuilder>>,
    pub sync: Arc<SyncTracker>,
    /// `--watch-timeout`.
    pub watch_timeout: std::time::Duration,
}

/// One watch event, stripped.
enum Change<T> {
    Relist,
    Upsert(T),
    Remove { namespace: String, name: String },
    RelistDone,
}

impl Watches {
    /// Publishes the builder's current state.
    fn publish(&self, builder: &SnapshotBuilder) {
        let now = daemon_support::clock::unix_secs().max(1) as u32;
        let serial = kube_dns_core::snapshot::next_serial(self.state.snapshot.load().serial, now);
        // A saved zone answers until the API's data replaces it (no SERVFAIL in between).
        let synced = self.sync.all_synced() || self.state.serving_saved_zone();
        let snapshot = builder.snapshot(serial, synced);
        self.state
            .metrics
            .services
            .set(snapshot.service_count() as i64);
        self.state
            .metrics
            .endpoints
            .set(snapshot.endpoint_count() as i64);
        let snapshot = Arc::new(snapshot);
        self.state.publish(snapshot.clone());
        self.state.metrics.namespaces.prune(&snapshot);
    }

    /// Runs a watch stream, converting events with `strip` and applying them with `apply`.
    async fn run<K, T>(
        &self,
        resource: &'static str,
        stream: impl Stream<Item = Result<Event<K>, watcher::Error>>,
        strip: impl Fn(&K) -> Result<Option<T>, kube_dns_core::model::IngestError>,
        apply: impl Fn(&mut SnapshotBuilder, Change<T>),
        shutdown: CancellationToken,
    ) where
        K: kube::Resource + Clone,
    {
        // Export this resource's counters at zero from the start (dashboards see the series).
        let metrics = &self.state.metrics;
        metrics.watch_restarts.with_label_values(&[resource]);
        metrics.objects_skipped.with_label_values(&[resource]);
        let mut stream = std::pin::pin!(stream);
        let mut relists = 0u64;
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => return,
                event = stream.next() => event,
            };
            let Some(event) = event else { return };
            let received = daemon_support::clock::now();
            let change = match event {
                Ok(Event::Init) => {
                    relists += 1;
                    if relists > 1 {
                        self.state
                            .metrics
                            .watch_restarts
                            .with_label_values(&[resource])
                            .inc();
                        tracing::info!(resource, "relisting");
                    }
                    Change::Relist
                }
                Ok(Event::InitDone) => Change::RelistDone,
                Ok(Event::InitApply(object) | Event::Apply(object)) => match strip(&object) {
                    Ok(Some(model)) => Change::Upsert(model),
                    Ok(None) => continue,
                    Err(error) => {
                        self.state
                            .metrics
                            .objects_skipped
                            .with_label_values(&[resource])
                            .inc();
                        tracing::warn!(resource, object = %object_name(&object), %error, "skipping object");
                        continue;
                    }
                },
                Ok(Event::Delete(object)) => Change::Remove {
                    namespace: object.namespace().unwrap_or_default().to_ascii_lowercase(),
                    name: object.name_any().to_ascii_lowercase(),
                },
                Err(error) => {
                    self.state
                        .metrics
                        .watch_restarts
                        .with_label_values(&[resource])
                        .inc();
                    tracing::warn!(resource, %error, "watch error; retrying with backoff, serving last-known data");
                    continue;
                }
            };
            // During a first list only its end is published; a saved zone being served (which
            // the relist goes over) gets every change at once, as a synced zone does.
            let publish = !matches!(change, Change::Relist | Change::Upsert(_))
                || self.sync.all_synced()
                || self.state.serving_saved_zone();
            let done = matches!(change, Change::RelistDone);
            let Ok(mut builder) = self.builder.lock() else {
                tracing::error!("snapshot builder lock poisoned");
                return;
            };
            apply(&mut builder, change);
            if done {
                let first = !self.sync.all_synced();
                self.sync.mark(resource);
                if first && self.sync.all_synced() {
                    tracing::info!("Initialized services and endpoints from apiserver");
                    if self.state.serving_saved_zone() {
                        tracing::info!("the API's data replaces the saved zone");
                        self.state.set_serving_saved_zone(false);
                    }
                    crate::memory::release_free_memory();
                }
            }
            self.state
                .metrics
                .watch_events
                .with_label_values(&[resource])
                .inc();
            if publish {
                self.publish(&builder);
                self.state
                    .metrics
                    .programming_latency
                    .observe(received.elapsed().as_secs_f64());
            }
        }
    }

    pub async fn services(self, shutdown: CancellationToken) {
        let stream = watcher(
            Api::<Service>::all(self.client.clone()),
            watcher::Config::default(),
            self.watch_timeout,
        );
        self.run(
            "services",
            stream,
            |svc| ServiceModel::from_api(svc).map(Some),
            |b, change| match change {
                Change::Relist => b.begin_relist(ObjectKind::Service),
                Change::RelistDone => {
                    b.end_relist(ObjectKind::Service);
                }
                Change::Upsert(model) => b.apply_service(model),
                Change::Remove { namespace, name } => b.delete_service(&namespace, &name),
            },
            shutdown,
        )
        .await;
    }

    /// Watches EndpointSlices, or core/v1 Endpoints when `--watch-endpoints` says so or when the
    /// API server refuses EndpointSlices: 403 (a legacy kube-dns ClusterRole grants only
    /// `endpoints` and `services`, so swapping only the images keeps working) or 404 (clusters
    /// before discovery.k8s.io/v1).
    pub async fn endpoints_any(self, forced: bool, shutdown: CancellationToken) {
        let slices = !forced && {
            tokio::select! {
                allowed = endpoint_slices_served(&self.client) => allowed,
                _ = shutdown.cancelled() => return,
            }
        };
        if slices {
            self.endpoint_slices(shutdown).await;
        } else {
            self.endpoints(shutdown).await;
        }
    }

    pub async fn endpoint_slices(self, shutdown: CancellationToken) {
        let stream = watcher(
            Api::<EndpointSlice>::all(self.client.clone()),
            watcher::Config::default().labels(kube_dns_core::model::SERVICE_NAME_LABEL),
            self.watch_timeout,
        );
        self.run(
            "endpointslices",
            stream,
            SliceModel::from_api,
            |b, change| match change {
                Change::Relist => b.begin_relist(ObjectKind::EndpointSlice),
                Change::RelistDone => {
                    b.end_relist(ObjectKind::EndpointSlice);
                }
                Change::Upsert(model) => b.apply_slice(model),
                Change::Remove { namespace, name } => b.delete_slice(&namespace, &name),
            },
            shutdown,
        )
        .await;
    }

    pub async fn endpoints(self, shutdown: CancellationToken) {
        let stream = watcher(
            Api::<Endpoints>::all(self.client.clone()),
            watcher::Config::default(),
            self.watch_timeout,
        );
        self.run(
            "endpoints",
            stream,
            |eps| {
                let name = eps.name_any().to_ascii_lowercase();
                let namespace = eps.namespace().unwrap_or_default().to_ascii_lowercase();
                SliceModel::from_endpoints(eps).map(|slices| Some((namespace, name, slices)))
            },
            |b, change| match change {
                Change::Relist => b.begin_relist(ObjectKind::EndpointSlice),
                Change::RelistDone => {
                    b.end_relist(ObjectKind::EndpointSlice);
                }
                Change::Upsert((namespace, name, slices)) => {
                    b.mark_endpoints_seen(&slices);
                    b.apply_endpoints(&namespace, &name, slices);
                }
                Change::Remove { namespace, name } => b.delete_endpoints(&namespace, &name),
            },
            shutdown,
        )
        .await;
    }

    pub async fn pods(self, shutdown: CancellationToken) {
        let stream = watcher(
            Api::<Pod>::all(self.client.clone()),
            watcher::Config::default(),
            self.watch_timeout,
        );
        self.run(
            "pods",
            stream,
            |pod| PodModel::from_api(pod).map(Some),
            |b, change| match change {
                Change::Relist => b.begin_relist(ObjectKind::Pod),
                Change::RelistDone => {
                    b.end_relist(ObjectKind::Pod);
                }
                Change::Upsert(model) => b.apply_pod(model),
                Change::Remove { namespace, name } => b.delete_pod(&namespace, &name),
            },
            shutdown,
        )
        .await;
    }
}

/// A watch of `api` that the API server ends after `timeout` (whole seconds, at least one) and
/// that kube-runtime drops when it stays silent 5 s longer; either way it resumes from its last
/// resourceVersion, relisting only after 410 Gone.
fn watcher<K>(
    api: Api<K>,
    config: watcher::Config,
    timeout: std::time::Duration,
) -> impl Stream<Item = Result<Event<K>, watcher::Error>> + Send
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let seconds = u32::try_from(timeout.as_secs()).unwrap_or(u32::MAX).max(1);
    kube::runtime::watcher(api, config.timeout(seconds)).default_backoff()
}

fn object_name<K: kube::Resource>(object: &K) -> String {
    format!(
        "{}/{}",
        object.meta().namespace.as_deref().unwrap_or(""),
        object.meta().name.as_deref().unwrap_or("<no name>")
    )
}

/// A ConfigMap version seen through the API: its data, or `None` when it is absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigMapUpdate {
    pub version: String,
    pub data: Option<BTreeMap<String, String>>,
}

/// Watches only the named ConfigMap (legacy watched the whole namespace) and sends each version.
pub async fn watch_config_map(
    client: Client,
    namespace: String,
    name: String,
    watch_timeout: std::time::Duration,
    updates: mpsc::UnboundedSender<ConfigMapUpdate>,
    shutdown: CancellationToken,
) {
    let api = Api::<ConfigMap>::namespaced(client, &namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = std::pin::pin!(watcher(api, config, watch_timeout));
    let mut seen_in_relist = false;
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            event = stream.next() => event,
        };
        let update = match event {
            None => return,
            Some(Ok(Event::Init)) => {
                seen_in_relist = false;
                continue;
            }
            Some(Ok(Event::InitApply(cm) | Event::Apply(cm))) => {
                seen_in_relist = true;
                ConfigMapUpdate {
                    version: cm.resource_version().unwrap_or_default(),
                    data: Some(cm.data.unwrap_or_default()),
                }
            }
            Some(Ok(Event::InitDone)) if !seen_in_relist => ConfigMapUpdate {
                version: String::new(),
                data: None,
            },
            Some(Ok(Event::InitDone)) => continue,
            Some(Ok(Event::Delete(_))) => ConfigMapUpdate {
                version: String::new(),
                data: None,
            },
            Some(Err(error)) => {
                tracing::warn!(%error, configmap = %name, "ConfigMap watch error; retrying");
                continue;
            }
        };
        if updates.send(update).is_err() {
            return;
        }
    }
}

/// Validates ConfigMap data the way every source does.
pub fn config_from_update(
    update: &ConfigMapUpdate,
) -> Result<DnsConfig, kube_dns_config::config_map::ConfigError> {
    match &update.data {
        Some(data) => DnsConfig::from_data(data),
        None => Ok(DnsConfig::default()),
    }
}
