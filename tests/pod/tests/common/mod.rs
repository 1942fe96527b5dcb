//! What the zone-transfer tests share: answers as comparable text, the names to ask of a zone,
//! metrics read back.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::bail;
use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;
use kube_dns_test_support::dns_client::{dig, query_tcp, zone_lines};
use kube_dns_test_support::process::ChildProcess;
use kube_dns_test_support::{http_client, workspace_binary};

/// An answer as text: RCODE and AA, then each section's records sorted, each once (RA and the
/// order of records are left out: an authoritative-only server does not set RA, and servers
/// rotate; Knot repeats an SRV target's glue for each SRV record, which RFC 2181 §5 has a
/// receiver treat as one).
pub fn summary(m: &Message) -> String {
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v.dedup();
        v.join("\n")
    };
    format!(
        "{} aa={} tc={}\nanswer:\n{}\nauthority:\n{}\nadditional:\n{}",
        m.metadata.response_code,
        m.metadata.authoritative,
        m.metadata.truncation,
        sorted(zone_lines(&m.answers)),
        sorted(zone_lines(&m.authorities)),
        sorted(zone_lines(&m.additionals)),
    )
}

/// Every owner name of `zone` as `server` transfers it, and names around them that do not
/// exist or hold nothing: `nope.` under each, each owner's parent, and `extra`.
pub async fn names_to_ask(
    server: SocketAddr,
    zone: &str,
    extra: &[&str],
) -> anyhow::Result<Vec<String>> {
    let transferred = dig(server, &[zone, "AXFR", "+noall", "+answer"]).await?;
    let mut names: Vec<String> = transferred
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_ascii_lowercase)
        .collect();
    names.sort();
    names.dedup();
    let mut probes = Vec::new();
    for name in &names {
        probes.push(format!("nope.{name}"));
        if let Some((_, parent)) = name.split_once('.')
            && parent.len() >= zone.len()
        {
            probes.push(parent.to_owned());
        }
    }
    probes.extend(extra.iter().map(|s| s.to_string()));
    names.extend(probes);
    names.sort();
    names.dedup();
    Ok(names)
}

/// Names of the fixture cluster beside those its zone lists.
pub const CLUSTER_PROBES: [&str; 10] = [
    "svc.cluster.local.",
    "nons.svc.cluster.local.",
    "dns.cluster.local.",
    "ns.dns.cluster.local.",
    "_tcp.dual.default.svc.cluster.local.",
    "_udp.dual.default.svc.cluster.local.",
    "_sctp.dual.default.svc.cluster.local.",
    "a.b.kubernetes.default.svc.cluster.local.",
    "10-0-0-1.default.pod.cluster.local.",
    "default.pod.cluster.local.",
];

/// The types asked of every name when two servers are compared.
pub const TYPES: [RecordType; 8] = [
    RecordType::A,
    RecordType::AAAA,
    RecordType::SRV,
    RecordType::TXT,
    RecordType::CNAME,
    RecordType::NS,
    RecordType::SOA,
    RecordType::MX,
];

/// Asks `reference` and `other` every name for every type over TCP and fails at the first
/// answer that differs (as [`summary`] shows them); returns how many questions were asked.
pub async fn same_answers<'n>(
    (reference, reference_name): (SocketAddr, &str),
    (other, other_name): (SocketAddr, &str),
    names: impl IntoIterator<Item = &'n String>,
    types: &[RecordType],
) -> anyhow::Result<usize> {
    let mut asked = 0;
    for name in names {
        for &rtype in types {
            let want = query_tcp(reference, name, rtype).await?;
            let got = query_tcp(other, name, rtype).await?;
            anyhow::ensure!(
                summary(&want) == summary(&got),
                "{name} {rtype}: {reference_name} answered\n{}\n{other_name} answered\n{}",
                summary(&want),
                summary(&got)
            );
            asked += 1;
        }
    }
    Ok(asked)
}

/// kube-dns on the fake API server at `api` (port 0, forwarding to `upstream`), NOTIFYing
/// `notify` of each change of the zone.
pub fn spawn_kube_dns(
    api: SocketAddr,
    upstream: SocketAddr,
    notify: SocketAddr,
) -> anyhow::Result<ChildProcess> {
    ChildProcess::spawn(
        workspace_binary("kube-dns")?,
        [
            format!("--kube-master-url=http://{api}"),
            "--dns-bind-address=127.0.0.1".into(),
            "--dns-port=0".into(),
            "--healthz-bind-address=127.0.0.1".into(),
            "--healthz-port=0".into(),
            format!("--nameservers={upstream}"),
            format!("--notify={notify}"),
            "--lameduck=0s".into(),
        ],
        std::iter::empty::<(&str, &str)>(),
    )
}

/// dns-cache on 127.0.0.1:`port` (no resolv.conf, no hosts file, metrics on port 0) with
/// `extra` (its `--secondary` and `--server` lines).
pub fn spawn_cache(port: u16, extra: &[String]) -> anyhow::Result<ChildProcess> {
    let mut args = vec![
        "-k".to_owned(),
        "-p".into(),
        port.to_string(),
        "-a".into(),
        "127.0.0.1".into(),
        "--no-resolv".into(),
        "--no-hosts".into(),
        "--metrics-address=127.0.0.1:0".into(),
        "--lameduck=0".into(),
    ];
    args.extend(extra.iter().cloned());
    ChildProcess::spawn(
        workspace_binary("dns-cache")?,
        args,
        std::iter::empty::<(&str, &str)>(),
    )
}

/// The `/metrics` text of `addr`.
pub async fn metrics(addr: SocketAddr) -> anyhow::Result<String> {
    Ok(http_client::get(addr, "/metrics").await?.text())
}

/// The value of the metric line that starts with `prefix`.
pub async fn metric(addr: SocketAddr, prefix: &str) -> anyhow::Result<u64> {
    let text = metrics(addr).await?;
    let line = text
        .lines()
        .find(|l| l.starts_with(prefix))
        .ok_or_else(|| anyhow::anyhow!("no {prefix} in\n{text}"))?;
    Ok(line.rsplit(' ').next().unwrap_or("").parse()?)
}

/// Waits until `addr`'s metrics have the line `line`.
pub async fn wait_metric(addr: SocketAddr, line: &str, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let text = metrics(addr).await.unwrap_or_default();
        if text.lines().any(|l| l == line) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("never {line:?}:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
