//! `--dns-loop-detect`: a TXT query with a random name is sent through each upstream; one that
//! comes back to us marks that upstream as looping, and it is no longer used.

use std::sync::Arc;

use dns_transport::client;
use hickory_proto::rr::{DNSClass, RecordType};

use crate::state::CacheState;

/// The suffix of our loop-detection probes.
pub const LOOP_PROBE_SUFFIX: &str = "loop-probe.dns-cache.test";
/// How long a probe waits for its upstream's answer (the answer itself does not matter).
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Sends one probe through each upstream of the current routes.
pub async fn detect_loops(state: Arc<CacheState>) {
    let upstreams = state.routes.load().distinct_upstreams();
    for upstream in upstreams {
        let name = format!("{:016x}.{LOOP_PROBE_SUFFIX}", rand::random::<u64>());
        state
            .loop_probes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name.clone(), upstream.addr);
        let _ = client::query(
            upstream.addr,
            &name,
            RecordType::TXT,
            DNSClass::IN,
            PROBE_TIMEOUT,
        )
        .await;
    }
}

/// A query for one of our probes arrived: the upstream it was sent through forwards to us.
/// (The query is answered REFUSED.)
pub fn returned(state: &CacheState, name: &str) {
    let server = state
        .loop_probes
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .remove(name);
    if let Some(server) = server
        && let Some(upstream) = state.routes.load().upstreams.get(&server)
    {
        upstream.mark_looping();
        tracing::error!(%server, "forwarding loop detected: this upstream sends queries back to us; disabled");
    }
}
