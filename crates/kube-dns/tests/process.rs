//! Process tests: the real `kube-dns` binary against the fake API server over HTTP, queried
//! with a Rust DNS client and with `dig` over UDP and TCP.
// Whole-process tests time real processes on the real clocks (see clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use kube_dns_test_support::dns_client::{answer_lines, dig, query_tcp, query_udp, raw_udp};
use kube_dns_test_support::fake_upstream::{FakeUpstream, UPSTREAM_ANSWER};
use kube_dns_test_support::http_client::metric;
use kube_dns_test_support::objects::{endpoint, endpoint_slice, service};
use kube_dns_test_support::process::ChildProcess;
use kube_dns_test_support::{FakeApiServer, fixtures_dir, http_client};

const WAIT: Duration = Duration::from_secs(10);

struct KubeDns {
    process: ChildProcess,
    udp: SocketAddr,
    tcp: SocketAddr,
    http: SocketAddr,
}

async fn start_api() -> anyhow::Result<(FakeApiServer, SocketAddr)> {
    let api = FakeApiServer::new();
    api.load_yaml_file(fixtures_dir().join("cluster.yaml"))?;
    let (addr, _task) = api.serve("127.0.0.1:0".parse()?).await?;
    Ok((api, addr))
}

async fn start_kube_dns(
    api: SocketAddr,
    extra: &[&str],
    env: &[(&str, &str)],
) -> anyhow::Result<KubeDns> {
    let mut args = vec![
        format!("--kube-master-url=http://{api}"),
        "--domain=cluster.local.".into(),
        "--dns-bind-address=127.0.0.1".into(),
        "--dns-port=0".into(),
        "--healthz-bind-address=127.0.0.1".into(),
        "--healthz-port=0".into(),
        "--dns-workers=2".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let process = ChildProcess::spawn(env!("CARGO_BIN_EXE_kube-dns"), &args, env.iter().copied())?;
    let udp = process.listening_addr("udp", WAIT).await?;
    let tcp = process.listening_addr("tcp", WAIT).await?;
    let http = process.listening_addr("http", WAIT).await?;
    Ok(KubeDns {
        process,
        udp,
        tcp,
        http,
    })
}

async fn wait_ready(http: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(r) = http_client::get(http, "/readiness").await
            && r.status == 200
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("kube-dns did not become ready");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls until `check` accepts the UDP answer for `name`/`rtype`.
async fn eventually(
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
    within: Duration,
    check: impl Fn(&Message) -> bool,
) -> anyhow::Result<Message> {
    let deadline = Instant::now() + within;
    loop {
        let reply = query_udp(server, name, rtype).await?;
        if check(&reply) {
            return Ok(reply);
        }
        if Instant::now() > deadline {
            bail!("{name} {rtype}: last reply did not match: {reply:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls until the A query for `name` answers with `rcode`.
async fn eventually_rcode(
    server: SocketAddr,
    name: &str,
    rcode: ResponseCode,
    within: Duration,
) -> anyhow::Result<Message> {
    eventually(server, name, RecordType::A, within, |r| {
        r.metadata.response_code == rcode
    })
    .await
}

fn has_a(reply: &Message, ip: &str) -> bool {
    answer_lines(reply)
        .iter()
        .any(|l| l.ends_with(&format!(" A {ip}")))
}

#[tokio::test]
async fn serves_the_zone_over_udp_and_tcp_to_rust_client_and_dig() -> anyhow::Result<()> {
    let (_api, api_addr) = start_api().await?;
    let kd = start_kube_dns(api_addr, &["--v=2"], &[]).await?;
    wait_ready(kd.http).await?;
    let readiness = http_client::get(kd.http, "/readiness").await?;
    assert_eq!(
        (readiness.status, readiness.text()),
        (200, "ok\n".to_owned())
    );

    let reply = query_udp(
        kd.udp,
        "kubernetes.default.svc.cluster.local.",
        RecordType::A,
    )
    .await?;
    assert_eq!(
        answer_lines(&reply),
        vec!["kubernetes.default.svc.cluster.local. 30 IN A 10.0.0.1"]
    );
    assert!(reply.metadata.authoritative);
    let reply = query_tcp(
        kd.tcp,
        "_https._tcp.kubernetes.default.svc.cluster.local.",
        RecordType::SRV,
    )
    .await?;
    assert_eq!(
        answer_lines(&reply),
        vec![
            "_https._tcp.kubernetes.default.svc.cluster.local. 30 IN SRV 10 100 443 kubernetes.default.svc.cluster.local."
        ]
    );

    let udp = dig(
        kd.udp,
        &[
            "+notcp",
            "+short",
            "headless.default.svc.cluster.local",
            "A",
        ],
    )
    .await?;
    let mut ips: Vec<&str> = udp.lines().collect();
    ips.sort();
    assert_eq!(ips, vec!["10.3.0.100", "10.3.0.101", "10.3.0.2"]);
    let tcp = dig(kd.udp, &["+tcp", "+short", "-x", "10.0.0.1"]).await?;
    assert_eq!(tcp.trim(), "kubernetes.default.svc.cluster.local.");
    let nx = dig(kd.udp, &["nope.default.svc.cluster.local", "A"]).await?;
    assert!(
        nx.contains("status: NXDOMAIN") && nx.contains("flags: qr aa rd ra"),
        "{nx}"
    );
    // EDNS echoed; a large answer truncated over UDP and complete over TCP.
    let big_udp = dig(
        kd.udp,
        &["+noedns", "+ignore", "big.default.svc.cluster.local", "A"],
    )
    .await?;
    assert!(big_udp.contains(" tc "), "{big_udp}");
    let big_tcp = dig(
        kd.udp,
        &["+tcp", "+short", "big.default.svc.cluster.local", "A"],
    )
    .await?;
    assert_eq!(big_tcp.lines().count(), 40);
    let edns = dig(
        kd.udp,
        &[
            "+edns=0",
            "+bufsize=1232",
            "kubernetes.default.svc.cluster.local",
        ],
    )
    .await?;
    assert!(edns.contains("OPT PSEUDOSECTION"), "{edns}");
    drop(kd);
    Ok(())
}

#[tokio::test]
async fn watch_events_reach_answers_quickly() -> anyhow::Result<()> {
    let (api, api_addr) = start_api().await?;
    let kd = start_kube_dns(api_addr, &[], &[]).await?;
    wait_ready(kd.http).await?;
    let name = "fresh.default.svc.cluster.local.";
    let reply = query_udp(kd.udp, name, RecordType::A).await?;
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);

    api.apply(
        service("default", "fresh")
            .cluster_ip("10.9.0.1")
            .port(Some("http"), 80, "TCP")
            .build(),
    );
    eventually(kd.udp, name, RecordType::A, Duration::from_secs(2), |r| {
        has_a(r, "10.9.0.1")
    })
    .await?;
    api.apply(
        service("default", "fresh")
            .cluster_ip("10.9.0.2")
            .port(Some("http"), 80, "TCP")
            .build(),
    );
    eventually(kd.udp, name, RecordType::A, Duration::from_secs(2), |r| {
        has_a(r, "10.9.0.2")
    })
    .await?;
    let ptr = query_udp(kd.udp, "1.0.9.10.in-addr.arpa.", RecordType::PTR).await?;
    assert!(ptr.answers.is_empty(), "old PTR must be gone: {ptr:?}");

    // A headless service programmed from its EndpointSlice; then the slice goes away.
    api.apply(
        service("default", "hl")
            .headless()
            .port(Some("http"), 80, "TCP")
            .build(),
    );
    api.apply(
        endpoint_slice("default", "hl-1", "hl")
            .address_type("IPv4")
            .endpoint(endpoint(&["10.9.1.1"]).hostname("a"))
            .port(Some("http"), 80, "TCP")
            .build(),
    );
    eventually(
        kd.udp,
        "a.hl.default.svc.cluster.local.",
        RecordType::A,
        Duration::from_secs(2),
        |r| has_a(r, "10.9.1.1"),
    )
    .await?;
    api.delete("endpointslices", "default", "hl-1");
    eventually_rcode(
        kd.udp,
        "hl.default.svc.cluster.local.",
        ResponseCode::NXDomain,
        Duration::from_secs(2),
    )
    .await?;
    api.delete("services", "default", "fresh");
    eventually_rcode(kd.udp, name, ResponseCode::NXDomain, Duration::from_secs(2)).await?;
    Ok(())
}

#[tokio::test]
async fn relist_after_410_removes_what_vanished_and_keeps_the_rest() -> anyhow::Result<()> {
    let (api, api_addr) = start_api().await?;
    let kd = start_kube_dns(api_addr, &[], &[]).await?;
    wait_ready(kd.http).await?;
    api.apply(service("default", "gone").cluster_ip("10.9.2.1").build());
    eventually(
        kd.udp,
        "gone.default.svc.cluster.local.",
        RecordType::A,
        Duration::from_secs(2),
        |r| has_a(r, "10.9.2.1"),
    )
    .await?;
    // The API goes away, the object is deleted meanwhile and history is compacted: only a
    // relist (after the in-stream 410) can reveal the deletion.
    api.set_unavailable(true);
    api.drop_streams();
    api.delete("services", "default", "gone");
    api.compact();
    // Last-known data keeps answering while the API is down.
    for _ in 0..5 {
        let reply = query_udp(
            kd.udp,
            "kubernetes.default.svc.cluster.local.",
            RecordType::A,
        )
        .await?;
        assert!(has_a(&reply, "10.0.0.1"));
        assert_eq!(http_client::get(kd.http, "/readiness").await?.status, 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    api.set_unavailable(false);
    api.expire_watches();
    eventually_rcode(
        kd.udp,
        "gone.default.svc.cluster.local.",
        ResponseCode::NXDomain,
        Duration::from_secs(10),
    )
    .await?;
    let reply = query_udp(
        kd.udp,
        "kubernetes.default.svc.cluster.local.",
        RecordType::A,
    )
    .await?;
    assert!(
        has_a(&reply, "10.0.0.1"),
        "untouched services keep answering: {reply:?}"
    );
    Ok(())
}

#[tokio::test]
async fn before_the_first_sync_answers_servfail_and_readiness_fails() -> anyhow::Result<()> {
    let api = FakeApiServer::new();
    api.load_yaml_file(fixtures_dir().join("cluster.yaml"))?;
    api.set_unavailable(true);
    let (api_addr, _task) = api.serve("127.0.0.1:0".parse()?).await?;
    let kd = start_kube_dns(api_addr, &[], &[]).await?;
    let reply = query_udp(
        kd.udp,
        "kubernetes.default.svc.cluster.local.",
        RecordType::A,
    )
    .await?;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(http_client::get(kd.http, "/readiness").await?.status, 503);
    api.set_unavailable(false);
    wait_ready(kd.http).await?;
    let reply = query_udp(
        kd.udp,
        "kubernetes.default.svc.cluster.local.",
        RecordType::A,
    )
    .await?;
    assert!(has_a(&reply, "10.0.0.1"));
    Ok(())
}

#[tokio::test]
async fn config_dir_upstreams_apply_live_and_invalid_updates_are_ignored() -> anyhow::Result<()> {
    let (_api, api_addr) = start_api().await?;
    let upstream = FakeUpstream::start().await?;
    let dir = kube_dns_test_support::tempdir("config")?;
    kube_dns_test_support::write_configmap_key(
        &dir,
        "upstreamNameservers",
        &format!("[\"{}\"]", upstream.addr),
    )?;
    let config_arg = format!("--config-dir={}", dir.display());
    let kd = start_kube_dns(api_addr, &[&config_arg, "--config-period=1h"], &[]).await?;
    wait_ready(kd.http).await?;
    let reply = eventually(
        kd.udp,
        "www.example.com.",
        RecordType::A,
        Duration::from_secs(5),
        |r| has_a(r, &UPSTREAM_ANSWER.to_string()),
    )
    .await?;
    assert!(!reply.metadata.authoritative);
    // ExternalName: CNAME plus the chased target.
    let ext = query_udp(kd.udp, "ext.default.svc.cluster.local.", RecordType::A).await?;
    assert_eq!(
        answer_lines(&ext),
        vec![
            "ext.default.svc.cluster.local. 30 IN CNAME www.example.com.".to_owned(),
            format!("www.example.com. 300 IN A {UPSTREAM_ANSWER}"),
        ]
    );
    // Invalid (four upstreams): rejected through inotify, the last good config stays.
    kube_dns_test_support::write_configmap_key(
        &dir,
        "upstreamNameservers",
        r#"["1.1.1.1","1.1.1.2","1.1.1.3","1.1.1.4"]"#,
    )?;
    let deadline = Instant::now() + Duration::from_secs(3);
    while metric(kd.http, "kubedns_config_errors_total").await? < 1.0 {
        if Instant::now() > deadline {
            bail!("invalid update was not noticed within 3s (inotify)");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reply = query_udp(kd.udp, "www.example.com.", RecordType::A).await?;
    assert!(
        has_a(&reply, &UPSTREAM_ANSWER.to_string()),
        "last good config must stay"
    );
    Ok(())
}

#[tokio::test]
async fn external_name_keeps_its_cname_when_the_target_fails() -> anyhow::Result<()> {
    let (api, api_addr) = start_api().await?;
    let upstream = FakeUpstream::start().await?;
    api.apply(
        service("default", "broken")
            .external_name("drop.example.com")
            .build(),
    );
    api.apply(
        service("default", "missing")
            .external_name("nx.example.com")
            .build(),
    );
    let ns = format!("--nameservers={}", upstream.addr);
    let kd = start_kube_dns(api_addr, &[&ns], &[]).await?;
    wait_ready(kd.http).await?;
    let reply = query_udp(kd.udp, "missing.default.svc.cluster.local.", RecordType::A).await?;
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(
        answer_lines(&reply),
        vec!["missing.default.svc.cluster.local. 30 IN CNAME nx.example.com."]
    );
    let started = Instant::now();
    let query = kube_dns_test_support::dns_client::query_message(
        "broken.default.svc.cluster.local.",
        RecordType::A,
    )?;
    let bytes = kube_dns_test_support::dns_client::raw_udp_timeout(
        kd.udp,
        &query.to_vec()?,
        Duration::from_secs(8),
    )
    .await?
    .context("a reply must come even when the target never resolves")?;
    let reply = Message::from_vec(&bytes)?;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(
        answer_lines(&reply),
        vec!["broken.default.svc.cluster.local. 30 IN CNAME drop.example.com."]
    );
    assert!(started.elapsed() < Duration::from_secs(8));
    Ok(())
}

#[tokio::test]
async fn malformed_packets_get_formerr_or_silence_and_never_a_crash() -> anyhow::Result<()> {
    let (_api, api_addr) = start_api().await?;
    let kd = start_kube_dns(api_addr, &[], &[]).await?;
    wait_ready(kd.http).await?;
    assert_eq!(raw_udp(kd.udp, &[1, 2, 3]).await?, None);
    // Header claims one question but the packet ends: FORMERR with the same ID.
    let reply = raw_udp(kd.udp, &[0xAB, 0xCD, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 5, b'a']).await?;
    let reply = reply.context("FORMERR expected")?;
    assert_eq!(&reply[..2], &[0xAB, 0xCD]);
    assert_eq!(reply[3] & 0x0F, 1);
    // Two questions: FORMERR.
    let reply = raw_udp(kd.udp, &[0, 7, 1, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1]).await?;
    assert_eq!(reply.context("reply")?[3] & 0x0F, 1);
    let reply = query_udp(
        kd.udp,
        "kubernetes.default.svc.cluster.local.",
        RecordType::A,
    )
    .await?;
    assert!(has_a(&reply, "10.0.0.1"), "still serving");
    Ok(())
}

#[tokio::test]
async fn metrics_keep_the_legacy_names_on_prometheus_port() -> anyhow::Result<()> {
    let (_api, api_addr) = start_api().await?;
    let kd = start_kube_dns(api_addr, &[], &[("PROMETHEUS_PORT", "0")]).await?;
    let metrics_addr = kd.process.listening_addr("metrics", WAIT).await?;
    wait_ready(kd.http).await?;
    query_udp(kd.udp, "nope.default.svc.cluster.local.", RecordType::A).await?;
    query_udp(
        kd.udp,
        "kubernetes.default.svc.cluster.local.",
        RecordType::A,
    )
    .await?;
    let text = http_client::get(metrics_addr, "/metrics").await?.text();
    for needle in [
        "# TYPE skydns_skydns_dns_request_count_total counter",
        "skydns_skydns_dns_request_count_total{system=\"auth\"} 2",
        "skydns_skydns_dns_error_count_total{cause=\"nxdomain\",system=\"auth\"} 1",
        "# TYPE skydns_skydns_dns_request_duration_seconds histogram",
        "skydns_skydns_dns_request_duration_seconds_bucket{system=\"auth\",le=\"0.001\"}",
        "skydns_skydns_dns_response_size_bytes_bucket{system=\"auth\",le=\"512\"}",
        "skydns_skydns_dns_cachemiss_count_total{cache=\"response\"} 2",
        "kubedns_dns_responses_total{rcode=\"nxdomain\"} 1",
        "kubedns_programming_latency_seconds_bucket",
        "kubedns_snapshot_services ",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    Ok(())
}

#[tokio::test]
async fn sigterm_fails_readiness_keeps_answering_then_exits_zero() -> anyhow::Result<()> {
    let (_api, api_addr) = start_api().await?;
    let mut kd = start_kube_dns(api_addr, &["--lameduck=4s"], &[]).await?;
    wait_ready(kd.http).await?;
    kd.process.signal(15)?;
    // Well before the 4 s lameduck ends (even on a loaded machine).
    let deadline = Instant::now() + Duration::from_secs(2);
    while http_client::get(kd.http, "/readiness").await?.status != 503 {
        if Instant::now() > deadline {
            bail!("readiness did not fail promptly after SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reply = query_udp(
        kd.udp,
        "kubernetes.default.svc.cluster.local.",
        RecordType::A,
    )
    .await?;
    assert!(
        has_a(&reply, "10.0.0.1"),
        "DNS keeps answering during lameduck"
    );
    let status = kd.process.wait_exit(Duration::from_secs(15)).await?;
    assert!(status.success(), "exit status {status:?}");
    Ok(())
}

#[tokio::test]
async fn bad_flags_exit_64_naming_the_flag() -> anyhow::Result<()> {
    let mut process = ChildProcess::spawn(
        env!("CARGO_BIN_EXE_kube-dns"),
        ["--dns-port=notaport"],
        std::iter::empty::<(&str, &str)>(),
    )?;
    let status = process.wait_exit(WAIT).await?;
    assert_eq!(status.code(), Some(64));
    assert!(process.output_text().contains("--dns-port"));
    let mut version = ChildProcess::spawn(
        env!("CARGO_BIN_EXE_kube-dns"),
        ["--version"],
        std::iter::empty::<(&str, &str)>(),
    )?;
    assert!(version.wait_exit(WAIT).await?.success());
    assert!(version.output_text().contains("Kube-DNS "));
    Ok(())
}

/// A resolv.conf naming `server` (port 53: resolv.conf has no port syntax), as a flag.
fn resolv_conf_for(dir: &Path, server: std::net::IpAddr) -> anyhow::Result<String> {
    let path = dir.join("resolv.conf");
    std::fs::write(&path, format!("nameserver {server}\n"))?;
    Ok(format!("--resolv-conf={}", path.display()))
}

#[tokio::test]
async fn config_map_through_the_api_valid_invalid_deleted() -> anyhow::Result<()> {
    let (api, api_addr) = start_api().await?;
    let upstream = FakeUpstream::start().await?;
    let dir = kube_dns_test_support::tempdir("cm")?;
    // The default upstream (resolv.conf) is a closed port on 127.0.0.2: forwarding fails fast.
    let resolv = resolv_conf_for(&dir, "127.0.0.2".parse()?)?;
    api.apply(kube_dns_test_support::objects::config_map(
        "kube-system",
        "kube-dns",
        &[("upstreamNameservers", &format!("[\"{}\"]", upstream.addr))],
    ));
    // Another ConfigMap in the namespace must be ignored (legacy watched them all).
    api.apply(kube_dns_test_support::objects::config_map(
        "kube-system",
        "unrelated",
        &[("upstreamNameservers", "[\"127.0.0.3\"]")],
    ));
    let kd = start_kube_dns(api_addr, &["--config-map=kube-dns", &resolv], &[]).await?;
    wait_ready(kd.http).await?;
    eventually(
        kd.udp,
        "www.example.com.",
        RecordType::A,
        Duration::from_secs(5),
        |r| has_a(r, &UPSTREAM_ANSWER.to_string()),
    )
    .await?;
    let before = upstream.queries();
    api.apply(kube_dns_test_support::objects::config_map(
        "kube-system",
        "kube-dns",
        &[("upstreamNameservers", "[\"1.1.1.1:abc\"]")],
    ));
    let deadline = Instant::now() + Duration::from_secs(3);
    while metric(kd.http, "kubedns_config_errors_total").await? < 1.0 {
        if Instant::now() > deadline {
            bail!("invalid ConfigMap update not noticed");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reply = query_udp(kd.udp, "www.example.com.", RecordType::A).await?;
    assert!(
        has_a(&reply, &UPSTREAM_ANSWER.to_string()),
        "invalid update must be ignored"
    );
    assert!(upstream.queries() > before);
    // Deleted: defaults, i.e. resolv.conf's (dead) nameserver, so the name now fails.
    api.delete("configmaps", "kube-system", "kube-dns");
    eventually_rcode(
        kd.udp,
        "www.example.com.",
        ResponseCode::ServFail,
        Duration::from_secs(8),
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn config_dir_emptied_means_defaults() -> anyhow::Result<()> {
    let (_api, api_addr) = start_api().await?;
    let upstream = FakeUpstream::start().await?;
    let dir = kube_dns_test_support::tempdir("cfgdel")?;
    let config = dir.join("config");
    std::fs::create_dir_all(&config)?;
    kube_dns_test_support::write_configmap_key(
        &config,
        "upstreamNameservers",
        &format!("[\"{}\"]", upstream.addr),
    )?;
    let resolv = resolv_conf_for(&dir, "127.0.0.2".parse()?)?;
    let config_arg = format!("--config-dir={}", config.display());
    let kd = start_kube_dns(
        api_addr,
        &[&config_arg, &resolv, "--config-period=200ms"],
        &[],
    )
    .await?;
    wait_ready(kd.http).await?;
    eventually(
        kd.udp,
        "www.example.com.",
        RecordType::A,
        Duration::from_secs(5),
        |r| has_a(r, &UPSTREAM_ANSWER.to_string()),
    )
    .await?;
    std::fs::remove_dir_all(&config)?;
    eventually_rcode(
        kd.udp,
        "www.example.com.",
        ResponseCode::ServFail,
        Duration::from_secs(8),
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn legacy_endpoints_mode_and_verified_pods() -> anyhow::Result<()> {
    let api = FakeApiServer::new();
    api.apply(
        service("default", "old")
            .headless()
            .port(Some("http"), 80, "TCP")
            .build(),
    );
    api.apply(
        kube_dns_test_support::objects::endpoints("default", "old")
            .address("10.8.0.1", Some("a"))
            .not_ready_address("10.8.0.2", None)
            .port(Some("http"), 80, "TCP")
            .build(),
    );
    api.apply(kube_dns_test_support::objects::pod(
        "web",
        "p1",
        "10.244.9.9",
        &["10.244.9.9"],
    ));
    let (api_addr, _task) = api.serve("127.0.0.1:0".parse()?).await?;
    let kd = start_kube_dns(api_addr, &["--watch-endpoints", "--pods=verified"], &[]).await?;
    wait_ready(kd.http).await?;
    let reply = query_udp(kd.udp, "old.default.svc.cluster.local.", RecordType::A).await?;
    assert_eq!(
        answer_lines(&reply),
        vec!["old.default.svc.cluster.local. 30 IN A 10.8.0.1"]
    );
    let reply = query_udp(
        kd.udp,
        "_http._tcp.old.default.svc.cluster.local.",
        RecordType::SRV,
    )
    .await?;
    assert_eq!(
        answer_lines(&reply),
        vec![
            "_http._tcp.old.default.svc.cluster.local. 30 IN SRV 10 100 80 a.old.default.svc.cluster.local."
        ]
    );
    let pod = query_udp(kd.udp, "10-244-9-9.web.pod.cluster.local.", RecordType::A).await?;
    assert!(has_a(&pod, "10.244.9.9"));
    let wrong_ns = query_udp(kd.udp, "10-244-9-9.other.pod.cluster.local.", RecordType::A).await?;
    assert_eq!(wrong_ns.metadata.response_code, ResponseCode::NXDomain);
    api.delete("pods", "web", "p1");
    eventually_rcode(
        kd.udp,
        "10-244-9-9.web.pod.cluster.local.",
        ResponseCode::NXDomain,
        Duration::from_secs(2),
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_legacy_cluster_role_without_endpointslices_falls_back_to_endpoints() -> anyhow::Result<()>
{
    // The bootstrap system:kube-dns ClusterRole of a 1.14.13 installation grants services and
    // endpoints only: swapping the image alone must keep DNS working.
    let api = FakeApiServer::new();
    api.forbid("endpointslices");
    api.apply(
        service("default", "old")
            .headless()
            .port(Some("http"), 80, "TCP")
            .build(),
    );
    api.apply(
        kube_dns_test_support::objects::endpoints("default", "old")
            .address("10.8.0.1", Some("a"))
            .port(Some("http"), 80, "TCP")
            .build(),
    );
    let (api_addr, _task) = api.serve("127.0.0.1:0".parse()?).await?;
    let kd = start_kube_dns(api_addr, &[], &[]).await?;
    wait_ready(kd.http).await?;
    kd.process
        .wait_for_line("watching core/v1 Endpoints instead", WAIT)
        .await?;
    let reply = query_udp(kd.udp, "old.default.svc.cluster.local.", RecordType::A).await?;
    assert_eq!(
        answer_lines(&reply),
        vec!["old.default.svc.cluster.local. 30 IN A 10.8.0.1"]
    );
    // Changes keep arriving through the Endpoints watch.
    api.apply(
        kube_dns_test_support::objects::endpoints("default", "old")
            .address("10.8.0.9", Some("b"))
            .port(Some("http"), 80, "TCP")
            .build(),
    );
    eventually(
        kd.udp,
        "old.default.svc.cluster.local.",
        RecordType::A,
        Duration::from_secs(2),
        |m| has_a(m, "10.8.0.9"),
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn objects_with_odd_fields_are_skipped_with_a_log_line() -> anyhow::Result<()> {
    let (api, api_addr) = start_api().await?;
    let kd = start_kube_dns(api_addr, &[], &[]).await?;
    wait_ready(kd.http).await?;
    api.apply(service("default", "weird").cluster_ip("not-an-ip").build());
    kd.process
        .wait_for_line("default/weird", Duration::from_secs(3))
        .await
        .context("the skipped object must be named in the log")?;
    let reply = query_udp(
        kd.udp,
        "kubernetes.default.svc.cluster.local.",
        RecordType::A,
    )
    .await?;
    assert!(has_a(&reply, "10.0.0.1"));
    Ok(())
}

#[tokio::test]
async fn forwarding_waits_for_slow_upstreams_and_drops_broken_replies() -> anyhow::Result<()> {
    use kube_dns_test_support::forwarding::{
        assert_broken_replies_dropped, assert_many_slow_answers, assert_servfail_at_deadline,
        assert_slow_answers, upstream_metric,
    };
    let (api, api_addr) = start_api().await?;
    let upstream = FakeUpstream::start().await?;
    // The ExternalName chase goes through the same forwarding.
    api.apply(
        service("default", "slow-alias")
            .external_name("slow-1000.chase.example.com")
            .build(),
    );
    let ns = format!("--nameservers={}", upstream.addr);
    let kd = start_kube_dns(api_addr, &[&ns], &[]).await?;
    let short = start_kube_dns(api_addr, &[&ns, "--forward-deadline=1500ms"], &[]).await?;
    wait_ready(kd.http).await?;
    wait_ready(short.http).await?;
    let took = assert_slow_answers(kd.udp, &upstream, "example.com").await?;
    assert!(
        took.iter().all(|t| *t < Duration::from_millis(3_500)),
        "{took:?}"
    );
    assert_slow_answers(kd.udp, &upstream, "chase.example.com").await?;
    let reply = kube_dns_test_support::dns_client::query_udp_timeout(
        kd.udp,
        "slow-alias.default.svc.cluster.local.",
        RecordType::A,
        Duration::from_secs(8),
    )
    .await?;
    assert!(
        answer_lines(&reply)
            .iter()
            .any(|l| l.ends_with(" A 192.0.2.10")),
        "{reply:?}"
    );
    assert_many_slow_answers(kd.udp, &upstream, "example.com", 300, 50, 10).await?;
    let text = http_client::get(kd.http, "/metrics").await?.text();
    assert_eq!(
        upstream_metric(&text, "kubedns_upstream_up", upstream.addr),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        upstream_metric(&text, "kubedns_upstream_failures_total", upstream.addr),
        Some(0.0),
        "{text}"
    );
    assert_servfail_at_deadline(
        short.udp,
        &upstream,
        "too-slow.example.com.",
        Duration::from_millis(1_500),
        3_500,
    )
    .await?;
    assert_broken_replies_dropped(short.udp, &upstream, "example.com").await?;
    Ok(())
}

#[tokio::test]
async fn forwarding_prefers_the_fast_upstream_over_a_slow_or_silent_one() -> anyhow::Result<()> {
    use kube_dns_test_support::fake_upstream::Rule;
    use kube_dns_test_support::forwarding::{delayed, has_a, upstream_metric};
    let (_api, api_addr) = start_api().await?;
    let fast_ip = std::net::Ipv4Addr::new(192, 0, 2, 1);
    let slow = FakeUpstream::start().await?;
    slow.set_default(delayed(1_000, std::net::Ipv4Addr::new(192, 0, 2, 2)));
    let silent = FakeUpstream::start().await?;
    silent.set_default(Rule::Drop);
    let fast = FakeUpstream::start().await?;
    fast.set_default(Rule::Answer {
        ips: vec![std::net::IpAddr::V4(fast_ip)],
        ttl: 300,
    });
    let behind_slow = start_kube_dns(
        api_addr,
        &[&format!("--nameservers={},{}", slow.addr, fast.addr)],
        &[],
    )
    .await?;
    let behind_silent = start_kube_dns(
        api_addr,
        &[
            &format!("--nameservers={},{}", silent.addr, fast.addr),
            "--forward-deadline=3s",
        ],
        &[],
    )
    .await?;
    wait_ready(behind_slow.http).await?;
    wait_ready(behind_silent.http).await?;
    let ask = |server: SocketAddr, name: String| async move {
        kube_dns_test_support::dns_client::query_udp_timeout(
            server,
            &name,
            RecordType::A,
            Duration::from_secs(8),
        )
        .await
    };
    // The first query learns (the slow server answers it, the silent one times out after the
    // 2 s per-try timeout and the fast one answers); from then on the fast one answers at once.
    let first = ask(behind_slow.udp, "first.example.com.".into()).await?;
    assert_eq!(first.metadata.response_code, ResponseCode::NoError);
    let first = ask(behind_silent.udp, "first.example.com.".into()).await?;
    assert!(has_a(&first, fast_ip), "{first:?}");
    let silent_before = silent.queries();
    for i in 0..5 {
        for server in [behind_slow.udp, behind_silent.udp] {
            let started = Instant::now();
            let reply = ask(server, format!("q{i}.example.com.")).await?;
            assert!(has_a(&reply, fast_ip), "{reply:?}");
            assert!(
                started.elapsed() < Duration::from_millis(500),
                "{:?}",
                started.elapsed()
            );
        }
    }
    assert_eq!(
        silent.queries(),
        silent_before,
        "the silent server is not asked again"
    );
    // After the first query's deadline the silent server has its failure, the slow one none.
    tokio::time::sleep(Duration::from_millis(3_200)).await;
    let text = http_client::get(behind_silent.http, "/metrics")
        .await?
        .text();
    assert_eq!(
        upstream_metric(&text, "kubedns_upstream_failures_total", silent.addr),
        Some(1.0),
        "{text}"
    );
    let text = http_client::get(behind_slow.http, "/metrics").await?.text();
    assert_eq!(
        upstream_metric(&text, "kubedns_upstream_up", slow.addr),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        upstream_metric(&text, "kubedns_upstream_failures_total", slow.addr),
        Some(0.0),
        "{text}"
    );
    Ok(())
}

/// Issue 12's kube-dns HTTP row: 150 connections from one client with up to 390 KB of an
/// unfinished header each. Memory stays under 100 MiB (the manifest's limit is 170Mi),
/// `/readiness` keeps answering another client, every attacking connection is closed, and
/// `/cache` (every Service and endpoint in one JSON) is not served unless `--cache-dump` is
/// given, and then to loopback clients.
#[tokio::test]
async fn stalled_http_headers_neither_grow_memory_nor_block_readiness() -> anyhow::Result<()> {
    let (_api, api_addr) = start_api().await?;
    let kd = start_kube_dns(api_addr, &[], &[]).await?;
    wait_ready(kd.http).await?;
    assert_eq!(http_client::get(kd.http, "/cache").await?.status, 404);
    let report = kube_dns_test_support::hostile::stalled_header_attack(
        kd.process.pid(),
        kd.http,
        "/readiness",
        kube_dns_test_support::hostile::HeaderFlood::MIXED,
        Duration::from_secs(8),
    )
    .await;
    eprintln!("attack: {report:?}");
    report.check(100 * 1024)?;
    let refused = metric(kd.http, "kubedns_http_refused_per_client_total").await?;
    assert!(refused > 0.0, "no connection refused per client");

    let dumping = start_kube_dns(api_addr, &["--cache-dump"], &[]).await?;
    wait_ready(dumping.http).await?;
    let dump = http_client::get(dumping.http, "/cache").await?;
    assert_eq!(dump.status, 200);
    assert!(dump.text().contains("kubernetes"), "{}", dump.text());
    Ok(())
}

/// Issue 12's kube-dns UDP row, scaled: 6,000 queries from one client (127.0.0.1) for a name
/// whose upstream never answers, each followed by 60 KB of zeros, then the same without padding,
/// then 6,000 different silent names. Memory stays under 100 MiB, cluster names keep being
/// answered, a second client's (127.0.0.2) forwarded queries are answered in every phase (the
/// flooder holds at most half the open tries), and the upstream only ever sees kube-dns's own
/// query (our ID, the question, our OPT), never the client's bytes.
#[tokio::test]
async fn udp_floods_for_a_silent_upstream_keep_memory_bounded() -> anyhow::Result<()> {
    use kube_dns_test_support::dns_client::query_udp_from;
    use kube_dns_test_support::hostile::{
        FloodPhase, PeakRss, UDP_FLOOD_PHASES, check_flood, udp_flood,
    };
    let upstream = FakeUpstream::start().await?;
    let (_api, api_addr) = start_api().await?;
    let nameservers = format!("--nameservers={}", upstream.addr);
    let kd = start_kube_dns(api_addr, &[&nameservers], &[]).await?;
    wait_ready(kd.http).await?;
    let rss = PeakRss::start(kd.process.pid());
    let other = std::net::IpAddr::from([127, 0, 0, 2]);
    for FloodPhase {
        label: phase,
        padding,
        qname,
    } in UDP_FLOOD_PHASES
    {
        let flood = tokio::spawn(udp_flood(
            kd.udp,
            6_000,
            padding,
            qname,
            Duration::from_millis(500),
        ));
        let mut answered = 0;
        // Cluster names are answered on the fast path, whatever waits for the upstream, and
        // the other client's forwarded names get tries of their own.
        while !flood.is_finished() || answered < 3 {
            let reply = query_udp(
                kd.udp,
                "kubernetes.default.svc.cluster.local.",
                RecordType::A,
            )
            .await?;
            assert!(has_a(&reply, "10.0.0.1"), "cluster name during the flood");
            let name = format!("ok{answered}.{phase}.example.com.");
            let reply = query_udp_from(other, kd.udp, &name, RecordType::A, WAIT).await?;
            assert!(
                has_a(&reply, &UPSTREAM_ANSWER.to_string()),
                "{name} from {other} during the {phase} flood: {reply:?}"
            );
            answered += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let replies = flood.await??;
        eprintln!("{phase}: {replies:?}, {answered} cluster and forwarded queries answered");
    }
    check_flood(
        "kube-dns",
        rss.finish().await,
        100 * 1024,
        upstream.largest_query(),
    )?;
    Ok(())
}

/// Issue 13: kube-dns keeps its last good zone in `--snapshot-dir` and, restarted while the API
/// server is away, answers from it within a second of starting (readiness says so); a damaged
/// file is ignored with its reason; once the API is back, what changed meanwhile is served and
/// the saved zone is no longer used.
#[tokio::test]
async fn a_restart_without_the_api_answers_from_the_saved_zone() -> anyhow::Result<()> {
    let (api, api_addr) = start_api().await?;
    let dir = kube_dns_test_support::tempdir("saved-zone")?;
    let flags = [
        format!("--snapshot-dir={}", dir.display()),
        "--snapshot-interval=1s".to_owned(),
        "--lameduck=0s".to_owned(),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let kubernetes = "kubernetes.default.svc.cluster.local.";
    let is_kubernetes = |m: &Message| answer_lines(m).iter().any(|l| l.ends_with(" A 10.0.0.1"));

    let mut first = start_kube_dns(api_addr, &flags, &[]).await?;
    wait_ready(first.http).await?;
    let file = dir.join("zone");
    let deadline = Instant::now() + WAIT;
    while !file.exists() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "no saved zone in {}",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let good = std::fs::read(&file)?;
    first
        .process
        .signal(kube_dns_test_support::process::SIGTERM)?;
    first.process.wait_exit(WAIT).await?;

    // The API is away: nothing listens at this address.
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.local_addr()?
    };
    let spawned = Instant::now();
    let restarted = start_kube_dns(dead, &flags, &[]).await?;
    let reply = query_udp(restarted.udp, kubernetes, RecordType::A).await?;
    let took = spawned.elapsed();
    assert!(is_kubernetes(&reply), "from the saved zone: {reply:?}");
    // The zone is in before the sockets listen: the very first query is answered from it.
    let lines = restarted.process.lines();
    let loaded = lines
        .iter()
        .position(|l| l.contains("answering from the saved zone"));
    let listening = lines.iter().position(|l| l.contains("listening on udp"));
    assert!(
        loaded.is_some() && loaded < listening,
        "saved zone loaded before listening: {lines:?}"
    );
    eprintln!("answered from the saved zone {took:?} after the process was started");
    let readiness = http_client::get(restarted.http, "/readiness").await?;
    assert_eq!(readiness.status, 200);
    assert!(
        readiness.text().contains("saved zone"),
        "{}",
        readiness.text()
    );
    assert_eq!(
        metric(restarted.http, "kubedns_saved_zone_serving").await?,
        1.0
    );
    drop(restarted);

    // A damaged file is ignored, with the reason: SERVFAIL until the API answers.
    let mut damaged = good.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x01;
    std::fs::write(&file, &damaged)?;
    let refused = start_kube_dns(dead, &flags, &[]).await?;
    refused
        .process
        .wait_for_line("checksum mismatch", WAIT)
        .await?;
    let reply = query_udp(refused.udp, kubernetes, RecordType::A).await?;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(
        metric(refused.http, "kubedns_saved_zone_refused_total").await?,
        1.0
    );
    drop(refused);

    // The API is back with a Service made while kube-dns was away.
    std::fs::write(&file, &good)?;
    api.apply(
        service("default", "made-meanwhile")
            .cluster_ip("10.0.0.77")
            .port(Some("http"), 80, "TCP")
            .build(),
    );
    let back = start_kube_dns(api_addr, &flags, &[]).await?;
    let reply = query_udp(back.udp, kubernetes, RecordType::A).await?;
    assert!(is_kubernetes(&reply), "saved or synced: {reply:?}");
    eventually(
        back.udp,
        "made-meanwhile.default.svc.cluster.local.",
        RecordType::A,
        WAIT,
        |m| answer_lines(m).iter().any(|l| l.ends_with(" A 10.0.0.77")),
    )
    .await?;
    let deadline = Instant::now() + WAIT;
    while metric(back.http, "kubedns_saved_zone_serving").await? != 0.0 {
        anyhow::ensure!(Instant::now() < deadline, "still serving the saved zone");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        http_client::get(back.http, "/readiness").await?.text(),
        "ok\n"
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[tokio::test]
async fn a_watch_that_goes_silent_is_restarted_within_the_watch_timeout() -> anyhow::Result<()> {
    let (api, api_addr) = start_api().await?;
    let kd = start_kube_dns(api_addr, &["--watch-timeout=2s"], &[]).await?;
    wait_ready(kd.http).await?;
    // Hang the open watches; a watch being renewed at that moment (the fake ends each after
    // 2 s) would not be hung, so hang again until no watch started around it.
    let mut hung = false;
    for _ in 0..5 {
        let before = api.watch_count("services");
        api.hang_watches();
        tokio::time::sleep(Duration::from_millis(200)).await;
        if api.watch_count("services") == before {
            hung = true;
            break;
        }
    }
    assert!(hung, "could not hang the services watch");
    let watches = api.watch_count("services");
    let hung_at = Instant::now();
    api.apply(service("default", "late").cluster_ip("10.9.3.1").build());
    // The hung stream lost the event and stays open past its timeoutSeconds.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let reply = query_udp(kd.udp, "late.default.svc.cluster.local.", RecordType::A).await?;
    assert_eq!(
        (reply.metadata.response_code, api.watch_count("services")),
        (ResponseCode::NXDomain, watches),
        "the change must not arrive before the silence is noticed: {reply:?}"
    );
    // Silent for --watch-timeout + 5 s: dropped and resumed from its resourceVersion, which
    // replays the lost event (the default of 1m would take over a minute).
    eventually(
        kd.udp,
        "late.default.svc.cluster.local.",
        RecordType::A,
        Duration::from_secs(12),
        |r| has_a(r, "10.9.3.1"),
    )
    .await?;
    let took = hung_at.elapsed();
    assert!(api.watch_count("services") > watches);
    assert!(took < Duration::from_secs(12), "took {took:?}");
    assert_eq!(
        metric(
            kd.http,
            "kubedns_watch_restarts_total{resource=\"services\"}"
        )
        .await?,
        0.0,
        "resuming from the resourceVersion is not a relist"
    );
    Ok(())
}

/// A 10,000-Service cluster (2,000 of them headless with a slice each) relisted while serving,
/// over an API server that answers in pages of 100 items, each 200 ms late (a 20 s list): every
/// Service that exists before and after answers throughout; what vanished meanwhile goes only
/// at the end.
#[tokio::test]
async fn a_slow_paged_relist_of_ten_thousand_services_leaves_no_gap() -> anyhow::Result<()> {
    const SERVICES: usize = 10_000;
    const HEADLESS_EVERY: usize = 5;
    let (api, api_addr) = start_api().await?;
    let ip = |i: usize| format!("10.{}.{}.{}", 100 + i / 65_536, (i / 256) % 256, i % 256);
    let name = |i: usize| (format!("ns{}", i % 50), format!("svc{i}"));
    for i in 0..SERVICES {
        let (ns, svc) = name(i);
        if i.is_multiple_of(HEADLESS_EVERY) {
            api.apply(service(&ns, &svc).headless().build());
            api.apply(
                endpoint_slice(&ns, &format!("{svc}-1"), &svc)
                    .address_type("IPv4")
                    .endpoint(endpoint(&[&ip(i)]))
                    .port(Some("http"), 80, "TCP")
                    .build(),
            );
        } else {
            api.apply(service(&ns, &svc).cluster_ip(&ip(i)).build());
        }
    }
    api.apply(service("default", "gone").cluster_ip("10.9.4.1").build());
    let kd = start_kube_dns(api_addr, &[], &[]).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while http_client::get(kd.http, "/readiness").await?.status != 200 {
        assert!(Instant::now() < deadline, "never synced");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eventually(
        kd.udp,
        "gone.default.svc.cluster.local.",
        RecordType::A,
        WAIT,
        |r| has_a(r, "10.9.4.1"),
    )
    .await?;

    // The watches die while the API is away, a Service is deleted and another created, and
    // history is compacted: only a relist (after the 410) can show the deletion.
    api.set_unavailable(true);
    api.drop_streams();
    api.delete("services", "default", "gone");
    api.apply(service("default", "new").cluster_ip("10.9.4.2").build());
    api.compact();
    api.set_max_page(100);
    api.set_delay(Duration::from_millis(200));
    let lists = api.list_count("services");
    let relist_start = Instant::now();
    api.set_unavailable(false);

    // Ask for the Services that stay, round-robin, until the deletion is served.
    let mut asked = 0usize;
    let mut failures = Vec::new();
    let mut i = 0usize;
    loop {
        let gone = query_udp(kd.udp, "gone.default.svc.cluster.local.", RecordType::A).await?;
        if gone.metadata.response_code == ResponseCode::NXDomain {
            break;
        }
        assert!(
            relist_start.elapsed() < Duration::from_secs(90),
            "the relist never ended"
        );
        for _ in 0..5 {
            let (ns, svc) = name(i);
            let qname = format!("{svc}.{ns}.svc.cluster.local.");
            let reply = query_udp(kd.udp, &qname, RecordType::A).await?;
            asked += 1;
            if !has_a(&reply, &ip(i)) {
                failures.push(format!("{qname}: {:?}", reply.metadata.response_code));
            }
            i = (i + 7_919) % SERVICES;
        }
        if asked.is_multiple_of(100) {
            assert_eq!(http_client::get(kd.http, "/readiness").await?.status, 200);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = relist_start.elapsed();
    api.set_delay(Duration::ZERO);
    assert!(
        failures.is_empty(),
        "{} of {asked} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(
        took >= Duration::from_secs(15) && asked >= 300,
        "the relist must have been slow and watched throughout: {took:?}, {asked} queries"
    );
    assert!(
        api.list_count("services") - lists >= (SERVICES / 100) as u64,
        "the relist went through the small pages"
    );
    let reply = query_udp(kd.udp, "new.default.svc.cluster.local.", RecordType::A).await?;
    assert!(has_a(&reply, "10.9.4.2"), "{reply:?}");
    assert!(
        metric(
            kd.http,
            "kubedns_watch_restarts_total{resource=\"services\"}"
        )
        .await?
            >= 1.0
    );
    Ok(())
}

/// Issue 14: cluster-zone queries counted by the namespace asked for and rcode; a namespace
/// has its own series only while it holds a Service, everything else is `other`.
#[tokio::test]
async fn queries_are_counted_by_namespace_with_bounded_cardinality() -> anyhow::Result<()> {
    let (api, api_addr) = start_api().await?;
    let kd = start_kube_dns(api_addr, &[], &[]).await?;
    wait_ready(kd.http).await?;
    let series = |namespace: &str, rcode: &str| {
        format!("kubedns_namespace_queries_total{{namespace=\"{namespace}\",rcode=\"{rcode}\"}}")
    };
    api.apply(service("shop", "web").cluster_ip("10.9.5.1").build());
    eventually(
        kd.udp,
        "web.shop.svc.cluster.local.",
        RecordType::A,
        WAIT,
        |r| has_a(r, "10.9.5.1"),
    )
    .await?;
    let other_before = metric(kd.http, &series("other", "nxdomain")).await?;
    for name in [
        "web.shop.svc.cluster.local.",
        "_http._tcp.web.shop.svc.cluster.local.",
        "api.github.com.shop.svc.cluster.local.",
        "api.github.com.shop.svc.cluster.local.",
        "web.ghost.svc.cluster.local.",
        "www.example.com.",
    ] {
        query_udp(kd.udp, name, RecordType::A).await?;
    }
    let shop_noerror = metric(kd.http, &series("shop", "noerror")).await?;
    assert!(shop_noerror >= 2.0, "{shop_noerror}");
    // The SRV name of a port the Service does not have, and the search-path expansions.
    assert_eq!(metric(kd.http, &series("shop", "nxdomain")).await?, 3.0);
    assert_eq!(
        metric(kd.http, &series("other", "nxdomain")).await? - other_before,
        1.0,
        "a namespace without Services is `other`; names outside the zone are not counted"
    );
    // The namespace's last Service goes: so do its series.
    api.delete("services", "shop", "web");
    eventually_rcode(
        kd.udp,
        "web.shop.svc.cluster.local.",
        ResponseCode::NXDomain,
        WAIT,
    )
    .await?;
    let text = http_client::get(kd.http, "/metrics").await?.text();
    assert!(
        !text.contains("namespace=\"shop\""),
        "the deleted namespace's series stay: {}",
        text.lines()
            .filter(|l| l.contains("namespace_queries"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(metric(kd.http, &series("other", "nxdomain")).await? >= other_before + 2.0);
    Ok(())
}

/// Issue 14: `--log-queries` writes one JSON object per query, off the query path: the zone's
/// answers and forwarded ones, with the upstream that answered.
#[tokio::test]
async fn query_logs_are_json_lines_with_every_field() -> anyhow::Result<()> {
    let upstream = FakeUpstream::start().await?;
    let (_api, api_addr) = start_api().await?;
    let kd = start_kube_dns(
        api_addr,
        &["--log-queries", &format!("--nameservers={}", upstream.addr)],
        &[],
    )
    .await?;
    wait_ready(kd.http).await?;
    for name in [
        "kubernetes.default.svc.cluster.local.",
        "missing.default.svc.cluster.local.",
        "www.example.com.",
    ] {
        query_udp(kd.udp, name, RecordType::A).await?;
    }
    let deadline = Instant::now() + WAIT;
    let records: Vec<serde_json::Value> = loop {
        let records: Vec<serde_json::Value> = kd
            .process
            .output_text()
            .lines()
            .filter_map(|l| l.find("{\"time\"").map(|i| &l[i..]))
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if records.len() >= 3 || Instant::now() > deadline {
            break records;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let seen: Vec<String> = records
        .iter()
        .map(|r| {
            format!(
                "{} {} {} {} {} {}",
                r["server"].as_str().unwrap_or("?"),
                r["name"].as_str().unwrap_or("?"),
                r["type"].as_str().unwrap_or("?"),
                r["rcode"].as_str().unwrap_or("?"),
                r["answers"],
                r["source"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            "kube-dns kubernetes.default.svc.cluster.local. A NOERROR 1 zone",
            "kube-dns missing.default.svc.cluster.local. A NXDOMAIN 0 zone",
            "kube-dns www.example.com. A NOERROR 1 upstream",
        ]
    );
    assert_eq!(records[2]["upstream"], upstream.addr.to_string());
    assert!(records[0]["latency_us"].is_u64() && records[0]["client"].is_string());
    assert_eq!(metric(kd.http, "kubedns_query_log_lines_total").await?, 3.0);
    Ok(())
}
