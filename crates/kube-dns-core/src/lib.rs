//! Cluster DNS with no I/O: query-name parsing, the stripped object model, the immutable
//! [`ClusterSnapshot`](snapshot::ClusterSnapshot), the pure [`answer()`](answer::answer), the
//! `kube-dns` ConfigMap model, the DNS wire codec, and the checks on upstream replies.

pub mod answer;
pub mod config_map;
pub mod go_flags;
pub mod model;
pub mod snapshot;
pub mod target;
pub mod upstream_reply;
pub mod wire;

pub use answer::{Answer, Outcome, Question, Rcode, answer};
pub use snapshot::{ClusterSnapshot, PodsMode, SnapshotBuilder, ZoneSettings};
