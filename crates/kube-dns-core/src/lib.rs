//! Cluster DNS with no I/O: query-name parsing ([`target`]), the stripped object model
//! ([`model`]), the immutable [`ClusterSnapshot`](snapshot::ClusterSnapshot) and its builder,
//! and the pure [`answer()`](answer::answer). The wire format is `dns-wire`'s; the ConfigMap is
//! `kube-dns-config`'s.

pub mod answer;
pub mod model;
pub mod snapshot;
pub mod target;
pub mod zone;

pub use answer::{Outcome, Question, answer};
pub use snapshot::{ClusterSnapshot, PodsMode, SavedModels, SnapshotBuilder, ZoneSettings};
