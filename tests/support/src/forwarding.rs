//! Forwarding scenarios shared by the dns-cache and kube-dns tests (and run against a real
//! dnsmasq 2.90 as the reference): slow upstreams, upstreams slower than the deadline, and every
//! kind of broken reply. Each function sets the rules it needs on the fake upstream and asserts
//! what a client of `server` sees.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

use crate::dns_client::{answer_lines, query_udp_timeout};
use crate::fake_upstream::{BROKEN_ANSWER, Broken, FakeUpstream, Rule};

/// Longer than any deadline the scenarios use.
pub const CLIENT_WAIT: Duration = Duration::from_secs(8);

/// The delays of [`assert_slow_answers`], with the address each name answers.
pub const SLOW_CASES: [(u64, Ipv4Addr); 3] = [
    (300, Ipv4Addr::new(192, 0, 2, 3)),
    (1_000, Ipv4Addr::new(192, 0, 2, 10)),
    (2_500, Ipv4Addr::new(192, 0, 2, 25)),
];

/// A rule answering `ip` after `ms`.
pub fn delayed(ms: u64, ip: Ipv4Addr) -> Rule {
    Rule::Delay(
        Duration::from_millis(ms),
        Box::new(Rule::Answer {
            ips: vec![IpAddr::V4(ip)],
            ttl: 300,
        }),
    )
}

/// Whether the reply carries `A ip`.
pub fn has_a(reply: &Message, ip: impl std::fmt::Display) -> bool {
    answer_lines(reply)
        .iter()
        .any(|l| l.ends_with(&format!(" A {ip}")))
}

/// `slow-<ms>.<suffix>` answers after 300 ms, 1 s and 2.5 s: `server` must return each answer
/// (asked all at once). Returns how long each took.
pub async fn assert_slow_answers(
    server: SocketAddr,
    upstream: &FakeUpstream,
    suffix: &str,
) -> anyhow::Result<Vec<Duration>> {
    let mut asks = tokio::task::JoinSet::new();
    for (ms, ip) in SLOW_CASES {
        let name = format!("slow-{ms}.{suffix}");
        upstream.set_rule(&name, delayed(ms, ip));
        asks.spawn(async move {
            let started = Instant::now();
            let reply = query_udp_timeout(server, &name, RecordType::A, CLIENT_WAIT).await?;
            anyhow::Ok((ms, ip, reply, started.elapsed()))
        });
    }
    let mut took = Vec::new();
    while let Some(joined) = asks.join_next().await {
        let (ms, ip, reply, elapsed) = joined??;
        ensure!(
            reply.metadata.response_code == ResponseCode::NoError && has_a(&reply, ip),
            "{server}: an upstream answering after {ms} ms gave {:?} {:?} after {elapsed:?}",
            reply.metadata.response_code,
            answer_lines(&reply)
        );
        took.push(elapsed);
    }
    Ok(took)
}

/// `count` distinct names each answered after `ms`, asked `parallel` at a time: every one must
/// be answered.
pub async fn assert_many_slow_answers(
    server: SocketAddr,
    upstream: &FakeUpstream,
    suffix: &str,
    ms: u64,
    count: usize,
    parallel: usize,
) -> anyhow::Result<()> {
    let ip = Ipv4Addr::new(192, 0, 2, 30);
    for batch in 0..count.div_ceil(parallel) {
        let mut asks = tokio::task::JoinSet::new();
        for i in batch * parallel..((batch + 1) * parallel).min(count) {
            let name = format!("many-{i}.{suffix}");
            upstream.set_rule(&name, delayed(ms, ip));
            asks.spawn(async move {
                query_udp_timeout(server, &name, RecordType::A, CLIENT_WAIT)
                    .await
                    .with_context(|| name.clone())
                    .map(|reply| (name, reply))
            });
        }
        while let Some(joined) = asks.join_next().await {
            let (name, reply) = joined??;
            ensure!(
                has_a(&reply, ip),
                "{name}: {:?} {:?}",
                reply.metadata.response_code,
                answer_lines(&reply)
            );
        }
    }
    Ok(())
}

/// An upstream that answers after `upstream_ms`, later than `deadline`: SERVFAIL, and not
/// before the deadline.
pub async fn assert_servfail_at_deadline(
    server: SocketAddr,
    upstream: &FakeUpstream,
    name: &str,
    deadline: Duration,
    upstream_ms: u64,
) -> anyhow::Result<()> {
    upstream.set_rule(name, delayed(upstream_ms, Ipv4Addr::new(192, 0, 2, 99)));
    let started = Instant::now();
    let reply = query_udp_timeout(server, name, RecordType::A, CLIENT_WAIT).await?;
    let elapsed = started.elapsed();
    ensure!(
        reply.metadata.response_code == ResponseCode::ServFail,
        "{name}: {:?} {:?} after {elapsed:?}",
        reply.metadata.response_code,
        answer_lines(&reply)
    );
    // A little slack for timer rounding; the point is "not at the first per-try timeout".
    ensure!(
        elapsed + Duration::from_millis(50) >= deadline,
        "SERVFAIL after {elapsed:?}, before the {deadline:?} deadline"
    );
    ensure!(
        elapsed < Duration::from_millis(upstream_ms),
        "SERVFAIL only after {elapsed:?}"
    );
    Ok(())
}

/// Every [`Broken`] kind, one name each (`broken-<n>.<suffix>`), asked at once: each must end in
/// SERVFAIL (the only upstream sends nothing valid), never carry [`BROKEN_ANSWER`], and not be
/// cached: once the upstream answers properly the name resolves at once, asked upstream again.
/// Then an unrelated name still resolves.
pub async fn assert_broken_replies_dropped(
    server: SocketAddr,
    upstream: &FakeUpstream,
    suffix: &str,
) -> anyhow::Result<()> {
    let mut asks = tokio::task::JoinSet::new();
    for (n, kind) in Broken::ALL.into_iter().enumerate() {
        let name = format!("broken-{n}.{suffix}");
        upstream.set_rule(&name, Rule::Broken(kind));
        asks.spawn(async move {
            let reply = query_udp_timeout(server, &name, RecordType::A, CLIENT_WAIT).await?;
            anyhow::Ok((kind, name, reply))
        });
    }
    let mut names = Vec::new();
    while let Some(joined) = asks.join_next().await {
        let (kind, name, reply) = joined??;
        ensure!(
            !has_a(&reply, BROKEN_ANSWER) && !has_a(&reply, "198.51.100.66"),
            "{kind:?} reached the client: {:?}",
            answer_lines(&reply)
        );
        ensure!(
            reply.metadata.response_code == ResponseCode::ServFail,
            "{kind:?}: {:?} {:?}",
            reply.metadata.response_code,
            answer_lines(&reply)
        );
        names.push((kind, name));
    }
    let good = Ipv4Addr::new(192, 0, 2, 77);
    for (kind, name) in names {
        upstream.set_rule(
            &name,
            Rule::Answer {
                ips: vec![IpAddr::V4(good)],
                ttl: 300,
            },
        );
        let before = upstream.queries_for(&name);
        let reply = query_udp_timeout(server, &name, RecordType::A, CLIENT_WAIT).await?;
        if !has_a(&reply, good) {
            bail!(
                "{kind:?}: after the upstream mended, {:?} {:?}",
                reply.metadata.response_code,
                answer_lines(&reply)
            );
        }
        ensure!(
            upstream.queries_for(&name) > before,
            "{kind:?}: answered from a cache"
        );
    }
    let reply = query_udp_timeout(
        server,
        &format!("after-broken.{suffix}"),
        RecordType::A,
        CLIENT_WAIT,
    )
    .await?;
    ensure!(
        reply.metadata.response_code == ResponseCode::NoError && !reply.answers.is_empty(),
        "still answering other names"
    );
    Ok(())
}

/// The value of a metric line `<name>{server="<addr>"}` in a Prometheus text exposition.
pub fn upstream_metric(text: &str, name: &str, server: SocketAddr) -> Option<f64> {
    let prefix = format!("{name}{{server=\"{server}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.trim().parse().ok())
}
