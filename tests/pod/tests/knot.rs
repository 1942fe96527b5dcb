//! Zone transfers between our servers and a real Knot DNS 3.2 (Debian `knot`): Knot as a
//! secondary of kube-dns (AXFR, then NOTIFY and IXFR) answering the cluster's names as kube-dns
//! does, and dns-cache as a secondary of a Knot primary (AXFR, then Knot's NOTIFY over TCP and
//! IXFR) answering the zone's names as Knot does.

#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use kube_dns_test_support::dns_client::{query_tcp, zone_lines};
use kube_dns_test_support::fake_upstream::FakeUpstream;
use kube_dns_test_support::knot::{KnotRole, start_knot};
use kube_dns_test_support::objects::service;
use kube_dns_test_support::{FakeApiServer, fixtures_dir, free_dns_port};

mod common;

use common::{
    CLUSTER_PROBES, TYPES, metric, names_to_ask, same_answers, spawn_cache, spawn_kube_dns,
    wait_metric,
};

const WAIT: Duration = Duration::from_secs(30);

async fn serial(server: SocketAddr, zone: &str) -> Option<u32> {
    let reply = query_tcp(server, zone, RecordType::SOA).await.ok()?;
    reply.answers.iter().find_map(|r| match &r.data {
        hickory_proto::rr::RData::SOA(soa) => Some(soa.serial),
        _ => None,
    })
}

async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) -> anyhow::Result<Duration> {
    let started = Instant::now();
    while !check().await {
        if started.elapsed() > WAIT {
            bail!("never: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(started.elapsed())
}

fn a_records(reply: &Message) -> Vec<String> {
    zone_lines(&reply.answers)
}

#[tokio::test]
async fn knot_mirrors_kube_dns_and_answers_its_names_as_kube_dns_does() -> anyhow::Result<()> {
    let api = FakeApiServer::new();
    api.load_yaml_file(fixtures_dir().join("cluster.yaml"))?;
    let (api_addr, _task) = api.serve("127.0.0.1:0".parse()?).await?;
    let upstream = FakeUpstream::start().await?;
    let knot_port = free_dns_port()?;
    let kubedns = spawn_kube_dns(
        api_addr,
        upstream.addr,
        SocketAddr::from(([127, 0, 0, 1], knot_port)),
    )?;
    let kubedns_dns = kubedns.listening_addr("tcp", WAIT).await?;
    let kubedns_http = kubedns.listening_addr("http", WAIT).await?;
    let zone = "cluster.local.";
    until("kube-dns synced", async || {
        serial(kubedns_dns, zone).await.is_some()
    })
    .await?;
    let knot = start_knot(
        zone,
        KnotRole::Secondary {
            primary: kubedns_dns,
        },
        knot_port,
    )
    .await?;
    until("Knot has kube-dns's serial", async || {
        serial(knot.addr, zone).await == serial(kubedns_dns, zone).await
    })
    .await?;
    // Every name, except what the zone hands back to kube-dns: names under the `pod.`
    // delegation (Knot refers them) and `ext`, whose CNAME leaves the zone (kube-dns follows
    // it upstream, Knot, authoritative only, does not).
    let names = names_to_ask(kubedns_dns, zone, &CLUSTER_PROBES).await?;
    let kept = names
        .iter()
        .filter(|n| !n.ends_with("pod.cluster.local.") && !n.contains("ext.default."));
    let asked = same_answers((kubedns_dns, "kube-dns"), (knot.addr, "Knot"), kept, &TYPES).await?;
    ensure!(asked > 400, "only {asked} questions");
    let ext = query_tcp(
        knot.addr,
        "ext.default.svc.cluster.local.",
        RecordType::CNAME,
    )
    .await?;
    ensure!(
        a_records(&ext)
            == vec!["ext.default.svc.cluster.local. 30 IN CNAME www.example.com.".to_owned()]
    );

    // A change reaches Knot by NOTIFY and IXFR.
    let before = serial(knot.addr, zone).await.unwrap_or(0);
    api.apply(service("shop", "cart").cluster_ip("10.0.9.9").build());
    until("Knot answers the new Service", async || {
        query_tcp(knot.addr, "cart.shop.svc.cluster.local.", RecordType::A)
            .await
            .is_ok_and(|r| {
                a_records(&r) == vec!["cart.shop.svc.cluster.local. 30 IN A 10.0.9.9".to_owned()]
            })
    })
    .await?;
    // Brought by a NOTIFY of a newer serial (not Knot's own refresh timer), then an IXFR.
    let log = knot.process.output_text();
    let notified_newer = log
        .lines()
        .filter(|l| l.contains("notify, incoming"))
        .filter_map(|l| {
            let after = l.split("serial ").nth(1)?;
            let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u32>().ok()
        })
        .any(|s| s > before);
    ensure!(
        notified_newer && log.contains("IXFR, incoming"),
        "no NOTIFY past serial {before}, or no IXFR, in Knot's log:\n{log}"
    );
    ensure!(
        metric(
            kubedns_http,
            "kubedns_zone_transfers_total{kind=\"ixfr\",result=\"incremental\"}"
        )
        .await?
            >= 1
    );
    Ok(())
}

const ZONE: &str = "example.test.";

fn zone_file(serial: u32, extra: &str) -> String {
    format!(
        "$ORIGIN example.test.
$TTL 300
@ 3600 IN SOA ns.example.test. hostmaster.example.test. {serial} 3600 600 86400 60
@ IN NS ns.example.test.
@ IN MX 10 mail.example.test.
ns IN A 192.0.2.53
mail IN A 192.0.2.25
www IN A 192.0.2.1
www IN A 192.0.2.2
www IN AAAA 2001:db8::1
alias IN CNAME www.example.test.
chain IN CNAME alias.example.test.
_http._tcp.www IN SRV 10 50 80 www.example.test.
txt IN TXT \"hello world\"
x.deep IN A 192.0.2.9
{extra}
"
    )
}

#[tokio::test]
async fn dns_cache_mirrors_a_knot_primary_and_answers_its_names_as_knot_does() -> anyhow::Result<()>
{
    let cache_port = free_dns_port()?;
    let cache_dns = SocketAddr::from(([127, 0, 0, 1], cache_port));
    let knot_port = free_dns_port()?;
    let knot = start_knot(
        ZONE,
        KnotRole::Primary {
            zone_file: zone_file(1, ""),
            notify: Some(cache_dns),
        },
        knot_port,
    )
    .await?;
    let cache = spawn_cache(
        cache_port,
        &[format!("--secondary=/example.test/127.0.0.1#{knot_port}")],
    )?;
    let metrics = cache.listening_addr("metrics", WAIT).await?;
    wait_metric(
        metrics,
        "dnscache_secondary_loaded{zone=\"example.test\"} 1",
        WAIT,
    )
    .await?;
    let names = names_to_ask(
        knot.addr,
        ZONE,
        &["deep.example.test.", "nope.deep.example.test."],
    )
    .await?;
    let asked = same_answers(
        (knot.addr, "Knot"),
        (cache_dns, "dns-cache"),
        &names,
        &TYPES,
    )
    .await?;
    ensure!(asked > 150, "only {asked} questions");

    // Knot's reload: a NOTIFY over TCP, then an IXFR.
    knot.reload(&zone_file(2, "new IN A 192.0.2.77"))?;
    until("dns-cache answers the new name", async || {
        query_tcp(cache_dns, "new.example.test.", RecordType::A)
            .await
            .is_ok_and(|r| {
                r.metadata.response_code == ResponseCode::NoError && r.answers.len() == 1
            })
    })
    .await?;
    let prefix = "dnscache_secondary_transfers_total{zone=\"example.test\",result=";
    ensure!(metric(metrics, &format!("{prefix}\"incremental\"}}")).await? >= 1);
    ensure!(metric(metrics, &format!("{prefix}\"notify\"}}")).await? >= 1);
    ensure!(metric(metrics, &format!("{prefix}\"full\"}}")).await? == 1);
    Ok(())
}
