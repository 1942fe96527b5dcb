//! The immutable [`ClusterSnapshot`] that queries read, and the [`SnapshotBuilder`] that applies
//! watch events to it one object at a time.
//!
//! Indexes are persistent hash maps (`imbl`), so publishing a snapshot after an event is an O(1)
//! clone and an event touches only the records of the one Service it concerns.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use crate::model::{PodModel, PortModel, ServiceModel, ServiceSpecModel, SliceModel};
use crate::target::dashed_ip;

/// The spec's schema version, served as `dns-version.<zone>` TXT (spec §2.2).
pub const SCHEMA_VERSION: &str = "1.1.0";
/// Default TTL of cluster records (legacy kube-dns).
pub const DEFAULT_TTL: u32 = 30;
/// SRV priority of every record (legacy kube-dns).
pub const SRV_PRIORITY: u16 = 10;

/// `--pods`: how `<dashed-ip>.<ns>.pod.<zone>` names are answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PodsMode {
    /// No pod records.
    Disabled,
    /// Any well-formed address answers, whatever the namespace (legacy behaviour).
    #[default]
    Insecure,
    /// Only addresses of pods that exist in that namespace answer.
    Verified,
}

impl std::str::FromStr for PodsMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "disabled" => Ok(PodsMode::Disabled),
            "insecure" => Ok(PodsMode::Insecure),
            "verified" => Ok(PodsMode::Verified),
            other => Err(format!(
                "{other:?} is not one of disabled, insecure, verified"
            )),
        }
    }
}

/// Settings fixed for the life of the process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneSettings {
    /// Lower-cased zone without the trailing dot, e.g. `cluster.local`.
    pub zone: Box<str>,
    pub ttl: u32,
    pub pods: PodsMode,
}

impl ZoneSettings {
    pub fn new(zone: &str, ttl: u32, pods: PodsMode) -> Self {
        ZoneSettings {
            zone: zone.trim_end_matches('.').to_ascii_lowercase().into(),
            ttl,
            pods,
        }
    }
}

/// One endpoint as published (ready, or tolerated by `publishNotReadyAddresses`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointRecord {
    pub ip: IpAddr,
    /// The hostname, or the dashed IP for endpoints without one.
    pub label: Box<str>,
    pub has_hostname: bool,
    pub ports: Arc<[PortModel]>,
}

/// How a published Service answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceRecordsKind {
    ClusterIp { ips: Vec<IpAddr> },
    Headless { endpoints: Vec<EndpointRecord> },
    ExternalName { target: Box<str> },
}

/// Everything DNS serves under `<svc>.<ns>.svc.<zone>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRecords {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
    /// `<svc>.<ns>.svc.<zone>` without the trailing dot.
    pub fqdn: Box<str>,
    pub ports: Vec<PortModel>,
    pub kind: ServiceRecordsKind,
}

impl ServiceRecords {
    /// The (address, PTR target) pairs this service contributes (spec §2.3.3, §2.4.3).
    fn reverse_entries(&self) -> Vec<(IpAddr, Arc<str>)> {
        match &self.kind {
            ServiceRecordsKind::ClusterIp { ips } => {
                let name: Arc<str> = Arc::from(&*self.fqdn);
                ips.iter().map(|ip| (*ip, name.clone())).collect()
            }
            ServiceRecordsKind::Headless { endpoints } => endpoints
                .iter()
                .filter(|e| e.has_hostname)
                .map(|e| (e.ip, Arc::from(format!("{}.{}", e.label, self.fqdn))))
                .collect(),
            ServiceRecordsKind::ExternalName { .. } => Vec::new(),
        }
    }

    fn endpoint_count(&self) -> usize {
        match &self.kind {
            ServiceRecordsKind::Headless { endpoints } => endpoints.len(),
            _ => 0,
        }
    }
}

/// An immutable, cheaply cloned view of the cluster that queries read without locks.
#[derive(Debug, Clone)]
pub struct ClusterSnapshot {
    pub settings: Arc<ZoneSettings>,
    /// SOA serial.
    pub serial: u32,
    /// Whether the initial list of every watched resource has completed.
    pub synced: bool,
    pub(crate) services: imbl::HashMap<Arc<str>, Arc<ServiceRecords>>,
    pub(crate) namespaces: imbl::HashMap<Arc<str>, u32>,
    pub(crate) reverse: imbl::HashMap<IpAddr, Arc<[Arc<str>]>>,
    pub(crate) pod_namespaces: imbl::HashMap<IpAddr, Arc<[Arc<str>]>>,
    endpoint_count: usize,
    /// How many times a namespace lost its last Service (per-namespace counters prune then).
    namespaces_removed: u64,
}

impl ClusterSnapshot {
    /// An empty, unsynced snapshot.
    pub fn empty(settings: Arc<ZoneSettings>) -> Self {
        ClusterSnapshot {
            settings,
            serial: 1,
            synced: false,
            services: imbl::HashMap::new(),
            namespaces: imbl::HashMap::new(),
            reverse: imbl::HashMap::new(),
            pod_namespaces: imbl::HashMap::new(),
            endpoint_count: 0,
            namespaces_removed: 0,
        }
    }

    /// Looks up `"<svc>.<ns>"`.
    pub fn service(&self, key: &str) -> Option<&Arc<ServiceRecords>> {
        self.services.get(key)
    }

    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    /// Published (ready) headless endpoints.
    pub fn endpoint_count(&self) -> usize {
        self.endpoint_count
    }

    pub fn has_namespace(&self, namespace: &str) -> bool {
        self.namespaces.contains_key(namespace)
    }

    /// How many times a namespace lost its last Service so far (a generation number).
    pub fn namespaces_removed(&self) -> u64 {
        self.namespaces_removed
    }

    /// PTR targets for an address.
    pub fn reverse(&self, ip: &IpAddr) -> Option<&Arc<[Arc<str>]>> {
        self.reverse.get(ip)
    }

    /// Whether a pod with this address exists in `namespace` (verified pod mode).
    pub fn pod_in_namespace(&self, ip: &IpAddr, namespace: &str) -> bool {
        self.pod_namespaces
            .get(ip)
            .is_some_and(|namespaces| namespaces.iter().any(|n| &**n == namespace))
    }

    /// Every published service, sorted by key (for `/cache` dumps and tests).
    pub fn services_sorted(&self) -> Vec<Arc<ServiceRecords>> {
        let mut all: Vec<_> = self.services.values().cloned().collect();
        all.sort_by(|a, b| a.fqdn.cmp(&b.fqdn));
        all
    }
}

/// The kinds of watched objects, for relist bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    Service,
    EndpointSlice,
    Pod,
}

type ObjectKey = (Arc<str>, Arc<str>);
/// (service key, PTR target) pairs that claim an address.
type ReverseOwners = Vec<(Arc<str>, Arc<str>)>;

/// Every object a builder holds (what a saved zone stores).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedModels {
    pub services: Vec<ServiceModel>,
    pub slices: Vec<SliceModel>,
    pub pods: Vec<PodModel>,
}

/// Applies stripped objects to the published indexes, one object at a time.
#[derive(Debug)]
pub struct SnapshotBuilder {
    settings: Arc<ZoneSettings>,
    services: HashMap<Arc<str>, ServiceModel>,
    slices: HashMap<ObjectKey, SliceModel>,
    slices_by_service: HashMap<Arc<str>, BTreeSet<Arc<str>>>,
    pods: HashMap<ObjectKey, PodModel>,
    namespace_counts: HashMap<Arc<str>, u32>,
    reverse_owners: HashMap<IpAddr, ReverseOwners>,
    pod_owners: HashMap<IpAddr, Vec<ObjectKey>>,
    relisting: HashMap<ObjectKind, HashSet<ObjectKey>>,
    published: ClusterSnapshot,
}

fn service_key(namespace: &str, name: &str) -> Arc<str> {
    Arc::from(format!("{name}.{namespace}"))
}

impl SnapshotBuilder {
    pub fn new(settings: ZoneSettings) -> Self {
        let settings = Arc::new(settings);
        SnapshotBuilder {
            published: ClusterSnapshot::empty(settings.clone()),
            settings,
            services: HashMap::new(),
            slices: HashMap::new(),
            slices_by_service: HashMap::new(),
            pods: HashMap::new(),
            namespace_counts: HashMap::new(),
            reverse_owners: HashMap::new(),
            pod_owners: HashMap::new(),
            relisting: HashMap::new(),
        }
    }

    pub fn settings(&self) -> &Arc<ZoneSettings> {
        &self.settings
    }

    /// Every object the builder holds, for saving the zone (`--snapshot-dir`).
    pub fn models(&self) -> SavedModels {
        let mut models = SavedModels {
            services: self.services.values().cloned().collect(),
            slices: self.slices.values().cloned().collect(),
            pods: self.pods.values().cloned().collect(),
        };
        // A stable order, so the same zone saves the same bytes.
        models
            .services
            .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        models
            .slices
            .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        models
            .pods
            .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        models
    }

    /// A builder holding saved objects, as if they had been applied one by one.
    pub fn from_models(settings: ZoneSettings, models: SavedModels) -> Self {
        let mut builder = SnapshotBuilder::new(settings);
        for service in models.services {
            builder.apply_service(service);
        }
        for slice in models.slices {
            builder.apply_slice(slice);
        }
        for pod in models.pods {
            builder.apply_pod(pod);
        }
        builder
    }

    /// The current state as an immutable snapshot (an O(1) clone).
    pub fn snapshot(&self, serial: u32, synced: bool) -> ClusterSnapshot {
        let mut snapshot = self.published.clone();
        snapshot.serial = serial;
        snapshot.synced = synced;
        snapshot
    }

    /// Starts a relist of `kind`: objects not applied again before [`Self::end_relist`] are
    /// deleted then, so objects removed while the watch was down vanish without a gap.
    pub fn begin_relist(&mut self, kind: ObjectKind) {
        self.relisting.insert(kind, HashSet::new());
    }

    /// Ends a relist of `kind`, deleting what was not seen. Returns how many were deleted.
    pub fn end_relist(&mut self, kind: ObjectKind) -> usize {
        let Some(seen) = self.relisting.remove(&kind) else {
            return 0;
        };
        let stale: Vec<ObjectKey> = match kind {
            ObjectKind::Service => self
                .services
                .values()
                .map(|s| (s.namespace.clone(), s.name.clone()))
                .filter(|k| !seen.contains(k))
                .collect(),
            ObjectKind::EndpointSlice => self
                .slices
                .keys()
                .filter(|k| !seen.contains(*k))
                .cloned()
                .collect(),
            ObjectKind::Pod => self
                .pods
                .keys()
                .filter(|k| !seen.contains(*k))
                .cloned()
                .collect(),
        };
        for (namespace, name) in &stale {
            match kind {
                ObjectKind::Service => self.delete_service(namespace, name),
                ObjectKind::EndpointSlice => self.delete_slice(namespace, name),
                ObjectKind::Pod => self.delete_pod(namespace, name),
            }
        }
        stale.len()
    }

    fn mark_seen(&mut self, kind: ObjectKind, namespace: &Arc<str>, name: &Arc<str>) {
        if let Some(seen) = self.relisting.get_mut(&kind) {
            seen.insert((namespace.clone(), name.clone()));
        }
    }

    /// Adds or replaces a Service.
    pub fn apply_service(&mut self, service: ServiceModel) {
        self.mark_seen(ObjectKind::Service, &service.namespace, &service.name);
        let key = service_key(&service.namespace, &service.name);
        if self.services.insert(key.clone(), service.clone()).is_none() {
            *self
                .namespace_counts
                .entry(service.namespace.clone())
                .or_insert(0) += 1;
            self.publish_namespace(&service.namespace);
        }
        self.refresh_service(&key);
    }

    /// Removes a Service and every record derived from it.
    pub fn delete_service(&mut self, namespace: &str, name: &str) {
        let key = service_key(namespace, name);
        if let Some(old) = self.services.remove(&key) {
            if let Some(count) = self.namespace_counts.get_mut(&old.namespace) {
                *count -= 1;
                if *count == 0 {
                    self.namespace_counts.remove(&old.namespace);
                }
            }
            self.publish_namespace(&old.namespace);
        }
        self.refresh_service(&key);
    }

    /// Adds or replaces an EndpointSlice (or a converted Endpoints subset).
    pub fn apply_slice(&mut self, slice: SliceModel) {
        self.mark_seen(ObjectKind::EndpointSlice, &slice.namespace, &slice.name);
        let object = (slice.namespace.clone(), slice.name.clone());
        let key = service_key(&slice.namespace, &slice.service);
        let previous = self.slices.insert(object, slice.clone());
        self.slices_by_service
            .entry(key.clone())
            .or_default()
            .insert(slice.name.clone());
        if let Some(previous) = previous {
            let previous_key = service_key(&previous.namespace, &previous.service);
            if previous_key != key {
                self.unlink_slice(&previous_key, &previous.name);
                self.refresh_service(&previous_key);
            }
        }
        self.refresh_service(&key);
    }

    /// Removes an EndpointSlice.
    pub fn delete_slice(&mut self, namespace: &str, name: &str) {
        let object: ObjectKey = (Arc::from(namespace), Arc::from(name));
        if let Some(previous) = self.slices.remove(&object) {
            let key = service_key(&previous.namespace, &previous.service);
            self.unlink_slice(&key, &previous.name);
            self.refresh_service(&key);
        }
    }

    /// Replaces every slice converted from one core/v1 Endpoints object (`<name>#<index>`).
    pub fn apply_endpoints(&mut self, namespace: &str, name: &str, slices: Vec<SliceModel>) {
        let prefix = format!("{name}#");
        let keep: HashSet<Arc<str>> = slices.iter().map(|s| s.name.clone()).collect();
        let stale: Vec<Arc<str>> = self
            .slices
            .keys()
            .filter(|(ns, slice)| {
                &**ns == namespace && slice.starts_with(&prefix) && !keep.contains(slice)
            })
            .map(|(_, slice)| slice.clone())
            .collect();
        for slice in stale {
            self.delete_slice(namespace, &slice);
        }
        for slice in slices {
            self.apply_slice(slice);
        }
    }

    /// Removes every slice converted from one core/v1 Endpoints object.
    pub fn delete_endpoints(&mut self, namespace: &str, name: &str) {
        self.apply_endpoints(namespace, name, Vec::new());
    }

    /// Marks the slices of an Endpoints object as seen during a relist.
    pub fn mark_endpoints_seen(&mut self, slices: &[SliceModel]) {
        for slice in slices {
            self.mark_seen(ObjectKind::EndpointSlice, &slice.namespace, &slice.name);
        }
    }

    fn unlink_slice(&mut self, key: &Arc<str>, slice: &Arc<str>) {
        if let Some(names) = self.slices_by_service.get_mut(key) {
            names.remove(slice);
            if names.is_empty() {
                self.slices_by_service.remove(key);
            }
        }
    }

    /// Adds or replaces a Pod (verified pod mode).
    pub fn apply_pod(&mut self, pod: PodModel) {
        self.mark_seen(ObjectKind::Pod, &pod.namespace, &pod.name);
        let object = (pod.namespace.clone(), pod.name.clone());
        let old_ips = self
            .pods
            .insert(object.clone(), pod.clone())
            .map(|p| p.ips)
            .unwrap_or_default();
        for ip in &old_ips {
            if let Some(owners) = self.pod_owners.get_mut(ip) {
                owners.retain(|o| o != &object);
            }
        }
        for ip in &pod.ips {
            self.pod_owners.entry(*ip).or_default().push(object.clone());
        }
        for ip in old_ips.iter().chain(pod.ips.iter()) {
            self.publish_pod_ip(*ip);
        }
    }

    /// Removes a Pod.
    pub fn delete_pod(&mut self, namespace: &str, name: &str) {
        let object: ObjectKey = (Arc::from(namespace), Arc::from(name));
        if let Some(old) = self.pods.remove(&object) {
            for ip in &old.ips {
                if let Some(owners) = self.pod_owners.get_mut(ip) {
                    owners.retain(|o| o != &object);
                }
                self.publish_pod_ip(*ip);
            }
        }
    }

    fn publish_pod_ip(&mut self, ip: IpAddr) {
        let namespaces: Vec<Arc<str>> = self
            .pod_owners
            .get(&ip)
            .map(|owners| owners.iter().map(|(ns, _)| ns.clone()).collect())
            .unwrap_or_default();
        if namespaces.is_empty() {
            self.pod_owners.remove(&ip);
            self.published.pod_namespaces.remove(&ip);
        } else {
            self.published.pod_namespaces.insert(ip, namespaces.into());
        }
    }

    fn publish_namespace(&mut self, namespace: &Arc<str>) {
        match self.namespace_counts.get(namespace) {
            Some(count) => {
                self.published.namespaces.insert(namespace.clone(), *count);
            }
            None => {
                if self.published.namespaces.remove(namespace).is_some() {
                    self.published.namespaces_removed += 1;
                }
            }
        }
    }

    /// Recomputes the published records of one service from its model and slices.
    fn refresh_service(&mut self, key: &Arc<str>) {
        let records = self
            .services
            .get(key)
            .map(|model| Arc::new(self.build_records(model)));
        let old = match &records {
            Some(records) => self.published.services.insert(key.clone(), records.clone()),
            None => self.published.services.remove(key),
        };
        let old_reverse = old
            .as_ref()
            .map(|o| o.reverse_entries())
            .unwrap_or_default();
        let new_reverse = records
            .as_ref()
            .map(|r| r.reverse_entries())
            .unwrap_or_default();
        self.published.endpoint_count = self.published.endpoint_count
            + records.as_ref().map_or(0, |r| r.endpoint_count())
            - old.as_ref().map_or(0, |o| o.endpoint_count());
        if old_reverse == new_reverse {
            return;
        }
        let mut touched = HashSet::new();
        for (ip, _) in &old_reverse {
            if let Some(owners) = self.reverse_owners.get_mut(ip) {
                owners.retain(|(owner, _)| owner != key);
            }
            touched.insert(*ip);
        }
        for (ip, name) in new_reverse {
            let owners = self.reverse_owners.entry(ip).or_default();
            if !owners.iter().any(|(owner, n)| owner == key && *n == name) {
                owners.push((key.clone(), name));
            }
            touched.insert(ip);
        }
        for ip in touched {
            let names: Vec<Arc<str>> = self
                .reverse_owners
                .get(&ip)
                .map(|owners| owners.iter().map(|(_, name)| name.clone()).collect())
                .unwrap_or_default();
            if names.is_empty() {
                self.reverse_owners.remove(&ip);
                self.published.reverse.remove(&ip);
            } else {
                self.published.reverse.insert(ip, names.into());
            }
        }
    }

    fn build_records(&self, model: &ServiceModel) -> ServiceRecords {
        let fqdn = format!(
            "{}.{}.svc.{}",
            model.name, model.namespace, self.settings.zone
        );
        let kind = match &model.spec {
            ServiceSpecModel::ClusterIp { ips } => {
                ServiceRecordsKind::ClusterIp { ips: ips.clone() }
            }
            ServiceSpecModel::ExternalName { target } => ServiceRecordsKind::ExternalName {
                target: target.clone(),
            },
            ServiceSpecModel::Headless => ServiceRecordsKind::Headless {
                endpoints: self.merged_endpoints(model),
            },
        };
        ServiceRecords {
            namespace: model.namespace.clone(),
            name: model.name.clone(),
            fqdn: fqdn.into(),
            ports: model.ports.clone(),
            kind,
        }
    }

    /// All slices of a service merged: ready endpoints (or all, with
    /// `publishNotReadyAddresses`), one record per address, hostnames preferred.
    fn merged_endpoints(&self, model: &ServiceModel) -> Vec<EndpointRecord> {
        let key = service_key(&model.namespace, &model.name);
        let mut records: Vec<EndpointRecord> = Vec::new();
        let mut index: HashMap<IpAddr, usize> = HashMap::new();
        let Some(slice_names) = self.slices_by_service.get(&key) else {
            return records;
        };
        for slice_name in slice_names {
            let Some(slice) = self
                .slices
                .get(&(model.namespace.clone(), slice_name.clone()))
            else {
                continue;
            };
            for endpoint in &slice.endpoints {
                if !endpoint.ready && !model.publish_not_ready {
                    continue;
                }
                let ip = endpoint.ip;
                let record = EndpointRecord {
                    ip,
                    label: endpoint
                        .hostname
                        .clone()
                        .unwrap_or_else(|| dashed_ip(ip).into()),
                    has_hostname: endpoint.hostname.is_some(),
                    ports: slice.ports.clone(),
                };
                match index.get(&ip) {
                    Some(&at) => {
                        if record.has_hostname && !records[at].has_hostname {
                            records[at] = record;
                        }
                    }
                    None => {
                        index.insert(ip, records.len());
                        records.push(record);
                    }
                }
            }
        }
        records
    }
}

/// The SOA serial of the next published snapshot: the Unix time in seconds, but always above the
/// previous serial, so every change of the data changes the serial even within one second
/// (`dns-cache --watch-soa` drops negative answers when it sees the serial move).
pub fn next_serial(previous: u32, now_secs: u32) -> u32 {
    now_secs.max(previous.wrapping_add(1))
}

#[cfg(test)]
mod serial_tests {
    use super::next_serial;

    #[test]
    fn serials_follow_the_clock_and_always_rise() {
        assert_eq!(next_serial(1, 1_700_000_000), 1_700_000_000);
        assert_eq!(next_serial(1_700_000_000, 1_700_000_000), 1_700_000_001);
        assert_eq!(next_serial(1_700_000_005, 1_700_000_001), 1_700_000_006);
    }
}
