//! dns-cache `--secondary` for the cluster zone, with kube-dns (processes, real sockets) as the
//! primary: every name answered from the copy as kube-dns answers it, changes through NOTIFY
//! and IXFR.

#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;
use kube_dns_test_support::dns_client::{query_tcp, zone_lines};
use kube_dns_test_support::fake_upstream::FakeUpstream;
use kube_dns_test_support::objects::service;
use kube_dns_test_support::process::ChildProcess;
use kube_dns_test_support::{FakeApiServer, fixtures_dir, free_dns_port};

mod common;

use common::{
    CLUSTER_PROBES, TYPES, metric, names_to_ask, same_answers, spawn_cache, spawn_kube_dns,
    summary, wait_metric,
};

const WAIT: Duration = Duration::from_secs(20);

struct Pair {
    api: FakeApiServer,
    kubedns: ChildProcess,
    kubedns_dns: SocketAddr,
    kubedns_http: SocketAddr,
    cache: ChildProcess,
    cache_dns: SocketAddr,
    cache_metrics: SocketAddr,
    _upstream: FakeUpstream,
}

/// kube-dns on the fixture cluster, and dns-cache holding its zone (`--notify` to the cache).
async fn start_pair() -> anyhow::Result<Pair> {
    let api = FakeApiServer::new();
    api.load_yaml_file(fixtures_dir().join("cluster.yaml"))?;
    let (api_addr, _task) = api.serve("127.0.0.1:0".parse()?).await?;
    let upstream = FakeUpstream::start().await?;
    let cache_port = free_dns_port()?;
    let cache_dns = SocketAddr::from(([127, 0, 0, 1], cache_port));
    let kubedns = spawn_kube_dns(api_addr, upstream.addr, cache_dns)?;
    let kubedns_dns = kubedns.listening_addr("tcp", WAIT).await?;
    let kubedns_http = kubedns.listening_addr("http", WAIT).await?;
    let cache = spawn_cache(
        cache_port,
        &[
            format!("--server=/cluster.local/127.0.0.1#{}", kubedns_dns.port()),
            format!("--server={}", upstream.addr.to_string().replace(':', "#")),
            "--secondary=/cluster.local/".into(),
        ],
    )?;
    let cache_metrics = cache.listening_addr("metrics", WAIT).await?;
    let pair = Pair {
        api,
        kubedns,
        kubedns_dns,
        kubedns_http,
        cache,
        cache_dns,
        cache_metrics,
        _upstream: upstream,
    };
    wait_metric(
        pair.cache_metrics,
        "dnscache_secondary_loaded{zone=\"cluster.local\"} 1",
        WAIT,
    )
    .await?;
    Ok(pair)
}

#[tokio::test]
async fn the_cache_answers_every_name_of_the_zone_as_kube_dns_does() -> anyhow::Result<()> {
    let mut pair = start_pair().await?;
    let names = names_to_ask(pair.kubedns_dns, "cluster.local.", &CLUSTER_PROBES).await?;
    let asked = same_answers(
        (pair.kubedns_dns, "kube-dns"),
        (pair.cache_dns, "the cache"),
        &names,
        &TYPES,
    )
    .await?;
    ensure!(asked > 500, "only {asked} questions");
    let answered = metric(
        pair.cache_metrics,
        "dnscache_secondary_answers_total{zone=\"cluster.local\",result=\"answered\"}",
    )
    .await?;
    ensure!(answered > 400, "{answered} answered from the copy");
    // The client's letter case comes back.
    let mixed = "Kubernetes.Default.SVC.Cluster.Local.";
    let reply = query_tcp(pair.cache_dns, mixed, RecordType::A).await?;
    ensure!(
        reply.answers.first().map(|r| r.name.to_ascii()) == Some(mixed.to_owned()),
        "{:?}",
        reply.answers
    );
    // The copy answers without kube-dns.
    pair.kubedns.signal(9)?;
    pair.kubedns.wait_exit(WAIT).await?;
    let reply = query_tcp(
        pair.cache_dns,
        "my-pet.headless.default.svc.cluster.local.",
        RecordType::A,
    )
    .await?;
    ensure!(reply.answers.len() == 2, "{}", summary(&reply));
    let reply = query_tcp(
        pair.cache_dns,
        "gone.default.svc.cluster.local.",
        RecordType::A,
    )
    .await?;
    ensure!(reply.metadata.response_code == hickory_proto::op::ResponseCode::NXDomain);
    pair.cache.signal(15)?;
    Ok(())
}

/// How long until `check` accepts the cache's answer for `name`.
async fn until_cache(
    cache: SocketAddr,
    name: &str,
    rtype: RecordType,
    check: impl Fn(&Message) -> bool,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        if let Ok(reply) = query_tcp(cache, name, rtype).await
            && check(&reply)
        {
            return Ok(started.elapsed());
        }
        if started.elapsed() > WAIT {
            bail!("the cache never gave the expected answer for {name}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn has_a(reply: &Message, ip: &str) -> bool {
    zone_lines(&reply.answers)
        .iter()
        .any(|l| l.ends_with(&format!(" A {ip}")))
}

#[tokio::test]
async fn a_service_created_changed_and_deleted_reaches_the_copy_by_notify_and_ixfr()
-> anyhow::Result<()> {
    let pair = start_pair().await?;
    let name = "cart.shop.svc.cluster.local.";
    // Asked before it exists: NXDOMAIN from the copy.
    let reply = query_tcp(pair.cache_dns, name, RecordType::A).await?;
    ensure!(reply.metadata.response_code == hickory_proto::op::ResponseCode::NXDomain);
    pair.api
        .apply(service("shop", "cart").cluster_ip("10.0.9.9").build());
    let created = until_cache(pair.cache_dns, name, RecordType::A, |r| {
        has_a(r, "10.0.9.9")
    })
    .await?;
    pair.api
        .apply(service("shop", "cart").cluster_ip("10.0.9.10").build());
    let changed = until_cache(pair.cache_dns, name, RecordType::A, |r| {
        has_a(r, "10.0.9.10")
    })
    .await?;
    pair.api.delete("Service", "shop", "cart");
    let deleted = until_cache(pair.cache_dns, name, RecordType::A, |r| {
        r.metadata.response_code == hickory_proto::op::ResponseCode::NXDomain
    })
    .await?;
    // After the changes (applied over the copy's base, not by rebuilding it), every name still
    // answers as kube-dns answers it, the deleted Service's empty names included.
    pair.api.apply(
        service("shop", "till")
            .cluster_ip("10.0.9.11")
            .port(Some("http"), 80, "TCP")
            .build(),
    );
    until_cache(
        pair.cache_dns,
        "till.shop.svc.cluster.local.",
        RecordType::A,
        |r| has_a(r, "10.0.9.11"),
    )
    .await?;
    let mut names = names_to_ask(pair.kubedns_dns, "cluster.local.", &CLUSTER_PROBES).await?;
    names.extend([
        "cart.shop.svc.cluster.local.".to_owned(),
        "_tcp.cart.shop.svc.cluster.local.".to_owned(),
    ]);
    same_answers(
        (pair.kubedns_dns, "kube-dns"),
        (pair.cache_dns, "the cache after the changes"),
        &names,
        &[RecordType::A, RecordType::SRV, RecordType::AAAA],
    )
    .await?;
    // NOTIFY, not the one-minute refresh, brought each change (10 s leaves room for a loaded
    // machine; the counters below show the NOTIFYs and IXFRs).
    for (what, took) in [
        ("created", created),
        ("changed", changed),
        ("deleted", deleted),
    ] {
        ensure!(took < Duration::from_secs(10), "{what} after {took:?}");
    }
    let prefix = "dnscache_secondary_transfers_total{zone=\"cluster.local\",result=";
    ensure!(metric(pair.cache_metrics, &format!("{prefix}\"full\"}}")).await? == 1);
    ensure!(metric(pair.cache_metrics, &format!("{prefix}\"incremental\"}}")).await? >= 3);
    ensure!(metric(pair.cache_metrics, &format!("{prefix}\"notify\"}}")).await? >= 3);
    ensure!(
        metric(
            pair.kubedns_http,
            "kubedns_zone_transfers_total{kind=\"ixfr\",result=\"incremental\"}"
        )
        .await?
            >= 3
    );
    Ok(())
}
