//! `--secondary` against a primary that misbehaves: transfers cut short, records outside the
//! zone, wrong IDs, garbage and refusals leave the last good copy answering; NOTIFY from any
//! address but the primary's is refused.
// Whole-process tests time real processes on the real clocks (see clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME, NS, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use kube_dns_test_support::dns_client::{query_tcp, query_udp, zone_lines};
use kube_dns_test_support::hostile::rss_kib;
use kube_dns_test_support::http_client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;

use common::{WAIT, start_cache};

/// What the fake primary sends for the next transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Serve {
    /// The zone at `serial`, `www` at `10.0.0.<host>`, in two messages.
    Zone { serial: u32, host: u8 },
    /// The first message only, then the connection closes.
    CutShort { serial: u32, host: u8 },
    /// A record of another zone in the second message.
    Outside { serial: u32, host: u8 },
    /// Messages with another ID than the query's.
    WrongId { serial: u32, host: u8 },
    /// Bytes that are no DNS message.
    Garbage,
    /// The zone with 50,000 more names: far over a small `--secondary-max-size`.
    Huge { serial: u32 },
    /// An IXFR answered with the SOA alone (a primary without a difference to send), an AXFR
    /// with the zone.
    SoaOnlyForIxfr { serial: u32, host: u8 },
    /// REFUSED.
    Refused,
}

const ZONE: &str = "example.test.";

fn name(text: &str) -> Name {
    Name::from_ascii(text).expect("name")
}

fn record(owner: &str, data: RData) -> Record {
    Record::from_rdata(name(owner), 60, data)
}

fn soa(serial: u32) -> Record {
    record(
        ZONE,
        RData::SOA(SOA::new(
            name("ns.example.test."),
            name("hostmaster.example.test."),
            serial,
            3600,
            600,
            86400,
            60,
        )),
    )
}

/// The transfer's messages for `serve`, answering a query with `id` (an IXFR when `ixfr`).
fn messages(serve: Serve, id: u16, ixfr: bool) -> Vec<Vec<u8>> {
    let (serial, host, id) = match serve {
        Serve::SoaOnlyForIxfr { serial, .. } if ixfr => {
            let mut m = Message::response(id, OpCode::Query);
            m.add_query(Query::query(name(ZONE), RecordType::IXFR));
            m.add_answers([soa(serial)]);
            return vec![m.to_vec().expect("encodes")];
        }
        Serve::SoaOnlyForIxfr { serial, host } => (serial, host, id),
        Serve::Huge { serial } => {
            let mut records = vec![soa(serial)];
            records.extend((0..50_000u32).map(|i| {
                let ip = Ipv4Addr::from(0x0a00_0000 + i);
                record(&format!("h{i}.example.test."), RData::A(A(ip)))
            }));
            records.push(soa(serial));
            return records
                .chunks(1000)
                .map(|chunk| {
                    let mut m = Message::response(id, OpCode::Query);
                    m.add_query(Query::query(name(ZONE), RecordType::AXFR));
                    m.add_answers(chunk.iter().cloned());
                    m.to_vec().expect("encodes")
                })
                .collect();
        }
        Serve::Zone { serial, host }
        | Serve::CutShort { serial, host }
        | Serve::Outside { serial, host } => (serial, host, id),
        Serve::WrongId { serial, host } => (serial, host, id.wrapping_add(1)),
        Serve::Garbage => return vec![vec![0xde, 0xad, 0xbe, 0xef, 0x01]],
        Serve::Refused => {
            let mut m = Message::response(id, OpCode::Query);
            m.metadata.response_code = ResponseCode::Refused;
            m.add_query(Query::query(name(ZONE), RecordType::AXFR));
            return vec![m.to_vec().expect("encodes")];
        }
    };
    let first = vec![
        soa(serial),
        record(ZONE, RData::NS(NS(name("ns.example.test.")))),
        record(
            "www.example.test.",
            RData::A(A(Ipv4Addr::new(10, 0, 0, host))),
        ),
    ];
    let mut second = vec![
        record(
            "alias.example.test.",
            RData::CNAME(CNAME(name("www.example.test."))),
        ),
        record(
            "_http._tcp.www.example.test.",
            RData::SRV(SRV::new(0, 0, 80, name("www.example.test."))),
        ),
        soa(serial),
    ];
    if matches!(serve, Serve::Outside { .. }) {
        second.insert(
            0,
            record("evil.example.com.", RData::A(A(Ipv4Addr::new(6, 6, 6, 6)))),
        );
    }
    let mut out = Vec::new();
    for (i, records) in [first, second].into_iter().enumerate() {
        if i == 1 && matches!(serve, Serve::CutShort { .. }) {
            break;
        }
        let mut m = Message::response(id, OpCode::Query);
        m.metadata.authoritative = true;
        m.add_query(Query::query(name(ZONE), RecordType::AXFR));
        m.add_answers(records);
        out.push(m.to_vec().expect("encodes"));
    }
    out
}

/// A TCP primary that answers every transfer as `serve` says, and lists what it served.
struct FakePrimary {
    addr: SocketAddr,
    serve: Arc<Mutex<Serve>>,
    served: Arc<Mutex<Vec<(Serve, bool)>>>,
}

impl FakePrimary {
    fn set(&self, serve: Serve) {
        *self.serve.lock().expect("lock") = serve;
    }

    fn served(&self) -> Vec<(Serve, bool)> {
        self.served.lock().expect("lock").clone()
    }
}

async fn fake_primary(serve: Serve) -> anyhow::Result<FakePrimary> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let serve = Arc::new(Mutex::new(serve));
    let served = Arc::new(Mutex::new(Vec::new()));
    let (shared, log) = (serve.clone(), served.clone());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let serve = *shared.lock().expect("lock");
            let log = log.clone();
            tokio::spawn(async move {
                let mut len = [0u8; 2];
                if stream.read_exact(&mut len).await.is_err() {
                    return;
                }
                let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
                if stream.read_exact(&mut query).await.is_err() {
                    return;
                }
                let id = u16::from_be_bytes([query[0], query[1]]);
                let ixfr = Message::from_vec(&query).is_ok_and(|m| {
                    m.queries.first().map(|q| q.query_type()) == Some(RecordType::IXFR)
                });
                log.lock().expect("lock").push((serve, ixfr));
                for message in messages(serve, id, ixfr) {
                    let mut framed = (message.len() as u16).to_be_bytes().to_vec();
                    framed.extend_from_slice(&message);
                    if stream.write_all(&framed).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(FakePrimary {
        addr,
        serve,
        served,
    })
}

async fn metric(addr: SocketAddr, prefix: &str) -> anyhow::Result<u64> {
    let text = http_client::get(addr, "/metrics").await?.text();
    let line = text
        .lines()
        .find(|l| l.starts_with(prefix))
        .ok_or_else(|| anyhow::anyhow!("no {prefix} in\n{text}"))?;
    Ok(line.rsplit(' ').next().unwrap_or("").parse()?)
}

const FAILED: &str = "dnscache_secondary_transfers_total{zone=\"example.test\",result=\"failed\"}";
const FULL: &str = "dnscache_secondary_transfers_total{zone=\"example.test\",result=\"full\"}";
const NOTIFY_REFUSED: &str =
    "dnscache_secondary_transfers_total{zone=\"example.test\",result=\"notify_refused\"}";

async fn wait_count(metrics: SocketAddr, prefix: &str, above: u64) -> anyhow::Result<u64> {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = metric(metrics, prefix).await.unwrap_or(0);
        if now > above {
            return Ok(now);
        }
        if Instant::now() > deadline {
            bail!("{prefix} stayed {now}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A NOTIFY for the zone sent from `from` (an address on loopback); its answer's RCODE.
async fn notify(cache: SocketAddr, from: &str) -> anyhow::Result<ResponseCode> {
    let socket = tokio::net::UdpSocket::bind(format!("{from}:0")).await?;
    let mut m = Message::query();
    m.metadata.id = 4242;
    m.metadata.op_code = OpCode::Notify;
    m.metadata.message_type = MessageType::Query;
    m.add_query(Query::query(name(ZONE), RecordType::SOA));
    socket.send_to(&m.to_vec()?, cache).await?;
    let mut buf = [0u8; 512];
    let (len, _) = tokio::time::timeout(WAIT, socket.recv_from(&mut buf)).await??;
    let reply = Message::from_vec(&buf[..len])?;
    ensure!(reply.metadata.op_code == OpCode::Notify && reply.metadata.id == 4242);
    Ok(reply.metadata.response_code)
}

fn www(reply: &Message) -> Vec<String> {
    zone_lines(&reply.answers)
}

#[tokio::test]
async fn broken_transfers_leave_the_last_good_copy_answering() -> anyhow::Result<()> {
    let primary = fake_primary(Serve::Zone { serial: 1, host: 1 }).await?;
    let cache = start_cache(&[
        "--no-resolv".into(),
        format!(
            "--secondary=/example.test/127.0.0.1#{}",
            primary.addr.port()
        ),
        "--metrics-address=127.0.0.1:0".into(),
    ])
    .await?;
    let metrics = cache.process.listening_addr("metrics", WAIT).await?;
    wait_count(metrics, FULL, 0).await?;
    let good = vec!["www.example.test. 60 IN A 10.0.0.1".to_owned()];
    ensure!(www(&query_udp(cache.udp, "www.example.test.", RecordType::A).await?) == good);
    // The whole answer set of the copy: CNAME followed, SRV with glue, NODATA, NXDOMAIN.
    let alias = query_udp(cache.udp, "Alias.Example.Test.", RecordType::A).await?;
    ensure!(
        www(&alias)
            == vec![
                "alias.example.test. 60 IN CNAME www.example.test.".to_owned(),
                "www.example.test. 60 IN A 10.0.0.1".to_owned(),
            ],
        "{alias:?}"
    );
    ensure!(alias.answers[0].name.to_ascii() == "Alias.Example.Test.");
    let srv = query_tcp(cache.tcp, "_http._tcp.www.example.test.", RecordType::SRV).await?;
    ensure!(
        srv.answers.len() == 1 && srv.additionals.len() == 1,
        "{srv:?}"
    );
    let nodata = query_udp(cache.udp, "www.example.test.", RecordType::AAAA).await?;
    ensure!(nodata.metadata.response_code == ResponseCode::NoError && nodata.answers.is_empty());
    ensure!(zone_lines(&nodata.authorities)[0].contains("SOA ns.example.test."));
    let nx = query_udp(cache.udp, "nope.example.test.", RecordType::A).await?;
    ensure!(nx.metadata.response_code == ResponseCode::NXDomain && nx.metadata.authoritative);

    // Each broken transfer: counted as failed for the reason it has, and the copy at serial 1
    // keeps answering.
    for (bad, reason) in [
        (
            Serve::CutShort { serial: 2, host: 2 },
            "ended before its closing SOA",
        ),
        (
            Serve::Outside { serial: 2, host: 2 },
            "evil.example.com is outside the zone",
        ),
        (Serve::WrongId { serial: 2, host: 2 }, "a message with ID"),
        (Serve::Garbage, "an unreadable message"),
        (Serve::Refused, "the primary answered Query Refused"),
    ] {
        primary.set(bad);
        let failed = metric(metrics, FAILED).await?;
        ensure!(notify(cache.udp, "127.0.0.1").await? == ResponseCode::NoError);
        wait_count(metrics, FAILED, failed).await?;
        let deadline = Instant::now() + WAIT;
        while !cache.process.output_text().contains(reason) {
            ensure!(
                Instant::now() < deadline,
                "{bad:?} never failed with {reason:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        ensure!(primary.served().iter().any(|(s, _)| *s == bad));
        let reply = query_udp(cache.udp, "www.example.test.", RecordType::A).await?;
        ensure!(www(&reply) == good, "after {bad:?}: {:?}", www(&reply));
    }
    // A good transfer again replaces the copy (a whole one: IXFR failed); then an IXFR
    // answered with the SOA alone (RFC 1995 §4) is followed by an AXFR at once.
    for (serve, host) in [
        (Serve::Zone { serial: 3, host: 3 }, 3),
        (Serve::SoaOnlyForIxfr { serial: 4, host: 4 }, 4),
    ] {
        primary.set(serve);
        ensure!(notify(cache.udp, "127.0.0.1").await? == ResponseCode::NoError);
        let want = vec![format!("www.example.test. 60 IN A 10.0.0.{host}")];
        let deadline = Instant::now() + WAIT;
        while www(&query_udp(cache.udp, "www.example.test.", RecordType::A).await?) != want {
            ensure!(Instant::now() < deadline, "{serve:?} never answered");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let asked: Vec<bool> = primary
        .served()
        .iter()
        .filter(|(s, _)| matches!(s, Serve::SoaOnlyForIxfr { .. }))
        .map(|(_, ixfr)| *ixfr)
        .collect();
    ensure!(
        asked.starts_with(&[true, false]),
        "IXFR then AXFR: {asked:?}"
    );
    // NOTIFY from another address is refused and starts nothing.
    let transfers = primary.served().len();
    ensure!(notify(cache.udp, "127.0.0.2").await? == ResponseCode::Refused);
    ensure!(metric(metrics, NOTIFY_REFUSED).await? == 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    ensure!(
        primary.served().len() == transfers,
        "{:?}",
        primary.served()
    );
    Ok(())
}

/// `--secondary-max-size` bounds what a transfer may take: a zone far over it is refused before
/// it is read whole, memory stays near its start, and the copy held keeps answering.
#[tokio::test]
async fn a_zone_over_the_size_bound_is_refused_and_memory_stays_bounded() -> anyhow::Result<()> {
    let primary = fake_primary(Serve::Zone { serial: 1, host: 1 }).await?;
    let cache = start_cache(&[
        "--no-resolv".into(),
        format!(
            "--secondary=/example.test/127.0.0.1#{}",
            primary.addr.port()
        ),
        "--secondary-max-size=1048576".into(),
        "--metrics-address=127.0.0.1:0".into(),
    ])
    .await?;
    let metrics = cache.process.listening_addr("metrics", WAIT).await?;
    wait_count(metrics, FULL, 0).await?;
    let before = rss_kib(cache.process.pid())?;
    primary.set(Serve::Huge { serial: 2 });
    for _ in 0..3 {
        let failed = metric(metrics, FAILED).await?;
        ensure!(notify(cache.udp, "127.0.0.1").await? == ResponseCode::NoError);
        wait_count(metrics, FAILED, failed).await?;
    }
    ensure!(
        cache
            .process
            .output_text()
            .contains("larger than --secondary-max-size (1048576 bytes)"),
        "{}",
        cache.process.output_text()
    );
    let after = rss_kib(cache.process.pid())?;
    // 50,000 names would take several MiB held in full; the bound stops each try at 1 MiB.
    ensure!(
        after < before + 8 * 1024,
        "VmRSS {before} KiB before, {after} KiB after three tries"
    );
    let reply = query_udp(cache.udp, "www.example.test.", RecordType::A).await?;
    ensure!(www(&reply) == vec!["www.example.test. 60 IN A 10.0.0.1".to_owned()]);
    let nx = query_udp(cache.udp, "h1.example.test.", RecordType::A).await?;
    ensure!(nx.metadata.response_code == ResponseCode::NXDomain);
    Ok(())
}
