//! Process tests: the real `sidecar` binary probing and scraping a real dnsmasq 2.90 and our
//! `dns-cache`, both in front of the fake upstream, over real sockets.
// Whole-process tests time real processes on the real clocks (see clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use hickory_proto::rr::RecordType;
use kube_dns_test_support::dns_client::query_udp;
use kube_dns_test_support::dnsmasq::start_dnsmasq;
use kube_dns_test_support::fake_upstream::{FakeUpstream, Rule};
use kube_dns_test_support::http_client::{HttpResponse, get};
use kube_dns_test_support::process::{ChildProcess, SIGTERM};

const WAIT: Duration = Duration::from_secs(10);
const CACHE_SIZE: &str = "1337";

struct Sidecar {
    process: ChildProcess,
    http: SocketAddr,
}

async fn start_sidecar(args: &[String]) -> anyhow::Result<Sidecar> {
    let mut all = vec![
        "--prometheus-addr=127.0.0.1".to_owned(),
        "--prometheus-port=0".to_owned(),
    ];
    all.extend(args.iter().cloned());
    let process = ChildProcess::spawn(
        env!("CARGO_BIN_EXE_sidecar"),
        &all,
        std::iter::empty::<(&str, &str)>(),
    )?;
    let http = process.listening_addr("http", WAIT).await?;
    Ok(Sidecar { process, http })
}

/// A loopback port with nothing behind it: queries to it are refused at once.
fn dead_port() -> anyhow::Result<u16> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    Ok(socket.local_addr()?.port())
}

/// The value of one unlabelled sample in the exposition.
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let (key, value) = line.rsplit_once(' ')?;
        (key == name).then(|| value.parse().ok()).flatten()
    })
}

async fn metrics(sidecar: &Sidecar) -> anyhow::Result<String> {
    let response = get(sidecar.http, "/metrics").await?;
    ensure!(response.status == 200, "metrics: {}", response.status);
    Ok(response.text())
}

/// Polls until `check` holds for the metrics text, or fails with the last text.
async fn wait_metrics(
    sidecar: &Sidecar,
    what: &str,
    check: impl Fn(&str) -> bool,
) -> anyhow::Result<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = metrics(sidecar).await?;
        if check(&text) {
            return Ok(text);
        }
        if Instant::now() > deadline {
            bail!("{what} not reached; metrics:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `/healthcheck/<label>` until a probe has run and the check answers `status`.
async fn wait_health(sidecar: &Sidecar, label: &str, status: u16) -> anyhow::Result<HttpResponse> {
    let deadline = Instant::now() + WAIT;
    loop {
        let response = get(sidecar.http, &format!("/healthcheck/{label}")).await?;
        let waiting = response.text().contains("waiting for first probe");
        if response.status == status && !waiting {
            return Ok(response);
        }
        if Instant::now() > deadline {
            bail!(
                "/healthcheck/{label}: {} {} (wanted {status})\n{}",
                response.status,
                response.text(),
                sidecar.process.output_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The probe assertions shared by dnsmasq and dns-cache: `cache` answers `ok_name` with records
/// and `empty_name` with none.
async fn check_probes(cache: SocketAddr, ok_name: &str, empty_name: &str) -> anyhow::Result<()> {
    let dead = dead_port()?;
    let sidecar = start_sidecar(&[
        format!("--dnsmasq-addr={}", cache.ip()),
        format!("--dnsmasq-port={dead}"),
        "--dnsmasq-poll-interval-ms=200".into(),
        format!("--probe=ok,{cache},{ok_name},1,A"),
        format!("--probe=srv,{cache},{ok_name},1,SRV"),
        format!("--probe=empty,{cache},{empty_name},1,A"),
        format!("--probe=dead,127.0.0.1:{dead},{ok_name},1,A"),
    ])
    .await?;

    // Before any probe has run, a health check says so (the first probe waits up to 1 s).
    // The dead server's check is never healthy: first waiting, then failing.
    let first = get(sidecar.http, "/healthcheck/dead").await?;
    let body = first.json()?;
    ensure!(first.status == 503 && body["IsOk"] == false, "{body}");

    let ok = wait_health(&sidecar, "ok", 200).await?;
    ensure!(
        ok.header("content-type") == Some("application/json"),
        "{:?}",
        ok.headers
    );
    let body = ok.json()?;
    ensure!(body["IsOk"] == true && body["Err"] == "", "{body}");
    let latency = body["LatencySeconds"].as_f64().context("LatencySeconds")?;
    ensure!(latency > 0.0 && latency < 2.0, "{body}");
    ensure!(
        ok.text().starts_with(r#"{"IsOk":true,"LatencySeconds":"#),
        "legacy field order: {}",
        ok.text()
    );

    // The name exists but has no SRV records: zero answers is a failure, whatever the rcode.
    let srv = wait_health(&sidecar, "srv", 503).await?;
    let srv_body = srv.json()?;
    ensure!(
        srv_body["Err"]
            .as_str()
            .unwrap_or("")
            .contains("no RRs for domain"),
        "{srv_body}"
    );

    let empty = wait_health(&sidecar, "empty", 503).await?;
    let body = empty.json()?;
    let expected = format!("no RRs for domain \"{empty_name}.\"");
    ensure!(
        body["IsOk"] == false && body["LatencySeconds"] == 0 && body["Err"] == expected.as_str(),
        "{body}"
    );
    let dead_body = wait_health(&sidecar, "dead", 503).await?.json()?;
    let err = dead_body["Err"].as_str().unwrap_or("");
    ensure!(
        err.contains(&format!("127.0.0.1:{dead}")) && err != "waiting for first probe",
        "{dead_body}"
    );

    let text = wait_metrics(&sidecar, "probe errors and cache errors", |t| {
        sample(t, "kubedns_probe_empty_errors").is_some_and(|v| v >= 1.0)
            && sample(t, "kubedns_probe_dead_errors").is_some_and(|v| v >= 1.0)
            && sample(t, "kubedns_probe_ok_latency_ms_count").is_some_and(|v| v >= 1.0)
            && sample(t, "kubedns_dnsmasq_errors").is_some_and(|v| v >= 1.0)
    })
    .await?;
    ensure!(
        sample(&text, "kubedns_probe_ok_errors") == Some(0.0),
        "an ok probe has no errors:\n{text}"
    );
    ensure!(text.contains(r#"kubedns_probe_rcodes_total{probe="ok",rcode="NOERROR"}"#));
    ensure!(text.contains(r#"kubedns_probe_consecutive_failures{probe="ok"} 0"#));
    ensure!(
        text.lines()
            .any(|l| l.starts_with(r#"kubedns_probe_last_success_timestamp_seconds{probe="ok"} 1"#)),
        "{text}"
    );

    let healthz = get(sidecar.http, "/healthz").await?;
    ensure!(healthz.status == 200 && healthz.text().starts_with("ok ("));
    let unknown = get(sidecar.http, "/healthcheck/nosuchlabel").await?;
    ensure!(unknown.status == 404, "unknown label: {}", unknown.status);
    stop(sidecar).await
}

/// After one miss and `hits` hits through `cache`, a sidecar's first statistics round reports
/// exactly those numbers and the cache size (a long poll interval keeps its own CHAOS queries,
/// which dnsmasq counts as hits, out of the first round).
async fn check_statistics(cache: SocketAddr, name: &str, hits: u32) -> anyhow::Result<()> {
    for _ in 0..=hits {
        let reply = query_udp(cache, name, RecordType::A).await?;
        ensure!(!reply.answers.is_empty(), "{reply:?}");
    }
    let sidecar = start_sidecar(&[
        format!("--dnsmasq-addr={}", cache.ip()),
        format!("--dnsmasq-port={}", cache.port()),
        "--dnsmasq-poll-interval-ms=600000".into(),
    ])
    .await?;
    let text = wait_metrics(&sidecar, "the first statistics round", |t| {
        sample(t, "kubedns_dnsmasq_max_size").is_some_and(|v| v > 0.0)
    })
    .await?;
    let expect = [
        ("kubedns_dnsmasq_hits", f64::from(hits)),
        ("kubedns_dnsmasq_misses", 1.0),
        ("kubedns_dnsmasq_insertions", 1.0),
        ("kubedns_dnsmasq_evictions", 0.0),
        ("kubedns_dnsmasq_max_size", CACHE_SIZE.parse::<f64>()?),
        ("kubedns_dnsmasq_errors", 0.0),
    ];
    for (name, value) in expect {
        ensure!(
            sample(&text, name) == Some(value),
            "{name} != {value}:\n{text}"
        );
    }
    stop(sidecar).await
}

async fn stop(mut sidecar: Sidecar) -> anyhow::Result<()> {
    sidecar.process.signal(SIGTERM)?;
    let status = sidecar.process.wait_exit(WAIT).await?;
    ensure!(status.success(), "SIGTERM exit: {status:?}");
    Ok(())
}

fn upstream_arg(upstream: &FakeUpstream) -> String {
    format!("--server={}#{}", upstream.addr.ip(), upstream.addr.port())
}

#[tokio::test]
async fn probes_and_statistics_against_a_real_dnsmasq() -> anyhow::Result<()> {
    let upstream = FakeUpstream::start().await?;
    let dnsmasq = start_dnsmasq(&[
        upstream_arg(&upstream),
        format!("--cache-size={CACHE_SIZE}"),
        "--host-record=ok.test,192.0.2.1".into(),
        "--local=/empty.test/".into(),
    ])
    .await?;
    check_statistics(dnsmasq.addr, "cached.example.com.", 6).await?;
    check_probes(dnsmasq.addr, "ok.test", "nothing.empty.test").await
}

#[tokio::test]
async fn probes_and_statistics_against_dns_cache() -> anyhow::Result<()> {
    let upstream = FakeUpstream::start().await?;
    upstream.set_rule(
        "nothing.empty.test",
        Rule::NxDomain {
            soa_ttl: 60,
            minimum: 60,
        },
    );
    let cache = ChildProcess::spawn(
        kube_dns_test_support::workspace_binary("dns-cache")?,
        [
            "-k".to_owned(),
            "-p".into(),
            "0".into(),
            "-a".into(),
            "127.0.0.1".into(),
            "--no-hosts".into(),
            "--no-resolv".into(),
            format!("--cache-size={CACHE_SIZE}"),
            upstream_arg(&upstream),
        ],
        std::iter::empty::<(&str, &str)>(),
    )?;
    let addr = cache.listening_addr("udp", WAIT).await?;
    check_statistics(addr, "cached.example.com.", 6).await?;
    check_probes(addr, "a.example.com", "nothing.empty.test").await
}

#[tokio::test]
async fn legacy_manifest_args_start_and_bad_flags_exit_64() -> anyhow::Result<()> {
    for probe_type in ["A", "SRV"] {
        let sidecar = start_sidecar(&[
            "--v=2".into(),
            "--logtostderr".into(),
            format!("--probe=kubedns,127.0.0.1:10053,kubernetes.default.svc.cluster.local,5,{probe_type}"),
            format!("--probe=dnsmasq,127.0.0.1:53,kubernetes.default.svc.cluster.local,5,{probe_type}"),
        ])
        .await?;
        let waiting = get(sidecar.http, "/healthcheck/kubedns").await?;
        if waiting.status == 503 {
            ensure!(waiting.json()?["IsOk"] == false);
        }
        let text = metrics(&sidecar).await?;
        for name in [
            "kubedns_probe_kubedns_errors",
            "kubedns_probe_dnsmasq_errors",
            "kubedns_probe_kubedns_latency_ms_count",
            "kubedns_dnsmasq_hits",
            "kubedns_dnsmasq_max_size",
        ] {
            ensure!(sample(&text, name).is_some(), "{name} missing:\n{text}");
        }
        stop(sidecar).await?;
    }
    for bad in [
        "--probe=a,b",
        "--probe=kube-dns,127.0.0.1,x",
        "--probe=a,127.0.0.1,x,0",
        "--probe=a,127.0.0.1,x,5,MX",
        "--no-such-flag",
    ] {
        let mut process = ChildProcess::spawn(
            env!("CARGO_BIN_EXE_sidecar"),
            [bad],
            std::iter::empty::<(&str, &str)>(),
        )?;
        let status = process.wait_exit(WAIT).await?;
        ensure!(status.code() == Some(64), "{bad}: {status:?}");
        ensure!(!process.output_text().is_empty(), "{bad}: no message");
    }
    let mut version = ChildProcess::spawn(
        env!("CARGO_BIN_EXE_sidecar"),
        ["--version"],
        std::iter::empty::<(&str, &str)>(),
    )?;
    ensure!(version.wait_exit(WAIT).await?.success());
    ensure!(version.output_text().contains("Kube-DNS "));
    Ok(())
}

/// Issue 12's sidecar row: 150 connections from one client that send up to 390 KB of a header
/// and stall. Memory stays under 24 MiB (the manifest's limit is 32Mi), `/healthcheck/<label>`
/// keeps answering a second client, and the server closes every attacking connection (the 390
/// KB ones at the header limit, the others at the 5 s header timeout).
#[tokio::test]
async fn stalled_http_headers_neither_grow_memory_nor_block_health_checks() -> anyhow::Result<()> {
    let upstream = FakeUpstream::start().await?;
    let sidecar = start_sidecar(&[
        format!("--dnsmasq-port={}", dead_port()?),
        format!("--probe=kubedns,{},a.example.com,1,A", upstream.addr),
    ])
    .await?;
    wait_health(&sidecar, "kubedns", 200).await?;
    let report = kube_dns_test_support::hostile::stalled_header_attack(
        sidecar.process.pid(),
        sidecar.http,
        "/healthcheck/kubedns",
        kube_dns_test_support::hostile::HeaderFlood::MIXED,
        Duration::from_secs(8),
    )
    .await;
    eprintln!("attack: {report:?}");
    report.check(24 * 1024)?;
    let text = metrics(&sidecar).await?;
    let refused = sample(&text, "sidecar_http_refused_per_client_total").unwrap_or(0.0);
    ensure!(refused > 0.0, "no connection refused per client:\n{text}");
    stop(sidecar).await
}
