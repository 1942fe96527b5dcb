//! The query path in process: CHAOS answers, the forward budget, coalescing and the forward
//! deadline, through the same `fast`/`slow` calls the transports make.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use dns_transport::{Fast, PacketHandler, Transport};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{DNSClass, RData, RecordType};
use kube_dns_test_support::fake_upstream::{FakeUpstream, Rule, UPSTREAM_ANSWER};

use super::CacheHandler;
use crate::state::testing::{query, state};

const CLIENT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 5300);

fn handler(args: &[&str]) -> Arc<CacheHandler> {
    Arc::new(CacheHandler { state: state(args) })
}

/// A query answered on the synchronous path.
fn fast(handler: &CacheHandler, name: &str, qtype: RecordType, class: DNSClass) -> Message {
    let mut out = Vec::new();
    let packet = query(name, qtype, class);
    assert!(
        matches!(
            handler.fast(&packet, Transport::Udp, CLIENT, &mut out),
            Fast::Reply
        ),
        "{name} is answered at once"
    );
    Message::from_vec(&out).expect("reply parses")
}

/// A query through the async path (a miss).
async fn slow(handler: &Arc<CacheHandler>, name: &str) -> Message {
    let packet = query(name, RecordType::A, DNSClass::IN);
    let mut out = Vec::new();
    assert!(
        matches!(
            handler.fast(&packet, Transport::Udp, CLIENT, &mut out),
            Fast::Slow
        ),
        "{name} is a miss"
    );
    let reply = handler
        .clone()
        .slow(packet, Transport::Udp, CLIENT)
        .await
        .expect("a reply");
    Message::from_vec(&reply).expect("reply parses")
}

fn txt(reply: &Message) -> Vec<String> {
    reply
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::TXT(txt) => Some(txt.to_string()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn chaos_names_answer_statistics_as_dnsmasq_does() {
    let handler = handler(&["--no-resolv", "--cache-size=321", "--server=10.9.9.9#5353"]);
    let size = fast(&handler, "cachesize.bind.", RecordType::TXT, DNSClass::CH);
    assert_eq!(size.metadata.response_code, ResponseCode::NoError);
    assert!(size.metadata.authoritative);
    assert_eq!(txt(&size), ["321"]);
    assert_eq!(size.answers[0].dns_class, DNSClass::CH);
    // hits.bind counts the queries answered before it, not itself.
    let hits = fast(&handler, "hits.bind.", RecordType::TXT, DNSClass::CH);
    assert_eq!(txt(&hits), ["1"]);
    let servers = fast(&handler, "servers.bind.", RecordType::TXT, DNSClass::CH);
    assert_eq!(txt(&servers), ["10.9.9.9#5353 0 0"]);
    let version = fast(&handler, "version.bind.", RecordType::TXT, DNSClass::CH);
    assert_eq!(txt(&version), [super::VERSION]);
    // Unknown names and non-TXT types: NOTIMP, like dnsmasq 2.90.
    let unknown = fast(&handler, "nonsense.bind.", RecordType::TXT, DNSClass::CH);
    assert_eq!(unknown.metadata.response_code, ResponseCode::NotImp);
    assert!(unknown.answers.is_empty());
    let a = fast(&handler, "hits.bind.", RecordType::A, DNSClass::CH);
    assert_eq!(a.metadata.response_code, ResponseCode::NotImp);
    assert_eq!(handler.state.stats.hits.load(Ordering::Relaxed), 6);
}

#[tokio::test]
async fn identical_misses_in_flight_share_one_upstream_exchange() {
    let upstream = FakeUpstream::start().await.expect("fake upstream");
    upstream.set_default(Rule::Delay(
        Duration::from_millis(300),
        Box::new(Rule::Answer {
            ips: vec![UPSTREAM_ANSWER.into()],
            ttl: 60,
        }),
    ));
    let server = format!("--server={}#{}", upstream.addr.ip(), upstream.addr.port());
    let handler = handler(&["--no-resolv", &server]);
    let queries: Vec<_> = (0..10)
        .map(|_| {
            let handler = handler.clone();
            tokio::spawn(async move { slow(&handler, "same.example.").await })
        })
        .collect();
    for query in queries {
        let reply = query.await.expect("task");
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert_eq!(reply.answers.len(), 1);
        assert_eq!(reply.metadata.id, 4242, "each waiter gets its own ID back");
    }
    assert_eq!(upstream.queries_for("same.example"), 1);
    let stats = &handler.state.stats;
    assert_eq!(stats.coalesced.load(Ordering::Relaxed), 9);
    assert_eq!(stats.misses.load(Ordering::Relaxed), 1);
    assert!(handler.state.inflight.is_empty(), "nothing left in flight");
    // And the answer is now a hit.
    let hit = fast(&handler, "same.example.", RecordType::A, DNSClass::IN);
    assert_eq!(hit.answers.len(), 1);
}

/// An upstream that never answers: a bound socket nobody reads.
fn silent_upstream() -> std::net::UdpSocket {
    std::net::UdpSocket::bind("127.0.0.1:0").expect("bind")
}

#[tokio::test(start_paused = true)]
async fn over_the_forward_budget_a_miss_is_refused_at_once() {
    let silent = silent_upstream();
    let addr = silent.local_addr().expect("addr");
    let server = format!("--server={}#{}", addr.ip(), addr.port());
    let handler = handler(&["--no-resolv", "--dns-forward-max=1", &server]);
    let first = {
        let handler = handler.clone();
        tokio::spawn(async move { slow(&handler, "first.example.").await })
    };
    // Let the first miss take the route's only slot.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let started = crate::clock::Clock::start();
    let refused = slow(&handler, "second.example.").await;
    assert_eq!(refused.metadata.response_code, ResponseCode::Refused);
    assert_eq!(started.elapsed_ms(), 0, "refused without waiting");
    assert_eq!(
        handler
            .state
            .stats
            .refused_over_limit
            .load(Ordering::Relaxed),
        1
    );
    // The first still waits for its deadline, and then hears SERVFAIL.
    let failed = first.await.expect("task");
    assert_eq!(failed.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(handler.state.stats.servfail.load(Ordering::Relaxed), 1);
}

#[tokio::test(start_paused = true)]
async fn a_miss_nobody_answers_gets_servfail_at_the_forward_deadline() {
    let silent = silent_upstream();
    let addr = silent.local_addr().expect("addr");
    let server = format!("--server={}#{}", addr.ip(), addr.port());
    let handler = handler(&["--no-resolv", "--forward-deadline=2500", &server]);
    let started = crate::clock::Clock::start();
    let reply = slow(&handler, "lost.example.").await;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(started.elapsed_ms(), 2500);
    // The next identical query is a new leader, not a waiter of the finished one.
    assert!(handler.state.inflight.is_empty());
}

#[tokio::test]
async fn local_only_domains_and_unrouted_names() {
    let handler = handler(&["--no-resolv", "--no-hosts", "--local=/lan/"]);
    let local = fast(&handler, "printer.lan.", RecordType::A, DNSClass::IN);
    assert_eq!(local.metadata.response_code, ResponseCode::NXDomain);
    assert!(
        !local.metadata.authoritative,
        "dnsmasq 2.90 does not set AA on a local-only NXDOMAIN"
    );
    let unrouted = fast(&handler, "example.com.", RecordType::A, DNSClass::IN);
    assert_eq!(unrouted.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(handler.state.stats.servfail.load(Ordering::Relaxed), 1);
}
