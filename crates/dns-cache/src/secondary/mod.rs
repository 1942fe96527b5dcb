//! `--secondary=/<zone>/[<ip>[#<port>]]`: dns-cache holds a copy of a zone transferred from its
//! primary (kube-dns for the cluster zone) and answers every name in it without forwarding.
//!
//! | module | job |
//! |---|---|
//! | [`zone`] | the compact zone and its answers |
//! | [`transfer`] | AXFR and IXFR over TCP |
//!
//! The copy is refreshed on NOTIFY from the primary and on the SOA's refresh timer (at most
//! [`MAX_REFRESH`] apart), with IXFR from the serial held; it is dropped when the SOA's expire
//! time passes without a good refresh. While no copy is held, queries are forwarded to the
//! zone's `--server` route as before.

pub mod transfer;
pub mod zone;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use dns_transport::{Fast, Transport};
use dns_wire::{Answer, Query, Rcode, ResponseContext, class};
use tokio_util::sync::CancellationToken;

use crate::state::CacheState;
use crate::upstream::{Route, RouteKind};
use transfer::{Fetched, Limits, TransferError};
use zone::{Lookup, Zone};

/// The SOA's refresh is used up to this: a lost NOTIFY costs at most this long.
pub const MAX_REFRESH: Duration = Duration::from_secs(60);
/// Failed transfers are tried again after 1 s, doubling up to this (or the SOA's retry).
const MAX_RETRY: Duration = Duration::from_secs(30);
/// A transfer (connection to closing SOA) is cut off after this.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(60);
/// `--secondary-max-size` by default: bytes read per transfer, and bytes a zone may hold.
pub const DEFAULT_MAX_SIZE: usize = 16 << 20;

/// One `--secondary` zone as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecondarySpec {
    /// Lower case, without dots at the ends.
    pub zone: String,
    /// The primary; `None` is the zone's `--server` route.
    pub primary: Option<SocketAddr>,
}

/// What a secondary zone counts.
#[derive(Debug, Default)]
pub struct SecondaryStats {
    pub answers: AtomicU64,
    pub forwarded: AtomicU64,
    pub full: AtomicU64,
    pub incremental: AtomicU64,
    pub current: AtomicU64,
    pub failed: AtomicU64,
    pub notifies: AtomicU64,
    pub notifies_refused: AtomicU64,
}

/// A secondary zone: its copy (when held) and when that copy was last confirmed.
#[derive(Debug)]
pub struct SecondaryZone {
    pub spec: SecondarySpec,
    pub copy: ArcSwapOption<Zone>,
    /// The clock's milliseconds at the last good refresh.
    confirmed_ms: AtomicU64,
    refresh_now: tokio::sync::Notify,
    pub stats: SecondaryStats,
}

impl SecondaryZone {
    fn new(spec: SecondarySpec) -> Self {
        SecondaryZone {
            spec,
            copy: ArcSwapOption::empty(),
            confirmed_ms: AtomicU64::new(0),
            refresh_now: tokio::sync::Notify::new(),
            stats: SecondaryStats::default(),
        }
    }

    /// The copy, unless it has expired.
    pub fn current(&self, now_ms: u64) -> Option<Arc<Zone>> {
        let copy = self.copy.load_full()?;
        let expire_ms = u64::from(copy.soa().expire) * 1000;
        let age = now_ms.saturating_sub(self.confirmed_ms.load(Ordering::Relaxed));
        (age <= expire_ms).then_some(copy)
    }
}

/// Every `--secondary` zone.
#[derive(Debug, Default)]
pub struct Secondaries {
    pub zones: Vec<Arc<SecondaryZone>>,
    pub max_size: usize,
}

impl Secondaries {
    pub fn new(specs: &[SecondarySpec], max_size: usize) -> Self {
        Secondaries {
            zones: specs
                .iter()
                .map(|spec| Arc::new(SecondaryZone::new(spec.clone())))
                .collect(),
            max_size,
        }
    }

    /// The zone `name` is in (the longest), if any.
    fn zone_of(&self, name: &str) -> Option<&Arc<SecondaryZone>> {
        self.zones
            .iter()
            .filter(|z| zone::in_zone(name, &z.spec.zone))
            .max_by_key(|z| z.spec.zone.len())
    }
}

/// Answers a query from a secondary zone's copy; `None` when no copy answers it (no zone,
/// not loaded or expired, or a name the primary must answer).
pub fn answer(
    state: &CacheState,
    route: Option<&Route>,
    query: &Query<'_>,
    transport: Transport,
    out: &mut Vec<u8>,
) -> Option<Fast> {
    if state.secondaries.zones.is_empty() || query.qclass != class::IN {
        return None;
    }
    let secondary = state.secondaries.zone_of(query.name())?;
    // A `--server` for a domain inside the zone keeps its names.
    if route.is_some_and(|route| route.domain.len() > secondary.spec.zone.len()) {
        return None;
    }
    // Expired copies are dropped by the refresh task, so no clock is read here; a guard, not
    // an `Arc` clone (no shared counter touched per query).
    let copy = secondary.copy.load();
    let copy = copy.as_deref()?;
    let rotation = (!state.config.no_round_robin).then_some(usize::from(query.id));
    match copy.answer(query.name(), query.qtype, rotation) {
        Lookup::Answer(answer) => {
            secondary.stats.answers.fetch_add(1, Ordering::Relaxed);
            state.stats.hits.fetch_add(1, Ordering::Relaxed);
            let ctx = crate::query::context(state, query, transport);
            dns_wire::encode_response(&ctx, &answer, out);
            // `--stop-dns-rebind` and `--filter-A(AAA)` see the copy's answers as they see
            // upstream replies.
            if state.policy.rewrites()
                && let Some(changed) = state.policy.after(query, out)
            {
                *out = changed;
            }
            Some(Fast::Reply)
        }
        Lookup::Forward => {
            secondary.stats.forwarded.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// A NOTIFY (RFC 1996): from a zone's primary it starts a refresh and is answered; anything
/// else is REFUSED.
pub fn notify(
    state: &CacheState,
    query: &Query<'_>,
    transport: Transport,
    peer: SocketAddr,
    out: &mut Vec<u8>,
) -> Fast {
    let ctx = ResponseContext::for_query(query, transport == Transport::Tcp);
    let secondary = state
        .secondaries
        .zones
        .iter()
        .find(|z| z.spec.zone == query.name());
    let from_primary = secondary.is_some_and(|z| {
        primary_of(state, &z.spec).is_some_and(|primary| primary.ip() == peer.ip())
    });
    match secondary {
        Some(zone) if from_primary => {
            zone.stats.notifies.fetch_add(1, Ordering::Relaxed);
            zone.refresh_now.notify_one();
            dns_wire::encode_response(&ctx, &Answer::authoritative(), out);
        }
        _ => {
            if let Some(zone) = secondary {
                zone.stats.notifies_refused.fetch_add(1, Ordering::Relaxed);
            }
            tracing::debug!(%peer, zone = query.name(), "NOTIFY refused: not a primary of ours");
            dns_wire::encode_response(&ctx, &Answer::error(Rcode::Refused), out);
        }
    }
    Fast::Reply
}

/// The primary: the one given, else the first server of the zone's `--server` route.
fn primary_of(state: &CacheState, spec: &SecondarySpec) -> Option<SocketAddr> {
    if let Some(primary) = spec.primary {
        return Some(primary);
    }
    let routes = state.routes.load();
    match &routes.route_for(&spec.zone)?.kind {
        RouteKind::Forward(upstreams) => upstreams.first().map(|u| u.addr),
        RouteKind::LocalOnly => None,
    }
}

/// Keeps `secondary`'s copy: transfers it at start, then on NOTIFY and on the SOA's timers,
/// until `stop`.
pub async fn keep_zone(
    state: Arc<CacheState>,
    secondary: Arc<SecondaryZone>,
    stop: CancellationToken,
) {
    let zone = secondary.spec.zone.clone();
    let limits = Limits {
        max_bytes: state.secondaries.max_size,
        timeout: TRANSFER_TIMEOUT,
    };
    let mut backoff = Duration::from_secs(1);
    let mut full_next = false;
    loop {
        let held = secondary.copy.load_full();
        let have = if full_next { None } else { held.as_deref() };
        let result = match primary_of(&state, &secondary.spec) {
            Some(primary) => transfer::fetch(primary, &zone, have, limits).await,
            None => Err(TransferError::Malformed(
                "no primary: no --server route for the zone".into(),
            )),
        };
        let wait = match result {
            Ok(fetched) => {
                full_next = false;
                backoff = Duration::from_secs(1);
                // Confirmed before a new copy is stored, so it is never read as expired.
                secondary
                    .confirmed_ms
                    .store(state.now_ms(), Ordering::Relaxed);
                let (counter, kind) = match fetched {
                    Fetched::Current => (&secondary.stats.current, "current"),
                    Fetched::Full(copy) => {
                        secondary.copy.store(Some(Arc::new(copy)));
                        (&secondary.stats.full, "full")
                    }
                    Fetched::Incremental(copy) => {
                        secondary.copy.store(Some(Arc::new(copy)));
                        (&secondary.stats.incremental, "incremental")
                    }
                };
                counter.fetch_add(1, Ordering::Relaxed);
                let soa = secondary.copy.load().as_ref().map(|c| c.soa());
                if kind != "current" {
                    tracing::info!(
                        zone,
                        kind,
                        serial = soa.map(|s| s.serial),
                        "zone transferred"
                    );
                }
                soa.map_or(MAX_REFRESH, |s| {
                    Duration::from_secs(u64::from(s.refresh)).min(MAX_REFRESH)
                })
            }
            Err(TransferError::UseAxfr) => {
                tracing::debug!(zone, "the primary asks for a whole transfer");
                full_next = true;
                Duration::ZERO
            }
            Err(error) => {
                secondary.stats.failed.fetch_add(1, Ordering::Relaxed);
                full_next = have.is_some() && error.try_full_next();
                tracing::warn!(zone, %error, retry_in = ?backoff, "zone transfer failed; the copy held (if any) keeps answering");
                let retry = held.as_ref().map_or(MAX_RETRY, |c| {
                    Duration::from_secs(u64::from(c.soa().retry)).min(MAX_RETRY)
                });
                let wait = backoff.min(retry).max(Duration::from_millis(100));
                backoff = (backoff * 2).min(MAX_RETRY);
                wait
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = secondary.refresh_now.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
        // The loop runs at least every MAX_REFRESH (a minute): a copy past its SOA's expire
        // time is dropped here, and the zone is forwarded again.
        if secondary.copy.load().is_some() && secondary.current(state.now_ms()).is_none() {
            tracing::warn!(
                zone,
                "the copy expired without a good refresh; the zone is forwarded again"
            );
            secondary.copy.store(None);
        }
    }
}

/// The per-zone metrics (the families are listed, without samples, when no zone is held).
pub fn render_metrics(secondaries: &Secondaries, now_ms: u64, out: &mut String) {
    let help: [(&str, &str, &str); 6] = [
        (
            "dnscache_secondary_loaded",
            "gauge",
            "1 while a copy of the zone answers (transferred and not expired).",
        ),
        (
            "dnscache_secondary_serial",
            "gauge",
            "The SOA serial of the copy held (0: none).",
        ),
        (
            "dnscache_secondary_records",
            "gauge",
            "Records in the copy held.",
        ),
        (
            "dnscache_secondary_bytes",
            "gauge",
            "Memory the copy takes (its arena and index).",
        ),
        (
            "dnscache_secondary_answers_total",
            "counter",
            "Queries answered from the copy, and those it sent to the primary (result=forwarded: delegated names, CNAMEs leaving the zone, ANY).",
        ),
        (
            "dnscache_secondary_transfers_total",
            "counter",
            "Refreshes by result: full (AXFR), incremental (IXFR), current (nothing new), failed; and NOTIFY received (notify, notify_refused).",
        ),
    ];
    for (i, (name, kind, text)) in help.iter().enumerate() {
        out.push_str(&format!("# HELP {name} {text}\n# TYPE {name} {kind}\n"));
        for secondary in &secondaries.zones {
            let zone = &secondary.spec.zone;
            let copy = secondary.current(now_ms);
            let s = &secondary.stats;
            let load = |v: &AtomicU64| v.load(Ordering::Relaxed);
            match i {
                0 => out.push_str(&format!(
                    "{name}{{zone=\"{zone}\"}} {}\n",
                    u8::from(copy.is_some())
                )),
                1 => out.push_str(&format!(
                    "{name}{{zone=\"{zone}\"}} {}\n",
                    copy.as_ref().map_or(0, |c| c.soa().serial)
                )),
                2 => out.push_str(&format!(
                    "{name}{{zone=\"{zone}\"}} {}\n",
                    copy.as_ref().map_or(0, |c| c.records())
                )),
                3 => out.push_str(&format!(
                    "{name}{{zone=\"{zone}\"}} {}\n",
                    copy.as_ref().map_or(0, |c| c.bytes())
                )),
                4 => {
                    for (result, v) in [("answered", &s.answers), ("forwarded", &s.forwarded)] {
                        out.push_str(&format!(
                            "{name}{{zone=\"{zone}\",result=\"{result}\"}} {}\n",
                            load(v)
                        ));
                    }
                }
                _ => {
                    for (result, v) in [
                        ("full", &s.full),
                        ("incremental", &s.incremental),
                        ("current", &s.current),
                        ("failed", &s.failed),
                        ("notify", &s.notifies),
                        ("notify_refused", &s.notifies_refused),
                    ] {
                        out.push_str(&format!(
                            "{name}{{zone=\"{zone}\",result=\"{result}\"}} {}\n",
                            load(v)
                        ));
                    }
                }
            }
        }
    }
}
