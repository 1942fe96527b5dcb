//! Answer tables: the fixture cluster (`tests/fixtures/cluster.yaml`) goes through ingest, the
//! snapshot builder, `answer()` and the wire encoder; replies are decoded with hickory-proto and
//! compared as zone-file text. Each expectation is written from the spec, not from output.

use std::sync::Arc;

use dns_wire::{self as wire, EdnsInfo, ResponseContext, rtype};
use hickory_proto::op::Message;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube_dns_core::answer::{Outcome, Question, answer};
use kube_dns_core::model::{ServiceModel, SliceModel};
use kube_dns_core::{ClusterSnapshot, PodsMode, SnapshotBuilder, ZoneSettings};
use kube_dns_test_support::dns_client::zone_lines;
use kube_dns_test_support::{FakeApiServer, fixtures_dir};

fn builder_from_fixture(pods: PodsMode) -> SnapshotBuilder {
    let api = FakeApiServer::new();
    api.load_yaml_file(fixtures_dir().join("cluster.yaml"))
        .expect("fixture loads");
    let mut builder = SnapshotBuilder::new(ZoneSettings::new("cluster.local.", 30, pods));
    for value in api.objects("services") {
        let svc: Service = serde_json::from_value(value).expect("service json");
        builder.apply_service(ServiceModel::from_api(&svc).expect("service strips"));
    }
    for value in api.objects("endpointslices") {
        let slice: EndpointSlice = serde_json::from_value(value).expect("slice json");
        if let Some(model) = SliceModel::from_api(&slice).expect("slice strips") {
            builder.apply_slice(model);
        }
    }
    builder
}

fn snapshot() -> ClusterSnapshot {
    builder_from_fixture(PodsMode::Insecure).snapshot(1700000000, true)
}

fn qtype_code(name: &str) -> u16 {
    match name {
        "A" => rtype::A,
        "AAAA" => rtype::AAAA,
        "SRV" => rtype::SRV,
        "PTR" => rtype::PTR,
        "CNAME" => rtype::CNAME,
        "TXT" => rtype::TXT,
        "SOA" => rtype::SOA,
        "NS" => rtype::NS,
        "MX" => rtype::MX,
        "ANY" => rtype::ANY,
        "AXFR" => rtype::AXFR,
        other => panic!("unknown type {other}"),
    }
}

/// Asks `name type` with an EDNS buffer of `payload` and renders the reply.
fn ask_with(snapshot: &ClusterSnapshot, name: &str, qtype: &str, payload: Option<u16>) -> String {
    let edns = payload.map(|payload| EdnsInfo {
        payload,
        version: 0,
        dnssec_ok: false,
    });
    let packet = wire::build_query(0x4242, name, qtype_code(qtype), edns);
    let query = wire::parse_query(&packet).expect("query parses");
    let question = Question {
        name: query.name(),
        qtype: query.qtype,
        qclass: query.qclass,
    };
    let encode = |answer: &dns_wire::Answer<'_>| {
        let mut out = Vec::new();
        wire::encode_response(&ResponseContext::for_query(&query, false), answer, &mut out);
        let message = Message::from_vec(&out).expect("reply decodes");
        assert_eq!(message.metadata.id, 0x4242);
        message
    };
    let message = match answer(snapshot, question, 0) {
        Outcome::Answer(answer) => encode(&answer),
        Outcome::Forward => return "FORWARD".to_owned(),
        Outcome::Chase { target, answer } => {
            let answers = zone_lines(&encode(&answer).answers).join("\n");
            return format!("CHASE {target}\n{answers}");
        }
    };
    let rcode = match u16::from(message.metadata.response_code) {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        other => panic!("unexpected rcode {other}"),
    };
    let mut text = rcode.to_owned();
    if message.metadata.authoritative {
        text.push_str(" aa");
    }
    if message.metadata.truncation {
        text.push_str(" tc");
    }
    for line in zone_lines(&message.answers) {
        text.push('\n');
        text.push_str(&line);
    }
    for line in zone_lines(&message.authorities) {
        text.push_str("\nauth: ");
        text.push_str(&line);
    }
    for line in zone_lines(&message.additionals) {
        text.push_str("\nadd: ");
        text.push_str(&line);
    }
    text
}

fn ask(snapshot: &ClusterSnapshot, name: &str, qtype: &str) -> String {
    ask_with(snapshot, name, qtype, None)
}

const SOA: &str = "auth: cluster.local. 30 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1700000000 28800 7200 604800 30";

fn expect(snapshot: &ClusterSnapshot, name: &str, qtype: &str, expected: &str) {
    let got = ask(snapshot, name, qtype);
    let expected = expected.trim().replace("{SOA}", SOA);
    let expected: Vec<&str> = expected.lines().map(str::trim).collect();
    let got_lines: Vec<&str> = got.lines().collect();
    assert_eq!(got_lines, expected, "{name} {qtype}");
}

#[test]
fn cluster_ip_services_answer_a_aaaa_srv_and_nodata() {
    let s = snapshot();
    expect(
        &s,
        "kubernetes.default.svc.cluster.local",
        "A",
        "
        NOERROR aa
        kubernetes.default.svc.cluster.local. 30 IN A 10.0.0.1",
    );
    expect(
        &s,
        "kubernetes.default.svc.cluster.local",
        "AAAA",
        "
        NOERROR aa
        {SOA}",
    );
    expect(
        &s,
        "dual.default.svc.cluster.local",
        "A",
        "
        NOERROR aa
        dual.default.svc.cluster.local. 30 IN A 10.0.0.2",
    );
    expect(
        &s,
        "dual.default.svc.cluster.local",
        "AAAA",
        "
        NOERROR aa
        dual.default.svc.cluster.local. 30 IN AAAA fd00::2",
    );
    expect(
        &s,
        "v6only.default.svc.cluster.local",
        "AAAA",
        "
        NOERROR aa
        v6only.default.svc.cluster.local. 30 IN AAAA fd00::6",
    );
    expect(&s, "_https._tcp.kubernetes.default.svc.cluster.local", "SRV", "
        NOERROR aa
        _https._tcp.kubernetes.default.svc.cluster.local. 30 IN SRV 10 100 443 kubernetes.default.svc.cluster.local.
        add: kubernetes.default.svc.cluster.local. 30 IN A 10.0.0.1");
    // Dual-stack: one SRV (weight 100, not legacy's 50) glued with both families.
    expect(&s, "_http._tcp.dual.default.svc.cluster.local", "SRV", "
        NOERROR aa
        _http._tcp.dual.default.svc.cluster.local. 30 IN SRV 10 100 80 dual.default.svc.cluster.local.
        add: dual.default.svc.cluster.local. 30 IN A 10.0.0.2
        add: dual.default.svc.cluster.local. 30 IN AAAA fd00::2");
    expect(&s, "_dns._udp.dual.default.svc.cluster.local", "SRV", "
        NOERROR aa
        _dns._udp.dual.default.svc.cluster.local. 30 IN SRV 10 100 53 dual.default.svc.cluster.local.
        add: dual.default.svc.cluster.local. 30 IN A 10.0.0.2
        add: dual.default.svc.cluster.local. 30 IN AAAA fd00::2");
    // A port name under the wrong protocol does not exist.
    expect(
        &s,
        "_http._udp.dual.default.svc.cluster.local",
        "SRV",
        "NXDOMAIN aa\n{SOA}",
    );
    expect(
        &s,
        "_https._tcp.kubernetes.default.svc.cluster.local",
        "A",
        "NOERROR aa\n{SOA}",
    );
    // SRV at the service name: every port, weight floor(100/3) = 33.
    expect(
        &s,
        "dual.default.svc.cluster.local",
        "SRV",
        "
        NOERROR aa
        dual.default.svc.cluster.local. 30 IN SRV 10 33 53 dual.default.svc.cluster.local.
        dual.default.svc.cluster.local. 30 IN SRV 10 33 80 dual.default.svc.cluster.local.
        dual.default.svc.cluster.local. 30 IN SRV 10 33 9000 dual.default.svc.cluster.local.
        add: dual.default.svc.cluster.local. 30 IN A 10.0.0.2
        add: dual.default.svc.cluster.local. 30 IN AAAA fd00::2",
    );
    // CNAME and TXT on a regular service: NODATA (legacy answered NXDOMAIN).
    expect(
        &s,
        "kubernetes.default.svc.cluster.local",
        "CNAME",
        "NOERROR aa\n{SOA}",
    );
    expect(
        &s,
        "kubernetes.default.svc.cluster.local",
        "TXT",
        "NOERROR aa\n{SOA}",
    );
}

#[test]
fn headless_services_merge_slices_and_publish_every_ip() {
    let s = snapshot();
    // Ready endpoints of both slices, deduplicated (10.3.0.2 is in both); 10.3.0.9 not ready.
    expect(
        &s,
        "headless.default.svc.cluster.local",
        "A",
        "
        NOERROR aa
        headless.default.svc.cluster.local. 30 IN A 10.3.0.100
        headless.default.svc.cluster.local. 30 IN A 10.3.0.101
        headless.default.svc.cluster.local. 30 IN A 10.3.0.2",
    );
    // A hostname shared by two addresses answers both (dns#116).
    expect(
        &s,
        "my-pet.headless.default.svc.cluster.local",
        "A",
        "
        NOERROR aa
        my-pet.headless.default.svc.cluster.local. 30 IN A 10.3.0.100
        my-pet.headless.default.svc.cluster.local. 30 IN A 10.3.0.101",
    );
    // Unnamed endpoints get the dashed IP as their label (dns#232).
    expect(
        &s,
        "10-3-0-2.headless.default.svc.cluster.local",
        "A",
        "
        NOERROR aa
        10-3-0-2.headless.default.svc.cluster.local. 30 IN A 10.3.0.2",
    );
    expect(
        &s,
        "10-3-0-9.headless.default.svc.cluster.local",
        "A",
        "NXDOMAIN aa\n{SOA}",
    );
    expect(
        &s,
        "my-pet.headless.default.svc.cluster.local",
        "AAAA",
        "NOERROR aa\n{SOA}",
    );
    // SRV per endpoint target and port: two targets, weight 50.
    expect(&s, "_https._tcp.headless.default.svc.cluster.local", "SRV", "
        NOERROR aa
        _https._tcp.headless.default.svc.cluster.local. 30 IN SRV 10 50 443 10-3-0-2.headless.default.svc.cluster.local.
        _https._tcp.headless.default.svc.cluster.local. 30 IN SRV 10 50 443 my-pet.headless.default.svc.cluster.local.
        add: 10-3-0-2.headless.default.svc.cluster.local. 30 IN A 10.3.0.2
        add: my-pet.headless.default.svc.cluster.local. 30 IN A 10.3.0.100
        add: my-pet.headless.default.svc.cluster.local. 30 IN A 10.3.0.101");
    expect(
        &s,
        "web6.default.svc.cluster.local",
        "AAAA",
        "
        NOERROR aa
        web6.default.svc.cluster.local. 30 IN AAAA fd00::10
        web6.default.svc.cluster.local. 30 IN AAAA fd00::11",
    );
    expect(
        &s,
        "web6.default.svc.cluster.local",
        "A",
        "NOERROR aa\n{SOA}",
    );
    expect(
        &s,
        "web-0.web6.default.svc.cluster.local",
        "AAAA",
        "
        NOERROR aa
        web-0.web6.default.svc.cluster.local. 30 IN AAAA fd00::10",
    );
    expect(
        &s,
        "fd00--11.web6.default.svc.cluster.local",
        "AAAA",
        "
        NOERROR aa
        fd00--11.web6.default.svc.cluster.local. 30 IN AAAA fd00::11",
    );
}

#[test]
fn readiness_decides_existence() {
    let s = snapshot();
    // No ready endpoint: the name does not exist (spec §2.4.1), for every type.
    expect(
        &s,
        "notready.default.svc.cluster.local",
        "A",
        "NXDOMAIN aa\n{SOA}",
    );
    expect(
        &s,
        "notready.default.svc.cluster.local",
        "TXT",
        "NXDOMAIN aa\n{SOA}",
    );
    // publishNotReadyAddresses publishes it anyway.
    expect(
        &s,
        "tolerant.default.svc.cluster.local",
        "A",
        "
        NOERROR aa
        tolerant.default.svc.cluster.local. 30 IN A 10.4.0.2",
    );
}

#[test]
fn reverse_lookups_cover_cluster_ips_and_named_endpoints() {
    let s = snapshot();
    expect(
        &s,
        "1.0.0.10.in-addr.arpa",
        "PTR",
        "
        NOERROR aa
        1.0.0.10.in-addr.arpa. 30 IN PTR kubernetes.default.svc.cluster.local.",
    );
    let v6 = wire::reverse_name_v6("fd00::2".parse().expect("ip"));
    let got = ask(&s, &v6, "PTR");
    assert!(
        got.ends_with("30 IN PTR dual.default.svc.cluster.local."),
        "{got}"
    );
    expect(
        &s,
        "100.0.3.10.in-addr.arpa",
        "PTR",
        "
        NOERROR aa
        100.0.3.10.in-addr.arpa. 30 IN PTR my-pet.headless.default.svc.cluster.local.",
    );
    // Unnamed endpoints and unknown addresses go upstream, as do other types.
    assert_eq!(ask(&s, "2.0.3.10.in-addr.arpa", "PTR"), "FORWARD");
    assert_eq!(ask(&s, "1.0.0.10.in-addr.arpa", "A"), "FORWARD");
    assert_eq!(ask(&s, "0.10.in-addr.arpa", "PTR"), "FORWARD");
}

#[test]
fn external_names_answer_cname_and_chase() {
    let s = snapshot();
    expect(
        &s,
        "ext.default.svc.cluster.local",
        "CNAME",
        "
        NOERROR aa
        ext.default.svc.cluster.local. 30 IN CNAME www.example.com.",
    );
    assert_eq!(
        ask(&s, "ext.default.svc.cluster.local", "A"),
        "CHASE www.example.com\next.default.svc.cluster.local. 30 IN CNAME www.example.com."
    );
    // An in-zone target is chased internally.
    expect(
        &s,
        "alias.other.svc.cluster.local",
        "A",
        "
        NOERROR aa
        alias.other.svc.cluster.local. 30 IN CNAME kubernetes.default.svc.cluster.local.
        kubernetes.default.svc.cluster.local. 30 IN A 10.0.0.1",
    );
    expect(
        &s,
        "alias.other.svc.cluster.local",
        "AAAA",
        "
        NOERROR aa
        alias.other.svc.cluster.local. 30 IN CNAME kubernetes.default.svc.cluster.local.
        {SOA}",
    );
}

#[test]
fn zone_structure_soa_ns_version_and_empty_non_terminals() {
    let s = snapshot();
    expect(&s, "cluster.local", "SOA", "
        NOERROR aa
        cluster.local. 30 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1700000000 28800 7200 604800 30");
    expect(
        &s,
        "cluster.local",
        "NS",
        "
        NOERROR aa
        cluster.local. 30 IN NS ns.dns.cluster.local.",
    );
    expect(&s, "cluster.local", "A", "NOERROR aa\n{SOA}");
    expect(
        &s,
        "dns-version.cluster.local",
        "TXT",
        "
        NOERROR aa
        dns-version.cluster.local. 28800 IN TXT 1.1.0",
    );
    expect(&s, "svc.cluster.local", "A", "NOERROR aa\n{SOA}");
    expect(&s, "default.svc.cluster.local", "A", "NOERROR aa\n{SOA}");
    expect(&s, "nons.svc.cluster.local", "A", "NXDOMAIN aa\n{SOA}");
    expect(
        &s,
        "_tcp.kubernetes.default.svc.cluster.local",
        "A",
        "NOERROR aa\n{SOA}",
    );
    expect(
        &s,
        "_sctp.kubernetes.default.svc.cluster.local",
        "A",
        "NXDOMAIN aa\n{SOA}",
    );
    expect(&s, "pod.cluster.local", "A", "NOERROR aa\n{SOA}");
    expect(
        &s,
        "nope.default.svc.cluster.local",
        "A",
        "NXDOMAIN aa\n{SOA}",
    );
    expect(&s, "nothing.cluster.local", "A", "NXDOMAIN aa\n{SOA}");
    expect(
        &s,
        "a.b.kubernetes.default.svc.cluster.local",
        "A",
        "NXDOMAIN aa\n{SOA}",
    );
    assert_eq!(ask(&s, "www.example.com", "A"), "FORWARD");
    expect(&s, "cluster.local", "AXFR", "REFUSED");
}

#[test]
fn pod_records_follow_the_pods_mode() {
    let s = snapshot();
    expect(
        &s,
        "10-244-1-7.anything.pod.cluster.local",
        "A",
        "
        NOERROR aa
        10-244-1-7.anything.pod.cluster.local. 30 IN A 10.244.1.7",
    );
    expect(
        &s,
        "2001-db8--7.ns.pod.cluster.local",
        "AAAA",
        "
        NOERROR aa
        2001-db8--7.ns.pod.cluster.local. 30 IN AAAA 2001:db8::7",
    );
    expect(
        &s,
        "10-244-1-7.anything.pod.cluster.local",
        "AAAA",
        "NOERROR aa\n{SOA}",
    );
    expect(
        &s,
        "10-244-1.anything.pod.cluster.local",
        "A",
        "NXDOMAIN aa\n{SOA}",
    );

    let disabled = builder_from_fixture(PodsMode::Disabled).snapshot(1700000000, true);
    expect(
        &disabled,
        "10-244-1-7.anything.pod.cluster.local",
        "A",
        "NXDOMAIN aa\n{SOA}",
    );

    let mut verified = builder_from_fixture(PodsMode::Verified);
    verified.apply_pod(kube_dns_core::model::PodModel {
        namespace: Arc::from("web"),
        name: Arc::from("p"),
        ips: vec!["10.244.1.7".parse().expect("ip")],
    });
    let verified = verified.snapshot(1700000000, true);
    expect(
        &verified,
        "10-244-1-7.web.pod.cluster.local",
        "A",
        "
        NOERROR aa
        10-244-1-7.web.pod.cluster.local. 30 IN A 10.244.1.7",
    );
    expect(
        &verified,
        "10-244-1-7.other.pod.cluster.local",
        "A",
        "NXDOMAIN aa\n{SOA}",
    );
    expect(
        &verified,
        "10-244-1-8.web.pod.cluster.local",
        "A",
        "NXDOMAIN aa\n{SOA}",
    );
}

#[test]
fn letter_case_of_the_query_is_kept() {
    let s = snapshot();
    let packet = wire::build_query(7, "KuBeRnEtEs.DEFAULT.svc.cluster.local", rtype::A, None);
    let query = wire::parse_query(&packet).expect("parses");
    let question = Question {
        name: query.name(),
        qtype: query.qtype,
        qclass: query.qclass,
    };
    let Outcome::Answer(answer) = answer(&s, question, 0) else {
        panic!("local answer expected")
    };
    let mut out = Vec::new();
    wire::encode_response(
        &ResponseContext::for_query(&query, false),
        &answer,
        &mut out,
    );
    let message = Message::from_vec(&out).expect("decodes");
    assert_eq!(
        message.queries[0].name().to_ascii(),
        "KuBeRnEtEs.DEFAULT.svc.cluster.local."
    );
    assert_eq!(
        message.answers[0].name.to_ascii(),
        "KuBeRnEtEs.DEFAULT.svc.cluster.local."
    );
}

#[test]
fn any_gets_a_minimal_rfc8482_answer() {
    let s = snapshot();
    let got = ask(&s, "kubernetes.default.svc.cluster.local", "ANY");
    assert!(
        got.starts_with("NOERROR aa\nkubernetes.default.svc.cluster.local. 30 IN HINFO"),
        "{got}"
    );
    expect(
        &s,
        "nope.default.svc.cluster.local",
        "ANY",
        "NXDOMAIN aa\n{SOA}",
    );
}

#[test]
fn multiple_addresses_rotate_between_queries() {
    let s = snapshot();
    let first = |rotation: usize| {
        let packet = wire::build_query(1, "big.default.svc.cluster.local", rtype::A, None);
        let query = wire::parse_query(&packet).expect("parses");
        let question = Question {
            name: query.name(),
            qtype: query.qtype,
            qclass: query.qclass,
        };
        match answer(&s, question, rotation) {
            Outcome::Answer(a) => a.answers[0].data.clone(),
            other => panic!("{other:?}"),
        }
    };
    assert_ne!(first(0), first(1));
    assert_eq!(first(0), first(40));
}

#[test]
fn large_answers_truncate_over_udp_and_fit_edns_buffers() {
    let s = snapshot();
    // 40 A records: 12 + 35 + 40 * 16 = 687 bytes, over 512.
    let udp = ask(&s, "big.default.svc.cluster.local", "A");
    assert!(udp.starts_with("NOERROR aa tc"), "{udp}");
    let lines = udp.lines().count() - 1;
    assert!(
        lines > 0 && lines < 40,
        "partial answer expected, got {lines}"
    );
    let edns = ask_with(&s, "big.default.svc.cluster.local", "A", Some(4096));
    assert!(edns.starts_with("NOERROR aa\n"), "{edns}");
    assert_eq!(edns.lines().count() - 1, 40);
}

#[test]
fn unsynced_snapshot_answers_servfail_in_zone_only() {
    let unsynced = builder_from_fixture(PodsMode::Insecure).snapshot(1, false);
    expect(
        &unsynced,
        "kubernetes.default.svc.cluster.local",
        "A",
        "SERVFAIL",
    );
    assert_eq!(ask(&unsynced, "www.example.com", "A"), "FORWARD");
}
