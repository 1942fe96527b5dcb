//! Query logs: dnsmasq's `--log-queries` lines, compared with a real dnsmasq 2.90 asked the same
//! questions over the same upstream, and the JSON form parsed back; sampling and the rate limit
//! bound the lines and count what they leave out.
// Whole-process tests time real processes on the real clocks (see clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use kube_dns_test_support::dns_client::query_udp;
use kube_dns_test_support::dnsmasq::start_dnsmasq;
use kube_dns_test_support::fake_upstream::{FakeUpstream, Rule};
use kube_dns_test_support::http_client;
use kube_dns_test_support::process::ChildProcess;

mod common;

use common::{WAIT, server_arg, start_cache};

/// The messages of a process's query-log lines (`prog[pid]: ` removed), in order.
fn log_messages(process: &ChildProcess) -> Vec<String> {
    process
        .output_text()
        .lines()
        .filter_map(|line| line.split_once("]: ").map(|(_, m)| m.to_owned()))
        .filter(|m| {
            ["query[", "forwarded ", "reply ", "cached ", "config "]
                .iter()
                .any(|p| m.starts_with(p))
        })
        .collect()
}

async fn wait_messages(process: &ChildProcess, count: usize) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let messages = log_messages(process);
        if messages.len() >= count || Instant::now() > deadline {
            return messages;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn upstream() -> anyhow::Result<FakeUpstream> {
    let upstream = FakeUpstream::start().await?;
    upstream.set_rule(
        "pub.example",
        Rule::Answer {
            ips: vec!["93.184.216.34".parse()?, "93.184.216.35".parse()?],
            ttl: 300,
        },
    );
    upstream.set_rule(
        "slow.example",
        Rule::Delay(
            Duration::from_millis(100),
            Box::new(Rule::Answer {
                ips: vec!["2001:4860::1".parse()?],
                ttl: 300,
            }),
        ),
    );
    upstream.set_rule("fail.example", Rule::ServFail);
    Ok(upstream)
}

const QUESTIONS: [(&str, RecordType); 7] = [
    ("pub.example.", RecordType::A),
    ("pub.example.", RecordType::A),
    ("slow.example.", RecordType::AAAA),
    ("slow.example.", RecordType::A),
    ("nx.example.", RecordType::A),
    ("fail.example.", RecordType::A),
    ("ads.example.", RecordType::A),
];

#[tokio::test]
async fn dnsmasq_lines_are_the_lines_dnsmasq_writes() -> anyhow::Result<()> {
    let upstream = upstream().await?;
    let up = format!("{}#{}", upstream.addr.ip(), upstream.addr.port());
    let options = [
        "--log-queries".to_owned(),
        "--address=/ads.example/0.0.0.0".to_owned(),
        format!("--server={up}"),
    ];
    let dnsmasq = start_dnsmasq(&options).await?;
    let mut ours = options.to_vec();
    ours.push("--no-resolv".into());
    let cache = start_cache(&ours).await?;
    for (name, rtype) in QUESTIONS {
        query_udp(dnsmasq.addr, name, rtype).await?;
        query_udp(cache.udp, name, rtype).await?;
    }
    // dnsmasq logs a `forwarded` line per try (it asks again after a SERVFAIL); dns-cache
    // logs the server whose reply was used: repeats in a row are folded.
    let mut theirs = wait_messages(&dnsmasq.process, 21).await;
    theirs.dedup_by(|a, b| a.starts_with("forwarded ") && a == b);
    let ours = wait_messages(&cache.process, theirs.len()).await;
    assert!(theirs.len() >= 21, "dnsmasq logged {theirs:#?}");
    assert_eq!(ours, theirs);
    assert!(
        cache.process.output_text().contains(&format!(
            "dnsmasq[{}]: query[A] pub.example from 127.0.0.1",
            cache.process.pid()
        )),
        "lines carry dnsmasq's prefix, with our PID"
    );
    Ok(())
}

#[tokio::test]
async fn json_lines_carry_every_field() -> anyhow::Result<()> {
    let upstream = upstream().await?;
    let cache = start_cache(&[
        server_arg(&upstream),
        "--no-resolv".into(),
        "--log-queries".into(),
        "--log-format=json".into(),
        "--address=/ads.example/0.0.0.0".into(),
    ])
    .await?;
    for (name, rtype) in QUESTIONS {
        query_udp(cache.udp, name, rtype).await?;
    }
    let deadline = Instant::now() + WAIT;
    let records: Vec<serde_json::Value> = loop {
        let records: Vec<serde_json::Value> = cache
            .process
            .output_text()
            .lines()
            .filter_map(|l| l.find('{').map(|i| &l[i..]))
            .filter_map(|l| serde_json::from_str(l).ok())
            .filter(|v: &serde_json::Value| v["server"] == "dns-cache")
            .collect();
        if records.len() >= QUESTIONS.len() || Instant::now() > deadline {
            break records;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let fields = |r: &serde_json::Value| {
        format!(
            "{} {} {} {} {}",
            r["name"].as_str().unwrap_or("?"),
            r["type"].as_str().unwrap_or("?"),
            r["rcode"].as_str().unwrap_or("?"),
            r["answers"],
            r["source"].as_str().unwrap_or("?"),
        )
    };
    let seen: Vec<String> = records.iter().map(fields).collect();
    assert_eq!(
        seen,
        [
            "pub.example. A NOERROR 2 upstream",
            "pub.example. A NOERROR 2 cache",
            "slow.example. AAAA NOERROR 1 upstream",
            "slow.example. A NOERROR 0 upstream",
            "nx.example. A NXDOMAIN 0 upstream",
            "fail.example. A SERVFAIL 0 upstream",
            "ads.example. A NOERROR 1 config",
        ]
    );
    let first = &records[0];
    assert_eq!(first["upstream"], upstream.addr.to_string());
    assert!(
        first["client"]
            .as_str()
            .is_some_and(|c| c.starts_with("127.0.0.1:"))
    );
    assert!(
        first["time"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z') && t.len() == 24)
    );
    assert!(
        records[2]["latency_us"]
            .as_u64()
            .is_some_and(|us| us >= 100_000),
        "the slow upstream's 100 ms: {}",
        records[2]
    );
    assert!(records[1].get("upstream").is_none());
    Ok(())
}

#[tokio::test]
async fn sampling_and_the_rate_limit_bound_the_lines_and_count_the_rest() -> anyhow::Result<()> {
    let upstream = upstream().await?;
    let cache = start_cache(&[
        server_arg(&upstream),
        "--no-resolv".into(),
        "--log-queries".into(),
        "--log-sample=2".into(),
        "--log-rate=5".into(),
        "--metrics-address=127.0.0.1:0".into(),
    ])
    .await?;
    let metrics = cache.process.listening_addr("metrics", WAIT).await?;
    let started = Instant::now();
    for _ in 0..100 {
        query_udp(cache.udp, "pub.example.", RecordType::A).await?;
    }
    let seconds = started.elapsed().as_secs() + 1;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let written = http_client::metric(metrics, "dnscache_query_log_lines_total").await?;
    let over =
        http_client::metric(metrics, "dnscache_query_log_dropped_total{reason=\"rate\"}").await?;
    // 50 sampled, at most 5 a second written.
    assert!(
        written >= 1.0 && written <= 5.0 * seconds as f64,
        "{written} in {seconds} s"
    );
    assert_eq!(written + over, 50.0);
    let lines = log_messages(&cache.process)
        .iter()
        .filter(|m| m.starts_with("query["))
        .count();
    assert_eq!(lines as f64, written);
    Ok(())
}
