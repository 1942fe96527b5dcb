//! `answer()`: a pure function from a snapshot and a question to the records to send.
//!
//! Outcomes map to response codes here and nowhere else: NXDOMAIN and NODATA (NOERROR with the
//! SOA in authority, RFC 2308) are values, not errors. Names outside the zone, and reverse names
//! we hold no record for, come back as [`Outcome::Forward`]; an ExternalName whose target lies
//! outside the zone comes back as [`Outcome::Chase`] so the caller resolves it upstream.

use std::borrow::Cow;
use std::net::IpAddr;

use crate::snapshot::{
    ClusterSnapshot, EndpointRecord, PodsMode, SCHEMA_VERSION, SRV_PRIORITY, ServiceRecords,
    ServiceRecordsKind,
};
use crate::target::{QueryTarget, parse_target};
use dns_wire::{Answer, DnsName, RData, Rcode, ResourceRecord, class, rtype};

/// TTL of the `dns-version` record (spec §2.2).
pub const DNS_VERSION_TTL: u32 = 28800;
/// ExternalName chains longer than this are cut (CNAME loops in cluster data).
const MAX_CNAME_CHAIN: usize = 8;

/// What to do with a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<'a> {
    /// Send this answer.
    Answer(Answer<'a>),
    /// Not ours: send the query upstream unchanged.
    Forward,
    /// Send `answer` (ending in a CNAME to `target`) after appending the upstream answer for
    /// `target` with the same type; its rcode and TC bit become ours.
    Chase { answer: Answer<'a>, target: &'a str },
}

/// The question being answered.
#[derive(Debug, Clone, Copy)]
pub struct Question<'q> {
    /// Lower-cased, dotted, no trailing dot.
    pub name: &'q str,
    pub qtype: u16,
    pub qclass: u16,
}

/// Answers `question` from `snapshot`. `rotation` picks the first record of multi-address
/// answers (callers pass something that changes per query, such as the query ID).
pub fn answer<'s>(
    snapshot: &'s ClusterSnapshot,
    question: Question<'_>,
    rotation: usize,
) -> Outcome<'s> {
    // Only class IN (and ANY) exists here; CHAOS statistics are the cache's business.
    if question.qclass != class::IN && question.qclass != class::ANY {
        return Outcome::Answer(Answer::error(Rcode::Refused));
    }
    let target = parse_target(question.name, &snapshot.settings.zone);
    match target {
        QueryTarget::Outside => return Outcome::Forward,
        QueryTarget::Reverse(ip) => return reverse(snapshot, ip, question.qtype),
        _ => {}
    }
    if !snapshot.synced {
        // Before the first sync: SERVFAIL that says "Not Ready" (RFC 8914), which the sidecar
        // tells apart from a server that does not work (docs/architecture.md, "Liveness").
        return Outcome::Answer(Answer {
            ede: Some(dns_wire::ede::NOT_READY),
            ..Answer::error(Rcode::ServFail)
        });
    }
    if matches!(question.qtype, rtype::AXFR | rtype::IXFR) {
        return Outcome::Answer(Answer::error(Rcode::Refused));
    }
    let mut out = Answer::authoritative();
    let mut state = Resolver {
        snapshot,
        qtype: question.qtype,
        rotation,
        out: &mut out,
    };
    match state.resolve(DnsName::Query, target, 0) {
        Step::Done => Outcome::Answer(out),
        Step::Chase(target) => Outcome::Chase {
            answer: out,
            target,
        },
    }
}

enum Step<'s> {
    Done,
    Chase(&'s str),
}

struct Resolver<'s, 'o> {
    snapshot: &'s ClusterSnapshot,
    qtype: u16,
    rotation: usize,
    out: &'o mut Answer<'s>,
}

/// What exists at a name, before the query type is considered.
enum Node<'s> {
    Missing,
    /// Exists with no records of its own (apex parts, empty non-terminals).
    Empty,
    Apex,
    DnsVersion,
    Service(&'s ServiceRecords),
    ServicePort {
        service: &'s ServiceRecords,
        port: &'s str,
        protocol: &'s str,
    },
    Endpoint {
        service: &'s ServiceRecords,
        label: &'s str,
    },
    Pod(IpAddr),
}

impl<'s> Resolver<'s, '_> {
    fn ttl(&self) -> u32 {
        self.snapshot.settings.ttl
    }

    fn soa(&self) -> ResourceRecord<'s> {
        let settings = &self.snapshot.settings;
        ResourceRecord {
            owner: DnsName::Text(Cow::Borrowed(&settings.zone)),
            ttl: settings.ttl,
            data: RData::Soa {
                zone: &settings.zone,
                serial: self.snapshot.serial,
                ttl: settings.ttl,
            },
        }
    }

    fn negative(&mut self, rcode: Rcode) -> Step<'s> {
        self.out.rcode = rcode;
        let soa = self.soa();
        self.out.authority.push(soa);
        Step::Done
    }

    fn node<'n>(&self, target: QueryTarget<'n>) -> Node<'s> {
        let snapshot = self.snapshot;
        let pods = snapshot.settings.pods;
        match target {
            QueryTarget::Apex => Node::Apex,
            QueryTarget::DnsVersion => Node::DnsVersion,
            // `ns.dns.<zone>` has no address, and legacy kube-dns answers NXDOMAIN for it.
            QueryTarget::NameServer => Node::Missing,
            QueryTarget::ServiceRoot => Node::Empty,
            QueryTarget::Namespace { namespace } => {
                if snapshot.has_namespace(namespace) {
                    Node::Empty
                } else {
                    Node::Missing
                }
            }
            QueryTarget::Service { key } => match self.live_service(key) {
                Some(service) => Node::Service(service),
                None => Node::Missing,
            },
            QueryTarget::ServiceProtocol { key, protocol } => match self.live_service(key) {
                // An empty non-terminal only above a `_<port>._<proto>` record: unnamed ports
                // have none (so a secondary holding the transferred zone answers the same).
                Some(service)
                    if service_ports(service)
                        .any(|p| p.name.is_some() && &*p.protocol == protocol) =>
                {
                    Node::Empty
                }
                _ => Node::Missing,
            },
            QueryTarget::ServicePort {
                key,
                port,
                protocol,
            } => {
                let Some(service) = self.live_service(key) else {
                    return Node::Missing;
                };
                // Borrow the port and protocol labels from the snapshot, not the query.
                let found = service_ports(service)
                    .find(|p| p.name.as_deref() == Some(port) && &*p.protocol == protocol);
                match found {
                    Some(p) => Node::ServicePort {
                        service,
                        port: p.name.as_deref().unwrap_or(""),
                        protocol: &p.protocol,
                    },
                    None => Node::Missing,
                }
            }
            QueryTarget::Endpoint { key, label } => {
                let Some(service) = self.live_service(key) else {
                    return Node::Missing;
                };
                match &service.kind {
                    ServiceRecordsKind::Headless { endpoints } => {
                        match endpoints.iter().find(|e| &*e.label == label) {
                            Some(e) => Node::Endpoint {
                                service,
                                label: &e.label,
                            },
                            None => Node::Missing,
                        }
                    }
                    _ => Node::Missing,
                }
            }
            QueryTarget::PodRoot | QueryTarget::PodNamespace { .. } => {
                if pods == PodsMode::Disabled {
                    Node::Missing
                } else {
                    Node::Empty
                }
            }
            QueryTarget::Pod { namespace, ip } => match (pods, ip) {
                (PodsMode::Disabled, _) | (_, None) => Node::Missing,
                (PodsMode::Verified, Some(ip)) if !snapshot.pod_in_namespace(&ip, namespace) => {
                    Node::Missing
                }
                (_, Some(ip)) => Node::Pod(ip),
            },
            QueryTarget::NoSuchName | QueryTarget::Outside | QueryTarget::Reverse(_) => {
                Node::Missing
            }
        }
    }

    /// A service that has records: headless services with no ready endpoint do not exist
    /// (spec §2.4.1).
    fn live_service(&self, key: &str) -> Option<&'s ServiceRecords> {
        let service = self.snapshot.service(key)?;
        match &service.kind {
            ServiceRecordsKind::Headless { endpoints } if endpoints.is_empty() => None,
            _ => Some(service),
        }
    }

    fn resolve<'n>(
        &mut self,
        owner: DnsName<'s>,
        target: QueryTarget<'n>,
        depth: usize,
    ) -> Step<'s> {
        let node = self.node(target);
        let qtype = self.qtype;
        let ttl = self.ttl();
        let before = self.out.answers.len();
        match node {
            // At depth > 0 this is a dangling in-zone CNAME target: the CNAME stays.
            Node::Missing => return self.negative(Rcode::NxDomain),
            Node::Service(service) => {
                if let ServiceRecordsKind::ExternalName { target } = &service.kind {
                    return self.external_name(owner, target, depth);
                }
            }
            _ => {}
        }
        if qtype == rtype::ANY {
            // RFC 8482 §4.2: one synthesized HINFO instead of every RRset.
            self.out.answers.push(ResourceRecord {
                owner,
                ttl,
                data: RData::Hinfo {
                    cpu: "RFC8482",
                    os: "",
                },
            });
            return Step::Done;
        }
        match node {
            Node::Apex => match qtype {
                rtype::SOA => {
                    let mut soa = self.soa();
                    soa.owner = owner;
                    self.out.answers.push(soa);
                }
                rtype::NS => {
                    let zone: &'s str = &self.snapshot.settings.zone;
                    self.out.answers.push(ResourceRecord {
                        owner,
                        ttl,
                        data: RData::Ns(DnsName::Joined("ns.dns", zone)),
                    });
                }
                _ => {}
            },
            Node::DnsVersion if qtype == rtype::TXT => self.out.answers.push(ResourceRecord {
                owner,
                ttl: DNS_VERSION_TTL,
                data: RData::Txt(SCHEMA_VERSION),
            }),
            Node::Service(service) => self.service_records(owner, service),
            Node::ServicePort {
                service,
                port,
                protocol,
            } if qtype == rtype::SRV => self.port_srv(owner, service, port, protocol),
            Node::Endpoint { service, label } => {
                if let ServiceRecordsKind::Headless { endpoints } = &service.kind {
                    let matching = endpoints.iter().filter(|e| &*e.label == label);
                    self.push_addresses(owner, matching.map(|e| e.ip));
                }
            }
            Node::Pod(ip) => self.push_addresses(owner, std::iter::once(ip)),
            _ => {}
        }
        if self.out.answers.len() == before && depth == 0 {
            return self.negative(Rcode::NoError);
        }
        Step::Done
    }

    fn external_name(&mut self, owner: DnsName<'s>, target: &'s str, depth: usize) -> Step<'s> {
        self.out.answers.push(ResourceRecord {
            owner,
            ttl: self.ttl(),
            data: RData::Cname(DnsName::Text(Cow::Borrowed(target))),
        });
        if self.qtype == rtype::CNAME {
            return Step::Done;
        }
        let next = parse_target(target, &self.snapshot.settings.zone);
        match next {
            QueryTarget::Outside | QueryTarget::Reverse(_) => Step::Chase(target),
            _ if depth + 1 >= MAX_CNAME_CHAIN => {
                self.out.rcode = Rcode::ServFail;
                Step::Done
            }
            _ => {
                let before = self.out.answers.len();
                let step = self.resolve(DnsName::Text(Cow::Borrowed(target)), next, depth + 1);
                if matches!(step, Step::Done)
                    && self.out.answers.len() == before
                    && self.out.authority.is_empty()
                    && self.out.rcode == Rcode::NoError
                {
                    // The in-zone target exists without this type: NODATA after the CNAME.
                    let soa = self.soa();
                    self.out.authority.push(soa);
                }
                step
            }
        }
    }

    fn push_addresses(&mut self, owner: DnsName<'s>, ips: impl Iterator<Item = IpAddr>) {
        let ttl = self.ttl();
        let start = self.out.answers.len();
        for ip in ips {
            let data = match (ip, self.qtype) {
                (IpAddr::V4(v4), rtype::A) => RData::A(v4),
                (IpAddr::V6(v6), rtype::AAAA) => RData::Aaaa(v6),
                _ => continue,
            };
            self.out.answers.push(ResourceRecord {
                owner: owner.clone(),
                ttl,
                data,
            });
        }
        let added = &mut self.out.answers[start..];
        if added.len() > 1 {
            let shift = self.rotation % added.len();
            added.rotate_left(shift);
        }
    }

    fn service_records(&mut self, owner: DnsName<'s>, service: &'s ServiceRecords) {
        match (&service.kind, self.qtype) {
            (ServiceRecordsKind::ClusterIp { ips }, rtype::A | rtype::AAAA) => {
                self.push_addresses(owner, ips.iter().copied());
            }
            (ServiceRecordsKind::Headless { endpoints }, rtype::A | rtype::AAAA) => {
                self.push_addresses(owner, endpoints.iter().map(|e| e.ip));
            }
            (ServiceRecordsKind::ClusterIp { ips }, rtype::SRV) => {
                // One SRV per port of the service, all pointing at the service name.
                let ports: Vec<u16> = dedup_ports(service.ports.iter().map(|p| p.port));
                let weight = srv_weight(ports.len());
                for port in ports {
                    self.push_srv(
                        owner.clone(),
                        weight,
                        port,
                        DnsName::Text(Cow::Borrowed(&service.fqdn)),
                    );
                }
                if !service.ports.is_empty() {
                    self.push_glue(
                        DnsName::Text(Cow::Borrowed(&service.fqdn)),
                        ips.iter().copied(),
                    );
                }
            }
            (ServiceRecordsKind::Headless { endpoints }, rtype::SRV) => {
                let targets = endpoint_srv_targets(endpoints, |_| true);
                self.push_endpoint_srvs(owner, service, endpoints, targets);
            }
            _ => {}
        }
    }

    fn port_srv(
        &mut self,
        owner: DnsName<'s>,
        service: &'s ServiceRecords,
        port: &str,
        protocol: &str,
    ) {
        let matches = |p: &crate::model::PortModel| {
            p.name.as_deref() == Some(port) && &*p.protocol == protocol
        };
        match &service.kind {
            ServiceRecordsKind::ClusterIp { ips } => {
                let numbers =
                    dedup_ports(service.ports.iter().filter(|p| matches(p)).map(|p| p.port));
                let weight = srv_weight(numbers.len());
                let target = DnsName::Text(Cow::Borrowed(&*service.fqdn));
                for number in numbers {
                    self.push_srv(owner.clone(), weight, number, target.clone());
                }
                self.push_glue(target, ips.iter().copied());
            }
            ServiceRecordsKind::Headless { endpoints } => {
                let targets = endpoint_srv_targets(endpoints, matches);
                self.push_endpoint_srvs(owner, service, endpoints, targets);
            }
            ServiceRecordsKind::ExternalName { .. } => {}
        }
    }

    fn push_endpoint_srvs(
        &mut self,
        owner: DnsName<'s>,
        service: &'s ServiceRecords,
        endpoints: &'s [EndpointRecord],
        targets: Vec<(&'s str, u16)>,
    ) {
        let weight = srv_weight(targets.len());
        let mut glued: Vec<&str> = Vec::new();
        for (label, port) in targets {
            let target = DnsName::Joined(label, &service.fqdn);
            self.push_srv(owner.clone(), weight, port, target.clone());
            if !glued.contains(&label) {
                glued.push(label);
                let ips = endpoints
                    .iter()
                    .filter(|e| &*e.label == label)
                    .map(|e| e.ip);
                self.push_glue(target, ips);
            }
        }
    }

    fn push_srv(&mut self, owner: DnsName<'s>, weight: u16, port: u16, target: DnsName<'s>) {
        self.out.answers.push(ResourceRecord {
            owner,
            ttl: self.ttl(),
            data: RData::Srv {
                priority: SRV_PRIORITY,
                weight,
                port,
                target,
            },
        });
    }

    fn push_glue(&mut self, owner: DnsName<'s>, ips: impl Iterator<Item = IpAddr>) {
        let ttl = self.ttl();
        for ip in ips {
            let data = match ip {
                IpAddr::V4(v4) => RData::A(v4),
                IpAddr::V6(v6) => RData::Aaaa(v6),
            };
            self.out.additionals.push(ResourceRecord {
                owner: owner.clone(),
                ttl,
                data,
            });
        }
    }
}

fn service_ports(
    service: &ServiceRecords,
) -> Box<dyn Iterator<Item = &crate::model::PortModel> + '_> {
    match &service.kind {
        ServiceRecordsKind::Headless { endpoints } => {
            Box::new(endpoints.iter().flat_map(|e| e.ports.iter()))
        }
        ServiceRecordsKind::ClusterIp { .. } => Box::new(service.ports.iter()),
        ServiceRecordsKind::ExternalName { .. } => Box::new(std::iter::empty()),
    }
}

/// SRV weight for N records: floor(100/N), as kube-dns.
fn srv_weight(count: usize) -> u16 {
    if count == 0 {
        return 100;
    }
    (100 / count).max(1) as u16
}

fn dedup_ports(ports: impl Iterator<Item = u16>) -> Vec<u16> {
    let mut out: Vec<u16> = Vec::new();
    for port in ports {
        if !out.contains(&port) {
            out.push(port);
        }
    }
    out
}

/// (endpoint label, port) pairs for the SRV answer, deduplicated (a hostname shared by two
/// addresses yields one SRV target, glued with both addresses).
fn endpoint_srv_targets<'s>(
    endpoints: &'s [EndpointRecord],
    wanted: impl Fn(&crate::model::PortModel) -> bool,
) -> Vec<(&'s str, u16)> {
    let mut out: Vec<(&'s str, u16)> = Vec::new();
    for endpoint in endpoints {
        for port in endpoint.ports.iter().filter(|p| wanted(p)) {
            let pair = (&*endpoint.label, port.port);
            if !out.contains(&pair) {
                out.push(pair);
            }
        }
    }
    out
}

fn reverse<'s>(snapshot: &'s ClusterSnapshot, ip: IpAddr, qtype: u16) -> Outcome<'s> {
    if !matches!(qtype, rtype::PTR | rtype::ANY) {
        return Outcome::Forward;
    }
    let Some(names) = snapshot.reverse(&ip) else {
        return Outcome::Forward;
    };
    let mut out = Answer::authoritative();
    for name in names.iter() {
        out.answers.push(ResourceRecord {
            owner: DnsName::Query,
            ttl: snapshot.settings.ttl,
            data: RData::Ptr(DnsName::Text(Cow::Borrowed(name))),
        });
    }
    Outcome::Answer(out)
}
