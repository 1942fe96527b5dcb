//! The shipped manifest: `kubectl kustomize` renders it offline, every object parses and holds
//! what the issue asks, the parameters reach every place they belong, and each container's args
//! are accepted by that binary's own command-line parser.

use std::collections::HashSet;

use anyhow::{Context, ensure};
use kube_dns_pod_tests::{
    container_ports, containers, expanded_args, http_probes, kinds_and_names, kustomize, object,
    owned_pairs, parse_objects, repo_root,
};
use serde_json::Value;

fn shipped() -> anyhow::Result<Vec<Value>> {
    parse_objects(&std::fs::read_to_string(repo_root().join("kube-dns.yaml"))?)
}

#[test]
fn kube_dns_yaml_and_its_kustomize_rendering_hold_the_same_objects() -> anyhow::Result<()> {
    let raw = shipped()?;
    let rendered = kustomize(&repo_root())?;
    let kinds = |objects: &[Value]| -> Vec<(String, String)> {
        let mut k = kinds_and_names(objects);
        k.sort();
        k
    };
    let expected = owned_pairs(&[
        ("ClusterRole", "system:kube-dns-rs"),
        ("ClusterRoleBinding", "system:kube-dns-rs"),
        ("ConfigMap", "kube-dns"),
        ("Deployment", "kube-dns"),
        ("PodDisruptionBudget", "kube-dns"),
        ("Service", "kube-dns"),
        ("ServiceAccount", "kube-dns"),
    ]);
    ensure!(kinds(&raw) == expected, "{:?}", kinds(&raw));
    ensure!(
        kinds(&rendered) == expected,
        "the parameters ConfigMap must not be rendered: {:?}",
        kinds(&rendered)
    );
    for o in raw.iter().chain(&rendered) {
        if o["kind"] != "ClusterRole" && o["kind"] != "ClusterRoleBinding" {
            ensure!(o["metadata"]["namespace"] == "kube-system", "{o}");
        }
    }
    // The kustomization points the images at the operator's registry.
    for (name, c) in containers(&rendered)? {
        let image = c["image"].as_str().unwrap_or("");
        ensure!(
            image.starts_with("harbor.example.com/dns/") && image.ends_with(":0.1.0"),
            "{name}: {image}"
        );
    }
    Ok(())
}

#[test]
fn the_deployment_is_hardened_and_highly_available() -> anyhow::Result<()> {
    let objects = shipped()?;
    let deployment = object(&objects, "Deployment", "kube-dns")?;
    let spec = &deployment["spec"];
    ensure!(spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0);
    let pod = &spec["template"]["spec"];
    ensure!(pod["priorityClassName"] == "system-cluster-critical");
    ensure!(pod["dnsPolicy"] == "Default");
    ensure!(pod["serviceAccountName"] == "kube-dns");
    ensure!(pod["securityContext"]["runAsNonRoot"] == true);
    ensure!(pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault");
    ensure!(
        pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
            ["topologyKey"]
            == "kubernetes.io/hostname"
    );
    let names: HashSet<String> = containers(&objects)?.into_keys().collect();
    ensure!(
        names == ["kubedns", "dnsmasq", "sidecar"].map(String::from).into(),
        "{names:?}"
    );
    for (name, c) in containers(&objects)? {
        let sc = &c["securityContext"];
        ensure!(sc["allowPrivilegeEscalation"] == false, "{name}");
        ensure!(sc["readOnlyRootFilesystem"] == true, "{name}");
        ensure!(
            sc["capabilities"]["drop"] == serde_json::json!(["ALL"]),
            "{name}"
        );
        let added = &sc["capabilities"]["add"];
        if name == "dnsmasq" {
            ensure!(
                *added == serde_json::json!(["NET_BIND_SERVICE"]),
                "{name}: {added}"
            );
        } else {
            ensure!(added.is_null(), "{name} adds {added}");
        }
        ensure!(
            c["resources"]["requests"]["memory"].is_string()
                && c["resources"]["limits"]["memory"].is_string(),
            "{name}: resources"
        );
        ensure!(
            c["livenessProbe"]["httpGet"]["path"].is_string(),
            "{name}: liveness"
        );
    }
    let pdb = object(&objects, "PodDisruptionBudget", "kube-dns")?;
    ensure!(pdb["spec"]["selector"]["matchLabels"]["k8s-app"] == "kube-dns");
    let service = object(&objects, "Service", "kube-dns")?;
    ensure!(service["spec"]["clusterIP"] == "10.96.0.10");
    let ports: HashSet<(u64, String)> = service["spec"]["ports"]
        .as_array()
        .context("service ports")?
        .iter()
        .map(|p| {
            (
                p["port"].as_u64().unwrap_or(0),
                p["protocol"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    for port in [(53, "UDP"), (53, "TCP"), (10054, "TCP")] {
        ensure!(
            ports.contains(&(port.0, port.1.to_owned())),
            "{port:?} in {ports:?}"
        );
    }
    Ok(())
}

#[test]
fn rbac_grants_only_what_the_binaries_use() -> anyhow::Result<()> {
    let objects = shipped()?;
    let role = object(&objects, "ClusterRole", "system:kube-dns-rs")?;
    let mut grants = Vec::new();
    for rule in role["rules"].as_array().context("rules")? {
        for group in rule["apiGroups"].as_array().context("apiGroups")? {
            for resource in rule["resources"].as_array().context("resources")? {
                let mut verbs: Vec<&str> = rule["verbs"]
                    .as_array()
                    .context("verbs")?
                    .iter()
                    .filter_map(Value::as_str)
                    .collect();
                verbs.sort();
                grants.push(format!(
                    "{}/{}: {}",
                    group.as_str().unwrap_or(""),
                    resource.as_str().unwrap_or(""),
                    verbs.join(",")
                ));
            }
        }
    }
    grants.sort();
    ensure!(
        grants
            == [
                "/services: list,watch",
                "discovery.k8s.io/endpointslices: list,watch"
            ],
        "{grants:?}"
    );
    let binding = object(&objects, "ClusterRoleBinding", "system:kube-dns-rs")?;
    ensure!(binding["subjects"][0]["name"] == "kube-dns");
    ensure!(binding["subjects"][0]["namespace"] == "kube-system");
    // The manifest's kube-dns args need nothing more: no --watch-endpoints, --pods=verified or
    // --config-map.
    let kubedns = containers(&objects)?
        .remove("kubedns")
        .context("kubedns container")?;
    let cli = kube_dns::cli::Cli::parse_args(
        std::iter::once("kube-dns".to_owned()).chain(expanded_args(&kubedns)?),
    )?;
    ensure!(!cli.watch_endpoints && cli.config_map.is_empty());
    ensure!(cli.pods != kube_dns_core::PodsMode::Verified);
    Ok(())
}

#[test]
fn parameters_reach_every_place_they_belong() -> anyhow::Result<()> {
    let dir = kube_dns_test_support::tempdir("kustomize")?;
    std::fs::copy(repo_root().join("kube-dns.yaml"), dir.join("kube-dns.yaml"))?;
    let kustomization = std::fs::read_to_string(repo_root().join("kustomization.yaml"))?;
    ensure!(kustomization.contains("clusterDomain=cluster.local"));
    ensure!(kustomization.contains("dnsServiceIP=10.96.0.10"));
    std::fs::write(
        dir.join("kustomization.yaml"),
        kustomization
            .replace("clusterDomain=cluster.local", "clusterDomain=corp.example")
            .replace("dnsServiceIP=10.96.0.10", "dnsServiceIP=172.20.0.10"),
    )?;
    let objects = kustomize(&dir)?;
    ensure!(object(&objects, "Service", "kube-dns")?["spec"]["clusterIP"] == "172.20.0.10");
    let all = containers(&objects)?;
    let kubedns = expanded_args(&all["kubedns"])?;
    ensure!(
        kubedns.contains(&"--domain=corp.example.".to_owned()),
        "{kubedns:?}"
    );
    let dnsmasq = expanded_args(&all["dnsmasq"])?;
    ensure!(
        dnsmasq.contains(&"--server=/corp.example/127.0.0.1#10053".to_owned()),
        "{dnsmasq:?}"
    );
    let sidecar = expanded_args(&all["sidecar"])?;
    ensure!(
        sidecar
            .iter()
            .filter(|a| a.contains("kubernetes.default.svc.corp.example,"))
            .count()
            == 2,
        "{sidecar:?}"
    );
    let text = serde_json::to_string(&objects)?;
    ensure!(
        !text.contains("cluster.local"),
        "a default domain is left somewhere"
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn every_container_arg_is_accepted_by_its_binary() -> anyhow::Result<()> {
    let objects = shipped()?;
    let all = containers(&objects)?;
    let kubedns = kube_dns::cli::Cli::parse_args(
        std::iter::once("kube-dns".to_owned()).chain(expanded_args(&all["kubedns"])?),
    )
    .map_err(|e| anyhow::anyhow!("kubedns args: {e}"))?;
    ensure!(kubedns.zone() == "cluster.local" && kubedns.dns_port == 10053);
    ensure!(kubedns.config_dir == "/kube-dns-config");

    let nanny_args = expanded_args(&all["dnsmasq"])?;
    let nanny = dnsmasq_nanny::cli::NannyConfig::parse_args(nanny_args)
        .map_err(|e| anyhow::anyhow!("dnsmasq-nanny args: {e}"))?;
    ensure!(nanny.config_dir.to_str() == Some("/etc/k8s/dns/dnsmasq-nanny"));
    ensure!(
        nanny.config_dir.to_string_lossy()
            == all["dnsmasq"]["volumeMounts"][0]["mountPath"]
                .as_str()
                .unwrap_or("")
    );
    // The child is dns-cache in the image: its own parser takes the args after `--`.
    let cache = dns_cache::config::CacheConfig::parse_args(nanny.child_args.clone())
        .map_err(|e| anyhow::anyhow!("dns-cache args {:?}: {e}", nanny.child_args))?;
    ensure!(cache.cache_size == 10000, "cache size {}", cache.cache_size);
    ensure!(
        cache.secondaries
            == [dns_cache::secondary::SecondarySpec {
                zone: "cluster.local".into(),
                primary: None,
            }],
        "{:?}",
        cache.secondaries
    );
    // kube-dns tells dns-cache (port 53 in the pod) about each change of the zone.
    ensure!(
        kubedns.notify.0 == ["127.0.0.1:53".parse()?],
        "{:?}",
        kubedns.notify
    );

    let sidecar = sidecar::cli::Cli::parse_args(
        std::iter::once("sidecar".to_owned()).chain(expanded_args(&all["sidecar"])?),
    )
    .map_err(|e| anyhow::anyhow!("sidecar args: {e}"))?;
    let labels: Vec<&str> = sidecar.probe.iter().map(|p| p.label.as_str()).collect();
    ensure!(labels == ["kubedns", "dnsmasq"], "{labels:?}");
    ensure!(sidecar.prometheus_port == 10054);

    // Every probe's port is declared by exactly one container.
    for (name, c) in &all {
        for (kind, port, path) in http_probes(c) {
            let owners: Vec<&String> = all
                .iter()
                .filter(|(_, other)| container_ports(other).contains(&port))
                .map(|(n, _)| n)
                .collect();
            ensure!(
                owners.len() == 1,
                "{name} {kind} {path} on {port}: {owners:?}"
            );
        }
    }
    Ok(())
}
