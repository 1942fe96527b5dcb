//! Fluent builders for the Kubernetes objects kube-dns reads, returned as `serde_json::Value`.
//!
//! ```
//! use kube_dns_test_support::objects::{endpoint, endpoint_slice, service};
//! let svc = service("default", "kubernetes").cluster_ip("10.0.0.1").port(Some("https"), 443, "TCP").build();
//! let slice = endpoint_slice("default", "web-abc", "web")
//!     .endpoint(endpoint(&["10.1.0.5"]).hostname("web-0").ready(true))
//!     .port(Some("http"), 80, "TCP")
//!     .build();
//! # let _ = (svc, slice);
//! ```

use serde_json::{Map, Value, json};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";

fn metadata(
    namespace: &str,
    name: &str,
    labels: &Map<String, Value>,
    annotations: &Map<String, Value>,
) -> Value {
    let mut meta = json!({ "name": name, "namespace": namespace });
    if !labels.is_empty() {
        meta["labels"] = Value::Object(labels.clone());
    }
    if !annotations.is_empty() {
        meta["annotations"] = Value::Object(annotations.clone());
    }
    meta
}

fn port_object(name: Option<&str>, port: u16, protocol: &str) -> Value {
    let mut p = json!({ "port": port, "protocol": protocol });
    if let Some(name) = name {
        p["name"] = name.into();
    }
    p
}

/// Starts a core/v1 Service (type ClusterIP, no cluster IP until one is set).
pub fn service(namespace: &str, name: &str) -> ServiceBuilder {
    ServiceBuilder {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        labels: Map::new(),
        annotations: Map::new(),
        service_type: "ClusterIP".to_owned(),
        cluster_ips: Vec::new(),
        external_name: None,
        publish_not_ready: None,
        ports: Vec::new(),
        selector: Map::new(),
        ip_families: Vec::new(),
    }
}

#[derive(Clone, Debug)]
#[must_use]
pub struct ServiceBuilder {
    namespace: String,
    name: String,
    labels: Map<String, Value>,
    annotations: Map<String, Value>,
    service_type: String,
    cluster_ips: Vec<String>,
    external_name: Option<String>,
    publish_not_ready: Option<bool>,
    ports: Vec<Value>,
    selector: Map<String, Value>,
    ip_families: Vec<String>,
}

impl ServiceBuilder {
    /// Sets `clusterIP` and `clusterIPs: [ip]`.
    pub fn cluster_ip(mut self, ip: &str) -> Self {
        self.cluster_ips = vec![ip.to_owned()];
        self
    }

    /// Dual stack: `clusterIP` is the first, `clusterIPs` all of them.
    pub fn cluster_ips(mut self, ips: &[&str]) -> Self {
        self.cluster_ips = ips.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// A headless service: `clusterIP: None`.
    pub fn headless(self) -> Self {
        self.cluster_ip("None")
    }

    /// Type ExternalName with this target, and no cluster IP.
    pub fn external_name(mut self, target: &str) -> Self {
        self.service_type = "ExternalName".to_owned();
        self.external_name = Some(target.to_owned());
        self.cluster_ips.clear();
        self
    }

    pub fn publish_not_ready(mut self, publish: bool) -> Self {
        self.publish_not_ready = Some(publish);
        self
    }

    pub fn service_type(mut self, service_type: &str) -> Self {
        self.service_type = service_type.to_owned();
        self
    }

    pub fn port(mut self, name: Option<&str>, port: u16, protocol: &str) -> Self {
        self.ports.push(port_object(name, port, protocol));
        self
    }

    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_owned(), value.into());
        self
    }

    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.to_owned(), value.into());
        self
    }

    pub fn selector(mut self, key: &str, value: &str) -> Self {
        self.selector.insert(key.to_owned(), value.into());
        self
    }

    /// `spec.ipFamilies`, e.g. `&["IPv4", "IPv6"]`.
    pub fn ip_families(mut self, families: &[&str]) -> Self {
        self.ip_families = families.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    pub fn build(self) -> Value {
        let mut spec = json!({ "type": self.service_type });
        if let Some(first) = self.cluster_ips.first() {
            spec["clusterIP"] = first.as_str().into();
            spec["clusterIPs"] = self.cluster_ips.clone().into();
        }
        if let Some(target) = &self.external_name {
            spec["externalName"] = target.as_str().into();
        }
        if let Some(publish) = self.publish_not_ready {
            spec["publishNotReadyAddresses"] = publish.into();
        }
        if !self.ports.is_empty() {
            spec["ports"] = Value::Array(self.ports);
        }
        if !self.selector.is_empty() {
            spec["selector"] = Value::Object(self.selector);
        }
        if !self.ip_families.is_empty() {
            spec["ipFamilies"] = self.ip_families.into();
        }
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": metadata(&self.namespace, &self.name, &self.labels, &self.annotations),
            "spec": spec,
        })
    }
}

/// Starts a discovery.k8s.io/v1 EndpointSlice owned by `service` (address type IPv4).
pub fn endpoint_slice(namespace: &str, name: &str, service: &str) -> EndpointSliceBuilder {
    let mut labels = Map::new();
    labels.insert(SERVICE_NAME_LABEL.to_owned(), service.into());
    labels.insert(
        MANAGED_BY_LABEL.to_owned(),
        "endpointslice-controller.k8s.io".into(),
    );
    EndpointSliceBuilder {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        labels,
        address_type: "IPv4".to_owned(),
        endpoints: Vec::new(),
        ports: Vec::new(),
    }
}

#[derive(Clone, Debug)]
#[must_use]
pub struct EndpointSliceBuilder {
    namespace: String,
    name: String,
    labels: Map<String, Value>,
    address_type: String,
    endpoints: Vec<EndpointBuilder>,
    ports: Vec<Value>,
}

impl EndpointSliceBuilder {
    /// `IPv4`, `IPv6` or `FQDN`.
    pub fn address_type(mut self, address_type: &str) -> Self {
        self.address_type = address_type.to_owned();
        self
    }

    pub fn endpoint(mut self, endpoint: EndpointBuilder) -> Self {
        self.endpoints.push(endpoint);
        self
    }

    pub fn port(mut self, name: Option<&str>, port: u16, protocol: &str) -> Self {
        self.ports.push(port_object(name, port, protocol));
        self
    }

    /// Adds or overrides a label (use [`SERVICE_NAME_LABEL`] to re-own or orphan the slice).
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_owned(), value.into());
        self
    }

    /// Removes a label, e.g. [`SERVICE_NAME_LABEL`] for a slice no Service owns.
    pub fn without_label(mut self, key: &str) -> Self {
        self.labels.remove(key);
        self
    }

    pub fn build(self) -> Value {
        let endpoints: Vec<Value> = self
            .endpoints
            .iter()
            .map(|e| e.to_value(&self.namespace))
            .collect();
        let mut slice = json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": metadata(&self.namespace, &self.name, &self.labels, &Map::new()),
            "addressType": self.address_type,
            "endpoints": endpoints,
        });
        if !self.ports.is_empty() {
            slice["ports"] = Value::Array(self.ports);
        }
        slice
    }
}

/// One EndpointSlice endpoint. Conditions left `None` are omitted, which Kubernetes reads as
/// ready/serving (and not terminating).
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct EndpointBuilder {
    pub addresses: Vec<String>,
    pub hostname: Option<String>,
    pub ready: Option<bool>,
    pub serving: Option<bool>,
    pub terminating: Option<bool>,
    pub node_name: Option<String>,
    /// Name of the Pod in `targetRef` (same namespace as the slice).
    pub target_pod: Option<String>,
}

/// Starts an endpoint with these addresses.
pub fn endpoint(addresses: &[&str]) -> EndpointBuilder {
    EndpointBuilder {
        addresses: addresses.iter().map(|s| (*s).to_owned()).collect(),
        ..EndpointBuilder::default()
    }
}

impl EndpointBuilder {
    pub fn hostname(mut self, hostname: &str) -> Self {
        self.hostname = Some(hostname.to_owned());
        self
    }

    pub fn ready(mut self, ready: bool) -> Self {
        self.ready = Some(ready);
        self
    }

    pub fn serving(mut self, serving: bool) -> Self {
        self.serving = Some(serving);
        self
    }

    pub fn terminating(mut self, terminating: bool) -> Self {
        self.terminating = Some(terminating);
        self
    }

    pub fn node_name(mut self, node: &str) -> Self {
        self.node_name = Some(node.to_owned());
        self
    }

    pub fn target_pod(mut self, pod: &str) -> Self {
        self.target_pod = Some(pod.to_owned());
        self
    }

    fn to_value(&self, namespace: &str) -> Value {
        let mut conditions = Map::new();
        for (key, value) in [
            ("ready", self.ready),
            ("serving", self.serving),
            ("terminating", self.terminating),
        ] {
            if let Some(v) = value {
                conditions.insert(key.to_owned(), v.into());
            }
        }
        let mut e = json!({ "addresses": self.addresses, "conditions": conditions });
        if let Some(h) = &self.hostname {
            e["hostname"] = h.as_str().into();
        }
        if let Some(n) = &self.node_name {
            e["nodeName"] = n.as_str().into();
        }
        if let Some(pod) = &self.target_pod {
            e["targetRef"] = json!({ "kind": "Pod", "namespace": namespace, "name": pod });
        }
        e
    }
}

/// Starts a core/v1 Endpoints object; addresses and ports go into the current subset, and
/// [`EndpointsBuilder::subset`] starts the next one.
pub fn endpoints(namespace: &str, name: &str) -> EndpointsBuilder {
    EndpointsBuilder {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        subsets: vec![EndpointSubset::default()],
    }
}

#[derive(Clone, Debug, Default)]
struct EndpointSubset {
    addresses: Vec<Value>,
    not_ready: Vec<Value>,
    ports: Vec<Value>,
}

#[derive(Clone, Debug)]
#[must_use]
pub struct EndpointsBuilder {
    namespace: String,
    name: String,
    subsets: Vec<EndpointSubset>,
}

fn endpoint_address(ip: &str, hostname: Option<&str>) -> Value {
    let mut a = json!({ "ip": ip });
    if let Some(h) = hostname {
        a["hostname"] = h.into();
    }
    a
}

impl EndpointsBuilder {
    fn current(&mut self) -> &mut EndpointSubset {
        if self.subsets.is_empty() {
            self.subsets.push(EndpointSubset::default());
        }
        let last = self.subsets.len() - 1;
        &mut self.subsets[last]
    }

    pub fn address(mut self, ip: &str, hostname: Option<&str>) -> Self {
        self.current()
            .addresses
            .push(endpoint_address(ip, hostname));
        self
    }

    pub fn not_ready_address(mut self, ip: &str, hostname: Option<&str>) -> Self {
        self.current()
            .not_ready
            .push(endpoint_address(ip, hostname));
        self
    }

    pub fn port(mut self, name: Option<&str>, port: u16, protocol: &str) -> Self {
        self.current().ports.push(port_object(name, port, protocol));
        self
    }

    /// Starts a new subset.
    pub fn subset(mut self) -> Self {
        self.subsets.push(EndpointSubset::default());
        self
    }

    pub fn build(self) -> Value {
        let subsets: Vec<Value> = self
            .subsets
            .into_iter()
            .filter(|s| !(s.addresses.is_empty() && s.not_ready.is_empty() && s.ports.is_empty()))
            .map(|s| {
                let mut v = json!({});
                if !s.addresses.is_empty() {
                    v["addresses"] = Value::Array(s.addresses);
                }
                if !s.not_ready.is_empty() {
                    v["notReadyAddresses"] = Value::Array(s.not_ready);
                }
                if !s.ports.is_empty() {
                    v["ports"] = Value::Array(s.ports);
                }
                v
            })
            .collect();
        json!({
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": metadata(&self.namespace, &self.name, &Map::new(), &Map::new()),
            "subsets": subsets,
        })
    }
}

/// A core/v1 ConfigMap with string data.
pub fn config_map(namespace: &str, name: &str, data: &[(&str, &str)]) -> Value {
    let data: Map<String, Value> = data
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).into()))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": name, "namespace": namespace },
        "data": data,
    })
}

/// A running core/v1 Pod with `status.podIP = ip` and `status.podIPs = ips` (or `[ip]` if empty).
pub fn pod(namespace: &str, name: &str, ip: &str, ips: &[&str]) -> Value {
    let ips: Vec<Value> = if ips.is_empty() {
        vec![ip]
    } else {
        ips.to_vec()
    }
    .into_iter()
    .map(|i| json!({ "ip": i }))
    .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "namespace": namespace },
        "spec": { "containers": [{ "name": "main", "image": "registry.k8s.io/pause:3.10" }] },
        "status": { "phase": "Running", "podIP": ip, "podIPs": ips },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Pod, Service};
    use k8s_openapi::api::discovery::v1::EndpointSlice;

    #[test]
    fn built_objects_deserialize_as_k8s_openapi_types() {
        let svc: Service = serde_json::from_value(
            service("default", "kubernetes")
                .cluster_ips(&["10.0.0.1", "fd00::1"])
                .port(Some("https"), 443, "TCP")
                .publish_not_ready(true)
                .build(),
        )
        .expect("Service");
        let spec = svc.spec.expect("spec");
        assert_eq!(spec.cluster_ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(spec.cluster_ips.expect("ips").len(), 2);
        assert_eq!(spec.ports.expect("ports")[0].port, 443);

        let headless: Service =
            serde_json::from_value(service("ns", "h").headless().build()).expect("Service");
        assert_eq!(
            headless.spec.expect("spec").cluster_ip.as_deref(),
            Some("None")
        );
        let ext: Service =
            serde_json::from_value(service("ns", "e").external_name("www.example.com").build())
                .expect("Service");
        let ext = ext.spec.expect("spec");
        assert_eq!(ext.type_.as_deref(), Some("ExternalName"));
        assert_eq!(ext.external_name.as_deref(), Some("www.example.com"));

        let slice: EndpointSlice = serde_json::from_value(
            endpoint_slice("default", "headless-abc", "headless")
                .address_type("IPv6")
                .endpoint(
                    endpoint(&["fd00::5"])
                        .hostname("h0")
                        .ready(false)
                        .node_name("n1")
                        .target_pod("p0"),
                )
                .endpoint(endpoint(&["fd00::6"]))
                .port(Some("http"), 80, "TCP")
                .build(),
        )
        .expect("EndpointSlice");
        assert_eq!(slice.address_type, "IPv6");
        assert_eq!(
            slice
                .metadata
                .labels
                .expect("labels")
                .get(SERVICE_NAME_LABEL)
                .map(String::as_str),
            Some("headless")
        );
        let first = &slice.endpoints[0];
        assert_eq!(first.hostname.as_deref(), Some("h0"));
        assert_eq!(first.conditions.as_ref().and_then(|c| c.ready), Some(false));
        assert_eq!(
            first.target_ref.as_ref().and_then(|t| t.name.as_deref()),
            Some("p0")
        );
        assert_eq!(
            slice.endpoints[1].conditions.as_ref().and_then(|c| c.ready),
            None
        );

        let eps: Endpoints = serde_json::from_value(
            endpoints("default", "web")
                .address("10.1.0.1", Some("web-0"))
                .not_ready_address("10.1.0.2", None)
                .port(Some("http"), 80, "TCP")
                .subset()
                .address("10.1.0.3", None)
                .port(None, 81, "UDP")
                .build(),
        )
        .expect("Endpoints");
        let subsets = eps.subsets.expect("subsets");
        assert_eq!(subsets.len(), 2);
        assert_eq!(
            subsets[0].not_ready_addresses.as_ref().expect("not ready")[0].ip,
            "10.1.0.2"
        );

        let cm: ConfigMap = serde_json::from_value(config_map(
            "kube-system",
            "kube-dns",
            &[("upstreamNameservers", "[\"1.1.1.1\"]")],
        ))
        .expect("ConfigMap");
        assert_eq!(cm.data.expect("data").len(), 1);
        let pod: Pod = serde_json::from_value(pod("default", "p", "10.1.0.9", &[])).expect("Pod");
        assert_eq!(
            pod.status.expect("status").pod_ips.expect("ips")[0].ip,
            "10.1.0.9"
        );
    }
}
