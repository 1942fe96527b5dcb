//! The answer-policy options (`--address`, `--stop-dns-rebind`, `--bogus-priv`,
//! `--domain-needed`, `--filter-A`, `--filter-AAAA`) against a real dnsmasq 2.90 with the same
//! options and the same upstream: every question gets the same RCODE, flags, answer records and
//! Extended DNS Error from both. The upstream answers some names 80 ms late.
// Whole-process tests time real processes on the real clocks (see clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use hickory_proto::op::{Edns, Message};
use hickory_proto::rr::RecordType;
use kube_dns_test_support::dns_client::{answer_lines, query_message, raw_udp};
use kube_dns_test_support::dnsmasq::start_dnsmasq;
use kube_dns_test_support::fake_upstream::{FakeUpstream, Rule};
use kube_dns_test_support::http_client;

mod common;

use common::{Cache, WAIT, start_cache};

/// What is compared of a reply.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    rcode: String,
    flags: String,
    answers: Vec<String>,
    ede: Option<u16>,
}

/// Asks `server` one question with EDNS (so an Extended DNS Error can come back).
async fn ask(server: SocketAddr, name: &str, rtype: RecordType) -> anyhow::Result<Seen> {
    let mut query = query_message(name, rtype)?;
    query.set_edns(Edns::new());
    let bytes = raw_udp(server, &query.to_vec()?)
        .await?
        .with_context(|| format!("no reply from {server} for {name} {rtype}"))?;
    let reply = Message::from_vec(&bytes)?;
    let layout = dns_wire::response_layout(&bytes)?;
    let ede = layout.opt.and_then(|(start, end)| {
        bytes
            .get(usize::from(start) + 11..usize::from(end))
            .and_then(dns_wire::extended_error)
    });
    let m = &reply.metadata;
    Ok(Seen {
        rcode: m.response_code.to_string(),
        flags: format!(
            "aa={} tc={} rd={} ra={}",
            m.authoritative, m.truncation, m.recursion_desired, m.recursion_available
        ),
        // TTLs aside (the two count them down at their own pace): the records themselves.
        answers: answer_lines(&reply)
            .iter()
            .map(|l| {
                let mut f = l.split_whitespace().collect::<Vec<_>>();
                if f.len() > 1 {
                    f.remove(1);
                }
                f.join(" ")
            })
            .collect(),
        ede,
    })
}

fn rule(ips: &[&str]) -> Rule {
    Rule::Answer {
        ips: ips.iter().map(|ip| ip.parse().expect("ip")).collect(),
        ttl: 300,
    }
}

/// The upstream both servers forward to, with the names the cases ask for.
async fn upstream() -> anyhow::Result<FakeUpstream> {
    let upstream = FakeUpstream::start().await?;
    for (name, ips) in [
        ("pub.example", &["93.184.216.34"][..]),
        ("dual.example", &["93.184.216.34", "2001:4860::1"]),
        ("priv.example", &["10.1.2.3"]),
        ("lo.example", &["127.0.0.5"]),
        ("zero.example", &["0.0.0.0"]),
        ("v6priv.example", &["fd00::1"]),
        ("v6pub.example", &["2001:4860::1"]),
        ("ll6.example", &["fe80::1"]),
        ("mixed.example", &["10.0.0.1", "93.184.216.35"]),
        ("priv.ok.example", &["192.168.1.1"]),
        ("cgnat.example", &["100.64.0.1"]),
        ("fc.example", &["fc00::1"]),
        ("plain", &["93.184.216.36"]),
        ("ads.example", &["93.184.216.37"]),
        ("v6only.example", &["93.184.216.38"]),
    ] {
        upstream.set_rule(name, rule(ips));
    }
    upstream.set_rule(
        "slow.example",
        Rule::Delay(
            Duration::from_millis(80),
            Box::new(rule(&["10.9.9.9", "2001:4860::9"])),
        ),
    );
    upstream.set_rule(
        "fwd.ads.example",
        Rule::Delay(
            Duration::from_millis(80),
            Box::new(rule(&["93.184.216.39"])),
        ),
    );
    upstream.set_rule(
        "txt.ads.example",
        Rule::Txt {
            strings: vec!["hello".into()],
            ttl: 300,
        },
    );
    Ok(upstream)
}

/// dns-cache as compared, kept running for its metrics.
struct Compared {
    _cache: Cache,
    metrics: SocketAddr,
}

/// Starts dns-cache and dnsmasq with `options` (`{up}` is the upstream) and compares their
/// replies to every case.
async fn compare(
    upstream: &FakeUpstream,
    options: &[&str],
    cases: &[(&str, RecordType)],
) -> anyhow::Result<Compared> {
    let up = format!("{}#{}", upstream.addr.ip(), upstream.addr.port());
    let mut args: Vec<String> = options.iter().map(|o| o.replace("{up}", &up)).collect();
    args.push(format!("--server={up}"));
    let dnsmasq = start_dnsmasq(&args).await?;
    args.extend([
        "--no-resolv".to_owned(),
        "--metrics-address=127.0.0.1:0".to_owned(),
    ]);
    let cache = start_cache(&args).await?;
    let metrics = cache.process.listening_addr("metrics", WAIT).await?;
    let mut differences = Vec::new();
    for (name, rtype) in cases {
        let theirs = ask(dnsmasq.addr, name, *rtype).await?;
        let ours = ask(cache.udp, name, *rtype).await?;
        if ours != theirs {
            differences.push(format!(
                "{name} {rtype}:\n  dnsmasq   {theirs:?}\n  dns-cache {ours:?}"
            ));
        }
    }
    assert!(
        differences.is_empty(),
        "with {options:?}:\n{}",
        differences.join("\n")
    );
    drop(dnsmasq);
    Ok(Compared {
        _cache: cache,
        metrics,
    })
}

async fn policy_count(compared: &Compared, option: &str) -> anyhow::Result<f64> {
    http_client::metric(
        compared.metrics,
        &format!("dnscache_policy_answers_total{{option=\"{option}\"}}"),
    )
    .await
}

#[tokio::test]
async fn address_lines_answer_like_dnsmasq() -> anyhow::Result<()> {
    use RecordType::{A, AAAA, MX, TXT};
    let upstream = upstream().await?;
    let metrics = compare(
        &upstream,
        &[
            "--address=/ads.example/0.0.0.0",
            "--address=/v6only.example/fd00::9",
            "--address=/null.example/#",
            "--address=/blocked.example/",
            "--address=/multi1.example/multi2.example/1.1.1.1",
            "--address=/both.example/2.2.2.2",
            "--address=/both.example/::2",
            "--server=/fwd.ads.example/{up}",
        ],
        &[
            ("ads.example.", A),
            ("x.ads.example.", A),
            ("ads.example.", AAAA),
            ("txt.ads.example.", TXT),
            ("ads.example.", MX),
            ("v6only.example.", A),
            ("v6only.example.", AAAA),
            ("null.example.", A),
            ("null.example.", AAAA),
            ("blocked.example.", A),
            ("sub.blocked.example.", AAAA),
            ("multi1.example.", A),
            ("multi2.example.", A),
            ("both.example.", A),
            ("both.example.", AAAA),
            ("fwd.ads.example.", A),
            ("a.fwd.ads.example.", A),
            ("pub.example.", A),
        ],
    )
    .await?;
    // ads x2, v6only AAAA, null x2, multi x2, both x2.
    assert_eq!(policy_count(&metrics, "address").await?, 9.0);
    let everything = compare(
        &upstream,
        &["--address=/#/5.5.5.5", "--server=/ads.example/{up}"],
        &[
            ("pub.example.", A),
            ("pub.example.", AAAA),
            ("plain.", A),
            ("ads.example.", A),
            ("x.ads.example.", A),
        ],
    )
    .await?;
    assert_eq!(policy_count(&everything, "address").await?, 2.0);
    Ok(())
}

#[tokio::test]
async fn rebinding_protection_answers_like_dnsmasq() -> anyhow::Result<()> {
    use RecordType::{A, AAAA, PTR};
    let upstream = upstream().await?;
    let cases = [
        ("priv.example.", A),
        ("pub.example.", A),
        ("lo.example.", A),
        ("zero.example.", A),
        ("v6priv.example.", AAAA),
        ("v6pub.example.", AAAA),
        ("ll6.example.", AAAA),
        ("mixed.example.", A),
        ("priv.ok.example.", A),
        ("x.priv.ok.example.", A),
        ("cgnat.example.", A),
        ("fc.example.", AAAA),
        ("slow.example.", A),
        ("slow.example.", AAAA),
        ("3.2.1.10.in-addr.arpa.", PTR),
    ];
    let strict = compare(
        &upstream,
        &["--stop-dns-rebind", "--rebind-domain-ok=/ok.example/"],
        &cases,
    )
    .await?;
    // priv, lo, zero, v6priv, ll6, mixed, slow A (its AAAA is public).
    assert_eq!(policy_count(&strict, "stop-dns-rebind").await?, 7.0);
    compare(
        &upstream,
        &[
            "--stop-dns-rebind",
            "--rebind-localhost-ok",
            "--rebind-domain-ok=ok.example",
        ],
        &cases,
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn bogus_priv_and_domain_needed_answer_like_dnsmasq() -> anyhow::Result<()> {
    use RecordType::{A, AAAA, ANY, MX, PTR, TXT};
    let upstream = upstream().await?;
    let reverse = |ip: &str| {
        let ip: IpAddr = ip.parse().expect("ip");
        match ip {
            IpAddr::V4(v4) => dns_wire::reverse_name_v4(v4),
            IpAddr::V6(v6) => dns_wire::reverse_name_v6(v6),
        }
    };
    let names: Vec<String> = [
        "10.1.2.3",
        "93.184.216.34",
        "172.16.0.1",
        "192.168.1.1",
        "127.0.0.1",
        "169.254.1.1",
        "100.64.0.1",
        "fd00::1",
        "fe80::1",
        "2001:db8::1",
        "fc00::1",
        "::ffff:10.0.0.1",
    ]
    .iter()
    .map(|ip| reverse(ip))
    .collect();
    let mut cases: Vec<(&str, RecordType)> = names.iter().map(|n| (n.as_str(), PTR)).collect();
    cases.extend([
        ("plain.", A),
        ("plain.", AAAA),
        ("plain.", ANY),
        ("plain.", MX),
        ("plain.", TXT),
        ("pub.example.", A),
    ]);
    let metrics = compare(
        &upstream,
        &[
            "--bogus-priv",
            "--domain-needed",
            "--server=/16.172.in-addr.arpa/{up}",
        ],
        &cases,
    )
    .await?;
    // An --address for a plain name answers it under --domain-needed, as dnsmasq does.
    compare(
        &upstream,
        &["--domain-needed", "--address=/router/192.168.1.1"],
        &[("router.", A), ("router.", AAAA), ("plain.", A)],
    )
    .await?;
    // 10, 192.168, 127, 169.254, fd00, fe80, 2001:db8, mapped 10.
    assert_eq!(policy_count(&metrics, "bogus-priv").await?, 8.0);
    assert_eq!(policy_count(&metrics, "domain-needed").await?, 3.0);
    // The cluster's reverse zone routed to kube-dns is not "bogus": forwarded as dnsmasq does.
    let routed = [(names[0].as_str(), PTR), (names[3].as_str(), PTR)];
    compare(
        &upstream,
        &["--bogus-priv", "--server=/in-addr.arpa/{up}"],
        &routed,
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn family_filters_answer_like_dnsmasq() -> anyhow::Result<()> {
    use RecordType::{A, AAAA, PTR};
    let upstream = upstream().await?;
    let cases = [
        ("dual.example.", A),
        ("dual.example.", AAAA),
        ("v6pub.example.", AAAA),
        ("pub.example.", A),
        ("slow.example.", AAAA),
        ("both.example.", AAAA),
        ("both.example.", A),
        ("34.216.184.93.in-addr.arpa.", PTR),
    ];
    let local = "--address=/both.example/::2";
    let no_aaaa = compare(
        &upstream,
        &["--filter-AAAA", local, "--address=/both.example/2.2.2.2"],
        &cases,
    )
    .await?;
    assert_eq!(policy_count(&no_aaaa, "filter-AAAA").await?, 3.0);
    let no_a = compare(
        &upstream,
        &["--filter-A", local, "--address=/both.example/2.2.2.2"],
        &cases,
    )
    .await?;
    assert_eq!(policy_count(&no_a, "filter-A").await?, 2.0);
    // The rebinding check sees the answer before the filters: a private address is
    // "Blocked" even where --filter-A removes it.
    compare(
        &upstream,
        &["--filter-A", "--stop-dns-rebind"],
        &[
            ("priv.example.", A),
            ("mixed.example.", A),
            ("v6priv.example.", AAAA),
            ("v6pub.example.", AAAA),
        ],
    )
    .await?;
    Ok(())
}
