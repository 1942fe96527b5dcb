//! The whole pod, run as the kubelet would run `kube-dns.yaml`: the three containers' binaries
//! with the manifest's own args (only addresses, ports and paths moved to this machine, and the
//! probe interval shortened), the ConfigMap directory mounted into two of them, against the fake
//! API server loaded with the demo cluster. Every probe of the manifest is called on the
//! container that declares its port.
// Whole-process tests time real processes on the real clocks (see clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use hickory_proto::rr::RecordType;
use kube_dns_pod_tests::{
    container_ports, containers, expanded_args, http_probes, metric_families, reference_entries,
    repo_root,
};
use kube_dns_test_support::dns_client::{answer_lines, dig, query_udp};
use kube_dns_test_support::fake_upstream::{FakeUpstream, UPSTREAM_ANSWER};
use kube_dns_test_support::objects::service;
use kube_dns_test_support::process::{ChildProcess, SIGKILL, SIGTERM};
use kube_dns_test_support::{FakeApiServer, http_client, write_configmap_key, write_kubeconfig};

const WAIT: Duration = Duration::from_secs(15);

/// Replaces `name=...` in `args` (or appends it): `name` includes its dashes.
fn set_flag(args: &mut Vec<String>, name: &str, value: &str) {
    let prefix = format!("{name}=");
    let flag = format!("{name}={value}");
    match args.iter_mut().find(|a| a.starts_with(&prefix)) {
        Some(arg) => *arg = flag,
        None => args.push(flag),
    }
}

fn replace_in_args(args: &mut [String], from: &str, to: &str) {
    for arg in args.iter_mut() {
        *arg = arg.replace(from, to);
    }
}

fn env_of(container: &serde_json::Value) -> Vec<(String, String)> {
    container["env"]
        .as_array()
        .map(|vars| {
            vars.iter()
                .filter_map(|v| {
                    Some((
                        v["name"].as_str()?.to_owned(),
                        v["value"].as_str()?.to_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn wait_status(addr: SocketAddr, path: &str, want: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        let last = http_client::get(addr, path).await;
        if let Ok(response) = &last
            && response.status == want
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{path} on {addr} never answered {want}: {last:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_answer(
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
    want: &str,
    within: Duration,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        if let Ok(reply) = query_udp(server, name, rtype).await
            && answer_lines(&reply).iter().any(|l| l.contains(want))
        {
            return Ok(started.elapsed());
        }
        if started.elapsed() > within {
            bail!("{name} {rtype} never answered {want} through {server} within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes a core/v1 Endpoints object for each Service's EndpointSlices, as the endpoints
/// controller does.
fn mirror_slices_to_endpoints(api: &FakeApiServer) {
    for slice in api.objects("endpointslices") {
        let namespace = slice["metadata"]["namespace"].as_str().unwrap_or("default");
        let Some(service) = slice["metadata"]["labels"]["kubernetes.io/service-name"].as_str()
        else {
            continue;
        };
        let mut endpoints = kube_dns_test_support::objects::endpoints(namespace, service);
        for endpoint in slice["endpoints"].as_array().into_iter().flatten() {
            let hostname = endpoint["hostname"].as_str();
            let ready = endpoint["conditions"]["ready"].as_bool().unwrap_or(true);
            for ip in endpoint["addresses"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str())
            {
                endpoints = if ready {
                    endpoints.address(ip, hostname)
                } else {
                    endpoints.not_ready_address(ip, hostname)
                };
            }
        }
        for port in slice["ports"].as_array().into_iter().flatten() {
            endpoints = endpoints.port(
                port["name"].as_str(),
                u16::try_from(port["port"].as_u64().unwrap_or(0)).unwrap_or(0),
                port["protocol"].as_str().unwrap_or("TCP"),
            );
        }
        api.apply(endpoints.build());
    }
}

/// The pod's three containers as running processes, and where they listen.
struct Pod {
    kubedns: ChildProcess,
    kubedns_http: SocketAddr,
    nanny: ChildProcess,
    nanny_health: SocketAddr,
    sidecar: ChildProcess,
    sidecar_http: SocketAddr,
    /// The client port (dns-cache under the nanny).
    cache: SocketAddr,
    /// The dnsmasq container's args as the manifest has them.
    manifest_args: Vec<String>,
}

/// Starts the manifest's containers (`all`) on loopback as the kubelet would, with their args
/// and env from the manifest, the API server through `kubeconfig` and the ConfigMap volume at
/// `config_dir`; ports the tests cannot bind become free loopback ports, probe intervals 1 s.
async fn start_pod(
    all: &HashMap<String, serde_json::Value>,
    work: &std::path::Path,
    kubeconfig: &std::path::Path,
    config_dir: &std::path::Path,
) -> anyhow::Result<Pod> {
    // kubedns
    let mut args = expanded_args(&all["kubedns"])?;
    set_flag(&mut args, "--config-dir", &config_dir.to_string_lossy());
    set_flag(&mut args, "--dns-port", "0");
    set_flag(&mut args, "--dns-bind-address", "127.0.0.1");
    set_flag(&mut args, "--healthz-port", "0");
    set_flag(&mut args, "--healthz-bind-address", "127.0.0.1");
    set_flag(&mut args, "--kubecfg-file", &kubeconfig.to_string_lossy());
    // The manifest's emptyDir for the saved zone, where the manifest has one.
    if args.iter().any(|a| a.starts_with("--snapshot-dir=")) {
        let zone_dir = work.join("kube-dns-zone");
        std::fs::create_dir_all(&zone_dir)?;
        set_flag(&mut args, "--snapshot-dir", &zone_dir.to_string_lossy());
    }
    // dns-cache's port, chosen now: kube-dns's --notify names it.
    let cache_port = kube_dns_test_support::free_dns_port()?;
    let cache = SocketAddr::from(([127, 0, 0, 1], cache_port));
    if args.iter().any(|a| a.starts_with("--notify=")) {
        set_flag(&mut args, "--notify", &cache.to_string());
    }
    let mut env = env_of(&all["kubedns"]);
    for (name, value) in env.iter_mut() {
        if name == "PROMETHEUS_PORT" {
            *value = "0".into();
        }
    }
    let kubedns = ChildProcess::spawn(
        kube_dns_test_support::workspace_binary("kube-dns")?,
        &args,
        env,
    )?;
    let kubedns_dns = kubedns.listening_addr("udp", WAIT).await?;
    let kubedns_http = kubedns.listening_addr("http", WAIT).await?;

    // dnsmasq: the nanny with dns-cache as its child, as in the image.
    let manifest_args = expanded_args(&all["dnsmasq"])?;
    let split = manifest_args
        .iter()
        .position(|a| a == "--")
        .context("the nanny args have no --")?;
    let mut nanny_args = manifest_args[..split].to_vec();
    let mut child_args = manifest_args[split + 1..].to_vec();
    set_flag(&mut nanny_args, "-configDir", &config_dir.to_string_lossy());
    set_flag(
        &mut nanny_args,
        "-serversFile",
        &work.join("servers").to_string_lossy(),
    );
    set_flag(&mut nanny_args, "-healthAddress", "127.0.0.1:0");
    set_flag(&mut nanny_args, "-kubednsServer", &kubedns_dns.to_string());
    set_flag(
        &mut nanny_args,
        "-dnsmasqExec",
        &kube_dns_test_support::workspace_binary("dns-cache")?.to_string_lossy(),
    );
    replace_in_args(
        &mut child_args,
        "127.0.0.1#10053",
        &format!("127.0.0.1#{}", kubedns_dns.port()),
    );
    set_flag(&mut child_args, "--metrics-address", "127.0.0.1:0");
    child_args.extend([
        "-p".into(),
        cache_port.to_string(),
        "-a".into(),
        "127.0.0.1".into(),
    ]);
    nanny_args.push("--".into());
    nanny_args.extend(child_args);
    let nanny = ChildProcess::spawn(
        kube_dns_test_support::workspace_binary("dnsmasq-nanny")?,
        &nanny_args,
        env_of(&all["dnsmasq"]),
    )?;
    let nanny_health = nanny.listening_addr("http", WAIT).await?;

    // sidecar
    let mut args = expanded_args(&all["sidecar"])?;
    replace_in_args(&mut args, "127.0.0.1:10053,", &format!("{kubedns_dns},"));
    replace_in_args(&mut args, "127.0.0.1:53,", &format!("{cache},"));
    replace_in_args(&mut args, ",5,", ",1,");
    set_flag(&mut args, "--prometheus-addr", "127.0.0.1");
    set_flag(&mut args, "--prometheus-port", "0");
    set_flag(&mut args, "--dnsmasq-port", &cache_port.to_string());
    set_flag(&mut args, "--dnsmasq-poll-interval-ms", "200");
    let sidecar = ChildProcess::spawn(
        kube_dns_test_support::workspace_binary("sidecar")?,
        &args,
        env_of(&all["sidecar"]),
    )?;
    let sidecar_http = sidecar.listening_addr("http", WAIT).await?;

    Ok(Pod {
        kubedns,
        kubedns_http,
        nanny,
        nanny_health,
        sidecar,
        sidecar_http,
        cache,
        manifest_args,
    })
}

async fn nanny_child_pid(health: SocketAddr) -> anyhow::Result<Option<u64>> {
    let body = http_client::get(health, "/healthz").await?.json()?;
    Ok(body["pid"]
        .as_u64()
        .filter(|&pid| pid > 0 && body["childRunning"] == true))
}

#[tokio::test]
async fn the_manifest_runs_as_a_pod_on_this_machine() -> anyhow::Result<()> {
    run_pod(&repo_root().join("kube-dns.yaml"), Manifest::Ours).await
}

/// Operators replacing kube-dns 1.14.13 swap only the image names: the legacy Deployment's args,
/// env and probes, with the legacy ClusterRole (no EndpointSlices), must give a working pod.
#[tokio::test]
async fn a_1_14_13_manifest_with_only_the_images_swapped_runs() -> anyhow::Result<()> {
    run_pod(
        &repo_root().join("tests/fixtures/kube-dns-1.14.13.yaml"),
        Manifest::Legacy,
    )
    .await
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Manifest {
    Ours,
    Legacy,
}

async fn run_pod(path: &std::path::Path, manifest_kind: Manifest) -> anyhow::Result<()> {
    let manifest = kube_dns_pod_tests::parse_objects(&std::fs::read_to_string(path)?)?;
    let all = containers(&manifest)?;
    let work = kube_dns_test_support::tempdir("pod")?;

    // The API server with the demo cluster, and the ConfigMap volume (kubelet layout) sending
    // names outside the cluster to a fake upstream instead of this machine's resolvers.
    let api = FakeApiServer::new();
    api.load_yaml_file(repo_root().join("examples/cluster.yaml"))?;
    if manifest_kind == Manifest::Legacy {
        // The bootstrap system:kube-dns ClusterRole grants services and endpoints only; the
        // control plane keeps core Endpoints beside the slices, as the fake does not.
        api.forbid("endpointslices");
        mirror_slices_to_endpoints(&api);
    }
    let (api_addr, _api_task) = api.serve("127.0.0.1:0".parse()?).await?;
    let kubeconfig = work.join("kubeconfig");
    write_kubeconfig(&kubeconfig, &format!("http://{api_addr}"))?;
    let upstream = FakeUpstream::start().await?;
    let config_dir = work.join("kube-dns-config");
    std::fs::create_dir_all(&config_dir)?;
    write_configmap_key(
        &config_dir,
        "upstreamNameservers",
        &format!("[\"{}\"]", upstream.addr),
    )?;

    let Pod {
        kubedns,
        kubedns_http,
        nanny,
        nanny_health,
        sidecar,
        sidecar_http,
        cache,
        manifest_args,
    } = start_pod(&all, &work, &kubeconfig, &config_dir).await?;

    // Every probe of the manifest, on the container that declares its port, turns 200.
    let served: HashMap<u16, SocketAddr> = [
        (8081, kubedns_http),
        (10054, sidecar_http),
        (10056, nanny_health),
    ]
    .into_iter()
    .collect();
    let owner_of_port: HashMap<u16, &str> =
        [(8081, "kubedns"), (10054, "sidecar"), (10056, "dnsmasq")]
            .into_iter()
            .collect();
    let mut probes = 0;
    for (name, container) in &all {
        for (kind, port, path) in http_probes(container) {
            let owner = owner_of_port
                .get(&port)
                .with_context(|| format!("{name} {kind}: port {port} is served by no binary"))?;
            // Ours declares every probed port; the legacy manifest never declared 8081.
            ensure!(
                manifest_kind == Manifest::Legacy || container_ports(&all[*owner]).contains(&port),
                "{name} {kind}: port {port} is not declared by {owner}"
            );
            wait_status(served[&port], &path, 200)
                .await
                .with_context(|| format!("{name} {kind} {path}:{port}"))?;
            probes += 1;
        }
    }
    ensure!(probes >= 4, "only {probes} probes in the manifest");

    // Queries through the cache port: the cluster zone from kube-dns, the rest upstream.
    wait_answer(
        cache,
        "kubernetes.default.svc.cluster.local.",
        RecordType::A,
        "10.96.0.1",
        WAIT,
    )
    .await?;
    wait_answer(
        cache,
        "web-0.web.demo.svc.cluster.local.",
        RecordType::A,
        "10.244.1.10",
        WAIT,
    )
    .await?;
    wait_answer(
        cache,
        "www.example.org.",
        RecordType::A,
        &UPSTREAM_ANSWER.to_string(),
        WAIT,
    )
    .await?;
    let dug = dig(cache, &["-x", "10.96.0.1", "+short"]).await?;
    ensure!(
        dug.contains("kubernetes.default.svc.cluster.local."),
        "dig -x: {dug}"
    );

    // A Service created in the API answers through the cache within 2 s, even though a client
    // asked for it just before and the cache holds that NXDOMAIN (negative caching is on).
    let before = query_udp(cache, "fresh.demo.svc.cluster.local.", RecordType::A).await?;
    ensure!(
        before.metadata.response_code == hickory_proto::op::ResponseCode::NXDomain,
        "{before:?}"
    );
    api.apply(
        service("demo", "fresh")
            .cluster_ip("10.96.7.7")
            .port(Some("http"), 80, "TCP")
            .build(),
    );
    let took = wait_answer(
        cache,
        "fresh.demo.svc.cluster.local.",
        RecordType::A,
        "10.96.7.7",
        Duration::from_secs(2),
    )
    .await?;
    eprintln!("new Service answered through the cache after {took:?}");

    // The sidecar reads the cache's statistics: max_size is the manifest's --cache-size.
    let cache_size = manifest_args
        .iter()
        .find_map(|a| a.strip_prefix("--cache-size="))
        .context("the manifest sets no --cache-size")?;
    let want = format!("kubedns_dnsmasq_max_size {cache_size}");
    let deadline = Instant::now() + WAIT;
    loop {
        let metrics = http_client::get(sidecar_http, "/metrics").await?.text();
        if metrics.lines().any(|l| l == want) {
            break;
        }
        ensure!(Instant::now() < deadline, "never {want}:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // docs/reference.md lists exactly the endpoints and metric families of the running binaries.
    let kubedns_metrics = kubedns.listening_addr("metrics", WAIT).await?;
    ensure!(http_client::get(kubedns_metrics, "/metrics").await?.status == 200);
    let cache_metrics = nanny.listening_addr("metrics", WAIT).await?;
    for (binary, addr) in [
        ("kube-dns", kubedns_http),
        ("dns-cache", cache_metrics),
        ("dnsmasq-nanny", nanny_health),
        ("sidecar", sidecar_http),
    ] {
        for path in reference_entries(binary, "Endpoints")? {
            let path = path.replace("<label>", "kubedns");
            let status = http_client::get(addr, &path).await?.status;
            ensure!(status != 404, "{binary}: documented {path} is not served");
        }
        let text = http_client::get(addr, "/metrics").await?.text();
        let exported: BTreeSet<String> = metric_families(&text)
            .into_iter()
            .map(|f| {
                f.replace("kubedns_probe_kubedns_", "kubedns_probe_<label>_")
                    .replace("kubedns_probe_dnsmasq_", "kubedns_probe_<label>_")
            })
            .collect();
        let documented: BTreeSet<String> =
            reference_entries(binary, "Metrics")?.into_iter().collect();
        let undocumented: Vec<&String> = exported.difference(&documented).collect();
        let absent: Vec<&String> = documented.difference(&exported).collect();
        ensure!(
            undocumented.is_empty() && absent.is_empty(),
            "{binary}: exported but not in docs/reference.md: {undocumented:?}; documented but not exported: {absent:?}"
        );
    }

    // Killing dns-cache is survived: the nanny starts it again on the same port.
    let pid = nanny_child_pid(nanny_health)
        .await?
        .context("the nanny reports no running child")?;
    let status = std::process::Command::new("kill")
        .args([format!("-{SIGKILL}"), pid.to_string()])
        .status()?;
    ensure!(status.success(), "kill {pid}");
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(Some(new)) = nanny_child_pid(nanny_health).await
            && new != pid
        {
            break;
        }
        ensure!(Instant::now() < deadline, "dns-cache was not restarted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_answer(
        cache,
        "kubernetes.default.svc.cluster.local.",
        RecordType::A,
        "10.96.0.1",
        WAIT,
    )
    .await?;
    wait_status(sidecar_http, "/healthcheck/dnsmasq", 200).await?;

    // SIGTERM to every container at once, as the kubelet sends it: through the lameduck
    // period (5 s in both manifests) every query a client sends to the pod's client port, for a
    // cluster name or a forwarded one, is answered; then every container exits 0.
    let containers = [
        ("sidecar", sidecar),
        ("dnsmasq-nanny", nanny),
        ("kube-dns", kubedns),
    ];
    for (_, process) in &containers {
        process.signal(SIGTERM)?;
    }
    let signalled = Instant::now();
    let mut asked = 0;
    while signalled.elapsed() < Duration::from_millis(3_500) {
        for (name, want) in [
            (
                "kubernetes.default.svc.cluster.local.".to_owned(),
                "10.96.0.1".to_owned(),
            ),
            (
                format!("stop{asked}.example.org."),
                UPSTREAM_ANSWER.to_string(),
            ),
        ] {
            let reply = query_udp(cache, &name, RecordType::A).await;
            let lines = reply.as_ref().map(answer_lines).unwrap_or_default();
            ensure!(
                lines
                    .iter()
                    .any(|line| line.ends_with(&format!(" A {want}"))),
                "{name} {:?} after SIGTERM to the pod: {reply:?}",
                signalled.elapsed()
            );
        }
        // A new cluster-zone name each time: not cached, so kube-dns answers it in lameduck.
        let name = format!("gone{asked}.demo.svc.cluster.local.");
        let reply = query_udp(cache, &name, RecordType::A).await;
        ensure!(
            reply.as_ref().is_ok_and(
                |r| r.metadata.response_code == hickory_proto::op::ResponseCode::NXDomain
            ),
            "{name} {:?} after SIGTERM to the pod: {reply:?}",
            signalled.elapsed()
        );
        asked += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ensure!(
        asked >= 10,
        "only {asked} rounds of queries during the lameduck"
    );
    for (name, mut process) in containers {
        let status = process.wait_exit(WAIT).await?;
        ensure!(status.success(), "{name} exit after SIGTERM: {status:?}");
    }
    std::fs::remove_dir_all(&work)?;
    Ok(())
}

/// Issue 13: a pod that starts while the API server is unreachable is not restarted by its
/// liveness probes (the kubelet would do it after about 110 s, again and again, although a
/// restart cannot help). kube-dns answers SERVFAIL with the Extended DNS Error "Not Ready",
/// dns-cache relays it, and the sidecar counts that as alive on `/healthcheck/<label>` while
/// `/readiness/<label>`, its metrics and kube-dns's `/readiness` say "not ready". Both
/// manifests, their probes as they declare them.
#[tokio::test]
async fn liveness_holds_and_readiness_fails_while_the_api_is_unreachable() -> anyhow::Result<()> {
    for (path, manifest_kind) in [
        (repo_root().join("kube-dns.yaml"), Manifest::Ours),
        (
            repo_root().join("tests/fixtures/kube-dns-1.14.13.yaml"),
            Manifest::Legacy,
        ),
    ] {
        let manifest = kube_dns_pod_tests::parse_objects(&std::fs::read_to_string(&path)?)?;
        let all = containers(&manifest)?;
        let work = kube_dns_test_support::tempdir("pod-no-api")?;
        // Nothing listens there: every connection to the API is refused.
        let kubeconfig = work.join("kubeconfig");
        write_kubeconfig(
            &kubeconfig,
            &format!(
                "http://127.0.0.1:{}",
                kube_dns_test_support::free_dns_port()?
            ),
        )?;
        let upstream = FakeUpstream::start().await?;
        let config_dir = work.join("kube-dns-config");
        std::fs::create_dir_all(&config_dir)?;
        write_configmap_key(
            &config_dir,
            "upstreamNameservers",
            &format!("[\"{}\"]", upstream.addr),
        )?;
        let pod = start_pod(&all, &work, &kubeconfig, &config_dir).await?;
        let served: HashMap<u16, SocketAddr> = [
            (8081, pod.kubedns_http),
            (10054, pod.sidecar_http),
            (10056, pod.nanny_health),
        ]
        .into_iter()
        .collect();
        let liveness: Vec<(u16, String)> = all
            .values()
            .flat_map(http_probes)
            .filter(|(kind, _, _)| *kind == "livenessProbe")
            .map(|(_, port, path)| (port, path))
            .collect();
        ensure!(
            liveness
                .iter()
                .any(|(_, path)| path == "/healthcheck/kubedns")
                && liveness
                    .iter()
                    .any(|(_, path)| path == "/healthcheck/dnsmasq"),
            "{manifest_kind:?}: the DNS containers' liveness goes through the sidecar: {liveness:?}"
        );
        // Once the sidecar has probed both (every second here), every liveness probe holds.
        wait_status(pod.sidecar_http, "/healthcheck/kubedns", 200).await?;
        wait_status(pod.sidecar_http, "/healthcheck/dnsmasq", 200).await?;
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until {
            for (port, path) in &liveness {
                let response = http_client::get(served[port], path).await?;
                ensure!(
                    response.status == 200,
                    "{manifest_kind:?}: liveness {path}:{port} answered {}: {}",
                    response.status,
                    response.text()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        // ... and nothing says ready.
        ensure!(
            http_client::get(pod.kubedns_http, "/readiness")
                .await?
                .status
                == 503
        );
        for label in ["kubedns", "dnsmasq"] {
            let response =
                http_client::get(pod.sidecar_http, &format!("/readiness/{label}")).await?;
            ensure!(
                response.status == 503 && response.text().contains("Not Ready"),
                "{manifest_kind:?}: /readiness/{label}: {} {}",
                response.status,
                response.text()
            );
        }
        let metrics = http_client::get(pod.sidecar_http, "/metrics").await?.text();
        for label in ["kubedns", "dnsmasq"] {
            let line = format!("kubedns_probe_ready{{probe=\"{label}\"}} 0");
            ensure!(
                metrics.lines().any(|l| l == line),
                "no {line:?} in\n{metrics}"
            );
        }
        // Names outside the cluster zone are answered meanwhile.
        wait_answer(
            pod.cache,
            "www.example.org.",
            RecordType::A,
            &UPSTREAM_ANSWER.to_string(),
            WAIT,
        )
        .await?;
        for (name, mut process) in [
            ("sidecar", pod.sidecar),
            ("dnsmasq-nanny", pod.nanny),
            ("kube-dns", pod.kubedns),
        ] {
            process.signal(SIGTERM)?;
            let status = process.wait_exit(WAIT).await?;
            ensure!(status.success(), "{name} exit after SIGTERM: {status:?}");
        }
        std::fs::remove_dir_all(&work)?;
    }
    Ok(())
}
