//! Cluster-zone queries by the namespace asked for and by RCODE
//! (`kubedns_namespace_queries_total{namespace,rcode}`), so an operator sees which namespace's
//! workloads send the NXDOMAIN storms. Cardinality is bounded by the cluster: a namespace gets
//! its own series only while it holds a Service (what kube-dns knows of namespaces); every other
//! name in the zone counts as `other`, and a namespace's series go when its last Service does.
//! Six RCODEs, so at most 6 × (namespaces with Services + 1) series.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use dns_wire::Rcode;
use kube_dns_core::ClusterSnapshot;

use crate::metrics::RCODES;

/// The label of names in the zone whose namespace holds no Service (or that name none).
pub const OTHER: &str = "other";

type Counts = [AtomicU64; 6];

/// The counters, and the snapshot generation they were last pruned at.
#[derive(Debug, Default)]
pub struct NamespaceQueries {
    namespaces: RwLock<HashMap<Box<str>, Counts>>,
    other: Counts,
    pruned_at: AtomicU64,
}

/// The namespace a name in `zone` asks for: `<ns>` of `*.<ns>.svc.<zone>` and
/// `*.<ns>.pod.<zone>`; `Some("")` for other names in the zone, `None` outside it.
pub fn namespace_of<'n>(name: &'n str, zone: &str) -> Option<&'n str> {
    let rest = if name == zone {
        ""
    } else {
        name.strip_suffix(zone)?.strip_suffix('.')?
    };
    let rest = rest
        .strip_suffix(".svc")
        .or_else(|| rest.strip_suffix(".pod"));
    Some(rest.map_or("", |r| r.rsplit('.').next().unwrap_or("")))
}

impl NamespaceQueries {
    /// Counts one reply to `name` (nothing when it is outside the snapshot's zone).
    pub fn record(&self, snapshot: &ClusterSnapshot, name: &str, rcode: Rcode) {
        let Some(namespace) = namespace_of(name, &snapshot.settings.zone) else {
            return;
        };
        let Some(index) = RCODES.iter().position(|r| *r == rcode) else {
            return;
        };
        if namespace.is_empty() || !snapshot.has_namespace(namespace) {
            self.other[index].fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let Ok(map) = self.namespaces.read()
            && let Some(counts) = map.get(namespace)
        {
            counts[index].fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let Ok(mut map) = self.namespaces.write() {
            // A query that read a snapshot from before the last prune must not bring back a
            // namespace the prune removed: it counts as `other`. (Checked under the lock the
            // prune takes, so the two cannot interleave.)
            if snapshot.namespaces_removed() != self.pruned_at.load(Ordering::Relaxed) {
                self.other[index].fetch_add(1, Ordering::Relaxed);
                return;
            }
            map.entry(namespace.into()).or_default()[index].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Drops the series of namespaces the snapshot no longer has; only walks them when a
    /// namespace went since the last call.
    /// Call after `snapshot` is published, so no query reads an older one afterwards.
    pub fn prune(&self, snapshot: &ClusterSnapshot) {
        let generation = snapshot.namespaces_removed();
        if self.pruned_at.load(Ordering::Relaxed) == generation {
            return;
        }
        if let Ok(mut map) = self.namespaces.write() {
            self.pruned_at.store(generation, Ordering::Relaxed);
            map.retain(|namespace, _| snapshot.has_namespace(namespace));
        }
    }

    /// The metric family in the text exposition format, namespaces sorted.
    pub fn render(&self, out: &mut String) {
        out.push_str("# HELP kubedns_namespace_queries_total Replies to cluster-zone questions by the namespace asked for (\"other\": one without a Service) and rcode.\n");
        out.push_str("# TYPE kubedns_namespace_queries_total counter\n");
        let mut line = |namespace: &str, counts: &Counts| {
            for (rcode, count) in RCODES.iter().zip(counts) {
                let _ = writeln!(
                    out,
                    "kubedns_namespace_queries_total{{namespace=\"{namespace}\",rcode=\"{}\"}} {}",
                    rcode.as_str(),
                    count.load(Ordering::Relaxed)
                );
            }
        };
        if let Ok(map) = self.namespaces.read() {
            let mut names: Vec<&Box<str>> = map.keys().collect();
            names.sort();
            for name in names {
                line(name, &map[name]);
            }
        }
        line(OTHER, &self.other);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_namespace_of_every_kind_of_cluster_name() {
        let zone = "cluster.local";
        for (name, namespace) in [
            ("web.shop.svc.cluster.local", Some("shop")),
            ("_http._tcp.web.shop.svc.cluster.local", Some("shop")),
            ("web-0.web.shop.svc.cluster.local", Some("shop")),
            ("shop.svc.cluster.local", Some("shop")),
            ("10-1-2-3.shop.pod.cluster.local", Some("shop")),
            ("svc.cluster.local", Some("")),
            ("cluster.local", Some("")),
            ("api.github.com.shop.svc.cluster.local", Some("shop")),
            ("www.example.com", None),
            ("notcluster.local", None),
            ("x.cluster.local.example", None),
        ] {
            assert_eq!(namespace_of(name, zone), namespace, "{name}");
        }
    }
}
