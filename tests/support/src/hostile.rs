//! Hostile clients for the hostile-traffic tests, and the memory readings they assert on: a
//! process's resident set from `/proc/<pid>/status` (sampled for its peak while an attack runs),
//! HTTP connections that send part of a header and stall, and a well-behaved HTTP probe from
//! another loopback address (so per-client limits hit the attacker, not the probe).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A process's resident memory in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .with_context(|| format!("no VmRSS in /proc/{pid}/status"))
}

/// The resident memory of a process and of its children, in KiB: a forking server (dnsmasq
/// serves each TCP connection in a child) measured whole. Children's shared pages are counted
/// in each, so for a forking server this is an upper bound.
pub fn rss_tree_kib(pid: u32) -> anyhow::Result<u64> {
    let own = rss_kib(pid)?;
    let children = std::fs::read_dir(format!("/proc/{pid}/task"))?
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|child| child.parse::<u32>().ok())
                .collect::<Vec<_>>()
        })
        .filter_map(|child| rss_kib(child).ok())
        .sum::<u64>();
    Ok(own + children)
}

/// Samples a process's resident memory every 10 ms until stopped; keeps the peak.
pub struct PeakRss {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl PeakRss {
    pub fn start(pid: u32) -> Self {
        Self::start_with(pid, rss_kib)
    }

    /// The same for a process and its children ([`rss_tree_kib`]).
    pub fn start_tree(pid: u32) -> Self {
        Self::start_with(pid, rss_tree_kib)
    }

    fn start_with(pid: u32, read: fn(u32) -> anyhow::Result<u64>) -> Self {
        let peak = Arc::new(AtomicU64::new(read(pid).unwrap_or(0)));
        let stop = Arc::new(AtomicBool::new(false));
        let task = {
            let (peak, stop) = (peak.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(kib) = read(pid) {
                        peak.fetch_max(kib, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        };
        PeakRss { peak, stop, task }
    }

    /// The peak so far, in KiB.
    pub fn peak_kib(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    /// Stops sampling; returns the peak in KiB.
    pub async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let peak = self.peak.clone();
        let _ = self.task.await;
        peak.load(Ordering::Relaxed)
    }
}

/// Opens `connections` HTTP connections that each send the start of a request and `header_bytes`
/// of one header line that never ends, then stall. Connections the server refuses or closes
/// are kept all the same (the caller checks what the server did with them).
pub async fn stalled_http_headers(
    addr: SocketAddr,
    connections: usize,
    header_bytes: usize,
) -> Vec<TcpStream> {
    let chunk = vec![b'a'; 16 * 1024];
    let mut streams = Vec::with_capacity(connections);
    for _ in 0..connections {
        let Ok(mut stream) = TcpStream::connect(addr).await else {
            continue;
        };
        let _ = stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: ")
            .await;
        let mut left = header_bytes;
        while left > 0 {
            let n = left.min(chunk.len());
            let sent =
                tokio::time::timeout(Duration::from_millis(200), stream.write_all(&chunk[..n]))
                    .await;
            if !matches!(sent, Ok(Ok(()))) {
                break;
            }
            left -= n;
        }
        streams.push(stream);
    }
    streams
}

/// How many of `streams` the server has not closed within `within` (their reads neither end
/// nor fail). Whatever the server sent before closing (a 431, say) is read and dropped.
pub async fn still_open(streams: Vec<TcpStream>, within: Duration) -> usize {
    let deadline = tokio::time::Instant::now() + within;
    let mut open = 0;
    for mut stream in streams {
        let mut buf = [0u8; 4096];
        loop {
            match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
                Err(_) => {
                    open += 1;
                    break;
                }
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(_)) => continue,
            }
        }
    }
    open
}

/// `GET path` over a fresh connection from `source` (any 127.0.0.0/8 address works on
/// loopback); the status code, within `timeout`.
pub async fn http_get_status_from(
    source: IpAddr,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> anyhow::Result<u16> {
    let exchange = async {
        let mut stream = connect_from(source, addr).await?;
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        anyhow::Ok(response)
    };
    let response = tokio::time::timeout(timeout, exchange)
        .await
        .with_context(|| {
            format!("GET {path} from {source} to {addr}: no answer in {timeout:?}")
        })??;
    let text = String::from_utf8_lossy(&response);
    let Some(code) = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
    else {
        bail!("GET {path} from {source}: not an HTTP response: {text:?}");
    };
    Ok(code)
}

/// What [`stalled_header_attack`] saw.
#[derive(Debug)]
pub struct HttpAttackReport {
    /// The server's peak resident memory during the attack, KiB.
    pub peak_kib: u64,
    /// The status of every health probe sent (from 127.0.0.2) while the attack ran.
    pub probes: Vec<u16>,
    /// Probes that got no answer in time, with the reason.
    pub probe_failures: Vec<String>,
    /// Attacking connections the server had not closed `close_within` after the attack.
    pub still_open: usize,
}

/// How many stalled HTTP connections an attack opens: `large` send 390 KB of a header that
/// never ends (what the header limit is for), `small` a few bytes (what the header timeout is
/// for).
#[derive(Debug, Clone, Copy)]
pub struct HeaderFlood {
    pub large: usize,
    pub small: usize,
}

impl HeaderFlood {
    /// The suite's mix: 150 connections, half of each kind.
    pub const MIXED: HeaderFlood = HeaderFlood {
        large: 75,
        small: 75,
    };
    /// The table at full size: 150 connections of 390 KB each.
    pub const FULL: HeaderFlood = HeaderFlood {
        large: 150,
        small: 0,
    };
}

/// The attack of the table, from one client (127.0.0.1): the connections of `flood`,
/// all stalling. Meanwhile `health_path` is asked every 100 ms from 127.0.0.2.
pub async fn stalled_header_attack(
    pid: u32,
    addr: SocketAddr,
    health_path: &str,
    flood: HeaderFlood,
    close_within: Duration,
) -> HttpAttackReport {
    let rss = PeakRss::start(pid);
    let attack = tokio::spawn(async move {
        let mut streams = stalled_http_headers(addr, flood.large, 390 * 1024).await;
        streams.extend(stalled_http_headers(addr, flood.small, 16).await);
        streams
    });
    let probe_source = IpAddr::from([127, 0, 0, 2]);
    let mut probes = Vec::new();
    let mut probe_failures = Vec::new();
    while !attack.is_finished() || probes.len() + probe_failures.len() < 5 {
        match http_get_status_from(probe_source, addr, health_path, Duration::from_secs(2)).await {
            Ok(code) => probes.push(code),
            Err(error) => probe_failures.push(format!("{error:#}")),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let streams = attack.await.unwrap_or_default();
    let still_open = still_open(streams, close_within).await;
    HttpAttackReport {
        peak_kib: rss.finish().await,
        probes,
        probe_failures,
        still_open,
    }
}

impl HttpAttackReport {
    /// Fails unless memory stayed under `ceiling_kib`, every probe got `200`, and every
    /// attacking connection was closed.
    pub fn check(&self, ceiling_kib: u64) -> anyhow::Result<()> {
        if self.peak_kib >= ceiling_kib {
            bail!(
                "peak RSS {} KiB, ceiling {ceiling_kib} KiB: {self:?}",
                self.peak_kib
            );
        }
        if !self.probe_failures.is_empty() || self.probes.iter().any(|&code| code != 200) {
            bail!("health probes failed during the attack: {self:?}");
        }
        if self.still_open > 0 {
            bail!(
                "{} attacking connections still open: {self:?}",
                self.still_open
            );
        }
        Ok(())
    }
}

/// What a [`udp_flood`] got back.
#[derive(Debug, Default, Clone, Copy)]
pub struct FloodReplies {
    pub sent: usize,
    pub replies: usize,
    /// Replies by RCODE (the low four bits): index 1 is FORMERR, 2 SERVFAIL, 5 REFUSED.
    pub rcodes: [usize; 16],
}

/// One phase of issue 12's UDP flood: what each query asks for and the zeros after it.
#[derive(Debug, Clone, Copy)]
pub struct FloodPhase {
    pub label: &'static str,
    pub padding: usize,
    pub qname: fn(usize) -> String,
}

/// The flood's phases, for a fake upstream that never answers `drop.` names: one silent name
/// with 60 KB of zeros after each query (FORMERR), the same name without (coalesced or
/// forwarded, waiting), then a different silent name per query (each one forwarded).
pub const UDP_FLOOD_PHASES: [FloodPhase; 3] = [
    FloodPhase {
        label: "padded",
        padding: 60_000,
        qname: |_| "drop.flood.example.".to_owned(),
    },
    FloodPhase {
        label: "one-name",
        padding: 0,
        qname: |_| "drop.flood.example.".to_owned(),
    },
    FloodPhase {
        label: "many-names",
        padding: 0,
        qname: |i| format!("drop.{i}.flood.example."),
    },
];

/// Sends `count` queries from one UDP socket, as fast as it takes them: query `i` asks for
/// `name(i)` (type A, no EDNS) and is followed by `padding` zero bytes. Replies that arrive
/// within `linger` after the last one is sent are counted.
pub async fn udp_flood(
    server: SocketAddr,
    count: usize,
    padding: usize,
    name: impl Fn(usize) -> String,
    linger: Duration,
) -> anyhow::Result<FloodReplies> {
    let socket = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await?);
    socket.connect(server).await?;
    let counted = Arc::new(Mutex::new(FloodReplies::default()));
    let reader = {
        let (socket, counted) = (socket.clone(), counted.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65535];
            while let Ok(n) = socket.recv(&mut buf).await {
                if n >= 4 {
                    let mut counted = lock(&counted);
                    counted.replies += 1;
                    counted.rcodes[usize::from(buf[3] & 0x0F)] += 1;
                }
            }
        })
    };
    let mut sent = 0;
    for i in 0..count {
        let id = u16::try_from(i % 65536).unwrap_or(0);
        let mut packet = dns_wire::build_query(id, &name(i), dns_wire::rtype::A, None);
        packet.resize(packet.len() + padding, 0);
        // The socket buffer fills under a flood; a short wait, then the next datagram.
        if socket.send(&packet).await.is_ok() {
            sent += 1;
        }
        if i % 256 == 255 {
            tokio::task::yield_now().await;
        }
    }
    tokio::time::sleep(linger).await;
    reader.abort();
    let mut result = *lock(&counted);
    result.sent = sent;
    Ok(result)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Polls `name` (type A) at `server` until it is answered with `ip`, for at most `timeout`:
/// service coming back once a flood's queries have timed out.
pub async fn wait_answered(
    server: SocketAddr,
    name: &str,
    ip: IpAddr,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    let want = format!(" A {ip}");
    loop {
        let reply =
            crate::dns_client::query_udp(server, name, hickory_proto::rr::RecordType::A).await?;
        if crate::dns_client::answer_lines(&reply)
            .iter()
            .any(|line| line.ends_with(&want))
        {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{name} not answered with {ip} within {timeout:?}: {reply:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Fails unless a flooded server's peak memory stayed under `ceiling_kib` and its upstream
/// never saw more than a plain query (600 bytes); prints both either way.
pub fn check_flood(
    server: &str,
    peak_kib: u64,
    ceiling_kib: u64,
    largest_upstream_query: usize,
) -> anyhow::Result<()> {
    eprintln!(
        "{server}: peak RSS {peak_kib} KiB; largest upstream query {largest_upstream_query} bytes"
    );
    if peak_kib >= ceiling_kib {
        bail!("{server}: peak RSS {peak_kib} KiB, ceiling {ceiling_kib} KiB");
    }
    if largest_upstream_query >= 600 {
        bail!("{server}: the upstream saw a {largest_upstream_query}-byte query");
    }
    Ok(())
}

/// Opens `connections` DNS-over-TCP connections from `source` that each send a length prefix
/// of 65535 and `body_bytes` of the message, then stall. Refused ones are kept too.
pub async fn stalled_tcp_prefixes(
    source: IpAddr,
    addr: SocketAddr,
    connections: usize,
    body_bytes: usize,
) -> Vec<TcpStream> {
    let mut streams = Vec::with_capacity(connections);
    let mut message = vec![0xff, 0xff];
    message.resize(2 + body_bytes, 0);
    for _ in 0..connections {
        let Ok(mut stream) = connect_from(source, addr).await else {
            continue;
        };
        let _ = tokio::time::timeout(Duration::from_millis(200), stream.write_all(&message)).await;
        streams.push(stream);
    }
    streams
}

/// One query over a fresh TCP connection from `source`; the reply's RCODE, within `timeout`.
pub async fn tcp_query_from(
    source: IpAddr,
    addr: SocketAddr,
    name: &str,
    timeout: Duration,
) -> anyhow::Result<u8> {
    let exchange = async {
        let mut stream = connect_from(source, addr).await?;
        let query = dns_wire::build_query(0x5151, name, dns_wire::rtype::A, None);
        let mut framed = u16::try_from(query.len())?.to_be_bytes().to_vec();
        framed.extend_from_slice(&query);
        stream.write_all(&framed).await?;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await?;
        let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut reply).await?;
        anyhow::Ok(reply)
    };
    let reply = tokio::time::timeout(timeout, exchange)
        .await
        .with_context(|| {
            format!("TCP query for {name} from {source}: no answer in {timeout:?}")
        })??;
    if reply.len() < 4 || reply[..2] != [0x51, 0x51] {
        bail!("TCP query for {name} from {source}: not our reply: {reply:?}");
    }
    Ok(reply[3] & 0x0F)
}

/// A TCP connection to `addr` from `source` (any 127.0.0.0/8 address works on loopback).
pub async fn connect_from(source: IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(addr).await
}
