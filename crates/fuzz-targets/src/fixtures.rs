//! What the targets run against, built once per process: a small cluster for kube-dns's
//! answers, and dns-cache's state (hosts, a local-only domain, one cached answer).

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use dns_cache::CacheState;
use dns_cache::cache::{CacheKey, Lookup, ResponseCache, ServeAs, TtlPolicy, serve};
use dns_cache::query::CacheHandler;
use dns_transport::{Fast, PacketHandler, Transport};
use dns_wire::{self as wire, Answer, Rcode, ResponseContext};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube_dns_core::model::{ServiceModel, SliceModel};
use kube_dns_core::{ClusterSnapshot, Outcome, PodsMode, Question, SnapshotBuilder, ZoneSettings};
use kube_dns_test_support::objects::{endpoint, endpoint_slice, service};

fn cluster() -> &'static ClusterSnapshot {
    static CLUSTER: OnceLock<ClusterSnapshot> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let mut builder =
            SnapshotBuilder::new(ZoneSettings::new("cluster.local", 30, PodsMode::Insecure));
        let services = [
            service("default", "kubernetes")
                .cluster_ip("10.0.0.1")
                .port(Some("https"), 443, "TCP")
                .build(),
            service("default", "db")
                .headless()
                .port(Some("pg"), 5432, "TCP")
                .build(),
            service("default", "ext")
                .external_name("www.example.com")
                .build(),
        ];
        for value in services {
            let svc: Service = serde_json::from_value(value).expect("fixture service");
            builder.apply_service(ServiceModel::from_api(&svc).expect("fixture model"));
        }
        let slice = endpoint_slice("default", "db-1", "db")
            .endpoint(endpoint(&["10.1.0.1"]).hostname("db-0"))
            .endpoint(endpoint(&["10.1.0.2"]))
            .port(Some("pg"), 5432, "TCP")
            .build();
        let slice: EndpointSlice = serde_json::from_value(slice).expect("fixture slice");
        if let Some(model) = SliceModel::from_api(&slice).expect("fixture slice model") {
            builder.apply_slice(model);
        }
        builder.snapshot(1, true)
    })
}

/// kube-dns's synchronous answer, as its fast path encodes it.
pub(crate) fn kube_dns_answer(packet: &[u8], tcp: bool, out: &mut Vec<u8>) {
    let query = match wire::parse_query(packet) {
        Ok(query) => query,
        Err(error) => {
            if error.wants_formerr()
                && let Some(ctx) = ResponseContext::for_bad_packet(packet)
            {
                wire::encode_response(&ctx, &Answer::error(Rcode::FormErr), out);
            }
            return;
        }
    };
    let ctx = ResponseContext::for_query(&query, tcp);
    let question = Question {
        name: query.name(),
        qtype: query.qtype,
        qclass: query.qclass,
    };
    match kube_dns_core::answer(cluster(), question, usize::from(query.id)) {
        Outcome::Answer(answer) | Outcome::Chase { answer, .. } => {
            wire::encode_response(&ctx, &answer, out);
            check_limit(out, tcp, &query);
        }
        Outcome::Forward => {}
    }
}

/// An answer never exceeds what the client takes.
fn check_limit(out: &[u8], tcp: bool, query: &wire::Query<'_>) {
    let limit = if tcp {
        wire::MAX_TCP_MESSAGE
    } else {
        query.udp_limit()
    };
    assert!(
        out.len() <= limit,
        "{} bytes for a limit of {limit}",
        out.len()
    );
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    })
}

fn cache_handler() -> &'static CacheHandler {
    static HANDLER: OnceLock<CacheHandler> = OnceLock::new();
    HANDLER.get_or_init(|| {
        let _guard = runtime().enter();
        let config = dns_cache::CacheConfig::parse_args([
            "--no-resolv",
            "--no-hosts",
            "--local=/lan/",
            "--server=/example.com/127.0.0.1#9",
        ])
        .expect("fixture config");
        let state = Arc::new(CacheState::from_config(config).expect("fixture state"));
        let reply = wire_reply();
        let sent = splice_query();
        let query = wire::parse_query(&sent).expect("fixture query");
        let key = CacheKey {
            name: query.name(),
            qtype: query.qtype,
            qclass: query.qclass,
            dnssec_ok: false,
            checking_disabled: false,
        };
        let _ = state.cache.insert(&key, &reply, 0, state.now_ms());
        CacheHandler { state }
    })
}

/// dns-cache's fast path (hits, local names, CHAOS, errors); the slow path is not taken.
pub(crate) fn cache_fast(packet: &[u8], tcp: bool, peer: SocketAddr, out: &mut Vec<u8>) {
    let transport = if tcp { Transport::Tcp } else { Transport::Udp };
    let _guard = runtime().enter();
    out.clear();
    if cache_handler().fast(packet, transport, peer, out) == Fast::Reply
        && let Ok(query) = wire::parse_query(packet)
    {
        check_limit(out, tcp, &query);
    }
}

/// The query dns-cache sends upstream in the splice target.
fn splice_query() -> Vec<u8> {
    wire::build_query(0x2a2a, "www.example.com", wire::rtype::A, None)
}

/// A plain upstream answer for [`splice_query`].
fn wire_reply() -> Vec<u8> {
    let mut reply = splice_query();
    reply[2] |= 0x80;
    reply[6..8].copy_from_slice(&1u16.to_be_bytes());
    reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
    reply
}

/// An upstream reply, checked as the forwarder checks it, cached and served.
pub(crate) fn cache_splice(reply: &[u8]) {
    let sent = splice_query();
    let Ok(info) = wire::reply::check_reply(&sent, reply) else {
        return;
    };
    if !info.is_usable() {
        return;
    }
    let cache = ResponseCache::new(
        16,
        TtlPolicy {
            min_cache_ttl: 0,
            max_cache_ttl: None,
            max_ttl: None,
            negative_caching: true,
            neg_ttl: None,
            stale_for: Some(0),
        },
    );
    let key = CacheKey {
        name: "www.example.com",
        qtype: wire::rtype::A,
        qclass: wire::class::IN,
        dnssec_ok: false,
        checking_disabled: false,
    };
    if cache.insert(&key, reply, 0, 1_000).is_err() {
        return;
    }
    // The client's question: same name in another letter case.
    let client = wire::build_query(7, "WWW.example.COM", wire::rtype::A, None);
    let question = &client[12..];
    let mut out = Vec::new();
    for now in [1_000, 30_000, 10_000_000] {
        let (Lookup::Fresh(entry) | Lookup::Stale(entry)) = cache.get(&key, now) else {
            continue;
        };
        for (client_has_edns, limit, rotate) in
            [(false, 512, false), (true, 1232, true), (true, 65535, true)]
        {
            let how = ServeAs {
                id: 7,
                question,
                client_has_edns,
                limit,
                rotate,
            };
            let fits = serve(&entry, &cache.policy, how, now, &mut out);
            if fits {
                assert!(
                    out.len() <= limit,
                    "served {} bytes over {limit}",
                    out.len()
                );
            }
            assert_eq!(wire::packet_id(&out), Some(7), "the client's ID");
        }
    }
}

/// The metrics environment kube-dns reads, as the manifest leaves it.
pub(crate) fn metrics_env() -> kube_dns::cli::MetricsEnv {
    kube_dns::cli::MetricsEnv::from_env(|_| None).expect("empty environment")
}
