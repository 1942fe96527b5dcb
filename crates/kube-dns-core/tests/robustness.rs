//! Robustness: random and mutated packets never panic the parser, `answer()` or the encoder,
//! and every reply we produce decodes with hickory-proto and carries the query's ID.

use dns_wire::{self as wire, EdnsInfo, ResponseContext, rtype};
use hickory_proto::op::Message;
use k8s_openapi::api::core::v1::Service;
use kube_dns_core::answer::{Outcome, Question, answer};
use kube_dns_core::model::ServiceModel;
use kube_dns_core::{PodsMode, SnapshotBuilder, ZoneSettings};
use kube_dns_test_support::objects::service;

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn random_and_mutated_packets_never_panic_and_replies_decode() {
    let mut builder =
        SnapshotBuilder::new(ZoneSettings::new("cluster.local", 30, PodsMode::Insecure));
    let svc: Service = serde_json::from_value(
        service("default", "kubernetes")
            .cluster_ip("10.0.0.1")
            .port(Some("https"), 443, "TCP")
            .build(),
    )
    .expect("service");
    builder.apply_service(ServiceModel::from_api(&svc).expect("strips"));
    let snapshot = builder.snapshot(1, true);
    let seeds: Vec<Vec<u8>> = [
        ("kubernetes.default.svc.cluster.local", rtype::A),
        (
            "_https._tcp.kubernetes.default.svc.cluster.local",
            rtype::SRV,
        ),
        ("1.0.0.10.in-addr.arpa", rtype::PTR),
        ("10-1-2-3.ns.pod.cluster.local", rtype::A),
        ("cluster.local", rtype::SOA),
    ]
    .iter()
    .map(|(name, qtype)| {
        wire::build_query(
            9,
            name,
            *qtype,
            Some(EdnsInfo {
                payload: 1232,
                version: 0,
                dnssec_ok: false,
            }),
        )
    })
    .collect();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut out = Vec::new();
    let mut replies = 0;
    for round in 0..60_000 {
        let packet: Vec<u8> = if round % 3 == 0 {
            let len = rng.below(80);
            (0..len).map(|_| rng.next() as u8).collect()
        } else {
            let mut p = seeds[rng.below(seeds.len())].clone();
            for _ in 0..=rng.below(4) {
                let at = rng.below(p.len());
                p[at] = rng.next() as u8;
            }
            if rng.below(4) == 0 {
                let cut = rng.below(p.len());
                p.truncate(cut);
            }
            p
        };
        let Ok(query) = wire::parse_query(&packet) else {
            continue;
        };
        let question = Question {
            name: query.name(),
            qtype: query.qtype,
            qclass: query.qclass,
        };
        let tcp = round % 2 == 0;
        let ctx = ResponseContext::for_query(&query, tcp);
        if let Outcome::Answer(a) | Outcome::Chase { answer: a, .. } =
            answer(&snapshot, question, round)
        {
            wire::encode_response(&ctx, &a, &mut out);
            let limit = if tcp { 65535 } else { query.udp_limit() };
            assert!(out.len() <= limit.max(512), "reply over the size limit");
            let decoded = Message::from_vec(&out)
                .unwrap_or_else(|e| panic!("reply does not decode ({e}): {out:?}"));
            assert_eq!(decoded.metadata.id, query.id);
            replies += 1;
        }
    }
    assert!(
        replies > 1000,
        "the mutation should still produce many valid queries ({replies})"
    );
}
