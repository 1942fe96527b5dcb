//! In-process tests: `dns_cache::run` on 127.0.0.1:0 in front of a fake upstream, both in one
//! runtime with tokio's clock paused, so time-driven behaviour (TTLs counting down, entries
//! expiring) is asserted exactly instead of with sleeps. Queries go over TCP, which `run`
//! serves on this runtime (the UDP workers are threads with event loops of their own).

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;
use kube_dns_test_support::dns_client::query_tcp;
use kube_dns_test_support::fake_upstream::{FakeUpstream, Rule};
use kube_dns_test_support::forwarding::has_a;
use tokio_util::sync::CancellationToken;

struct Cache {
    tcp: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), dns_cache::RunError>>,
}

async fn start(upstream: &FakeUpstream, extra: &[&str]) -> anyhow::Result<Cache> {
    let mut args = vec![
        "-k".to_owned(),
        "--port=0".into(),
        "--listen-address=127.0.0.1".into(),
        "--no-hosts".into(),
        "--no-resolv".into(),
        format!("--server={}#{}", upstream.addr.ip(), upstream.addr.port()),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let config = dns_cache::CacheConfig::parse_args(args)?;
    let tcp = dns_transport::bind_tcp("127.0.0.1:0".parse()?)?;
    let addr = tcp.local_addr()?;
    let listeners = dns_cache::Listeners {
        udp: Vec::new(),
        tcp: vec![tcp],
        metrics: None,
        node: None,
    };
    let shutdown = CancellationToken::new();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(dns_cache::run(
        config,
        listeners,
        shutdown.clone(),
        ready_tx,
    ));
    ready_rx.await?;
    Ok(Cache {
        tcp: addr,
        shutdown,
        task,
    })
}

fn ttl(reply: &Message) -> Option<u32> {
    reply.answers.first().map(|record| record.ttl)
}

#[tokio::test(start_paused = true)]
async fn cached_ttls_count_down_and_expire_on_the_clock() -> anyhow::Result<()> {
    let upstream = FakeUpstream::start().await?;
    let name = "ttl.example.com";
    upstream.set_rule(
        name,
        Rule::Answer {
            ips: vec!["192.0.2.60".parse()?],
            ttl: 60,
        },
    );
    let cache = start(&upstream, &["--cache-size=100"]).await?;
    let ask = || query_tcp(cache.tcp, "ttl.example.com.", RecordType::A);

    let first = ask().await?;
    assert!(has_a(&first, "192.0.2.60"), "{first:?}");
    assert_eq!(ttl(&first), Some(60));
    assert_eq!(upstream.queries_for(name), 1);

    tokio::time::sleep(Duration::from_secs(25)).await;
    let cached = ask().await?;
    assert_eq!(ttl(&cached), Some(35), "25 s later");
    assert_eq!(upstream.queries_for(name), 1, "answered from the cache");

    tokio::time::sleep(Duration::from_secs(34)).await;
    assert_eq!(ttl(&ask().await?), Some(1), "59 s later");
    assert_eq!(upstream.queries_for(name), 1);

    tokio::time::sleep(Duration::from_secs(2)).await;
    let refreshed = ask().await?;
    assert_eq!(
        ttl(&refreshed),
        Some(60),
        "expired at 60 s and fetched again"
    );
    assert_eq!(upstream.queries_for(name), 2);

    cache.shutdown.cancel();
    cache.task.await??;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn the_max_cache_ttl_caps_what_is_kept() -> anyhow::Result<()> {
    let upstream = FakeUpstream::start().await?;
    let name = "capped.example.com";
    upstream.set_rule(
        name,
        Rule::Answer {
            ips: vec!["192.0.2.61".parse()?],
            ttl: 3600,
        },
    );
    let cache = start(&upstream, &["--cache-size=100", "--max-cache-ttl=10"]).await?;
    let ask = || query_tcp(cache.tcp, "capped.example.com.", RecordType::A);
    // The forwarded reply passes the upstream's TTL on, as dnsmasq does; the cache keeps it
    // for 10 s.
    assert_eq!(ttl(&ask().await?), Some(3600));
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert_eq!(ttl(&ask().await?), Some(1), "cached for 10 s, 9 s ago");
    assert_eq!(upstream.queries_for(name), 1, "still cached at 9 s");
    tokio::time::sleep(Duration::from_secs(2)).await;
    ask().await?;
    assert_eq!(upstream.queries_for(name), 2, "gone at 11 s");
    cache.shutdown.cancel();
    cache.task.await??;
    Ok(())
}
