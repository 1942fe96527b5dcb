//! The cluster zone as a list of records, for zone transfers (AXFR, IXFR).
//!
//! Records are not written a second time here: every name the zone holds is asked of
//! [`answer()`](crate::answer::answer) for each type it can hold, and the records owned by that
//! name are kept, so a secondary that serves this list answers as kube-dns does.
//!
//! Two parts of kube-dns's answers are made up per query and cannot be listed: pod names
//! (`<dashed-ip>.<ns>.pod.<zone>` answer for any address, or any pod's address) and the reverse
//! zones (kube-dns forwards the addresses it holds nothing for). `pod.<zone>` is therefore a
//! delegation back to kube-dns (`pod.<zone> NS ns.dns.<zone>`): a secondary sends those names to
//! its primary. Reverse zones are not transferred.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use dns_wire::{DnsName, RData, ResourceRecord, rtype};

use crate::answer::{Outcome, Question, answer};
use crate::snapshot::{ClusterSnapshot, PodsMode, ServiceRecords, ServiceRecordsKind};

/// The SOA timers kube-dns has always served (the encoder writes the same).
pub const SOA_REFRESH: u32 = 28800;
pub const SOA_RETRY: u32 = 7200;
pub const SOA_EXPIRE: u32 = 604800;

/// Record data a zone transfer carries.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ZoneData {
    Soa {
        zone: Box<str>,
        serial: u32,
        ttl: u32,
    },
    Ns(Box<str>),
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Cname(Box<str>),
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        target: Box<str>,
    },
    Txt(Box<str>),
}

/// One record of the zone: owner lower-cased, dotted, without the trailing dot.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ZoneRecord {
    pub owner: Box<str>,
    pub ttl: u32,
    pub data: ZoneData,
}

impl ZoneRecord {
    /// The record as the wire encoder takes it.
    pub fn as_wire(&self) -> ResourceRecord<'_> {
        fn text(name: &str) -> DnsName<'_> {
            DnsName::Text(std::borrow::Cow::Borrowed(name))
        }
        let data = match &self.data {
            ZoneData::Soa { zone, serial, ttl } => RData::Soa {
                zone,
                serial: *serial,
                ttl: *ttl,
            },
            ZoneData::Ns(name) => RData::Ns(text(name)),
            ZoneData::A(ip) => RData::A(*ip),
            ZoneData::Aaaa(ip) => RData::Aaaa(*ip),
            ZoneData::Cname(name) => RData::Cname(text(name)),
            ZoneData::Srv {
                priority,
                weight,
                port,
                target,
            } => RData::Srv {
                priority: *priority,
                weight: *weight,
                port: *port,
                target: text(target),
            },
            ZoneData::Txt(text) => RData::Txt(text),
        };
        ResourceRecord {
            owner: text(&self.owner),
            ttl: self.ttl,
            data,
        }
    }

    /// The record's type code.
    pub fn rtype(&self) -> u16 {
        match &self.data {
            ZoneData::Soa { .. } => rtype::SOA,
            ZoneData::Ns(_) => rtype::NS,
            ZoneData::A(_) => rtype::A,
            ZoneData::Aaaa(_) => rtype::AAAA,
            ZoneData::Cname(_) => rtype::CNAME,
            ZoneData::Srv { .. } => rtype::SRV,
            ZoneData::Txt(_) => rtype::TXT,
        }
    }
}

/// Zone-file text: `owner. ttl IN TYPE rdata`.
impl fmt::Display for ZoneRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}. {} IN ", self.owner, self.ttl)?;
        match &self.data {
            ZoneData::Soa { zone, serial, ttl } => write!(
                f,
                "SOA ns.dns.{zone}. hostmaster.{zone}. {serial} {SOA_REFRESH} {SOA_RETRY} {SOA_EXPIRE} {ttl}"
            ),
            ZoneData::Ns(name) => write!(f, "NS {name}."),
            ZoneData::A(ip) => write!(f, "A {ip}"),
            ZoneData::Aaaa(ip) => write!(f, "AAAA {ip}"),
            ZoneData::Cname(name) => write!(f, "CNAME {name}."),
            ZoneData::Srv {
                priority,
                weight,
                port,
                target,
            } => write!(f, "SRV {priority} {weight} {port} {target}."),
            ZoneData::Txt(text) => write!(f, "TXT \"{text}\""),
        }
    }
}

/// The zone's SOA record in `snapshot`.
pub fn soa(snapshot: &ClusterSnapshot) -> ZoneRecord {
    let settings = &snapshot.settings;
    ZoneRecord {
        owner: settings.zone.clone(),
        ttl: settings.ttl,
        data: ZoneData::Soa {
            zone: settings.zone.clone(),
            serial: snapshot.serial,
            ttl: settings.ttl,
        },
    }
}

/// The records at `name` (lower-cased, no trailing dot) for each of `types`, as `answer()`
/// gives them; records it adds for other names (CNAME targets, SRV glue) are left out.
fn records_at(snapshot: &ClusterSnapshot, name: &str, types: &[u16], out: &mut Vec<ZoneRecord>) {
    let mut found = BTreeSet::new();
    for &qtype in types {
        let question = Question {
            name,
            qtype,
            qclass: dns_wire::class::IN,
        };
        let answer = match answer(snapshot, question, 0) {
            Outcome::Answer(answer) | Outcome::Chase { answer, .. } => answer,
            Outcome::Forward => continue,
        };
        for record in &answer.answers {
            if record.owner == DnsName::Query
                && let Some(owned) = owned(name, record)
            {
                found.insert(owned);
            }
        }
    }
    out.extend(found);
}

fn name_text(name: &DnsName<'_>) -> Box<str> {
    match name {
        DnsName::Query => "".into(),
        DnsName::Text(text) => text.to_ascii_lowercase().into(),
        DnsName::Joined(label, base) => format!("{label}.{base}").to_ascii_lowercase().into(),
    }
}

fn owned(owner: &str, record: &ResourceRecord<'_>) -> Option<ZoneRecord> {
    let data = match &record.data {
        RData::A(ip) => ZoneData::A(*ip),
        RData::Aaaa(ip) => ZoneData::Aaaa(*ip),
        RData::Cname(name) => ZoneData::Cname(name_text(name)),
        RData::Ns(name) => ZoneData::Ns(name_text(name)),
        RData::Srv {
            priority,
            weight,
            port,
            target,
        } => ZoneData::Srv {
            priority: *priority,
            weight: *weight,
            port: *port,
            target: name_text(target),
        },
        RData::Txt(text) => ZoneData::Txt((*text).into()),
        RData::Soa { zone, serial, ttl } => ZoneData::Soa {
            zone: (*zone).into(),
            serial: *serial,
            ttl: *ttl,
        },
        RData::Ptr(_) | RData::Hinfo { .. } | RData::Raw { .. } => return None,
    };
    Some(ZoneRecord {
        owner: owner.into(),
        ttl: record.ttl,
        data,
    })
}

/// The records at the apex and the fixed names: SOA, NS, `dns-version` TXT, and the `pod`
/// delegation when pod names are answered.
pub fn fixed_records(snapshot: &ClusterSnapshot) -> Vec<ZoneRecord> {
    let zone = &snapshot.settings.zone;
    let mut out = Vec::new();
    records_at(snapshot, zone, &[rtype::SOA, rtype::NS], &mut out);
    records_at(
        snapshot,
        &format!("dns-version.{zone}"),
        &[rtype::TXT],
        &mut out,
    );
    if snapshot.settings.pods != PodsMode::Disabled {
        out.push(ZoneRecord {
            owner: format!("pod.{zone}").into(),
            ttl: snapshot.settings.ttl,
            data: ZoneData::Ns(format!("ns.dns.{zone}").into()),
        });
    }
    out
}

/// Every record one Service contributes to the zone, sorted.
pub fn service_records(snapshot: &ClusterSnapshot, service: &ServiceRecords) -> Vec<ZoneRecord> {
    let fqdn = &*service.fqdn;
    let mut out = Vec::new();
    if let ServiceRecordsKind::ExternalName { .. } = service.kind {
        records_at(snapshot, fqdn, &[rtype::CNAME], &mut out);
        return out;
    }
    let types = [rtype::A, rtype::AAAA, rtype::SRV];
    records_at(snapshot, fqdn, &types, &mut out);
    let mut names: BTreeSet<String> = BTreeSet::new();
    let mut add_port = |port: &crate::model::PortModel| {
        if let Some(name) = &port.name {
            names.insert(format!("_{name}._{}.{fqdn}", port.protocol));
        }
    };
    match &service.kind {
        ServiceRecordsKind::ClusterIp { .. } => service.ports.iter().for_each(&mut add_port),
        ServiceRecordsKind::Headless { endpoints } => {
            for endpoint in endpoints {
                endpoint.ports.iter().for_each(&mut add_port);
            }
            for endpoint in endpoints {
                names.insert(format!("{}.{fqdn}", endpoint.label));
            }
        }
        ServiceRecordsKind::ExternalName { .. } => {}
    }
    for name in &names {
        records_at(snapshot, name, &types, &mut out);
    }
    out
}

/// The whole zone, lazily: SOA, the fixed records, each Service's records in name order, and
/// the SOA again (RFC 5936 §2.2). Holds the snapshot, not a copy of its records.
#[derive(Debug)]
pub struct ZoneWalk {
    snapshot: Arc<ClusterSnapshot>,
    services: std::vec::IntoIter<Arc<ServiceRecords>>,
    pending: std::vec::IntoIter<ZoneRecord>,
    closing: Option<ZoneRecord>,
}

impl ZoneWalk {
    pub fn new(snapshot: Arc<ClusterSnapshot>) -> Self {
        let soa = soa(&snapshot);
        let mut first = vec![soa.clone()];
        first.extend(fixed_records(&snapshot).into_iter().filter(|r| *r != soa));
        ZoneWalk {
            services: snapshot.services_sorted().into_iter(),
            snapshot,
            pending: first.into_iter(),
            closing: Some(soa),
        }
    }
}

impl Iterator for ZoneWalk {
    type Item = ZoneRecord;

    fn next(&mut self) -> Option<ZoneRecord> {
        loop {
            if let Some(record) = self.pending.next() {
                return Some(record);
            }
            match self.services.next() {
                Some(service) => {
                    self.pending = service_records(&self.snapshot, &service).into_iter();
                }
                None => return self.closing.take(),
            }
        }
    }
}

/// What changed between two versions of the zone (SOA records not included).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ZoneDiff {
    pub removed: Vec<ZoneRecord>,
    pub added: Vec<ZoneRecord>,
}

/// The records `old` has and `new` lacks, and the other way round. Only Services whose records
/// changed (a different `Arc`) are looked at record by record.
pub fn diff(old: &ClusterSnapshot, new: &ClusterSnapshot) -> ZoneDiff {
    let mut before: BTreeSet<ZoneRecord> = BTreeSet::new();
    let mut after: BTreeSet<ZoneRecord> = BTreeSet::new();
    for (key, service) in new.services.iter() {
        match old.services.get(key) {
            Some(previous) if Arc::ptr_eq(previous, service) || previous == service => {}
            Some(previous) => {
                before.extend(service_records(old, previous));
                after.extend(service_records(new, service));
            }
            None => after.extend(service_records(new, service)),
        }
    }
    for (key, service) in old.services.iter() {
        if !new.services.contains_key(key) {
            before.extend(service_records(old, service));
        }
    }
    let not_soa = |r: &ZoneRecord| r.rtype() != rtype::SOA;
    before.extend(fixed_records(old).into_iter().filter(not_soa));
    after.extend(fixed_records(new).into_iter().filter(not_soa));
    ZoneDiff {
        removed: before.difference(&after).cloned().collect(),
        added: after.difference(&before).cloned().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PortModel, ServiceModel, ServiceSpecModel};
    use crate::snapshot::{SnapshotBuilder, ZoneSettings};

    fn cluster_ip(namespace: &str, name: &str, ip: &str) -> ServiceModel {
        ServiceModel {
            namespace: namespace.into(),
            name: name.into(),
            spec: ServiceSpecModel::ClusterIp {
                ips: vec![ip.parse().expect("ip")],
            },
            ports: vec![PortModel {
                name: Some("http".into()),
                port: 80,
                protocol: "tcp".into(),
            }],
            publish_not_ready: false,
        }
    }

    #[test]
    fn the_walk_starts_and_ends_with_the_soa_and_lists_each_name() {
        let mut builder =
            SnapshotBuilder::new(ZoneSettings::new("cluster.local", 30, PodsMode::Insecure));
        builder.apply_service(cluster_ip("default", "web", "10.0.0.5"));
        let snapshot = Arc::new(builder.snapshot(7, true));
        let text: Vec<String> = ZoneWalk::new(snapshot).map(|r| r.to_string()).collect();
        let soa = "cluster.local. 30 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 7 28800 7200 604800 30";
        assert_eq!(
            text,
            vec![
                soa,
                "cluster.local. 30 IN NS ns.dns.cluster.local.",
                "dns-version.cluster.local. 28800 IN TXT \"1.1.0\"",
                "pod.cluster.local. 30 IN NS ns.dns.cluster.local.",
                "web.default.svc.cluster.local. 30 IN A 10.0.0.5",
                "web.default.svc.cluster.local. 30 IN SRV 10 100 80 web.default.svc.cluster.local.",
                "_http._tcp.web.default.svc.cluster.local. 30 IN SRV 10 100 80 web.default.svc.cluster.local.",
                soa,
            ]
        );
    }

    #[test]
    fn a_diff_holds_only_the_changed_services_records() {
        let mut builder =
            SnapshotBuilder::new(ZoneSettings::new("cluster.local", 30, PodsMode::Disabled));
        builder.apply_service(cluster_ip("default", "web", "10.0.0.5"));
        builder.apply_service(cluster_ip("default", "db", "10.0.0.6"));
        let old = builder.snapshot(1, true);
        builder.apply_service(cluster_ip("default", "web", "10.0.0.7"));
        builder.delete_service("default", "db");
        let new = builder.snapshot(2, true);
        let d = diff(&old, &new);
        let text = |v: &[ZoneRecord]| v.iter().map(|r| r.to_string()).collect::<Vec<_>>();
        assert_eq!(
            text(&d.removed),
            vec![
                "_http._tcp.db.default.svc.cluster.local. 30 IN SRV 10 100 80 db.default.svc.cluster.local.",
                "db.default.svc.cluster.local. 30 IN A 10.0.0.6",
                "db.default.svc.cluster.local. 30 IN SRV 10 100 80 db.default.svc.cluster.local.",
                "web.default.svc.cluster.local. 30 IN A 10.0.0.5",
            ]
        );
        assert_eq!(
            text(&d.added),
            vec!["web.default.svc.cluster.local. 30 IN A 10.0.0.7"]
        );
        assert_eq!(diff(&new, &new), ZoneDiff::default());
    }
}
