//! The stripped object model: only what DNS needs from Services, EndpointSlices, Endpoints and
//! Pods, taken from the k8s-openapi types at ingest so no API object is kept long-term.

use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use thiserror::Error;

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Why an API object was skipped. Not retryable: the same object fails the same way.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum IngestError {
    #[error("{kind} has no metadata.{field}")]
    MissingMetadata {
        kind: &'static str,
        field: &'static str,
    },
    #[error("{kind} {namespace}/{name}: {reason}")]
    Invalid {
        kind: &'static str,
        namespace: String,
        name: String,
        reason: String,
    },
}

/// A port as DNS sees it (the SRV `_<name>._<proto>` labels).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct PortModel {
    /// Lower-cased port name; unnamed ports get no `_port._proto` SRV record.
    pub name: Option<Box<str>>,
    /// Lower-cased protocol (`tcp`, `udp`, `sctp`).
    pub protocol: Box<str>,
    pub port: u16,
}

/// How a Service is published.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ServiceSpecModel {
    /// A and AAAA for every ClusterIP.
    ClusterIp { ips: Vec<IpAddr> },
    /// Records come from the ready endpoints.
    Headless,
    /// CNAME to the lower-cased target, without the trailing dot.
    ExternalName { target: Box<str> },
}

/// A Service stripped to what DNS needs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServiceModel {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
    pub spec: ServiceSpecModel,
    pub ports: Vec<PortModel>,
    pub publish_not_ready: bool,
}

/// One endpoint of a slice. Only the first address is kept: the EndpointSlice API says its
/// addresses are fungible and consumers may use only the first, and every endpoint the
/// controllers write has one (this keeps 100,000 endpoints in a few MB).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EndpointModel {
    pub ip: IpAddr,
    /// Lower-cased `hostname`.
    pub hostname: Option<Box<str>>,
    /// `conditions.ready`, where an absent value means ready (EndpointSlice API docs).
    pub ready: bool,
}

/// An EndpointSlice (or a core/v1 Endpoints object) stripped to what DNS needs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SliceModel {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
    /// The owning Service's name, from the `kubernetes.io/service-name` label.
    pub service: Arc<str>,
    pub endpoints: Vec<EndpointModel>,
    pub ports: Arc<[PortModel]>,
}

/// A Pod stripped to its namespace and IPs (only kept in `--pods=verified` mode).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PodModel {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
    pub ips: Vec<IpAddr>,
}

fn name_and_namespace(
    kind: &'static str,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Result<(Arc<str>, Arc<str>), IngestError> {
    let name = meta.name.as_deref().ok_or(IngestError::MissingMetadata {
        kind,
        field: "name",
    })?;
    let namespace = meta
        .namespace
        .as_deref()
        .ok_or(IngestError::MissingMetadata {
            kind,
            field: "namespace",
        })?;
    Ok((
        Arc::from(name.to_ascii_lowercase()),
        Arc::from(namespace.to_ascii_lowercase()),
    ))
}

fn lower_box(s: &str) -> Box<str> {
    s.to_ascii_lowercase().into_boxed_str()
}

fn protocol_of(protocol: Option<&str>) -> Box<str> {
    lower_box(protocol.unwrap_or("TCP"))
}

fn port_number(
    kind: &'static str,
    namespace: &str,
    name: &str,
    port: i32,
) -> Result<u16, IngestError> {
    u16::try_from(port).map_err(|_| IngestError::Invalid {
        kind,
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        reason: format!("port {port} is outside 0..=65535"),
    })
}

impl ServiceModel {
    /// Strips a Service. Unparsable ClusterIPs are an error that names the object.
    pub fn from_api(svc: &Service) -> Result<Self, IngestError> {
        let (name, namespace) = name_and_namespace("Service", &svc.metadata)?;
        let invalid = |reason: String| IngestError::Invalid {
            kind: "Service",
            namespace: namespace.to_string(),
            name: name.to_string(),
            reason,
        };
        let spec = svc.spec.as_ref();
        let service_type = spec.and_then(|s| s.type_.as_deref()).unwrap_or("ClusterIP");
        let mut ports = Vec::new();
        for port in spec.and_then(|s| s.ports.as_ref()).into_iter().flatten() {
            ports.push(PortModel {
                name: port
                    .name
                    .as_deref()
                    .filter(|n| !n.is_empty())
                    .map(lower_box),
                protocol: protocol_of(port.protocol.as_deref()),
                port: port_number("Service", &namespace, &name, port.port)?,
            });
        }
        let spec_model = if service_type == "ExternalName" {
            let target = spec
                .and_then(|s| s.external_name.as_deref())
                .map(|t| t.trim_end_matches('.'))
                .filter(|t| !t.is_empty())
                .ok_or_else(|| invalid("type ExternalName without spec.externalName".into()))?;
            ServiceSpecModel::ExternalName {
                target: lower_box(target),
            }
        } else {
            let mut raw: Vec<&str> = spec
                .and_then(|s| s.cluster_ips.as_ref())
                .map(|ips| ips.iter().map(String::as_str).collect())
                .unwrap_or_default();
            if raw.is_empty() {
                raw.extend(spec.and_then(|s| s.cluster_ip.as_deref()));
            }
            if raw.is_empty() || raw.iter().any(|ip| ip.is_empty() || *ip == "None") {
                ServiceSpecModel::Headless
            } else {
                let mut ips = Vec::with_capacity(raw.len());
                for ip in raw {
                    let parsed: IpAddr = ip
                        .parse()
                        .map_err(|_| invalid(format!("clusterIP {ip:?} is not an IP address")))?;
                    if !ips.contains(&parsed) {
                        ips.push(parsed);
                    }
                }
                ServiceSpecModel::ClusterIp { ips }
            }
        };
        Ok(ServiceModel {
            namespace,
            name,
            spec: spec_model,
            ports,
            publish_not_ready: spec
                .and_then(|s| s.publish_not_ready_addresses)
                .unwrap_or(false),
        })
    }
}

impl SliceModel {
    /// Strips an EndpointSlice. Returns `Ok(None)` for slices DNS ignores (no service label,
    /// `FQDN` address type).
    pub fn from_api(slice: &EndpointSlice) -> Result<Option<Self>, IngestError> {
        let (name, namespace) = name_and_namespace("EndpointSlice", &slice.metadata)?;
        let Some(service) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        else {
            return Ok(None);
        };
        if slice.address_type == "FQDN" {
            return Ok(None);
        }
        let mut ports = Vec::new();
        for port in slice.ports.iter().flatten() {
            let Some(number) = port.port else { continue };
            ports.push(PortModel {
                name: port
                    .name
                    .as_deref()
                    .filter(|n| !n.is_empty())
                    .map(lower_box),
                protocol: protocol_of(port.protocol.as_deref()),
                port: port_number("EndpointSlice", &namespace, &name, number)?,
            });
        }
        let mut endpoints = Vec::with_capacity(slice.endpoints.len());
        for endpoint in &slice.endpoints {
            let Some(address) = endpoint.addresses.first() else {
                continue;
            };
            let ip: IpAddr = address.parse().map_err(|_| IngestError::Invalid {
                kind: "EndpointSlice",
                namespace: namespace.to_string(),
                name: name.to_string(),
                reason: format!("endpoint address {address:?} is not an IP address"),
            })?;
            endpoints.push(EndpointModel {
                ip,
                hostname: endpoint.hostname.as_deref().map(lower_box),
                ready: endpoint
                    .conditions
                    .as_ref()
                    .and_then(|c| c.ready)
                    .unwrap_or(true),
            });
        }
        Ok(Some(SliceModel {
            namespace,
            name,
            service: Arc::from(service.to_ascii_lowercase()),
            endpoints,
            ports: ports.into(),
        }))
    }

    /// Converts a core/v1 Endpoints object (clusters older than 1.21) into slices, one per
    /// subset, since each subset carries its own port list. Slice names are `<name>#<index>`.
    pub fn from_endpoints(endpoints: &Endpoints) -> Result<Vec<Self>, IngestError> {
        let (name, namespace) = name_and_namespace("Endpoints", &endpoints.metadata)?;
        let mut slices = Vec::new();
        for (index, subset) in endpoints.subsets.iter().flatten().enumerate() {
            let mut ports = Vec::new();
            for port in subset.ports.iter().flatten() {
                ports.push(PortModel {
                    name: port
                        .name
                        .as_deref()
                        .filter(|n| !n.is_empty())
                        .map(lower_box),
                    protocol: protocol_of(port.protocol.as_deref()),
                    port: port_number("Endpoints", &namespace, &name, port.port)?,
                });
            }
            let mut models = Vec::new();
            let groups = [
                (&subset.addresses, true),
                (&subset.not_ready_addresses, false),
            ];
            for (addresses, ready) in groups {
                for address in addresses.iter().flatten() {
                    let ip: IpAddr = address.ip.parse().map_err(|_| IngestError::Invalid {
                        kind: "Endpoints",
                        namespace: namespace.to_string(),
                        name: name.to_string(),
                        reason: format!("address {:?} is not an IP address", address.ip),
                    })?;
                    models.push(EndpointModel {
                        ip,
                        hostname: address.hostname.as_deref().map(lower_box),
                        ready,
                    });
                }
            }
            slices.push(SliceModel {
                namespace: namespace.clone(),
                name: Arc::from(format!("{name}#{index}")),
                service: name.clone(),
                endpoints: models,
                ports: ports.into(),
            });
        }
        Ok(slices)
    }
}

impl PodModel {
    /// Strips a Pod to its IPs; pods without an IP yet are still returned (with none).
    pub fn from_api(pod: &Pod) -> Result<Self, IngestError> {
        let (name, namespace) = name_and_namespace("Pod", &pod.metadata)?;
        let status = pod.status.as_ref();
        let mut ips: Vec<IpAddr> = status
            .and_then(|s| s.pod_ips.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|p| p.ip.parse().ok())
            .collect();
        if let Some(ip) = status
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse().ok())
            && !ips.contains(&ip)
        {
            ips.push(ip);
        }
        Ok(PodModel {
            namespace,
            name,
            ips,
        })
    }
}
