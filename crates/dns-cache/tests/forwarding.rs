//! Forwarding under slow, silent and broken upstreams: the real `dns-cache` binary with the
//! legacy manifest's flags, next to a real dnsmasq 2.90 run through the same slow cases.
// Whole-process tests time real processes on the real clocks (see clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::ensure;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{DNSClass, RecordType};
use kube_dns_test_support::dns_client::{query_message, query_udp_timeout, query_udp_with};
use kube_dns_test_support::dnsmasq::start_dnsmasq;
use kube_dns_test_support::fake_upstream::{Broken, FakeUpstream, Rule};
use kube_dns_test_support::forwarding::{
    CLIENT_WAIT, assert_broken_replies_dropped, assert_many_slow_answers,
    assert_servfail_at_deadline, assert_slow_answers, delayed, has_a, upstream_metric,
};
use kube_dns_test_support::http_client;
use kube_dns_test_support::process::ChildProcess;

mod common;

use common::{WAIT, server_arg};

struct Cache {
    _process: ChildProcess,
    udp: SocketAddr,
    metrics: SocketAddr,
}

/// dns-cache with the legacy manifest's cache flags, the upstreams given and `extra`.
async fn start_cache(upstreams: &[&FakeUpstream], extra: &[&str]) -> anyhow::Result<Cache> {
    let mut args: Vec<String> = [
        "--cache-size=1000",
        "--no-negcache",
        "--log-facility=-",
        "--no-resolv",
        "--metrics-address=127.0.0.1:0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(upstreams.iter().map(|u| server_arg(u)));
    args.extend(extra.iter().map(|s| s.to_string()));
    let cache = common::start_cache(&args).await?;
    let metrics = cache.process.listening_addr("metrics", WAIT).await?;
    Ok(Cache {
        _process: cache.process,
        udp: cache.udp,
        metrics,
    })
}

async fn metrics(cache: &Cache) -> anyhow::Result<String> {
    Ok(http_client::get(cache.metrics, "/metrics").await?.text())
}

/// `servers.bind` as (server, queries, failed).
async fn servers_bind(server: SocketAddr) -> anyhow::Result<Vec<(String, u64, u64)>> {
    let mut msg = query_message("servers.bind.", RecordType::TXT)?;
    msg.queries[0].set_query_class(DNSClass::CH);
    let reply = query_udp_with(server, msg).await?;
    let mut out = Vec::new();
    for record in &reply.answers {
        if let hickory_proto::rr::RData::TXT(txt) = &record.data {
            for s in txt.txt_data.iter() {
                let text = String::from_utf8_lossy(s).to_string();
                let fields: Vec<&str> = text.split(' ').collect();
                ensure!(fields.len() == 3, "servers.bind string {text:?}");
                out.push((fields[0].to_owned(), fields[1].parse()?, fields[2].parse()?));
            }
        }
    }
    Ok(out)
}

#[tokio::test]
async fn slow_upstreams_are_waited_for_as_dnsmasq_does() -> anyhow::Result<()> {
    let upstream = FakeUpstream::start().await?;
    let ours = start_cache(&[&upstream], &[]).await?;
    let dnsmasq = start_dnsmasq(&[
        server_arg(&upstream).as_str(),
        "--cache-size=1000",
        "--no-negcache",
    ])
    .await?;
    // The reference first: a real dnsmasq answers each.
    let (theirs, mine) = tokio::join!(
        assert_slow_answers(dnsmasq.addr, &upstream, "dnsmasq.example.com"),
        assert_slow_answers(ours.udp, &upstream, "ours.example.com"),
    );
    theirs?;
    let took = mine?;
    // Answered when the upstream answered, not at a retry or the deadline.
    ensure!(
        took.iter().all(|t| *t < Duration::from_millis(3_500)),
        "{took:?}"
    );
    // Fifty more, ten at a time.
    assert_many_slow_answers(ours.udp, &upstream, "example.com", 300, 50, 10).await?;
    let bind = servers_bind(ours.udp).await?;
    ensure!(bind.len() == 1 && bind[0].2 == 0, "servers.bind {bind:?}");
    ensure!(bind[0].1 >= 53, "every query was sent: {bind:?}");
    let text = metrics(&ours).await?;
    let metric = |name| upstream_metric(&text, name, upstream.addr);
    ensure!(metric("dnscache_upstream_up") == Some(1.0), "{text}");
    ensure!(
        metric("dnscache_upstream_failures_total") == Some(0.0),
        "{text}"
    );
    ensure!(
        metric("dnscache_upstream_answered_total").unwrap_or(0.0) >= 53.0,
        "{text}"
    );
    ensure!(
        metric("dnscache_upstream_late_total").unwrap_or(0.0) >= 1.0,
        "the 2.5 s answer came after a retry: {text}"
    );
    Ok(())
}

#[tokio::test]
async fn a_silent_server_is_marked_down_and_a_slow_one_is_not() -> anyhow::Result<()> {
    let fast_ip = Ipv4Addr::new(192, 0, 2, 1);
    let slow = FakeUpstream::start().await?;
    slow.set_default(delayed(1_000, Ipv4Addr::new(192, 0, 2, 2)));
    let silent = FakeUpstream::start().await?;
    silent.set_default(Rule::Drop);
    let fast_a = FakeUpstream::start().await?;
    let fast_b = FakeUpstream::start().await?;
    for fast in [&fast_a, &fast_b] {
        fast.set_default(Rule::Answer {
            ips: vec![IpAddr::V4(fast_ip)],
            ttl: 300,
        });
    }
    let flags = [
        "--strict-order",
        "--upstream-timeout=300",
        "--forward-deadline=2000",
    ];
    let behind_slow = start_cache(&[&slow, &fast_a], &flags).await?;
    let behind_silent = start_cache(&[&silent, &fast_b], &flags).await?;
    for i in 0..4 {
        for cache in [&behind_slow, &behind_silent] {
            let started = Instant::now();
            let reply = query_udp_timeout(
                cache.udp,
                &format!("q{i}.example.com."),
                RecordType::A,
                CLIENT_WAIT,
            )
            .await?;
            ensure!(has_a(&reply, fast_ip), "query {i}: {reply:?}");
            ensure!(
                started.elapsed() < Duration::from_millis(1_000),
                "the fast answer, after {:?}",
                started.elapsed()
            );
        }
    }
    // Past the last query's deadline, every try has been heard or given up on.
    tokio::time::sleep(Duration::from_millis(2_300)).await;
    let text = metrics(&behind_slow).await?;
    ensure!(
        upstream_metric(&text, "dnscache_upstream_up", slow.addr) == Some(1.0),
        "slow is not down: {text}"
    );
    ensure!(
        upstream_metric(&text, "dnscache_upstream_failures_total", slow.addr) == Some(0.0),
        "{text}"
    );
    ensure!(
        upstream_metric(&text, "dnscache_upstream_late_total", slow.addr).unwrap_or(0.0) >= 3.0,
        "{text}"
    );
    let text = metrics(&behind_silent).await?;
    ensure!(
        upstream_metric(&text, "dnscache_upstream_up", silent.addr) == Some(0.0),
        "silent is down: {text}"
    );
    ensure!(
        upstream_metric(&text, "dnscache_upstream_failures_total", silent.addr).unwrap_or(0.0)
            >= 3.0,
        "{text}"
    );
    // Down: the next query goes straight to the fast server.
    let before = silent.queries();
    let started = Instant::now();
    let reply = query_udp_timeout(
        behind_silent.udp,
        "after.example.com.",
        RecordType::A,
        CLIENT_WAIT,
    )
    .await?;
    ensure!(has_a(&reply, fast_ip));
    ensure!(
        started.elapsed() < Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    ensure!(silent.queries() == before, "a down server is skipped");
    let bind = servers_bind(behind_silent.udp).await?;
    ensure!(
        bind.iter().any(|(s, _, failed)| s
            == &format!("{}#{}", silent.addr.ip(), silent.addr.port())
            && *failed >= 3),
        "servers.bind {bind:?}"
    );
    Ok(())
}

#[tokio::test]
async fn an_upstream_slower_than_the_deadline_gets_servfail_at_the_deadline() -> anyhow::Result<()>
{
    let upstream = FakeUpstream::start().await?;
    let cache = start_cache(&[&upstream], &["--forward-deadline=1500"]).await?;
    assert_servfail_at_deadline(
        cache.udp,
        &upstream,
        "too-slow.example.com.",
        Duration::from_millis(1_500),
        3_500,
    )
    .await?;
    // The default deadline is 4 s: a 3.5 s upstream is still answered.
    let patient = start_cache(&[&upstream], &[]).await?;
    upstream.set_rule(
        "patient.example.com",
        delayed(3_500, Ipv4Addr::new(192, 0, 2, 35)),
    );
    let reply = query_udp_timeout(
        patient.udp,
        "patient.example.com.",
        RecordType::A,
        CLIENT_WAIT,
    )
    .await?;
    ensure!(has_a(&reply, "192.0.2.35"), "{reply:?}");
    Ok(())
}

#[tokio::test]
async fn broken_replies_are_never_cached_or_relayed() -> anyhow::Result<()> {
    let upstream = FakeUpstream::start().await?;
    let cache = start_cache(&[&upstream], &["--forward-deadline=1000"]).await?;
    assert_broken_replies_dropped(cache.udp, &upstream, "example.com").await?;
    let text = metrics(&cache).await?;
    ensure!(
        upstream_metric(&text, "dnscache_upstream_broken_total", upstream.addr).unwrap_or(0.0)
            >= Broken::ALL.len() as f64,
        "{text}"
    );
    Ok(())
}

#[tokio::test]
async fn a_broken_reply_from_one_server_gives_way_to_another_servers_answer() -> anyhow::Result<()>
{
    let broken = FakeUpstream::start().await?;
    let good = FakeUpstream::start().await?;
    let cache = start_cache(
        &[&broken, &good],
        &["--strict-order", "--upstream-timeout=300"],
    )
    .await?;
    let mut asks = tokio::task::JoinSet::new();
    for (n, kind) in Broken::ALL.into_iter().enumerate() {
        let name = format!("mixed-{n}.example.com.");
        broken.set_rule(&name, Rule::Broken(kind));
        let server = cache.udp;
        asks.spawn(async move {
            let reply = query_udp_timeout(server, &name, RecordType::A, CLIENT_WAIT).await?;
            anyhow::Ok((kind, reply))
        });
    }
    while let Some(joined) = asks.join_next().await {
        let (kind, reply) = joined??;
        ensure!(
            reply.metadata.response_code == ResponseCode::NoError
                && has_a(
                    &reply,
                    kube_dns_test_support::fake_upstream::UPSTREAM_ANSWER
                ),
            "{kind:?}: {reply:?}"
        );
        ensure!(
            !has_a(&reply, kube_dns_test_support::fake_upstream::BROKEN_ANSWER),
            "{kind:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_lost_packet_costs_one_retry_and_clients_get_our_edns() -> anyhow::Result<()> {
    let upstream = FakeUpstream::start().await?;
    upstream.set_rule(
        "lossy.example.com",
        Rule::DropFirst(
            1,
            Box::new(Rule::Answer {
                ips: vec![IpAddr::from([192, 0, 2, 44])],
                ttl: 60,
            }),
        ),
    );
    let cache = start_cache(&[&upstream], &["--upstream-timeout=300"]).await?;
    let started = Instant::now();
    let mut msg = query_message("lossy.example.com.", RecordType::A)?;
    let mut edns = hickory_proto::op::Edns::new();
    edns.set_max_payload(4096);
    msg.set_edns(edns);
    let reply = query_udp_with(cache.udp, msg).await?;
    ensure!(has_a(&reply, "192.0.2.44"), "{reply:?}");
    ensure!(
        started.elapsed() < Duration::from_millis(1_500),
        "{:?}",
        started.elapsed()
    );
    ensure!(upstream.queries_for("lossy.example.com") == 2);
    let edns = reply
        .edns
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no OPT"))?;
    ensure!(
        edns.version() == 0 && edns.max_payload() == 1232,
        "{edns:?}"
    );
    Ok(())
}
