//! dns-cache `--node-local` in network namespaces made by the test (as root): a "node"
//! namespace runs the fake API server, kube-dns, an upstream for other names and the node-local
//! cache; a "pod" namespace, joined by a veth pair, asks the cache's link-local address.
//!
//! The kernel here has no `dummy` link type, so the interface is a veth end
//! (`--interface-kind=existing`); the dummy path is tested where the kernel has it, and
//! skipped with a message where it does not.

#![allow(clippy::disallowed_methods)]

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use hickory_proto::rr::{RData, RecordType};
use kube_dns_test_support::fake_upstream::{FakeUpstream, Rule};
use kube_dns_test_support::netns::{self, Netns};
use kube_dns_test_support::objects::service;
use kube_dns_test_support::process::{ChildProcess, SIGTERM};
use kube_dns_test_support::{FakeApiServer, workspace_binary};

const WAIT: Duration = Duration::from_secs(20);
const LINK_LOCAL: &str = "169.254.20.10";
const SERVICE_IP: &str = "10.96.0.10";
const WEB: &str = "web.default.svc.cluster.local";
const WEB_IP: &str = "10.96.100.5";
const EXTERNAL: &str = "www.example.com";
const EXTERNAL_IP: &str = "203.0.113.7";
const METRICS: &str = "127.0.0.1:9253";

/// The node with kube-dns and an upstream, and a pod namespace routed to it.
struct Lab {
    /// The handover lock and the instances' health sockets.
    dir: std::path::PathBuf,
    node: Netns,
    pod: Netns,
    _api: FakeApiServer,
    _upstream: FakeUpstream,
    _kubedns: ChildProcess,
    kubedns_dns: SocketAddr,
    upstream_addr: SocketAddr,
}

/// None (with the reason printed) where namespaces cannot be made; an error instead when
/// KDRS_REQUIRE_NETNS is set (scripts/test sets it when it runs as root).
async fn lab() -> anyhow::Result<Option<Lab>> {
    if let Some(reason) = netns::unavailable() {
        if std::env::var_os("KDRS_REQUIRE_NETNS").is_some() {
            bail!("KDRS_REQUIRE_NETNS is set, but {reason}");
        }
        eprintln!("skipped: {reason}");
        return Ok(None);
    }
    let dir = kube_dns_test_support::tempdir("node-local")?;
    let node = Netns::create("node")?;
    let pod = Netns::create("pod")?;
    node.veth_to(&pod, ("vnode", "10.123.0.1"), ("vpod", "10.123.0.2"))?;
    // The cache's interface: a veth end standing in for the dummy link.
    node.ip(&[
        "link",
        "add",
        "nodelocaldns",
        "type",
        "veth",
        "peer",
        "name",
        "nld-peer",
    ])?;
    let api = FakeApiServer::new();
    api.apply(
        service("default", "web")
            .cluster_ip(WEB_IP)
            .port(Some("http"), 80, "TCP")
            .build(),
    );
    let listener = node.enter(|| Ok(std::net::TcpListener::bind("127.0.0.1:0")?))?;
    let (api_addr, _task) = api.serve_std(listener)?;
    let port = node.enter(|| Ok(dns_transport::bind_dns_port("127.0.0.1:0".parse()?, 1)?))?;
    let upstream = FakeUpstream::start_bound(port).await?;
    upstream.set_rule(
        EXTERNAL,
        Rule::Answer {
            ips: vec![EXTERNAL_IP.parse()?],
            ttl: 300,
        },
    );
    let upstream_addr = upstream.addr;
    let kubedns = node.spawn(
        &workspace_binary("kube-dns")?,
        &[
            format!("--kube-master-url=http://{api_addr}"),
            "--dns-bind-address=127.0.0.1".into(),
            "--dns-port=0".into(),
            "--healthz-bind-address=127.0.0.1".into(),
            "--healthz-port=0".into(),
            format!("--nameservers={upstream_addr}"),
            "--lameduck=0s".into(),
        ],
    )?;
    let kubedns_dns = kubedns.listening_addr("tcp", WAIT).await?;
    Ok(Some(Lab {
        dir,
        node,
        pod,
        _api: api,
        _upstream: upstream,
        _kubedns: kubedns,
        kubedns_dns,
        upstream_addr,
    }))
}

fn hash(addr: SocketAddr) -> String {
    format!("{}#{}", addr.ip(), addr.port())
}

impl Lab {
    /// The node-local cache `name` on port 53 of `local_ips`: the cluster zone to kube-dns
    /// over the TCP pool, the rest to the upstream over UDP; the lab's handover lock, its own
    /// health socket.
    fn start_cache(
        &self,
        name: &str,
        local_ips: &str,
        extra: &[&str],
    ) -> anyhow::Result<ChildProcess> {
        let mut args: Vec<String> = vec![
            format!("--handover-lock={}", self.dir.join("lock").display()),
            format!("--health-socket={}", self.health_socket(name).display()),
            "-k".into(),
            "--no-resolv".into(),
            "--no-hosts".into(),
            "--node-local".into(),
            format!("--local-ip={local_ips}"),
            "--interface-kind=existing".into(),
            "--interface-name=nodelocaldns".into(),
            format!("--server=/cluster.local/{}", hash(self.kubedns_dns)),
            format!("--tcp-upstream={}", hash(self.kubedns_dns)),
            format!("--server={}", hash(self.upstream_addr)),
            format!("--metrics-address={METRICS}"),
            "--node-sync-interval=200ms".into(),
            "--workers=2".into(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        self.node.spawn(&workspace_binary("dns-cache")?, &args)
    }

    fn health_socket(&self, name: &str) -> std::path::PathBuf {
        self.dir.join(format!("{name}.sock"))
    }

    /// What `dns-cache --health-probe` says of instance `name`: Ok when healthy.
    fn probe(&self, name: &str) -> anyhow::Result<Result<(), String>> {
        let out = std::process::Command::new(workspace_binary("dns-cache")?)
            .arg(format!(
                "--health-probe={}",
                self.health_socket(name).display()
            ))
            .output()?;
        Ok(if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        })
    }

    fn metrics(&self) -> anyhow::Result<String> {
        self.node
            .exec("curl", &["-sf", &format!("http://{METRICS}/metrics")])
    }

    /// Waits until the metric line starting with `prefix` has a value of at least `min`.
    async fn wait_metric_at_least(&self, prefix: &str, min: u64) -> anyhow::Result<()> {
        let deadline = Instant::now() + WAIT;
        loop {
            let text = self.metrics().unwrap_or_default();
            let value = text
                .lines()
                .find(|l| l.starts_with(prefix))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<u64>().ok());
            if value.is_some_and(|v| v >= min) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{prefix} never reached {min}:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The A records of `name` asked from the pod namespace over UDP (or TCP).
    fn resolve(&self, server: &str, name: &str, tcp: bool) -> anyhow::Result<Vec<IpAddr>> {
        let server = SocketAddr::new(server.parse()?, 53);
        let timeout = Duration::from_secs(3);
        let reply = if tcp {
            self.pod.query_tcp(server, name, RecordType::A, timeout)?
        } else {
            self.pod.query_udp(server, name, RecordType::A, timeout)?
        };
        Ok(reply
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                _ => None,
            })
            .collect())
    }

    fn addresses(&self) -> anyhow::Result<String> {
        Ok(String::from_utf8_lossy(
            &self
                .node
                .ip(&["-o", "addr", "show", "dev", "nodelocaldns"])?
                .stdout,
        )
        .into_owned())
    }

    fn iptables(&self, table: &str) -> anyhow::Result<String> {
        self.node.exec("iptables", &["-t", table, "-S"])
    }
}

/// The rules `iptables -S` shows for one address (NodeLocal DNSCache's set).
fn expected_iptables(ip: &str) -> Vec<(&'static str, String)> {
    let mut rules = Vec::new();
    for proto in ["udp", "tcp"] {
        let to = format!("-d {ip}/32 -p {proto} -m {proto} --dport 53");
        let from = format!("-s {ip}/32 -p {proto} -m {proto} --sport 53");
        rules.push(("raw", format!("-A PREROUTING {to} -j NOTRACK")));
        rules.push(("raw", format!("-A OUTPUT {to} -j NOTRACK")));
        rules.push(("raw", format!("-A OUTPUT {from} -j NOTRACK")));
        rules.push(("filter", format!("-A INPUT {to} -j ACCEPT")));
        rules.push(("filter", format!("-A OUTPUT {from} -j ACCEPT")));
    }
    rules
}

/// Sends one UDP datagram from the pod to `dst` (a flow conntrack must record).
fn poke(pod: &Netns, dst: &str) -> anyhow::Result<()> {
    let dst: SocketAddr = dst.parse()?;
    pod.enter(move || {
        std::net::UdpSocket::bind("0.0.0.0:0")?.send_to(b"conntrack me", dst)?;
        Ok(())
    })
}

async fn wait_until(
    what: &str,
    mut check: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        if check()? {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("never: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pods_resolve_through_the_link_local_address_with_notrack_rules_kept_and_removed()
-> anyhow::Result<()> {
    let Some(lab) = lab().await? else {
        return Ok(());
    };
    // A rule that needs connection tracking, so the node's namespace tracks flows at all.
    lab.node.exec(
        "iptables",
        &[
            "-A",
            "INPUT",
            "-m",
            "conntrack",
            "--ctstate",
            "INVALID",
            "-j",
            "DROP",
        ],
    )?;
    let mut cache = lab.start_cache(
        "cache",
        LINK_LOCAL,
        &["--netfilter=iptables", "--lameduck=200"],
    )?;
    cache.listening_addr("udp", WAIT).await?;

    // Cluster names (kube-dns over the TCP pool) and other names (upstream over UDP), over UDP
    // and TCP, from the Rust client and from dig.
    for tcp in [false, true] {
        ensure!(lab.resolve(LINK_LOCAL, WEB, tcp)? == vec![WEB_IP.parse::<IpAddr>()?]);
        ensure!(lab.resolve(LINK_LOCAL, EXTERNAL, tcp)? == vec![EXTERNAL_IP.parse::<IpAddr>()?]);
    }
    let dig = lab.pod.exec(
        "dig",
        &[
            "+short",
            "+tries=1",
            "+time=3",
            &format!("@{LINK_LOCAL}"),
            WEB,
        ],
    )?;
    ensure!(dig.trim() == WEB_IP, "dig answered {dig:?}");
    lab.wait_metric_at_least(
        &format!(
            "dnscache_tcp_pool_connects_total{{server=\"{}\"}}",
            lab.kubedns_dns
        ),
        1,
    )
    .await?;

    // The rules, as iptables shows them; the address on the interface.
    for (table, rule) in expected_iptables(LINK_LOCAL) {
        let listed = lab.iptables(table)?;
        ensure!(
            listed.contains(&rule),
            "{rule} not in table {table}:\n{listed}"
        );
    }
    ensure!(lab.addresses()?.contains(&format!("{LINK_LOCAL}/32")));

    // Queries to the cache leave no conntrack entry; a flow to another address does.
    poke(&lab.pod, "10.123.0.1:9")?;
    ensure!(lab.resolve(LINK_LOCAL, WEB, false)? == vec![WEB_IP.parse::<IpAddr>()?]);
    let table = lab.node.conntrack()?;
    ensure!(
        table.contains("dst=10.123.0.1"),
        "conntrack does not track this namespace, so the check below proves nothing:\n{table}"
    );
    ensure!(
        !table.contains(LINK_LOCAL),
        "queries to {LINK_LOCAL} were tracked:\n{table}"
    );

    // Something deletes a rule and the address: both come back, and are counted.
    let errors_before = lab
        .metrics()?
        .lines()
        .find(|l| l.starts_with("dnscache_node_local_check_errors_total "))
        .map(str::to_owned);
    lab.node.exec(
        "iptables",
        &[
            "-t",
            "raw",
            "-D",
            "PREROUTING",
            "-d",
            LINK_LOCAL,
            "-p",
            "udp",
            "--dport",
            "53",
            "-j",
            "NOTRACK",
        ],
    )?;
    lab.node.ip(&[
        "addr",
        "del",
        &format!("{LINK_LOCAL}/32"),
        "dev",
        "nodelocaldns",
    ])?;
    lab.wait_metric_at_least("dnscache_node_local_restored_total{what=\"rules\"}", 1)
        .await?;
    lab.wait_metric_at_least("dnscache_node_local_restored_total{what=\"interface\"}", 1)
        .await?;
    ensure!(
        lab.iptables("raw")?
            .contains(&expected_iptables(LINK_LOCAL)[0].1)
    );
    ensure!(lab.addresses()?.contains(LINK_LOCAL));
    ensure!(lab.resolve(LINK_LOCAL, EXTERNAL, false)? == vec![EXTERNAL_IP.parse::<IpAddr>()?]);
    // No check failed across the deletions and the restore.
    let errors_after = lab
        .metrics()?
        .lines()
        .find(|l| l.starts_with("dnscache_node_local_check_errors_total "))
        .map(str::to_owned);
    ensure!(
        errors_before.is_some() && errors_before == errors_after,
        "{errors_before:?} {errors_after:?}"
    );

    // A normal exit removes our rules and address, and nothing else.
    cache.signal(SIGTERM)?;
    let status = cache.wait_exit(WAIT).await?;
    ensure!(status.success(), "{status}\n{}", cache.output_text());
    let raw = lab.iptables("raw")?;
    let filter = lab.iptables("filter")?;
    ensure!(
        !raw.contains(LINK_LOCAL) && !filter.contains(LINK_LOCAL),
        "{raw}\n{filter}"
    );
    ensure!(filter.contains("--ctstate INVALID -j DROP"), "{filter}");
    ensure!(!lab.addresses()?.contains(LINK_LOCAL));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nftables_mode_is_detected_from_kube_proxy_and_skip_teardown_keeps_everything()
-> anyhow::Result<()> {
    let Some(lab) = lab().await? else {
        return Ok(());
    };
    // kube-proxy in nftables mode, and a table that makes the namespace track flows.
    lab.node
        .exec("nft", &["add", "table", "ip", "kube-proxy"])?;
    lab.node
        .exec("nft", &["add", "table", "inet", "host-firewall"])?;
    lab.node.exec(
        "nft",
        &[
            "add chain inet host-firewall input { type filter hook input priority filter ; } ; add rule inet host-firewall input ct state invalid drop",
        ],
    )?;
    let both = format!("{LINK_LOCAL},{SERVICE_IP}");
    let mut cache = lab.start_cache("cache", &both, &["--skip-teardown", "--lameduck=100"])?;
    cache.listening_addr("udp", WAIT).await?;
    ensure!(
        cache.output_text().contains("rules=\"nftables\"")
            || cache.output_text().contains("rules=nftables"),
        "{}",
        cache.output_text()
    );

    let table = lab
        .node
        .exec("nft", &["list", "table", "inet", "node-local-dns"])?;
    for ip in [LINK_LOCAL, SERVICE_IP] {
        for line in [
            format!("ip daddr {ip} udp dport 53 notrack"),
            format!("ip daddr {ip} tcp dport 53 notrack"),
            format!("ip saddr {ip} udp sport 53 notrack"),
            format!("ip saddr {ip} tcp sport 53 notrack"),
        ] {
            ensure!(table.contains(&line), "{line} not in\n{table}");
        }
    }
    ensure!(
        !lab.iptables("raw")?.contains(LINK_LOCAL),
        "iptables used beside nftables"
    );

    // Both addresses answer; neither is tracked.
    poke(&lab.pod, "10.123.0.1:9")?;
    for server in [LINK_LOCAL, SERVICE_IP] {
        ensure!(lab.resolve(server, WEB, false)? == vec![WEB_IP.parse::<IpAddr>()?]);
        ensure!(lab.resolve(server, EXTERNAL, true)? == vec![EXTERNAL_IP.parse::<IpAddr>()?]);
    }
    let tracked = lab.node.conntrack()?;
    ensure!(
        tracked.contains("dst=10.123.0.1"),
        "no tracking at all:\n{tracked}"
    );
    ensure!(
        !tracked.contains(LINK_LOCAL) && !tracked.contains(SERVICE_IP),
        "{tracked}"
    );

    // The prerouting chain emptied (its rules are word for word the output chain's queries):
    // the missing ones are added back, each in its chain.
    let prerouting = |node: &Netns| -> anyhow::Result<usize> {
        let table = node.exec(
            "nft",
            &["list", "chain", "inet", "node-local-dns", "prerouting"],
        )?;
        Ok(table.lines().filter(|l| l.contains("notrack")).count())
    };
    lab.node.exec(
        "nft",
        &["flush", "chain", "inet", "node-local-dns", "prerouting"],
    )?;
    ensure!(prerouting(&lab.node)? == 0);
    lab.wait_metric_at_least("dnscache_node_local_restored_total{what=\"rules\"}", 4)
        .await?;
    let node = &lab.node;
    wait_until("the prerouting rules are back", || {
        Ok(prerouting(node).is_ok_and(|n| n == 4))
    })
    .await?;
    ensure!(lab.resolve(SERVICE_IP, WEB, false)? == vec![WEB_IP.parse::<IpAddr>()?]);

    // The table deleted: put back whole.
    lab.node
        .exec("nft", &["delete", "table", "inet", "node-local-dns"])?;
    lab.wait_metric_at_least("dnscache_node_local_restored_total{what=\"rules\"}", 4 + 12)
        .await?;
    wait_until("the table is back", || {
        Ok(node
            .exec("nft", &["list", "table", "inet", "node-local-dns"])
            .is_ok_and(|t| t.contains(&format!("ip daddr {SERVICE_IP} tcp dport 53 notrack"))))
    })
    .await?;

    // --skip-teardown: the table and addresses stay after the exit.
    cache.signal(SIGTERM)?;
    ensure!(cache.wait_exit(WAIT).await?.success());
    ensure!(
        cache.output_text().contains("--skip-teardown"),
        "{}",
        cache.output_text()
    );
    let table = lab
        .node
        .exec("nft", &["list", "table", "inet", "node-local-dns"])?;
    ensure!(table.contains(&format!("ip daddr {LINK_LOCAL} udp dport 53 notrack")));
    let addresses = lab.addresses()?;
    ensure!(
        addresses.contains(LINK_LOCAL) && addresses.contains(SERVICE_IP),
        "{addresses}"
    );
    Ok(())
}

/// What a client sending at a steady rate saw.
#[derive(Debug, Default)]
struct Steady {
    sent: usize,
    unanswered: Vec<usize>,
}

/// Sends queries from inside `pod` until `stop`: `clients` threads, each a query every
/// `every`, each query waiting up to 2 s for its answer (a client's first retry comes later).
fn steady_client(
    pod: &Netns,
    server: SocketAddr,
    clients: usize,
    every: Duration,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<Steady> {
    let query = kube_dns_test_support::dns_client::query_message(WEB, RecordType::A)?.to_vec()?;
    pod.enter(move || {
        // Threads made here inherit the namespace.
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..clients)
                .map(|_| {
                    let (query, stop) = (&query, &stop);
                    scope.spawn(move || -> anyhow::Result<Steady> {
                        let mut steady = Steady::default();
                        let mut buf = [0u8; 1500];
                        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                            let started = Instant::now();
                            // A fresh socket (source port) per query, so the kernel's hash
                            // spreads them over every socket of the group.
                            let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
                            socket.set_read_timeout(Some(Duration::from_secs(2)))?;
                            socket.send_to(query, server)?;
                            steady.sent += 1;
                            if socket.recv(&mut buf).is_err() {
                                steady.unanswered.push(steady.sent);
                            }
                            if let Some(rest) = every.checked_sub(started.elapsed()) {
                                std::thread::sleep(rest);
                            }
                        }
                        Ok(steady)
                    })
                })
                .collect();
            let mut all = Steady::default();
            for worker in workers {
                let one = worker
                    .join()
                    .map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
                all.unanswered
                    .extend(one.unanswered.iter().map(|n| all.sent + n));
                all.sent += one.sent;
            }
            Ok(all)
        })
    })
}

/// Four clients in the pod, a query each per millisecond to the link-local address, until
/// [`SteadyLoad::finish`].
struct SteadyLoad {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<anyhow::Result<Steady>>,
}

impl SteadyLoad {
    fn start(lab: &std::sync::Arc<Lab>) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (lab, flag) = (lab.clone(), stop.clone());
        let task = tokio::task::spawn_blocking(move || {
            steady_client(
                &lab.pod,
                SocketAddr::new(LINK_LOCAL.parse().expect("ip"), 53),
                4,
                Duration::from_millis(1),
                flag,
            )
        });
        SteadyLoad { stop, task }
    }

    async fn finish(self) -> anyhow::Result<Steady> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.await.context("client thread")?
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replacement_instance_takes_over_and_no_query_is_lost() -> anyhow::Result<()> {
    let Some(lab) = lab().await? else {
        return Ok(());
    };
    let lab = std::sync::Arc::new(lab);
    let args = ["--netfilter=iptables", "--lameduck=1000"];
    let mut old = lab.start_cache("old", LINK_LOCAL, &args)?;
    old.listening_addr("udp", WAIT).await?;
    ensure!(lab.resolve(LINK_LOCAL, WEB, false)? == vec![WEB_IP.parse::<IpAddr>()?]);

    let client = SteadyLoad::start(&lab);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The rolling update: the new instance starts beside the old one, then the old one gets
    // SIGTERM, drains during its lameduck and exits.
    let mut new = lab.start_cache("new", LINK_LOCAL, &args)?;
    new.listening_addr("udp", WAIT).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    ensure!(lab.probe("old")?.is_ok() && lab.probe("new")?.is_ok());
    old.signal(SIGTERM)?;
    // Each pod's probe reaches its own instance, though they share every port.
    old.wait_for_line("new packets go to the other instance", WAIT)
        .await?;
    let old_probe = lab.probe("old")?;
    ensure!(
        old_probe.as_ref().is_err_and(|e| e.contains("lameduck")),
        "{old_probe:?}"
    );
    ensure!(lab.probe("new")?.is_ok());
    let status = old.wait_exit(WAIT).await?;
    ensure!(status.success(), "{status}\n{}", old.output_text());
    tokio::time::sleep(Duration::from_millis(700)).await;
    let steady = client.finish().await?;
    ensure!(steady.sent > 1000, "only {} queries sent", steady.sent);
    ensure!(
        steady.unanswered.is_empty(),
        "{} of {} queries unanswered (numbers {:?})\nold:\n{}\nnew:\n{}",
        steady.unanswered.len(),
        steady.sent,
        steady.unanswered,
        old.output_text(),
        new.output_text()
    );
    // The old instance left the rules to its successor, which answers alone now.
    ensure!(
        old.output_text().contains("a successor holds the port"),
        "{}",
        old.output_text()
    );
    for (table, rule) in expected_iptables(LINK_LOCAL) {
        ensure!(
            lab.iptables(table)?.contains(&rule),
            "{rule} gone after the handover"
        );
    }
    ensure!(lab.addresses()?.contains(LINK_LOCAL));
    ensure!(lab.resolve(LINK_LOCAL, EXTERNAL, true)? == vec![EXTERNAL_IP.parse::<IpAddr>()?]);

    // The last instance out tears down.
    new.signal(SIGTERM)?;
    ensure!(new.wait_exit(WAIT).await?.success());
    ensure!(!lab.iptables("raw")?.contains(LINK_LOCAL));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dummy_interface_is_created_and_deleted_where_the_kernel_has_the_type()
-> anyhow::Result<()> {
    let Some(lab) = lab().await? else {
        return Ok(());
    };
    if let Err(error) = lab.node.ip(&["link", "add", "probe0", "type", "dummy"]) {
        eprintln!(
            "skipped: this kernel refuses dummy links ({error}); the netlink message is covered by node-local's unit test"
        );
        return Ok(());
    }
    lab.node.ip(&["link", "del", "probe0"])?;
    // The lab's cache, but on a dummy link of its own making (later flags win).
    let mut cache = lab.start_cache(
        "cache",
        LINK_LOCAL,
        &[
            "--interface-kind=dummy",
            "--interface-name=nld-dummy",
            "--netfilter=none",
            "--lameduck=0",
        ],
    )?;
    cache.listening_addr("udp", WAIT).await?;
    let link = String::from_utf8_lossy(&lab.node.ip(&["-d", "link", "show", "nld-dummy"])?.stdout)
        .into_owned();
    ensure!(link.contains("dummy") && link.contains("UP"), "{link}");
    cache.signal(SIGTERM)?;
    ensure!(cache.wait_exit(WAIT).await?.success());
    ensure!(
        lab.node.ip(&["link", "show", "nld-dummy"]).is_err(),
        "the dummy link stayed"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cache_that_cannot_bind_takes_its_rules_back() -> anyhow::Result<()> {
    let Some(lab) = lab().await? else {
        return Ok(());
    };
    // Something else holds TCP port 53 on the address, without SO_REUSEPORT.
    lab.node.ip(&[
        "addr",
        "add",
        &format!("{LINK_LOCAL}/32"),
        "dev",
        "nodelocaldns",
    ])?;
    let _squatter = lab
        .node
        .enter(|| Ok(std::net::TcpListener::bind((LINK_LOCAL, 53))?))?;
    let mut cache = lab.start_cache("cache", LINK_LOCAL, &["--netfilter=iptables"])?;
    let status = cache.wait_exit(WAIT).await?;
    let output = cache.output_text();
    ensure!(!status.success(), "{output}");
    ensure!(
        output.contains("cannot bind DNS over TCP on 169.254.20.10:53"),
        "{output}"
    );
    // It had set them up, then took them back.
    ensure!(output.contains("rules_added=10"), "{output}");
    ensure!(output.contains("interface and rules removed"), "{output}");
    // The rules it had set up are gone, or the node would lose kube-proxy's path.
    let raw = lab.iptables("raw")?;
    ensure!(!raw.contains(LINK_LOCAL), "{raw}");
    ensure!(!lab.iptables("filter")?.contains(LINK_LOCAL));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_newer_instance_stopped_first_leaves_the_older_one_serving_and_the_rules_in_place()
-> anyhow::Result<()> {
    // A rollback: the surge pod is deleted while the old one stays.
    let Some(lab) = lab().await? else {
        return Ok(());
    };
    let lab = std::sync::Arc::new(lab);
    let args = ["--netfilter=iptables", "--lameduck=1000"];
    let mut old = lab.start_cache("old", LINK_LOCAL, &args)?;
    old.listening_addr("udp", WAIT).await?;
    old.wait_for_line("alone on the port", WAIT).await?;
    let mut new = lab.start_cache("new", LINK_LOCAL, &args)?;
    new.listening_addr("udp", WAIT).await?;
    ensure!(lab.resolve(LINK_LOCAL, WEB, false)? == vec![WEB_IP.parse::<IpAddr>()?]);
    let client = SteadyLoad::start(&lab);
    tokio::time::sleep(Duration::from_millis(300)).await;
    new.signal(SIGTERM)?;
    ensure!(
        new.wait_exit(WAIT).await?.success(),
        "{}",
        new.output_text()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let steady = client.finish().await?;
    let out = new.output_text();
    ensure!(
        out.contains("new packets go to the other instance") && out.contains("the older instance"),
        "{out}"
    );
    ensure!(out.contains("leaving the interface and rules"), "{out}");
    // The newer one handed its share back and drained before closing.
    ensure!(steady.sent > 1000, "only {} queries sent", steady.sent);
    ensure!(
        steady.unanswered.is_empty(),
        "{} of {} unanswered (numbers {:?})\nold:\n{}\nnew:\n{out}",
        steady.unanswered.len(),
        steady.sent,
        steady.unanswered,
        old.output_text()
    );
    for (table, rule) in expected_iptables(LINK_LOCAL) {
        ensure!(lab.iptables(table)?.contains(&rule), "{rule} gone");
    }
    ensure!(lab.resolve(LINK_LOCAL, EXTERNAL, false)? == vec![EXTERNAL_IP.parse::<IpAddr>()?]);
    old.signal(SIGTERM)?;
    ensure!(old.wait_exit(WAIT).await?.success());
    ensure!(
        !lab.iptables("raw")?.contains(LINK_LOCAL),
        "the last one out tears down:\n{}",
        old.output_text()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cache_that_fails_after_binding_takes_its_rules_back() -> anyhow::Result<()> {
    let Some(lab) = lab().await? else {
        return Ok(());
    };
    // The pid file is written after the set-up and the binding; its directory does not exist.
    let mut cache = lab.start_cache(
        "cache",
        LINK_LOCAL,
        &[
            "--netfilter=iptables",
            "--pid-file=/nonexistent/dir/dns-cache.pid",
        ],
    )?;
    let status = cache.wait_exit(WAIT).await?;
    let output = cache.output_text();
    ensure!(!status.success(), "{output}");
    ensure!(output.contains("cannot write --pid-file"), "{output}");
    ensure!(output.contains("rules_added=10"), "{output}");
    ensure!(output.contains("interface and rules removed"), "{output}");
    ensure!(!lab.iptables("raw")?.contains(LINK_LOCAL));
    ensure!(!lab.addresses()?.contains(LINK_LOCAL));
    Ok(())
}
