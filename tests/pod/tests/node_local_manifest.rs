//! The node-local cache's manifest (`node-local/`): `kubectl kustomize` renders it offline, the
//! DaemonSet holds what a per-node cache with hitless updates needs and no more privilege, the
//! parameters reach its environment, and its args, as the kubelet expands them, are accepted by
//! dnsmasq-nanny's and dns-cache's own parsers.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, ensure};
use dns_cache::config::{CacheConfig, ServerTarget};
use dnsmasq_nanny::cli::NannyConfig;
use kube_dns_pod_tests::{
    container_ports, containers, expanded_args, expanded_args_with, http_probes, kinds_and_names,
    kustomize, object, owned_pairs, parse_objects, pod_containers, repo_root,
};
use serde_json::{Value, json};

/// The kube-dns-upstream Service's cluster IP (the API server picks it), as the kubelet's service
/// environment variables give it to the pod.
const UPSTREAM_IP: &str = "10.96.0.11";
const UPSTREAM_ENV: &[(&str, &str)] = &[("KUBE_DNS_UPSTREAM_SERVICE_HOST", UPSTREAM_IP)];
/// dns-cache's `/metrics` and `/healthz`.
const METRICS_PORT: u16 = 9253;

fn node_local_dir() -> PathBuf {
    repo_root().join("node-local")
}

fn shipped() -> anyhow::Result<Vec<Value>> {
    parse_objects(&std::fs::read_to_string(
        node_local_dir().join("node-local-dns.yaml"),
    )?)
}

fn kube_dns_yaml() -> anyhow::Result<Vec<Value>> {
    parse_objects(&std::fs::read_to_string(repo_root().join("kube-dns.yaml"))?)
}

/// The DaemonSet's one container.
fn node_cache(objects: &[Value]) -> anyhow::Result<Value> {
    let mut all = pod_containers(object(objects, "DaemonSet", "node-local-dns")?)?;
    let names: Vec<String> = all.keys().cloned().collect();
    ensure!(names == ["node-cache"], "{names:?}");
    all.remove("node-cache").context("node-cache container")
}

/// The container's args as the kubelet runs them, parsed by the nanny and then, after `--`, by
/// dns-cache.
fn parsed(container: &Value) -> anyhow::Result<(NannyConfig, CacheConfig)> {
    let args = expanded_args_with(container, UPSTREAM_ENV)?;
    ensure!(
        args.iter().all(|a| !a.contains("$(")),
        "unexpanded: {args:?}"
    );
    let nanny =
        NannyConfig::parse_args(args).map_err(|e| anyhow::anyhow!("dnsmasq-nanny args: {e}"))?;
    let cache = CacheConfig::parse_args(nanny.child_args.clone())
        .map_err(|e| anyhow::anyhow!("dns-cache args {:?}: {e}", nanny.child_args))?;
    Ok((nanny, cache))
}

/// A literal `env` value of a container.
fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container["env"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == name)?["value"]
        .as_str()
}

#[test]
fn node_local_yaml_and_its_kustomize_rendering_hold_the_same_objects() -> anyhow::Result<()> {
    let raw = shipped()?;
    let rendered = kustomize(&node_local_dir())?;
    let kinds = kinds_and_names;
    // In this order: the Service before the DaemonSet, whose pods read its cluster IP from the
    // service environment variables the kubelet sets when a container starts.
    let expected = owned_pairs(&[
        ("ServiceAccount", "node-local-dns"),
        ("Service", "kube-dns-upstream"),
        ("DaemonSet", "node-local-dns"),
    ]);
    ensure!(kinds(&raw) == expected, "{:?}", kinds(&raw));
    ensure!(
        kinds(&rendered) == expected,
        "the parameters ConfigMap must not be rendered, and the Service comes first: {:?}",
        kinds(&rendered)
    );
    for o in raw.iter().chain(&rendered) {
        ensure!(o["metadata"]["namespace"] == "kube-system", "{o}");
    }
    let image = node_cache(&raw)?["image"].clone();
    ensure!(image == "kube-dns-rs/node-cache:0.1.0", "{image}");
    // The kustomization points the image at the operator's registry.
    let image = node_cache(&rendered)?["image"].clone();
    ensure!(
        image == "harbor.example.com/dns/node-cache:0.1.0",
        "{image}"
    );
    Ok(())
}

#[test]
fn the_upstream_service_selects_the_kube_dns_pods_on_port_53() -> anyhow::Result<()> {
    let objects = shipped()?;
    let service = object(&objects, "Service", "kube-dns-upstream")?;
    ensure!(
        service["spec"]["selector"] == json!({"k8s-app": "kube-dns"}),
        "{}",
        service["spec"]["selector"]
    );
    // A cluster IP of its own: the cache listens on the kube-dns Service's.
    ensure!(service["spec"]["type"] == "ClusterIP");
    ensure!(service["spec"]["clusterIP"].is_null());
    let ports: BTreeSet<(String, u64, String, u64)> = service["spec"]["ports"]
        .as_array()
        .context("service ports")?
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or("").to_owned(),
                p["port"].as_u64().unwrap_or(0),
                p["protocol"].as_str().unwrap_or("").to_owned(),
                p["targetPort"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let expected: BTreeSet<(String, u64, String, u64)> = [
        ("dns".to_owned(), 53, "UDP".to_owned(), 53),
        ("dns-tcp".to_owned(), 53, "TCP".to_owned(), 53),
    ]
    .into();
    ensure!(ports == expected, "{ports:?}");
    // The selector matches kube-dns.yaml's pods, whose cache listens on 53.
    let kube_dns = kube_dns_yaml()?;
    let deployment = object(&kube_dns, "Deployment", "kube-dns")?;
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    ensure!(labels["k8s-app"] == "kube-dns", "{labels}");
    let pod = containers(&kube_dns)?;
    let dnsmasq = pod.get("dnsmasq").context("dnsmasq container")?;
    ensure!(container_ports(dnsmasq).contains(&53));
    Ok(())
}

#[test]
fn the_daemonset_runs_everywhere_updates_without_a_gap_and_holds_only_the_capabilities_it_needs()
-> anyhow::Result<()> {
    let objects = shipped()?;
    let daemonset = object(&objects, "DaemonSet", "node-local-dns")?;
    let spec = &daemonset["spec"];
    ensure!(spec["updateStrategy"]["type"] == "RollingUpdate");
    let rolling = &spec["updateStrategy"]["rollingUpdate"];
    ensure!(
        rolling["maxUnavailable"] == 0 && rolling["maxSurge"] == 1,
        "{rolling}"
    );
    ensure!(
        spec["selector"]["matchLabels"]["k8s-app"] == "node-local-dns"
            && spec["template"]["metadata"]["labels"]["k8s-app"] == "node-local-dns"
    );
    let annotations = &spec["template"]["metadata"]["annotations"];
    ensure!(
        annotations["prometheus.io/scrape"] == "true"
            && annotations["prometheus.io/port"].as_str()
                == Some(METRICS_PORT.to_string().as_str()),
        "{annotations}"
    );
    let pod = &spec["template"]["spec"];
    ensure!(pod["hostNetwork"] == true);
    ensure!(pod["dnsPolicy"] == "Default");
    ensure!(pod["priorityClassName"] == "system-node-critical");
    ensure!(pod["serviceAccountName"] == "node-local-dns");
    ensure!(
        pod["enableServiceLinks"] != false,
        "the args need the service links"
    );
    ensure!(
        pod["tolerations"] == json!([{"operator": "Exists"}]),
        "{}",
        pod["tolerations"]
    );
    ensure!(pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault");

    let c = node_cache(&objects)?;
    // With hostNetwork every declared port becomes a hostPort, and the scheduler would keep the
    // surge pod off the node its old pod holds.
    ensure!(
        c["ports"].is_null(),
        "declared ports block the surge: {}",
        c["ports"]
    );
    let sc = &c["securityContext"];
    ensure!(sc["runAsUser"] == 0, "{sc}");
    ensure!(sc["allowPrivilegeEscalation"] == false, "{sc}");
    ensure!(sc["readOnlyRootFilesystem"] == true, "{sc}");
    ensure!(
        sc["privileged"].is_null() || sc["privileged"] == false,
        "{sc}"
    );
    ensure!(sc["capabilities"]["drop"] == json!(["ALL"]), "{sc}");
    let added = sc["capabilities"]["add"]
        .as_array()
        .context("capabilities.add")?;
    let added: BTreeSet<&str> = added.iter().filter_map(Value::as_str).collect();
    ensure!(
        added == BTreeSet::from(["NET_ADMIN", "NET_BIND_SERVICE"])
            && sc["capabilities"]["add"].as_array().map(Vec::len) == Some(2),
        "{sc}"
    );

    // The ConfigMap as in kube-dns.yaml, a writable /tmp for the servers file, the handover
    // lock.
    let volumes = pod["volumes"].as_array().context("volumes")?;
    let mounts = c["volumeMounts"].as_array().context("volumeMounts")?;
    let mounted_at = |path: &str| -> Value {
        mounts
            .iter()
            .find(|m| m["mountPath"] == path)
            .and_then(|m| volumes.iter().find(|v| v["name"] == m["name"]))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let config = mounted_at("/etc/k8s/dns/dnsmasq-nanny");
    ensure!(
        config["configMap"] == json!({"name": "kube-dns", "optional": true}),
        "{config}"
    );
    let tmp = mounted_at("/tmp");
    ensure!(tmp["emptyDir"].is_object(), "{tmp}");
    // The handover lock is on the node, shared by the old and the new pod.
    let lock = mounted_at("/run/node-local-dns");
    ensure!(
        lock["hostPath"] == json!({"path": "/run/node-local-dns", "type": "DirectoryOrCreate"}),
        "{lock}"
    );
    let (_, cache) = parsed(&c)?;
    ensure!(
        cache.handover_lock.as_deref() == Some(std::path::Path::new("/run/node-local-dns/lock"))
    );

    // Both probes ask this pod's own dns-cache through its health socket in the pod's /tmp
    // (9253 is shared with the other pod during a rollout); readiness the more often.
    ensure!(http_probes(&c).is_empty(), "no HTTP probe on a shared port");
    let socket = cache.health_socket.clone().context("--health-socket")?;
    ensure!(socket.starts_with("/tmp"), "{}", socket.display());
    for kind in ["livenessProbe", "readinessProbe"] {
        let command: Vec<&str> = c[kind]["exec"]["command"]
            .as_array()
            .with_context(|| format!("{kind} exec"))?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let probe = format!("--health-probe={}", socket.display());
        ensure!(
            command == ["/dns-cache", probe.as_str()],
            "{kind}: {command:?}"
        );
        let parsed = dns_cache::CacheConfig::parse_args(command[1..].iter().copied())?;
        ensure!(parsed.health_probe.as_deref() == Some(socket.as_path()));
    }
    // A fixed worker count: the handover finds the successor's sockets past its own.
    ensure!(cache.workers == 2, "--workers {}", cache.workers);
    let period = |kind: &str| c[kind]["periodSeconds"].as_u64().unwrap_or(10);
    ensure!(period("readinessProbe") < period("livenessProbe"));

    // The memory bound of dns-cache in kube-dns.yaml's dnsmasq container.
    let resources = &c["resources"];
    ensure!(
        resources["requests"]["cpu"] == "25m" && resources["requests"]["memory"] == "32Mi",
        "{resources}"
    );
    let kube_dns = kube_dns_yaml()?;
    let pod_cache = containers(&kube_dns)?
        .remove("dnsmasq")
        .context("dnsmasq container")?;
    ensure!(
        resources["limits"]["memory"] == "64Mi"
            && resources["limits"]["memory"] == pod_cache["resources"]["limits"]["memory"],
        "{resources}"
    );

    // The grace period covers dns-cache's lameduck inside the nanny's stop grace.
    let (nanny, cache) = parsed(&c)?;
    let grace = pod["terminationGracePeriodSeconds"]
        .as_u64()
        .context("terminationGracePeriodSeconds")?;
    ensure!(
        cache.lameduck < nanny.stop_grace,
        "lameduck {:?}, stop grace {:?}",
        cache.lameduck,
        nanny.stop_grace
    );
    ensure!(
        Duration::from_secs(grace) >= nanny.stop_grace + Duration::from_secs(10),
        "terminationGracePeriodSeconds {grace} against a stop grace of {:?}",
        nanny.stop_grace
    );
    Ok(())
}

#[test]
fn the_node_cache_args_are_accepted_by_the_nanny_and_by_dns_cache() -> anyhow::Result<()> {
    let objects = shipped()?;
    let c = node_cache(&objects)?;
    let (nanny, cache) = parsed(&c)?;
    ensure!(nanny.config_dir.to_str() == Some("/etc/k8s/dns/dnsmasq-nanny"));
    ensure!(
        nanny.servers_file.starts_with("/tmp"),
        "{}",
        nanny.servers_file.display()
    );
    // Stub nameserver names in the cluster zone are resolved through kube-dns-upstream.
    let upstream = SocketAddr::new(UPSTREAM_IP.parse()?, 53);
    ensure!(nanny.kubedns_server == upstream, "{}", nanny.kubedns_server);
    // No listener of the nanny's on a fixed port of the node: the surge pod could not open it.
    ensure!(nanny.health_address.is_none(), "{:?}", nanny.health_address);

    ensure!(cache.cache_size == 10000, "cache size {}", cache.cache_size);
    ensure!(cache.dns_loop_detect);
    ensure!(
        cache.lameduck == Duration::from_secs(5),
        "{:?}",
        cache.lameduck
    );
    ensure!(
        cache.metrics_address == Some(SocketAddr::from(([0, 0, 0, 0], METRICS_PORT))),
        "{:?}",
        cache.metrics_address
    );
    // Names outside the cluster: the node's resolv.conf (dnsPolicy: Default).
    ensure!(!cache.no_resolv);
    // The cluster zone and the reverse zones go to kube-dns through kube-dns-upstream, and
    // nothing else has a route.
    let mut routes = BTreeSet::new();
    for server in &cache.servers {
        ensure!(
            matches!(server.target, ServerTarget::Address(_)),
            "{server:?}"
        );
        if let ServerTarget::Address(addr) = &server.target {
            for domain in &server.domains {
                routes.insert((domain.clone(), *addr));
            }
        }
    }
    let expected: BTreeSet<(String, SocketAddr)> = ["cluster.local", "in-addr.arpa", "ip6.arpa"]
        .iter()
        .map(|d| ((*d).to_owned(), upstream))
        .collect();
    ensure!(routes == expected, "{routes:?}");

    // Node-local mode on the link-local address and kube-dns.yaml's Service IP, kube-dns asked
    // over pooled TCP.
    let kube_dns = kube_dns_yaml()?;
    let service_ip: IpAddr = object(&kube_dns, "Service", "kube-dns")?["spec"]["clusterIP"]
        .as_str()
        .context("kube-dns clusterIP")?
        .parse()?;
    ensure!(cache.node_local);
    ensure!(
        cache.local_ips == [IpAddr::from([169, 254, 20, 10]), service_ip],
        "{:?}",
        cache.local_ips
    );
    ensure!(cache.port == 53);
    ensure!(
        cache.interface_name == "nodelocaldns",
        "{}",
        cache.interface_name
    );
    ensure!(
        !cache.skip_teardown,
        "a stopped cache hands the Service IP back"
    );
    ensure!(
        cache.tcp_upstreams == [upstream],
        "{:?}",
        cache.tcp_upstreams
    );

    // A pod started before the kube-dns-upstream Service existed has the variable unexpanded:
    // the nanny refuses its own args at once (exit 64), so the kubelet restarts the container,
    // which then gets the variable.
    let unexpanded = expanded_args(&c)?;
    ensure!(
        NannyConfig::parse_args(unexpanded).is_err(),
        "the nanny accepts an unexpanded -kubednsServer"
    );
    Ok(())
}

#[test]
fn parameters_reach_the_daemonset() -> anyhow::Result<()> {
    // The defaults: kube-dns.yaml's domain, the link-local address and its Service IP.
    let kube_dns = kube_dns_yaml()?;
    let service_ip = object(&kube_dns, "Service", "kube-dns")?["spec"]["clusterIP"]
        .as_str()
        .context("kube-dns clusterIP")?
        .to_owned();
    let c = node_cache(&kustomize(&node_local_dir())?)?;
    ensure!(env_value(&c, "CLUSTER_DOMAIN") == Some("cluster.local"));
    let local_ips = format!("169.254.20.10,{service_ip}");
    ensure!(
        env_value(&c, "LOCAL_IPS") == Some(local_ips.as_str()),
        "{:?}",
        env_value(&c, "LOCAL_IPS")
    );

    // Another domain, and an IPVS cluster's link-local address alone.
    let dir = kube_dns_test_support::tempdir("kustomize-node-local")?;
    std::fs::copy(
        node_local_dir().join("node-local-dns.yaml"),
        dir.join("node-local-dns.yaml"),
    )?;
    let kustomization = std::fs::read_to_string(node_local_dir().join("kustomization.yaml"))?;
    ensure!(kustomization.contains("clusterDomain=cluster.local"));
    ensure!(kustomization.contains("localIPs=169.254.20.10,10.96.0.10"));
    std::fs::write(
        dir.join("kustomization.yaml"),
        kustomization
            .replace("clusterDomain=cluster.local", "clusterDomain=corp.example")
            .replace(
                "localIPs=169.254.20.10,10.96.0.10",
                "localIPs=169.254.20.10",
            ),
    )?;
    let objects = kustomize(&dir)?;
    let c = node_cache(&objects)?;
    ensure!(env_value(&c, "CLUSTER_DOMAIN") == Some("corp.example"));
    ensure!(env_value(&c, "LOCAL_IPS") == Some("169.254.20.10"));
    let args = expanded_args_with(&c, UPSTREAM_ENV)?;
    for flag in [
        format!("--server=/corp.example/{UPSTREAM_IP}#53"),
        "--local-ip=169.254.20.10".to_owned(),
    ] {
        ensure!(args.contains(&flag), "{flag} not in {args:?}");
    }
    let (_, cache) = parsed(&c)?;
    ensure!(
        cache.local_ips == [IpAddr::from([169, 254, 20, 10])],
        "{:?}",
        cache.local_ips
    );
    ensure!(
        cache.servers.iter().any(|s| s.domains == ["corp.example"]),
        "{:?}",
        cache.servers
    );
    let text = serde_json::to_string(&objects)?;
    ensure!(
        !text.contains("cluster.local"),
        "a default domain is left somewhere"
    );
    ensure!(
        !text.contains("10.96.0.10"),
        "the default Service IP is left somewhere"
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
