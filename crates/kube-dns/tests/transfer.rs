//! kube-dns as a primary: AXFR and IXFR of the cluster zone asked with `dig` over real sockets,
//! NOTIFY caught by a UDP listener, the journal's bound, and the access list.

#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use hickory_proto::rr::RecordType;
use kube_dns::cli::{Cli, MetricsEnv};
use kube_dns::{Config, Listeners};
use kube_dns_test_support::dns_client::{dig, query_tcp};
use kube_dns_test_support::objects::{endpoint, endpoint_slice, service};
use kube_dns_test_support::{FakeApiServer, fixtures_dir, http_client};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);

struct Primary {
    dns: SocketAddr,
    http: SocketAddr,
    api: FakeApiServer,
    _shutdown: tokio_util::sync::DropGuard,
}

async fn start(extra: &[String]) -> anyhow::Result<Primary> {
    let api = FakeApiServer::new();
    api.load_yaml_file(fixtures_dir().join("cluster.yaml"))?;
    let (api_addr, _task) = api.serve("127.0.0.1:0".parse()?).await?;
    let mut args = vec![
        "kube-dns".to_owned(),
        format!("--kube-master-url=http://{api_addr}"),
        "--dns-bind-address=127.0.0.1".into(),
        "--dns-port=0".into(),
        "--healthz-bind-address=127.0.0.1".into(),
        "--healthz-port=0".into(),
        "--dns-workers=1".into(),
        "--lameduck=0s".into(),
    ];
    args.extend(extra.iter().cloned());
    let config = Config::from_cli(&Cli::parse_args(args)?, MetricsEnv::default())?;
    let listeners = Listeners::bind(&config.listen)?;
    let dns = listeners.tcp.local_addr()?;
    let http = listeners.http.local_addr()?;
    let client = kube_dns::api_client(&config.api).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(kube_dns::run(config, listeners, client, shutdown.clone()));
    let deadline = tokio::time::Instant::now() + WAIT;
    while http_client::get(http, "/readiness").await?.status != 200 {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "kube-dns never ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Primary {
        dns,
        http,
        api,
        _shutdown: shutdown.drop_guard(),
    })
}

/// dig's records, one per line with single spaces, the serial replaced by `SERIAL` (and
/// `OLD` for `old`) so the text does not depend on the clock.
async fn transfer(server: SocketAddr, kind: &str, old: Option<u32>) -> anyhow::Result<Vec<String>> {
    let out = dig(server, &["cluster.local.", kind, "+noall", "+answer"]).await?;
    let current = serial(server).await?;
    Ok(out
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with(';'))
        .map(|l| {
            let line = l.split_whitespace().collect::<Vec<_>>().join(" ");
            let line = line.replace(&format!(" {current} "), " SERIAL ");
            match old {
                Some(old) => line.replace(&format!(" {old} "), " OLD "),
                None => line,
            }
        })
        .collect())
}

async fn serial(server: SocketAddr) -> anyhow::Result<u32> {
    let reply = query_tcp(server, "cluster.local.", RecordType::SOA).await?;
    match reply.answers.first().map(|r| &r.data) {
        Some(hickory_proto::rr::RData::SOA(soa)) => Ok(soa.serial),
        other => bail!("no SOA: {other:?}"),
    }
}

/// Waits until the zone's serial is past `old`, and returns it.
async fn next_serial(server: SocketAddr, old: u32) -> anyhow::Result<u32> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let now = serial(server).await?;
        if now != old {
            return Ok(now);
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the serial stayed {old}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const SOA: &str = "cluster.local. 30 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. SERIAL 28800 7200 604800 30";

/// Every record of `tests/fixtures/cluster.yaml`'s zone, as `answer_tables.rs` states them.
const ZONE: &str = "
cluster.local. 30 IN NS ns.dns.cluster.local.
dns-version.cluster.local. 28800 IN TXT \"1.1.0\"
pod.cluster.local. 30 IN NS ns.dns.cluster.local.
alias.other.svc.cluster.local. 30 IN CNAME kubernetes.default.svc.cluster.local.
dual.default.svc.cluster.local. 30 IN A 10.0.0.2
dual.default.svc.cluster.local. 30 IN AAAA fd00::2
dual.default.svc.cluster.local. 30 IN SRV 10 33 53 dual.default.svc.cluster.local.
dual.default.svc.cluster.local. 30 IN SRV 10 33 80 dual.default.svc.cluster.local.
dual.default.svc.cluster.local. 30 IN SRV 10 33 9000 dual.default.svc.cluster.local.
_dns._udp.dual.default.svc.cluster.local. 30 IN SRV 10 100 53 dual.default.svc.cluster.local.
_http._tcp.dual.default.svc.cluster.local. 30 IN SRV 10 100 80 dual.default.svc.cluster.local.
ext.default.svc.cluster.local. 30 IN CNAME www.example.com.
headless.default.svc.cluster.local. 30 IN A 10.3.0.2
headless.default.svc.cluster.local. 30 IN A 10.3.0.100
headless.default.svc.cluster.local. 30 IN A 10.3.0.101
headless.default.svc.cluster.local. 30 IN SRV 10 50 443 10-3-0-2.headless.default.svc.cluster.local.
headless.default.svc.cluster.local. 30 IN SRV 10 50 443 my-pet.headless.default.svc.cluster.local.
10-3-0-2.headless.default.svc.cluster.local. 30 IN A 10.3.0.2
_https._tcp.headless.default.svc.cluster.local. 30 IN SRV 10 50 443 10-3-0-2.headless.default.svc.cluster.local.
_https._tcp.headless.default.svc.cluster.local. 30 IN SRV 10 50 443 my-pet.headless.default.svc.cluster.local.
my-pet.headless.default.svc.cluster.local. 30 IN A 10.3.0.100
my-pet.headless.default.svc.cluster.local. 30 IN A 10.3.0.101
kubernetes.default.svc.cluster.local. 30 IN A 10.0.0.1
kubernetes.default.svc.cluster.local. 30 IN SRV 10 100 443 kubernetes.default.svc.cluster.local.
_https._tcp.kubernetes.default.svc.cluster.local. 30 IN SRV 10 100 443 kubernetes.default.svc.cluster.local.
v6only.default.svc.cluster.local. 30 IN AAAA fd00::6
web-0.web6.default.svc.cluster.local. 30 IN AAAA fd00::10
fd00--11.web6.default.svc.cluster.local. 30 IN AAAA fd00::11
";

/// How many records the fixture's zone has, both SOAs included.
const ZONE_RECORDS: usize = 120;

fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| l.replace("{SOA}", SOA))
        .collect()
}

#[tokio::test]
async fn axfr_holds_every_record_kube_dns_serves() -> anyhow::Result<()> {
    let primary = start(&[]).await?;
    let zone = transfer(primary.dns, "AXFR", None).await?;
    ensure!(zone.first().map(String::as_str) == Some(SOA), "{zone:#?}");
    ensure!(zone.last().map(String::as_str) == Some(SOA), "{zone:#?}");
    for line in lines(ZONE) {
        ensure!(
            zone.contains(&line),
            "{line:?} missing from\n{}",
            zone.join("\n")
        );
    }
    ensure!(
        zone.len() == ZONE_RECORDS,
        "{} records:\n{}",
        zone.len(),
        zone.join("\n")
    );
    // Each record of the transfer is what kube-dns answers for its name and type.
    for line in &zone[1..zone.len() - 1] {
        let fields: Vec<&str> = line.split(' ').collect();
        let (name, rtype) = (fields[0], fields[3]);
        if name == "pod.cluster.local." {
            continue;
        }
        let asked = dig(primary.dns, &[name, rtype, "+noall", "+answer"]).await?;
        let current = serial(primary.dns).await?;
        let answered: Vec<String> = asked
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .map(|l| l.replace(&format!(" {current} "), " SERIAL "))
            .collect();
        ensure!(
            answered.contains(line),
            "{line:?} is transferred but kube-dns answers {answered:?}"
        );
    }
    Ok(())
}

/// A UDP listener that answers NOTIFY as a secondary does and reports each serial announced.
async fn notify_listener() -> anyhow::Result<(SocketAddr, tokio::sync::mpsc::UnboundedReceiver<u32>)>
{
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let addr = socket.local_addr()?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok((len, from)) = socket.recv_from(&mut buf).await {
            let Ok(message) = hickory_proto::op::Message::from_vec(&buf[..len]) else {
                continue;
            };
            let serial = message.answers.iter().find_map(|r| match &r.data {
                hickory_proto::rr::RData::SOA(soa) => Some(soa.serial),
                _ => None,
            });
            let mut reply = buf[..len].to_vec();
            reply[2] |= 0x80;
            reply[7] = 0; // no answer records in the reply
            // The question's name is uncompressed labels up to a zero byte, then type and class.
            let mut at = 12;
            while at < len && buf[at] != 0 {
                at += 1 + usize::from(buf[at]);
            }
            reply.truncate((at + 5).min(len));
            let _ = socket.send_to(&reply, from).await;
            if let Some(serial) = serial
                && tx.send(serial).is_err()
            {
                return;
            }
        }
    });
    Ok((addr, rx))
}

async fn notified(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<u32>,
    past: u32,
) -> anyhow::Result<u32> {
    loop {
        let serial = tokio::time::timeout(WAIT, rx.recv())
            .await
            .context("no NOTIFY")?
            .context("listener gone")?;
        if serial != past {
            return Ok(serial);
        }
    }
}

#[tokio::test]
async fn ixfr_sends_each_change_and_notify_announces_it() -> anyhow::Result<()> {
    let (listener, mut notifies) = notify_listener().await?;
    let primary = start(&[format!("--notify={listener}")]).await?;
    let first = serial(primary.dns).await?;
    // Up to date: the SOA alone.
    let current = transfer(primary.dns, &format!("IXFR={first}"), None).await?;
    ensure!(current == vec![SOA.to_owned()], "{current:?}");

    // Created.
    primary.api.apply(
        service("shop", "cart")
            .cluster_ip("10.0.9.9")
            .port(Some("http"), 8080, "TCP")
            .build(),
    );
    let second = notified(&mut notifies, first).await?;
    ensure!(next_serial(primary.dns, first).await? == second);
    let got = transfer(primary.dns, &format!("IXFR={first}"), Some(first)).await?;
    let old = SOA.replace("SERIAL", "OLD");
    let want = lines(&format!(
        "{SOA}
        {old}
        {SOA}
        _http._tcp.cart.shop.svc.cluster.local. 30 IN SRV 10 100 8080 cart.shop.svc.cluster.local.
        cart.shop.svc.cluster.local. 30 IN A 10.0.9.9
        cart.shop.svc.cluster.local. 30 IN SRV 10 100 8080 cart.shop.svc.cluster.local.
        {SOA}"
    ));
    ensure!(got == want, "IXFR after a create:\n{}", got.join("\n"));

    // Changed: only the address moves.
    primary.api.apply(
        service("shop", "cart")
            .cluster_ip("10.0.9.10")
            .port(Some("http"), 8080, "TCP")
            .build(),
    );
    let third = notified(&mut notifies, second).await?;
    let got = transfer(primary.dns, &format!("IXFR={second}"), Some(second)).await?;
    let want = lines(&format!(
        "{SOA}
        {old}
        cart.shop.svc.cluster.local. 30 IN A 10.0.9.9
        {SOA}
        cart.shop.svc.cluster.local. 30 IN A 10.0.9.10
        {SOA}"
    ));
    ensure!(got == want, "IXFR after a change:\n{}", got.join("\n"));

    // Deleted, and a headless Service's endpoint becomes ready: from the first version, one
    // condensed difference.
    primary.api.delete("Service", "shop", "cart");
    primary.api.apply(
        endpoint_slice("default", "headless-c", "headless")
            .port(Some("https"), 443, "TCP")
            .endpoint(endpoint(&["10.3.0.50"]).hostname("late"))
            .build(),
    );
    let fourth = notified(&mut notifies, third).await?;
    // Both changes in (each event publishes a version): wait until the zone has both.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let late = query_tcp(
            primary.dns,
            "late.headless.default.svc.cluster.local.",
            RecordType::A,
        )
        .await?;
        let cart = query_tcp(primary.dns, "cart.shop.svc.cluster.local.", RecordType::A).await?;
        if late.answers.len() == 1 && cart.answers.is_empty() {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the changes never showed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ensure!(serial(primary.dns).await? >= fourth);
    let got = transfer(primary.dns, &format!("IXFR={first}"), Some(first)).await?;
    // The new endpoint, and the weights of the Service's other SRV records (100/3 now).
    let want = lines(&format!(
        "{SOA}
        {old}
        _https._tcp.headless.default.svc.cluster.local. 30 IN SRV 10 50 443 10-3-0-2.headless.default.svc.cluster.local.
        _https._tcp.headless.default.svc.cluster.local. 30 IN SRV 10 50 443 my-pet.headless.default.svc.cluster.local.
        headless.default.svc.cluster.local. 30 IN SRV 10 50 443 10-3-0-2.headless.default.svc.cluster.local.
        headless.default.svc.cluster.local. 30 IN SRV 10 50 443 my-pet.headless.default.svc.cluster.local.
        {SOA}
        _https._tcp.headless.default.svc.cluster.local. 30 IN SRV 10 33 443 10-3-0-2.headless.default.svc.cluster.local.
        _https._tcp.headless.default.svc.cluster.local. 30 IN SRV 10 33 443 late.headless.default.svc.cluster.local.
        _https._tcp.headless.default.svc.cluster.local. 30 IN SRV 10 33 443 my-pet.headless.default.svc.cluster.local.
        headless.default.svc.cluster.local. 30 IN A 10.3.0.50
        headless.default.svc.cluster.local. 30 IN SRV 10 33 443 10-3-0-2.headless.default.svc.cluster.local.
        headless.default.svc.cluster.local. 30 IN SRV 10 33 443 late.headless.default.svc.cluster.local.
        headless.default.svc.cluster.local. 30 IN SRV 10 33 443 my-pet.headless.default.svc.cluster.local.
        late.headless.default.svc.cluster.local. 30 IN A 10.3.0.50
        {SOA}"
    ));
    ensure!(
        got == want,
        "IXFR from the first version:\n{}",
        got.join("\n")
    );
    let metrics = http_client::get(primary.http, "/metrics").await?.text();
    for line in [
        "kubedns_zone_transfers_total{kind=\"ixfr\",result=\"incremental\"}",
        "kubedns_zone_transfers_total{kind=\"ixfr\",result=\"current\"} 1",
        "kubedns_zone_notify_total{result=\"acked\"}",
    ] {
        ensure!(metrics.contains(line), "no {line} in\n{metrics}");
    }
    Ok(())
}

#[tokio::test]
async fn a_version_past_the_journal_gets_the_whole_zone() -> anyhow::Result<()> {
    let primary = start(&["--transfer-journal=2".into()]).await?;
    let first = serial(primary.dns).await?;
    let mut last = first;
    for i in 0..3 {
        primary.api.apply(
            service("shop", &format!("s{i}"))
                .cluster_ip(&format!("10.0.8.{i}"))
                .build(),
        );
        last = next_serial(primary.dns, last).await?;
    }
    let got = transfer(primary.dns, &format!("IXFR={first}"), None).await?;
    // AXFR form: the SOA, then the zone's records (no second SOA), then the SOA.
    ensure!(got.len() == ZONE_RECORDS + 3, "{}", got.join("\n"));
    ensure!(got[0] == SOA && got[1] != SOA && got.last().map(String::as_str) == Some(SOA));
    let metrics = http_client::get(primary.http, "/metrics").await?.text();
    ensure!(
        metrics.contains("kubedns_zone_transfers_total{kind=\"ixfr\",result=\"full\"} 1"),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn a_transfer_from_outside_the_allowed_ranges_is_refused() -> anyhow::Result<()> {
    let primary = start(&["--transfer-allow=10.0.0.0/8,::1".into()]).await?;
    let out = dig(primary.dns, &["cluster.local.", "AXFR"]).await?;
    ensure!(out.contains("Transfer failed"), "{out}");
    let reply = query_tcp(primary.dns, "cluster.local.", RecordType::AXFR).await?;
    ensure!(reply.metadata.response_code == hickory_proto::op::ResponseCode::Refused);
    let metrics = http_client::get(primary.http, "/metrics").await?.text();
    ensure!(
        metrics.contains("kubedns_zone_transfers_total{kind=\"axfr\",result=\"refused\"} 2"),
        "{metrics}"
    );
    // Names are still answered.
    let reply = query_tcp(
        primary.dns,
        "kubernetes.default.svc.cluster.local.",
        RecordType::A,
    )
    .await?;
    ensure!(reply.answers.len() == 1);
    Ok(())
}
