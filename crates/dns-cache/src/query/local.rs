//! Answers from local data: `/etc/hosts` and `--addn-hosts` names and addresses, the
//! NXDOMAIN of local-only domains (`--server=/domain/`, `--local`) and the answers the
//! [`crate::policy`] decides here.

use std::net::IpAddr;
use std::sync::atomic::Ordering;

use dns_transport::{Fast, Transport};
use dns_wire::{self as wire, Answer, DnsName, Query, RData, Rcode, ResourceRecord};
use dns_wire::{class, rtype};

use crate::policy::Local;
use crate::state::CacheState;

/// Encodes a local answer and counts it as a hit.
pub(super) fn reply(
    state: &CacheState,
    query: &Query<'_>,
    transport: Transport,
    answer: &Answer<'_>,
    out: &mut Vec<u8>,
) -> Fast {
    let ctx = super::context(state, query, transport);
    wire::encode_response(&ctx, answer, out);
    state.stats.hits.fetch_add(1, Ordering::Relaxed);
    Fast::Reply
}

/// A name (A, AAAA, ANY) or address (PTR) from the hosts files; `None` when they do not know it.
pub(super) fn hosts(
    state: &CacheState,
    query: &Query<'_>,
    transport: Transport,
    out: &mut Vec<u8>,
) -> Option<Fast> {
    let hosts = state.hosts.load();
    if hosts.is_empty() || query.qclass != class::IN {
        return None;
    }
    let ttl = state.config.local_ttl;
    let mut answer = Answer::error(Rcode::NoError);
    answer.authoritative = true;
    if let Some(ips) = hosts.addresses(query.name()) {
        for ip in ips {
            let data = match (ip, query.qtype) {
                (IpAddr::V4(v4), rtype::A | rtype::ANY) => RData::A(*v4),
                (IpAddr::V6(v6), rtype::AAAA | rtype::ANY) => RData::Aaaa(*v6),
                _ => continue,
            };
            answer.answers.push(ResourceRecord {
                owner: DnsName::Query,
                ttl,
                data,
            });
        }
        return Some(reply(state, query, transport, &answer, out));
    }
    if query.qtype == rtype::PTR
        && let Some(ip) = dns_wire::parse_reverse(query.name())
        && let Some(name) = hosts.name_of(&ip)
    {
        answer.answers.push(ResourceRecord {
            owner: DnsName::Query,
            ttl,
            data: RData::Ptr(DnsName::Text(name.into())),
        });
        return Some(reply(state, query, transport, &answer, out));
    }
    None
}

/// A name in a local-only domain that the hosts files do not know: NXDOMAIN, not
/// authoritative (as dnsmasq answers it).
pub(super) fn local_only(
    state: &CacheState,
    query: &Query<'_>,
    transport: Transport,
    out: &mut Vec<u8>,
) -> Fast {
    reply(
        state,
        query,
        transport,
        &Answer::error(Rcode::NxDomain),
        out,
    )
}

/// An answer the policy decided here (`--address`, `--domain-needed`, `--bogus-priv`,
/// `--ipv4-only`, `--ipv6-only`).
pub(super) fn policy(
    state: &CacheState,
    query: &Query<'_>,
    transport: Transport,
    decided: Local,
    out: &mut Vec<u8>,
) -> Fast {
    let answer = match decided {
        Local::Addresses(ips) => {
            let mut answer = Answer::authoritative();
            answer.answers = ips
                .into_iter()
                .map(|ip| ResourceRecord {
                    owner: DnsName::Query,
                    ttl: state.config.local_ttl,
                    data: match ip {
                        IpAddr::V4(v4) => RData::A(v4),
                        IpAddr::V6(v6) => RData::Aaaa(v6),
                    },
                })
                .collect();
            answer
        }
        Local::NxDomain { authoritative } => Answer {
            authoritative,
            ..Answer::error(Rcode::NxDomain)
        },
        Local::NoData => Answer {
            ede: Some(wire::ede::FILTERED),
            ..Answer::authoritative()
        },
    };
    reply(state, query, transport, &answer, out)
}
