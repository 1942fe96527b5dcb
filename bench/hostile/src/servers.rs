//! Starting each server the way the pod runs it (defaults, the manifest's flags that matter, and
//! dnsmasq with the legacy manifest's flags), on loopback ports read back from its log.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kube_dns_test_support::FakeApiServer;
use kube_dns_test_support::dnsmasq::start_dnsmasq;
use kube_dns_test_support::fake_upstream::{FakeUpstream, UPSTREAM_ANSWER};
use kube_dns_test_support::http_client;
use kube_dns_test_support::process::ChildProcess;

/// How long a server gets to start listening (and kube-dns to sync).
const START: Duration = Duration::from_secs(15);

/// Where the binaries under test and the cluster are.
#[derive(Debug)]
pub struct Binaries {
    pub dir: PathBuf,
    pub cluster: PathBuf,
}

impl Binaries {
    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }
}

/// The DNS servers of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsServer {
    DnsCache,
    KubeDns,
    Dnsmasq,
}

impl DnsServer {
    pub const ALL: [DnsServer; 3] = [DnsServer::DnsCache, DnsServer::KubeDns, DnsServer::Dnsmasq];

    pub fn name(self) -> &'static str {
        match self {
            DnsServer::DnsCache => "dns-cache",
            DnsServer::KubeDns => "kube-dns",
            DnsServer::Dnsmasq => "dnsmasq 2.90",
        }
    }

    /// The container's memory limit in `kube-dns.yaml` (dnsmasq: the legacy pod's).
    pub fn limit(self) -> &'static str {
        match self {
            DnsServer::DnsCache | DnsServer::Dnsmasq => "64Mi",
            DnsServer::KubeDns => "170Mi",
        }
    }
}

/// The HTTP listeners of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpServer {
    Sidecar,
    KubeDnsHealthz,
    KubeDnsMetrics,
    DnsCacheMetrics,
    Nanny,
}

impl HttpServer {
    pub const ALL: [HttpServer; 5] = [
        HttpServer::Sidecar,
        HttpServer::KubeDnsHealthz,
        HttpServer::KubeDnsMetrics,
        HttpServer::DnsCacheMetrics,
        HttpServer::Nanny,
    ];

    pub fn name(self) -> &'static str {
        match self {
            HttpServer::Sidecar => "sidecar :10054",
            HttpServer::KubeDnsHealthz => "kube-dns :8081",
            HttpServer::KubeDnsMetrics => "kube-dns :10055",
            HttpServer::DnsCacheMetrics => "dns-cache :10057",
            HttpServer::Nanny => "dnsmasq-nanny :10056",
        }
    }

    pub fn limit(self) -> &'static str {
        match self {
            HttpServer::Sidecar => "32Mi",
            HttpServer::KubeDnsHealthz | HttpServer::KubeDnsMetrics => "170Mi",
            HttpServer::DnsCacheMetrics | HttpServer::Nanny => "64Mi",
        }
    }
}

/// A running server and what it needs kept alive.
#[derive(Debug)]
pub struct Running {
    pub process: ChildProcess,
    /// DNS over UDP and TCP (one port).
    pub dns: Option<SocketAddr>,
    /// The attacked HTTP listener and the health path a probe asks meanwhile.
    pub http: Option<(SocketAddr, &'static str)>,
    /// A cluster name it answers, and with what (kube-dns only).
    pub cluster_name: Option<(&'static str, IpAddr)>,
    pub upstream: FakeUpstream,
    _api: Option<FakeApiServer>,
}

/// The well-behaved client's forwarded names are answered with this.
pub const FORWARDED_ANSWER: IpAddr = IpAddr::V4(UPSTREAM_ANSWER);

const CLUSTER_NAME: (&str, IpAddr) = (
    "kubernetes.default.svc.cluster.local.",
    IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)),
);

/// Starts `server` in front of a fake upstream that never answers `drop.` names.
pub async fn start_dns(bins: &Binaries, server: DnsServer) -> anyhow::Result<Running> {
    let upstream = FakeUpstream::start().await?;
    let up = format!("--server={}#{}", upstream.addr.ip(), upstream.addr.port());
    match server {
        DnsServer::DnsCache => {
            let process = spawn_cache(bins, &up, &[])?;
            let dns = process.listening_addr("udp", START).await?;
            Ok(Running::dns(process, dns, None, upstream, None))
        }
        DnsServer::KubeDns => {
            let (process, api) = spawn_kube_dns(bins, &upstream, &[]).await?;
            let dns = process.listening_addr("udp", START).await?;
            Ok(Running::dns(
                process,
                dns,
                Some(CLUSTER_NAME),
                upstream,
                Some(api),
            ))
        }
        DnsServer::Dnsmasq => {
            // The legacy 1.14.13 manifest's flags, its upstream the fake.
            let dnsmasq = start_dnsmasq(&["--cache-size=1000", "--no-negcache", &up]).await?;
            Ok(Running::dns(
                dnsmasq.process,
                dnsmasq.addr,
                None,
                upstream,
                None,
            ))
        }
    }
}

/// Starts the server behind `listener`, with the listener on a loopback port.
pub async fn start_http(bins: &Binaries, listener: HttpServer) -> anyhow::Result<Running> {
    let upstream = FakeUpstream::start().await?;
    let up = format!("--server={}#{}", upstream.addr.ip(), upstream.addr.port());
    let (process, api, http) = match listener {
        HttpServer::Sidecar => {
            let dead = std::net::UdpSocket::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            let process = ChildProcess::spawn(
                bins.path("sidecar"),
                [
                    "--prometheus-addr=127.0.0.1".to_owned(),
                    "--prometheus-port=0".to_owned(),
                    format!("--dnsmasq-port={dead}"),
                    format!("--probe=kubedns,{},a.example.com,1,A", upstream.addr),
                ],
                no_env(),
            )?;
            let addr = process.listening_addr("http", START).await?;
            wait_status(addr, "/healthcheck/kubedns").await?;
            (process, None, (addr, "/healthcheck/kubedns"))
        }
        HttpServer::KubeDnsHealthz | HttpServer::KubeDnsMetrics => {
            let (process, api) =
                spawn_kube_dns(bins, &upstream, &[("PROMETHEUS_PORT", "0")]).await?;
            let http = if listener == HttpServer::KubeDnsHealthz {
                (process.listening_addr("http", START).await?, "/readiness")
            } else {
                (process.listening_addr("metrics", START).await?, "/metrics")
            };
            (process, Some(api), http)
        }
        HttpServer::DnsCacheMetrics => {
            let process = spawn_cache(bins, &up, &["--metrics-address=127.0.0.1:0"])?;
            let addr = process.listening_addr("metrics", START).await?;
            (process, None, (addr, "/healthz"))
        }
        HttpServer::Nanny => {
            let dir = kube_dns_test_support::tempdir("hostile-nanny")?;
            let process = ChildProcess::spawn(
                bins.path("dnsmasq-nanny"),
                [
                    "-healthAddress=127.0.0.1:0".to_owned(),
                    format!("-dnsmasqExec={}", bins.path("dns-cache")),
                    format!("-configDir={}", dir.join("config").display()),
                    format!("-serversFile={}", dir.join("servers").display()),
                    "--".to_owned(),
                    "-k".to_owned(),
                    "-p".to_owned(),
                    "0".to_owned(),
                    "-a".to_owned(),
                    "127.0.0.1".to_owned(),
                    "--no-hosts".to_owned(),
                    "--no-resolv".to_owned(),
                    up,
                ],
                no_env(),
            )?;
            let addr = process.listening_addr("http", START).await?;
            wait_status(addr, "/healthz").await?;
            (process, None, (addr, "/healthz"))
        }
    };
    Ok(Running {
        process,
        dns: None,
        http: Some(http),
        cluster_name: None,
        upstream,
        _api: api,
    })
}

impl Running {
    fn dns(
        process: ChildProcess,
        dns: SocketAddr,
        cluster_name: Option<(&'static str, IpAddr)>,
        upstream: FakeUpstream,
        api: Option<FakeApiServer>,
    ) -> Self {
        Running {
            process,
            dns: Some(dns),
            http: None,
            cluster_name,
            upstream,
            _api: api,
        }
    }
}

/// dns-cache with the manifest's cache size and everything else at its defaults.
fn spawn_cache(bins: &Binaries, server: &str, extra: &[&str]) -> anyhow::Result<ChildProcess> {
    let mut args = vec![
        "-k",
        "-p",
        "0",
        "-a",
        "127.0.0.1",
        "--no-hosts",
        "--no-resolv",
        "--cache-size=10000",
        server,
    ];
    args.extend_from_slice(extra);
    ChildProcess::spawn(bins.path("dns-cache"), args, no_env())
}

/// kube-dns at its defaults on loopback, synced with a fake API server holding the cluster.
async fn spawn_kube_dns(
    bins: &Binaries,
    upstream: &FakeUpstream,
    env: &[(&str, &str)],
) -> anyhow::Result<(ChildProcess, FakeApiServer)> {
    let api = FakeApiServer::new();
    api.load_yaml_file(&bins.cluster)?;
    let (api_addr, _task) = api.serve("127.0.0.1:0".parse()?).await?;
    let process = ChildProcess::spawn(
        bins.path("kube-dns"),
        [
            format!("--kube-master-url=http://{api_addr}"),
            "--domain=cluster.local.".into(),
            "--dns-bind-address=127.0.0.1".into(),
            "--dns-port=0".into(),
            "--healthz-bind-address=127.0.0.1".into(),
            "--healthz-port=0".into(),
            format!("--nameservers={}", upstream.addr),
        ],
        env.iter().copied(),
    )?;
    let http = process.listening_addr("http", START).await?;
    wait_status(http, "/readiness").await?;
    Ok((process, api))
}

/// Waits until `path` answers 200.
async fn wait_status(addr: SocketAddr, path: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + START;
    loop {
        if let Ok(response) = http_client::get(addr, path).await
            && response.status == 200
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{path} on {addr} did not answer 200 within {START:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn no_env() -> std::iter::Empty<(&'static str, &'static str)> {
    std::iter::empty()
}

/// The pid to measure: the server itself (for the nanny, the nanny; its child is measured in the
/// dns-cache rows).
pub fn pid(running: &Running) -> anyhow::Result<u32> {
    let pid = running.process.pid();
    std::fs::metadata(format!("/proc/{pid}")).with_context(|| format!("server {pid} is gone"))?;
    Ok(pid)
}
