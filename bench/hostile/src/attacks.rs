//! Issue 12's attacks at full size, each against a fresh server, while a well-behaved client
//! (127.0.0.2) keeps asking: what the server's memory peaked at, what the good client got, and
//! what the attacker got.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use kube_dns_test_support::dns_client::{answer_lines, query_udp_from};
use kube_dns_test_support::hostile::{
    HeaderFlood, PeakRss, connect_from, stalled_header_attack, still_open, tcp_query_from,
    udp_flood,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::report::Row;
use crate::servers::{self, Binaries, DnsServer, FORWARDED_ANSWER, HttpServer, Running};

/// The attacker's address; the good client is 127.0.0.2.
const ATTACKER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
const GOOD: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));
/// How long the good client waits for each answer.
const GOOD_TIMEOUT: Duration = Duration::from_secs(2);

/// One attack on the DNS port.
#[derive(Debug, Clone, Copy)]
enum DnsAttack {
    /// `count` UDP queries as fast as they go, each followed by `padding` zero bytes, for one
    /// silent name or a different one each.
    Udp {
        label: &'static str,
        padding: usize,
        many_names: bool,
    },
    /// `connections` TCP connections that send a 65535 length prefix and 1 KB, then stall.
    TcpStalled { connections: usize },
}

const UDP_QUERIES: usize = 6_000;

const DNS_ATTACKS: [DnsAttack; 5] = [
    DnsAttack::Udp {
        label: "udp: 6,000 queries + 60 KB zeros, one silent name",
        padding: 60_000,
        many_names: false,
    },
    DnsAttack::Udp {
        label: "udp: 6,000 queries + 60 KB zeros, 6,000 silent names",
        padding: 60_000,
        many_names: true,
    },
    DnsAttack::Udp {
        label: "udp: 6,000 queries, one silent name",
        padding: 0,
        many_names: false,
    },
    DnsAttack::Udp {
        label: "udp: 6,000 queries, 6,000 silent names",
        padding: 0,
        many_names: true,
    },
    DnsAttack::TcpStalled { connections: 4_000 },
];

const TCP_LABEL: &str = "tcp: 4,000 connections, 65535 length prefix + 1 KB, stalled";
const HTTP_LABEL: &str = "http: 150 connections, 390 KB of unfinished header each, stalled";

impl DnsAttack {
    fn label(self) -> &'static str {
        match self {
            DnsAttack::Udp { label, .. } => label,
            DnsAttack::TcpStalled { .. } => TCP_LABEL,
        }
    }
}

/// Every attack against every server it concerns, one fresh server each; `only` keeps the
/// attacks or servers whose label contains one of its words.
pub async fn run_all(bins: &Binaries, only: &[String]) -> anyhow::Result<Vec<Row>> {
    let wanted = |attack: &str, server: &str| {
        only.is_empty()
            || only
                .iter()
                .any(|word| attack.contains(word.as_str()) || server.contains(word.as_str()))
    };
    let mut rows = Vec::new();
    for attack in DNS_ATTACKS {
        for server in DnsServer::ALL {
            if wanted(attack.label(), server.name()) {
                eprintln!(
                    "hostile-bench: {} against {}",
                    attack.label(),
                    server.name()
                );
                let row = dns_row(bins, attack, server).await?;
                eprintln!("hostile-bench: {row:?}");
                rows.push(row);
            }
        }
    }
    for listener in HttpServer::ALL {
        if wanted(HTTP_LABEL, listener.name()) {
            eprintln!("hostile-bench: {HTTP_LABEL} against {}", listener.name());
            let row = http_row(bins, listener).await?;
            eprintln!("hostile-bench: {row:?}");
            rows.push(row);
        }
    }
    Ok(rows)
}

async fn dns_row(bins: &Binaries, attack: DnsAttack, server: DnsServer) -> anyhow::Result<Row> {
    let running = servers::start_dns(bins, server).await?;
    let addr = running.dns.ok_or_else(|| anyhow::anyhow!("no DNS port"))?;
    let rss = PeakRss::start_tree(servers::pid(&running)?);
    let tcp = matches!(attack, DnsAttack::TcpStalled { .. });
    let prober = GoodClient::start(&running, addr, tcp);
    let attacker = match attack {
        DnsAttack::Udp {
            padding,
            many_names,
            ..
        } => {
            let name: fn(usize) -> String = if many_names {
                |i: usize| format!("drop.{i}.flood.example.")
            } else {
                |_: usize| "drop.flood.example.".to_owned()
            };
            // Long enough for every waiting query's deadline to pass.
            let replies =
                udp_flood(addr, UDP_QUERIES, padding, name, Duration::from_secs(6)).await?;
            let [noerror, formerr, servfail, _, _, refused, ..] = replies.rcodes;
            format!(
                "{} sent; replies: {formerr} FORMERR, {refused} REFUSED, {servfail} SERVFAIL, \
                 {noerror} NOERROR; {} unanswered",
                replies.sent,
                replies.sent.saturating_sub(replies.replies)
            )
        }
        DnsAttack::TcpStalled { connections } => {
            let flood = tcp_flood(addr, connections).await;
            let opened = flood.streams.len();
            let open = still_open(flood.streams, Duration::from_secs(2)).await;
            format!(
                "{opened} connections accepted, {} not ({}); {open} still open 2 s after the last",
                connections - opened,
                flood.stopped_early.unwrap_or("none refused")
            )
        }
    };
    let good = prober.finish().await;
    let peak_kib = rss.finish().await;
    let upstream_largest = running.upstream.largest_query();
    Ok(Row {
        attack: attack.label().to_owned(),
        server: server.name().to_owned(),
        peak_rss_mib: mib(peak_kib),
        limit: server.limit().to_owned(),
        good_asked: good.asked,
        good_answered: good.answered,
        good_slowest_ms: good.slowest.as_millis(),
        attacker: format!("{attacker}; largest query upstream {upstream_largest} bytes"),
    })
}

async fn http_row(bins: &Binaries, listener: HttpServer) -> anyhow::Result<Row> {
    let running = servers::start_http(bins, listener).await?;
    let (addr, path) = running
        .http
        .ok_or_else(|| anyhow::anyhow!("no HTTP port"))?;
    let report = stalled_header_attack(
        servers::pid(&running)?,
        addr,
        path,
        HeaderFlood::FULL,
        Duration::from_secs(8),
    )
    .await;
    let ok = report.probes.iter().filter(|&&code| code == 200).count();
    Ok(Row {
        attack: HTTP_LABEL.to_owned(),
        server: listener.name().to_owned(),
        peak_rss_mib: mib(report.peak_kib),
        limit: listener.limit().to_owned(),
        good_asked: report.probes.len() + report.probe_failures.len(),
        good_answered: ok,
        good_slowest_ms: 0,
        attacker: format!(
            "GET {path} from another client; {} attacking connections still open 8 s after",
            report.still_open
        ),
    })
}

fn mib(kib: u64) -> f64 {
    (kib as f64 / 1024.0 * 10.0).round() / 10.0
}

/// What [`tcp_flood`] opened.
struct TcpFlood {
    streams: Vec<TcpStream>,
    /// Why a sender stopped before its share: the server stopped completing connections.
    stopped_early: Option<&'static str>,
}

/// `connections` stalled DNS-over-TCP connections from the attacker, eight senders at once.
/// A sender gives up after five connects in a row that do not complete within a second (a
/// server whose accept queue is full), so a server that stops accepting costs seconds, not
/// hours.
async fn tcp_flood(addr: SocketAddr, connections: usize) -> TcpFlood {
    const SENDERS: usize = 8;
    let mut message = vec![0xff, 0xff];
    message.resize(2 + 1_000, 0);
    let message = Arc::new(message);
    let mut tasks = tokio::task::JoinSet::new();
    for sender in 0..SENDERS {
        let share = connections / SENDERS + usize::from(sender < connections % SENDERS);
        let message = message.clone();
        tasks.spawn(async move {
            let mut streams = Vec::with_capacity(share);
            let mut failed_in_a_row = 0;
            for _ in 0..share {
                let connect =
                    tokio::time::timeout(Duration::from_secs(1), connect_from(ATTACKER, addr));
                let Ok(Ok(mut stream)) = connect.await else {
                    failed_in_a_row += 1;
                    if failed_in_a_row == 5 {
                        return (streams, true);
                    }
                    continue;
                };
                failed_in_a_row = 0;
                let _ =
                    tokio::time::timeout(Duration::from_millis(200), stream.write_all(&message))
                        .await;
                streams.push(stream);
            }
            (streams, false)
        });
    }
    let mut flood = TcpFlood {
        streams: Vec::with_capacity(connections),
        stopped_early: None,
    };
    while let Some(Ok((streams, stopped))) = tasks.join_next().await {
        flood.streams.extend(streams);
        if stopped {
            flood.stopped_early = Some("connects stopped completing");
        }
    }
    flood
}

/// What the well-behaved client got.
#[derive(Debug, Default)]
struct GoodTally {
    asked: usize,
    answered: usize,
    slowest: Duration,
}

/// The well-behaved client: every 100 ms a new forwarded name over UDP (over TCP too when
/// `tcp`), and the cluster name when the server has one; an answer counts when it carries the
/// expected address within two seconds.
struct GoodClient {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<GoodTally>,
}

impl GoodClient {
    fn start(running: &Running, addr: SocketAddr, tcp: bool) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let cluster = running.cluster_name;
        let task = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut tally = GoodTally::default();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) || tally.asked < 5 {
                    let name = format!("ok{i}.good.example.");
                    tally.ask(udp_answers(addr, &name, FORWARDED_ANSWER)).await;
                    if tcp {
                        let name = format!("tcp{i}.good.example.");
                        let rcode = tcp_query_from(GOOD, addr, &name, GOOD_TIMEOUT);
                        tally.ask(async { matches!(rcode.await, Ok(0)) }).await;
                    }
                    if let Some((name, ip)) = cluster {
                        tally.ask(udp_answers(addr, name, ip)).await;
                    }
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                tally
            })
        };
        GoodClient { stop, task }
    }

    async fn finish(self) -> GoodTally {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or_default()
    }
}

impl GoodTally {
    async fn ask(&mut self, answered: impl Future<Output = bool>) {
        let started = Instant::now();
        let ok = answered.await;
        self.asked += 1;
        self.answered += usize::from(ok);
        self.slowest = self.slowest.max(started.elapsed());
    }
}

async fn udp_answers(addr: SocketAddr, name: &str, ip: IpAddr) -> bool {
    let want = format!(" A {ip}");
    match query_udp_from(GOOD, addr, name, RecordType::A, GOOD_TIMEOUT).await {
        Ok(reply) => answer_lines(&reply)
            .iter()
            .any(|line| line.ends_with(&want)),
        Err(_) => false,
    }
}
