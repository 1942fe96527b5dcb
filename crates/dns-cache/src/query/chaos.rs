//! CHAOS TXT statistics (`*.bind`), in dnsmasq 2.90's formats.

use std::sync::atomic::Ordering;

use dns_transport::{Fast, Transport};
use dns_wire::{self as wire, Query, Rcode, ResponseContext, rtype};
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::{DNSClass, RData, Record};

use crate::state::CacheState;

/// The version string of `version.bind`, in dnsmasq's `<name>-<version>` form.
pub const VERSION: &str = concat!("dns-cache-", env!("CARGO_PKG_VERSION"));

/// The TXT strings of a statistics name, `None` for a name dnsmasq does not know.
fn strings(state: &CacheState, name: &str) -> Option<Vec<String>> {
    let load = |v: &std::sync::atomic::AtomicU64| v.load(Ordering::Relaxed).to_string();
    Some(match name {
        "cachesize.bind" => vec![state.cache.capacity.to_string()],
        "insertions.bind" => vec![load(&state.cache.counters.insertions)],
        "evictions.bind" => vec![load(&state.cache.counters.evictions)],
        "misses.bind" => vec![load(&state.stats.misses)],
        "hits.bind" => vec![load(&state.stats.hits)],
        "auth.bind" => vec!["0".to_owned()],
        "version.bind" => vec![VERSION.to_owned()],
        "servers.bind" => state
            .routes
            .load()
            .distinct_upstreams()
            .iter()
            .map(|u| {
                format!(
                    "{}#{} {} {}",
                    u.addr.ip(),
                    u.addr.port(),
                    u.queries.load(Ordering::Relaxed),
                    u.failures.load(Ordering::Relaxed)
                )
            })
            .collect(),
        _ => return None,
    })
}

/// Answers a CHAOS `*.bind` query.
pub(super) fn answer(
    state: &CacheState,
    query: &Query<'_>,
    transport: Transport,
    out: &mut Vec<u8>,
) -> Fast {
    let strings = strings(state, query.name());
    // dnsmasq counts these queries as hits once answered: hits.bind does not include itself
    // (checked against dnsmasq 2.90 by the sidecar's process tests).
    state.stats.hits.fetch_add(1, Ordering::Relaxed);
    // dnsmasq 2.90 answers unknown `.bind` names NOTIMP.
    let rcode = match (&strings, query.qtype) {
        (None, _) => ResponseCode::NotImp,
        (Some(_), rtype::TXT | rtype::ANY) => ResponseCode::NoError,
        (Some(_), _) => ResponseCode::NotImp,
    };
    let mut reply = Message::new(query.id, MessageType::Response, OpCode::Query);
    reply.metadata.response_code = rcode;
    reply.metadata.recursion_desired = query.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.metadata.authoritative = rcode == ResponseCode::NoError;
    let mut bytes = Vec::new();
    if let Ok(name) = hickory_proto::rr::Name::from_ascii(format!("{}.", query.name())) {
        let mut q = hickory_proto::op::Query::query(name.clone(), query.qtype.into());
        q.set_query_class(DNSClass::CH);
        reply.add_query(q);
        if let (Some(strings), ResponseCode::NoError) = (strings, rcode) {
            let mut record = Record::from_rdata(name, 0, RData::TXT(TXT::new(strings)));
            record.dns_class = DNSClass::CH;
            reply.add_answer(record);
        }
        bytes = reply.to_vec().unwrap_or_default();
    }
    if bytes.is_empty() {
        let ctx = ResponseContext::for_query(query, transport == Transport::Tcp);
        wire::encode_header_only(&ctx, Rcode::ServFail, false, out);
    } else {
        out.clear();
        out.extend_from_slice(&bytes);
    }
    Fast::Reply
}
