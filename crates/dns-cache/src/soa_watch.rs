//! `--watch-soa`: the zone's SOA serial, asked for every interval; when it changes (kube-dns
//! raises it with every change of its data) the negative answers cached for names in the zone
//! are dropped, so a new Service resolves at once instead of after the negative TTL.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use dns_transport::client;
use hickory_proto::rr::{DNSClass, RecordType};
use tokio_util::sync::CancellationToken;

use crate::state::CacheState;

/// How long the zone's servers may fail to answer its SOA before `--watch-soa` says so.
const SOA_WATCH_QUIET: std::time::Duration = std::time::Duration::from_secs(30);

/// `--watch-soa`: asks the zone's servers for its SOA every interval; when the serial changes
/// (kube-dns raises it with every change of its data), the negative answers cached for names in
/// the zone are dropped, so a new Service resolves at once instead of after the negative TTL.
pub async fn watch_soa(state: Arc<CacheState>, zone: String, shutdown: CancellationToken) {
    let interval = state.config.watch_soa_interval;
    let timeout = interval.clamp(
        std::time::Duration::from_millis(100),
        std::time::Duration::from_secs(1),
    );
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<u32> = None;
    // Reported once the zone's servers have not answered for a while: at pod start kube-dns
    // answers SERVFAIL until its first sync, which is no news.
    let mut failing_since: Option<tokio::time::Instant> = None;
    let mut reported = false;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let servers: Vec<SocketAddr> = match state.routes.load().route_for(&zone) {
            Some(route) => route.servers().iter().map(|s| s.addr).collect(),
            None => Vec::new(),
        };
        let mut serial = None;
        for server in servers {
            if let Ok(reply) =
                client::query(server, &zone, RecordType::SOA, DNSClass::IN, timeout).await
                && let Some(found) = soa_serial(&reply)
            {
                serial = Some(found);
                break;
            }
        }
        if serial.is_some() {
            if reported {
                tracing::info!(zone, "the zone's SOA answers again");
            }
            failing_since = None;
            reported = false;
        }
        match (serial, last) {
            (None, _) => {
                let since = *failing_since.get_or_insert_with(crate::clock::now);
                if !reported && since.elapsed() >= SOA_WATCH_QUIET {
                    tracing::warn!(
                        zone,
                        "no server of the zone has answered its SOA for {SOA_WATCH_QUIET:?}; its negative answers expire by TTL only"
                    );
                    reported = true;
                }
            }
            (Some(now), Some(before)) if now != before => {
                last = Some(now);
                let dropped = state.cache.drop_negative_in_zone(&zone);
                state
                    .stats
                    .negative_dropped
                    .fetch_add(dropped as u64, Ordering::Relaxed);
                tracing::debug!(
                    zone,
                    before,
                    now,
                    dropped,
                    "zone serial changed; negative answers dropped"
                );
            }
            (Some(now), _) => last = Some(now),
        }
    }
}

/// The serial of the SOA in the answer section of a reply.
fn soa_serial(reply: &hickory_proto::op::Message) -> Option<u32> {
    reply.answers.iter().find_map(|record| match &record.data {
        hickory_proto::rr::RData::SOA(soa) => Some(soa.serial),
        _ => None,
    })
}
