//! Process tests: the real `dns-cache` binary in front of the fake upstream (and a real dnsmasq
//! 2.90 where byte compatibility is the point), queried with a Rust client over UDP and TCP.
// Whole-process tests time real processes on the real clocks (see clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{DNSClass, RecordType};
use kube_dns_test_support::dns_client::{
    answer_lines, query_message, query_tcp, query_udp, query_udp_with,
};
use kube_dns_test_support::dnsmasq::start_dnsmasq;
use kube_dns_test_support::fake_upstream::{FakeUpstream, Rule, SPOOFED_ANSWER, UPSTREAM_ANSWER};
use kube_dns_test_support::process::ChildProcess;

mod common;

use common::{Cache, WAIT, has_a, server_arg, spawn_cache, start_cache};

fn ttl_of(reply: &Message) -> u32 {
    reply.answers.first().map_or(0, |r| r.ttl)
}

#[tokio::test]
async fn hits_are_served_without_upstream_and_ttls_count_down() -> anyhow::Result<()> {
    let upstream = FakeUpstream::start().await?;
    upstream.set_rule(
        "www.example.com",
        Rule::Answer {
            ips: vec![IpAddr::from([192, 0, 2, 1])],
            ttl: 100,
        },
    );
    let cache = start_cache(&[server_arg(&upstream), "--no-resolv".into()]).await?;
    let first = query_udp(cache.udp, "www.example.com.", RecordType::A).await?;
    assert!(has_a(&first, "192.0.2.1"));
    assert_eq!(ttl_of(&first), 100);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = query_udp(cache.udp, "WWW.Example.com.", RecordType::A).await?;
    assert_eq!(
        upstream.queries_for("www.example.com"),
        1,
        "the second query is a hit"
    );
    assert!(
        ttl_of(&second) < 100 && ttl_of(&second) >= 98,
        "ttl {}",
        ttl_of(&second)
    );
    assert_eq!(second.queries[0].name().to_ascii(), "WWW.Example.com.");
    let tcp = query_tcp(cache.tcp, "www.example.com.", RecordType::A).await?;
    assert!(has_a(&tcp, "192.0.2.1"));
    assert_eq!(upstream.queries_for("www.example.com"), 1);
    Ok(())
}

#[tokio::test]
async fn negative_caching_follows_the_soa_and_no_negcache() -> anyhow::Result<()> {
    let upstream = FakeUpstream::start().await?;
    upstream.set_rule(
        "nx.example.com",
        Rule::NxDomain {
            soa_ttl: 300,
            minimum: 60,
        },
    );
    let with = start_cache(&[server_arg(&upstream), "--no-resolv".into()]).await?;
    for _ in 0..3 {
        let reply = query_udp(with.udp, "nx.example.com.", RecordType::A).await?;
        assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    }
    assert_eq!(upstream.queries_for("nx.example.com"), 1);
    let without = start_cache(&[
        server_arg(&upstream),
        "--no-resolv".into(),
        "--no-negcache".into(),
    ])
    .await?;
    for _ in 0..3 {
        query_udp(without.udp, "nx.example.com.", RecordType::A).await?;
    }
    assert_eq!(upstream.queries_for("nx.example.com"), 4);
    // SERVFAIL is never cached.
    upstream.set_rule("sf.example.com", Rule::ServFail);
    for _ in 0..2 {
        let reply = query_udp(with.udp, "sf.example.com.", RecordType::A).await?;
        assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    }
    assert_eq!(upstream.queries_for("sf.example.com"), 2);
    Ok(())
}

#[tokio::test]
async fn a_new_zone_serial_drops_the_zones_negative_answers() -> anyhow::Result<()> {
    let upstream = FakeUpstream::start().await?;
    upstream.set_rule("cluster.test", Rule::Soa { serial: 1 });
    let nx = Rule::NxDomain {
        soa_ttl: 300,
        minimum: 300,
    };
    upstream.set_rule("new.ns.svc.cluster.test", nx.clone());
    upstream.set_rule("nx.elsewhere.test", nx);
    let cache = start_cache(&[
        server_arg(&upstream),
        "--no-resolv".into(),
        "--watch-soa=cluster.test".into(),
        "--watch-soa-interval=50".into(),
    ])
    .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    for name in ["new.ns.svc.cluster.test.", "nx.elsewhere.test."] {
        let reply = query_udp(cache.udp, name, RecordType::A).await?;
        assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    }
    // The name comes into existence; the cached NXDOMAIN hides it while the serial stays.
    upstream.set_rule(
        "new.ns.svc.cluster.test",
        Rule::Answer {
            ips: vec![IpAddr::from([10, 96, 7, 7])],
            ttl: 30,
        },
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let reply = query_udp(cache.udp, "new.ns.svc.cluster.test.", RecordType::A).await?;
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(upstream.queries_for("new.ns.svc.cluster.test"), 1);
    // The zone's serial moves: its negative answers go, other zones' stay.
    upstream.set_rule("cluster.test", Rule::Soa { serial: 2 });
    let started = Instant::now();
    loop {
        let reply = query_udp(cache.udp, "new.ns.svc.cluster.test.", RecordType::A).await?;
        if has_a(&reply, "10.96.7.7") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "still NXDOMAIN after the serial changed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    query_udp(cache.udp, "nx.elsewhere.test.", RecordType::A).await?;
    assert_eq!(
        upstream.queries_for("nx.elsewhere.test"),
        1,
        "other zones keep theirs"
    );
    Ok(())
}

#[tokio::test]
async fn identical_concurrent_queries_are_coalesced() -> anyhow::Result<()> {
    let upstream = FakeUpstream::start().await?;
    upstream.set_rule(
        "slow.example.com",
        Rule::Delay(
            Duration::from_millis(300),
            Box::new(Rule::Answer {
                ips: vec![IpAddr::from([192, 0, 2, 9])],
                ttl: 60,
            }),
        ),
    );
    let cache = start_cache(&[server_arg(&upstream), "--no-resolv".into()]).await?;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let addr = cache.udp;
        tasks.spawn(async move { query_udp(addr, "slow.example.com.", RecordType::A).await });
    }
    let mut ok = 0;
    while let Some(joined) = tasks.join_next().await {
        if has_a(&joined??, "192.0.2.9") {
            ok += 1;
        }
    }
    assert_eq!(ok, 100);
    assert_eq!(
        upstream.queries_for("slow.example.com"),
        1,
        "one upstream query for 100 clients"
    );
    Ok(())
}

async fn spread(
    policy: &str,
    weights: &[(usize, u32)],
    names: usize,
) -> anyhow::Result<Vec<usize>> {
    let a = FakeUpstream::start().await?;
    let b = FakeUpstream::start().await?;
    let mut args = vec![
        server_arg(&a),
        server_arg(&b),
        "--no-resolv".into(),
        format!("--upstream-policy={policy}"),
    ];
    let servers = [&a, &b];
    for (index, weight) in weights {
        let s = servers[*index].addr;
        args.push(format!(
            "--upstream-weight={}#{}={weight}",
            s.ip(),
            s.port()
        ));
    }
    let cache = start_cache(&args).await?;
    for i in 0..names {
        query_udp(cache.udp, &format!("n{i}.example.com."), RecordType::A).await?;
    }
    Ok(vec![a.queries(), b.queries()])
}

#[tokio::test]
async fn upstream_policies_choose_as_configured() -> anyhow::Result<()> {
    assert_eq!(spread("rr", &[], 40).await?, vec![20, 20]);
    assert_eq!(spread("wrr", &[(0, 3), (1, 1)], 40).await?, vec![30, 10]);
    let dh = spread("dh", &[], 40).await?;
    assert_eq!(dh.iter().sum::<usize>(), 40);
    assert!(dh[0] > 5 && dh[1] > 5, "names spread by hash: {dh:?}");
    // One client: source hashing keeps it on one server.
    let sh = spread("sh", &[], 20).await?;
    assert!(sh.contains(&20) && sh.contains(&0), "{sh:?}");
    Ok(())
}

#[tokio::test]
async fn a_dead_upstream_costs_one_short_timeout() -> anyhow::Result<()> {
    let live = FakeUpstream::start().await?;
    let dead = FakeUpstream::start().await?;
    dead.set_default(Rule::Drop);
    let cache = start_cache(&[
        server_arg(&dead),
        server_arg(&live),
        "--no-resolv".into(),
        "--strict-order".into(),
        "--upstream-timeout=300".into(),
        "--forward-deadline=1000".into(),
    ])
    .await?;
    let started = Instant::now();
    let reply = query_udp(cache.udp, "a.example.com.", RecordType::A).await?;
    assert!(has_a(&reply, UPSTREAM_ANSWER));
    assert!(
        started.elapsed() < Duration::from_millis(1200),
        "took {:?}",
        started.elapsed()
    );
    // After three queries without a reply from it (each counted at its deadline, when a late
    // reply can no longer come) the dead server is skipped.
    for i in 0..3 {
        query_udp(cache.udp, &format!("b{i}.example.com."), RecordType::A).await?;
    }
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let before = dead.queries();
    let started = Instant::now();
    query_udp(cache.udp, "c.example.com.", RecordType::A).await?;
    assert_eq!(dead.queries(), before, "marked down");
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "no wait on the dead server"
    );
    Ok(())
}

#[tokio::test]
async fn spoofed_replies_are_ignored_and_truncation_goes_to_tcp() -> anyhow::Result<()> {
    let upstream = FakeUpstream::start().await?;
    upstream.set_rule(
        "spoof.example.com",
        Rule::Spoofed(Box::new(Rule::Answer {
            ips: vec![IpAddr::from([192, 0, 2, 7])],
            ttl: 60,
        })),
    );
    upstream.set_rule(
        "big.example.com",
        Rule::Truncate(Box::new(Rule::Answer {
            ips: vec![IpAddr::from([192, 0, 2, 8])],
            ttl: 60,
        })),
    );
    let cache = start_cache(&[server_arg(&upstream), "--no-resolv".into()]).await?;
    let reply = query_udp(cache.udp, "spoof.example.com.", RecordType::A).await?;
    assert!(has_a(&reply, "192.0.2.7"), "{reply:?}");
    assert!(!has_a(&reply, SPOOFED_ANSWER));
    let reply = query_udp(cache.udp, "big.example.com.", RecordType::A).await?;
    assert!(has_a(&reply, "192.0.2.8"));
    assert!(upstream.tcp_queries() >= 1);
    Ok(())
}

/// `--dns-forward-max=2` and ten slow queries from two clients: each client gets one try (a
/// client holds at most as many as are left), the other eight are REFUSED at once.
#[tokio::test]
async fn forward_limit_refuses_instead_of_queueing() -> anyhow::Result<()> {
    use kube_dns_test_support::dns_client::query_udp_from;
    let upstream = FakeUpstream::start().await?;
    upstream.set_default(Rule::Delay(
        Duration::from_millis(500),
        Box::new(Rule::Answer {
            ips: vec![IpAddr::from([192, 0, 2, 1])],
            ttl: 60,
        }),
    ));
    let cache = start_cache(&[
        server_arg(&upstream),
        "--no-resolv".into(),
        "--dns-forward-max=2".into(),
    ])
    .await?;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..10u8 {
        let addr = cache.udp;
        let client = IpAddr::from([127, 0, 0, 1 + i % 2]);
        tasks.spawn(async move {
            let name = format!("q{i}.example.com.");
            let reply = query_udp_from(client, addr, &name, RecordType::A, WAIT).await?;
            anyhow::Ok((client, reply.metadata.response_code))
        });
    }
    let (mut refused, mut answered) = (0, Vec::new());
    while let Some(joined) = tasks.join_next().await {
        match joined?? {
            (_, ResponseCode::Refused) => refused += 1,
            (client, ResponseCode::NoError) => answered.push(client),
            other => bail!("unexpected {other:?}"),
        }
    }
    answered.sort();
    assert_eq!(
        answered,
        [IpAddr::from([127, 0, 0, 1]), IpAddr::from([127, 0, 0, 2])],
        "one answered per client"
    );
    assert_eq!(refused, 8);
    Ok(())
}

#[tokio::test]
async fn sighup_reloads_servers_and_keeps_unaffected_cache() -> anyhow::Result<()> {
    let a = FakeUpstream::start().await?;
    let b = FakeUpstream::start().await?;
    let dir = std::env::temp_dir().join(format!("dns-cache-hup-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let servers = dir.join("servers");
    std::fs::write(
        &servers,
        format!("server=/corp.example/{}#{}\n", a.addr.ip(), a.addr.port()),
    )?;
    let cache = start_cache(&[
        server_arg(&b),
        "--no-resolv".into(),
        format!("--servers-file={}", servers.display()),
    ])
    .await?;
    query_udp(cache.udp, "x.corp.example.", RecordType::A).await?;
    query_udp(cache.udp, "www.example.com.", RecordType::A).await?;
    assert_eq!((a.queries(), b.queries()), (1, 1));
    // Move corp.example to b: its entry goes, the default route's entry stays.
    std::fs::write(
        &servers,
        format!("server=/corp.example/{}#{}\n", b.addr.ip(), b.addr.port()),
    )?;
    cache.process.signal(1)?;
    cache
        .process
        .wait_for_line("reloaded servers", WAIT)
        .await?;
    query_udp(cache.udp, "www.example.com.", RecordType::A).await?;
    assert_eq!(b.queries(), 1, "cache kept across SIGHUP");
    query_udp(cache.udp, "x.corp.example.", RecordType::A).await?;
    assert_eq!(
        (a.queries(), b.queries()),
        (1, 2),
        "changed route re-asked on its new server"
    );
    Ok(())
}

#[tokio::test]
async fn legacy_flags_and_unknown_options() -> anyhow::Result<()> {
    let upstream = FakeUpstream::start().await?;
    let cache = start_cache(&[
        "--cache-size=1000".into(),
        "--no-negcache".into(),
        "--dns-loop-detect".into(),
        "--log-facility=-".into(),
        format!(
            "--server=/cluster.local/{}#{}",
            upstream.addr.ip(),
            upstream.addr.port()
        ),
        format!(
            "--server=/in-addr.arpa/{}#{}",
            upstream.addr.ip(),
            upstream.addr.port()
        ),
        "--no-dhcp-interface=eth0".into(),
    ])
    .await?;
    let reply = query_udp(
        cache.udp,
        "kubernetes.default.svc.cluster.local.",
        RecordType::A,
    )
    .await?;
    assert!(has_a(&reply, UPSTREAM_ANSWER));
    cache
        .process
        .wait_for_line("--no-dhcp-interface", WAIT)
        .await
        .context("an option without effect is warned about")?;
    // Unknown, and known but impossible to honour: exit 64 naming the option (and the reason).
    for (args, says) in [
        (&["--frobnicate"][..], "--frobnicate"),
        (&["--user=root"], "securityContext"),
        (&["-Q", "5353"], "--query-port"),
        (&["--local-service"], "--local-service"),
        (&["--edns-packet-max=64"], "--edns-packet-max"),
    ] {
        let mut bad = ChildProcess::spawn(
            env!("CARGO_BIN_EXE_dns-cache"),
            args,
            std::iter::empty::<(&str, &str)>(),
        )?;
        assert_eq!(bad.wait_exit(WAIT).await?.code(), Some(64), "{args:?}");
        assert!(
            bad.output_text().contains(says),
            "{args:?}: {}",
            bad.output_text()
        );
    }
    Ok(())
}

/// One CHAOS TXT query; returns (rcode, flags, class and TTL of the answer, strings).
async fn chaos(
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
) -> anyhow::Result<(ResponseCode, String, Vec<String>)> {
    let mut msg = query_message(name, rtype)?;
    msg.queries[0].set_query_class(DNSClass::CH);
    let reply = query_udp_with(server, msg).await?;
    let m = &reply.metadata;
    let flags = format!(
        "aa={} rd={} ra={}",
        m.authoritative, m.recursion_desired, m.recursion_available
    );
    let mut strings = Vec::new();
    for record in &reply.answers {
        strings.push(format!(
            "{} {} {}",
            record.dns_class, record.ttl, record.data
        ));
    }
    Ok((m.response_code, flags, strings))
}

/// The shape of a CHAOS value: digits become `9`.
fn shape(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            if !out.ends_with('9') {
                out.push('9');
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[tokio::test]
async fn chaos_statistics_match_a_real_dnsmasq() -> anyhow::Result<()> {
    let upstream = FakeUpstream::start().await?;
    let server = format!("--server={}#{}", upstream.addr.ip(), upstream.addr.port());
    let ours = start_cache(&[
        server.clone(),
        "--no-resolv".into(),
        "--cache-size=100".into(),
    ])
    .await?;
    let dnsmasq = start_dnsmasq(&[server.as_str(), "--cache-size=100"]).await?;
    let their = dnsmasq.addr;
    for target in [ours.udp, their] {
        for name in ["a.example.com.", "b.example.com.", "a.example.com."] {
            let reply = query_udp(target, name, RecordType::A).await?;
            assert!(has_a(&reply, UPSTREAM_ANSWER));
        }
    }
    for (name, rtype) in [
        ("cachesize.bind.", RecordType::TXT),
        ("insertions.bind.", RecordType::TXT),
        ("evictions.bind.", RecordType::TXT),
        ("misses.bind.", RecordType::TXT),
        ("hits.bind.", RecordType::TXT),
        ("auth.bind.", RecordType::TXT),
        ("servers.bind.", RecordType::TXT),
        ("cachesize.bind.", RecordType::A),
        ("nonsense.bind.", RecordType::TXT),
        ("example.com.", RecordType::TXT),
    ] {
        let (our_rcode, our_flags, our_strings) = chaos(ours.udp, name, rtype).await?;
        let (their_rcode, their_flags, their_strings) = chaos(their, name, rtype).await?;
        assert_eq!(our_rcode, their_rcode, "{name} {rtype} rcode");
        assert_eq!(our_flags, their_flags, "{name} {rtype} flags");
        let ours_shape: Vec<String> = our_strings.iter().map(|s| shape(s)).collect();
        let theirs_shape: Vec<String> = their_strings.iter().map(|s| shape(s)).collect();
        assert_eq!(
            ours_shape, theirs_shape,
            "{name} {rtype}: ours {our_strings:?} theirs {their_strings:?}"
        );
    }
    // The values that mean the same thing agree after the same traffic.
    for name in [
        "cachesize.bind.",
        "hits.bind.",
        "misses.bind.",
        "insertions.bind.",
        "servers.bind.",
    ] {
        let (_, _, our_strings) = chaos(ours.udp, name, RecordType::TXT).await?;
        let (_, _, their_strings) = chaos(their, name, RecordType::TXT).await?;
        assert_eq!(our_strings, their_strings, "{name}");
    }
    Ok(())
}

#[tokio::test]
async fn hosts_files_and_local_only_domains_answer_locally() -> anyhow::Result<()> {
    let upstream = FakeUpstream::start().await?;
    let dir = std::env::temp_dir().join(format!("dns-cache-hosts-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let hosts = dir.join("hosts");
    std::fs::write(&hosts, "10.9.9.9 myhost.example myalias\n")?;
    let cache = start_cache(&[
        server_arg(&upstream),
        "--no-resolv".into(),
        format!("--addn-hosts={}", hosts.display()),
        "--server=/local.test/".into(),
    ])
    .await?;
    let reply = query_udp(cache.udp, "MyHost.example.", RecordType::A).await?;
    assert!(has_a(&reply, "10.9.9.9"));
    let reply = query_udp(cache.udp, "9.9.9.10.in-addr.arpa.", RecordType::PTR).await?;
    assert_eq!(
        answer_lines(&reply),
        vec!["9.9.9.10.in-addr.arpa. 0 IN PTR myhost.example."]
    );
    let reply = query_udp(cache.udp, "anything.local.test.", RecordType::A).await?;
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(upstream.queries(), 0, "nothing went upstream");
    Ok(())
}

#[tokio::test]
async fn stale_entries_are_served_while_upstream_fails() -> anyhow::Result<()> {
    let upstream = FakeUpstream::start().await?;
    upstream.set_rule(
        "s.example.com",
        Rule::Answer {
            ips: vec![IpAddr::from([192, 0, 2, 5])],
            ttl: 1,
        },
    );
    let cache = start_cache(&[
        server_arg(&upstream),
        "--no-resolv".into(),
        "--use-stale-cache".into(),
    ])
    .await?;
    query_udp(cache.udp, "s.example.com.", RecordType::A).await?;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    upstream.set_rule("s.example.com", Rule::Drop);
    let started = Instant::now();
    let reply = query_udp(cache.udp, "s.example.com.", RecordType::A).await?;
    assert!(
        has_a(&reply, "192.0.2.5"),
        "stale answer expected: {reply:?}"
    );
    assert_eq!(ttl_of(&reply), 0);
    // The upstream drops the refresh (a 1.5 s timeout): the answer must not wait for it.
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "served at once, refreshed behind"
    );
    Ok(())
}

#[tokio::test]
async fn all_servers_fans_out_and_fastest_sticks_with_the_winner() -> anyhow::Result<()> {
    let a = FakeUpstream::start().await?;
    let b = FakeUpstream::start().await?;
    let all = start_cache(&[
        server_arg(&a),
        server_arg(&b),
        "--no-resolv".into(),
        "--all-servers".into(),
    ])
    .await?;
    for i in 0..5 {
        query_udp(all.udp, &format!("all{i}.example.com."), RecordType::A).await?;
    }
    assert_eq!((a.queries(), b.queries()), (5, 5));
    let fast = FakeUpstream::start().await?;
    let slow = FakeUpstream::start().await?;
    slow.set_default(Rule::Delay(
        Duration::from_millis(150),
        Box::new(Rule::Answer {
            ips: vec![IpAddr::from([192, 0, 2, 2])],
            ttl: 60,
        }),
    ));
    let cache = start_cache(&[server_arg(&slow), server_arg(&fast), "--no-resolv".into()]).await?;
    for i in 0..40 {
        let reply = query_udp(cache.udp, &format!("f{i}.example.com."), RecordType::A).await?;
        assert!(
            has_a(&reply, UPSTREAM_ANSWER),
            "the fast server's answer wins"
        );
    }
    assert_eq!(fast.queries(), 40);
    assert!(
        slow.queries() <= 2,
        "only races reach the slow server: {}",
        slow.queries()
    );
    Ok(())
}

#[tokio::test]
async fn a_looping_upstream_is_detected_and_disabled() -> anyhow::Result<()> {
    let upstream = FakeUpstream::start().await?;
    // A relay that forwards every query back to the cache: a forwarding loop.
    let relay = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let relay_addr = relay.local_addr()?;
    let target = std::sync::Arc::new(std::sync::Mutex::new(None::<SocketAddr>));
    let target_for_relay = target.clone();
    let relay_task = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, peer)) = relay.recv_from(&mut buf).await {
            // The probe may arrive before the test knows the cache's port: wait for it.
            let cache = loop {
                if let Some(cache) = *target_for_relay
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                {
                    break cache;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            };
            if let Ok(Some(reply)) =
                kube_dns_test_support::dns_client::raw_udp(cache, &buf[..n]).await
            {
                let _ = relay.send_to(&reply, peer).await;
            }
        }
    });
    // The relay is asked first (strict order), so a loop would hit every query.
    let args = vec![
        format!("--server={}#{}", relay_addr.ip(), relay_addr.port()),
        server_arg(&upstream),
        "--no-resolv".into(),
        "--strict-order".into(),
        "--dns-loop-detect".into(),
        "--metrics-address=127.0.0.1:0".into(),
    ];
    let Cache { process, udp, .. } = start_cache(&args).await?;
    *target
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(udp);
    process
        .wait_for_line("forwarding loop detected", WAIT)
        .await?;
    let reply = query_udp(udp, "www.example.com.", RecordType::A).await?;
    assert!(has_a(&reply, UPSTREAM_ANSWER));
    let metrics_addr = process.listening_addr("metrics", WAIT).await?;
    let text = kube_dns_test_support::http_client::get(metrics_addr, "/metrics")
        .await?
        .text();
    assert!(
        text.contains(&format!(
            "dnscache_upstream_up{{server=\"{relay_addr}\"}} 0"
        )),
        "{text}"
    );
    assert!(text.contains("dnscache_misses_total 1"), "{text}");
    process.signal(10)?;
    process.wait_for_line("cache statistics", WAIT).await?;
    relay_task.abort();
    Ok(())
}

#[tokio::test]
async fn large_answers_truncate_over_udp_and_arrive_whole_over_tcp() -> anyhow::Result<()> {
    let upstream = FakeUpstream::start().await?;
    let ips: Vec<IpAddr> = (1..=40).map(|i| IpAddr::from([10, 7, 0, i])).collect();
    upstream.set_rule("many.example.com", Rule::Answer { ips, ttl: 60 });
    let cache = start_cache(&[server_arg(&upstream), "--no-resolv".into()]).await?;
    // A client without EDNS takes 512 bytes: 40 A records (about 700 bytes) set TC.
    let udp = query_udp(cache.udp, "many.example.com.", RecordType::A).await?;
    assert!(udp.metadata.truncation, "{udp:?}");
    let tcp = query_tcp(cache.tcp, "many.example.com.", RecordType::A).await?;
    assert!(!tcp.metadata.truncation);
    assert_eq!(tcp.answers.len(), 40);
    // A client with a 4096-byte EDNS buffer gets everything over UDP, from the cache.
    let mut msg = query_message("many.example.com.", RecordType::A)?;
    let mut edns = hickory_proto::op::Edns::new();
    edns.set_max_payload(4096);
    msg.set_edns(edns);
    let big = query_udp_with(cache.udp, msg).await?;
    assert_eq!(big.answers.len(), 40);
    assert!(big.edns.is_some(), "EDNS echoed");
    assert_eq!(upstream.queries_for("many.example.com"), 1);
    Ok(())
}

/// Issue 12's first two dns-cache rows, scaled, from one client (127.0.0.1) while a second
/// (127.0.0.2) asks for new names throughout: 6,000 queries for one name whose upstream never
/// answers, first each followed by 60 KB of zeros (FORMERR: bytes after the last record), then
/// without padding (at most `--max-coalesced` waiters, the rest REFUSED), then 6,000 different
/// silent names (the flooder gets at most half the in-flight budget, the rest REFUSED). Memory
/// stays under 48 MiB (the manifest's limit is 64Mi), the second client's misses are answered in
/// every phase, and nothing larger than a plain query reaches the upstream.
#[tokio::test]
async fn udp_floods_for_a_silent_name_keep_memory_bounded_and_others_answered() -> anyhow::Result<()>
{
    use kube_dns_test_support::dns_client::query_udp_from;
    use kube_dns_test_support::hostile::{
        FloodPhase, PeakRss, UDP_FLOOD_PHASES, check_flood, udp_flood,
    };
    let upstream = FakeUpstream::start().await?;
    // Tries per route well above the budget, so that the budget is what the flood meets.
    let cache = start_cache(&[
        server_arg(&upstream),
        "--no-resolv".into(),
        "--dns-forward-max=100000".into(),
        "--max-inflight=1000".into(),
    ])
    .await?;
    let rss = PeakRss::start(cache.process.pid());
    let other = IpAddr::from([127, 0, 0, 2]);
    for FloodPhase {
        label: phase,
        padding,
        qname,
    } in UDP_FLOOD_PHASES
    {
        let flood = tokio::spawn(udp_flood(
            cache.udp,
            6_000,
            padding,
            qname,
            Duration::from_millis(500),
        ));
        let mut answered = 0;
        while !flood.is_finished() || answered < 3 {
            let name = format!("ok{answered}.{phase}.example.com.");
            let reply = query_udp_from(other, cache.udp, &name, RecordType::A, WAIT).await?;
            assert!(
                has_a(&reply, UPSTREAM_ANSWER),
                "{name} from {other} during the {phase} flood: {reply:?}"
            );
            answered += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let replies = flood.await??;
        eprintln!("{phase}: {replies:?}, {answered} of the other client's queries answered");
        // A 60 KB datagram flood overflows the socket's receive buffer whenever the server
        // falls behind (more so on a loaded machine), so what is received varies; what is
        // answered must not.
        let (formerr, refused) = (replies.rcodes[1], replies.rcodes[5]);
        if padding > 0 {
            assert!(
                formerr > 0 && formerr == replies.replies,
                "FORMERR and nothing else for padded queries: {replies:?}"
            );
        } else {
            // One name: beyond 256 waiters; many names: beyond half of the 1,000 in flight.
            // The waiting ones hear nothing before the 4 s deadline.
            assert!(
                refused > 1_000 && refused == replies.replies,
                "REFUSED over the limits and nothing else: {replies:?}"
            );
        }
    }
    check_flood(
        "dns-cache",
        rss.finish().await,
        48 * 1024,
        upstream.largest_query(),
    )?;
    Ok(())
}

/// Issue 12's HTTP row against dns-cache's `--metrics-address`: 150 connections from one
/// client that send up to 390 KB of an unfinished header and stall. Memory stays under 48 MiB,
/// `/healthz` keeps answering another client, and every attacking connection is closed.
#[tokio::test]
async fn stalled_http_headers_on_the_metrics_port_are_bounded() -> anyhow::Result<()> {
    let upstream = FakeUpstream::start().await?;
    let cache = start_cache(&[
        server_arg(&upstream),
        "--no-resolv".into(),
        "--metrics-address=127.0.0.1:0".into(),
    ])
    .await?;
    let metrics = cache.process.listening_addr("metrics", WAIT).await?;
    let report = kube_dns_test_support::hostile::stalled_header_attack(
        cache.process.pid(),
        metrics,
        "/healthz",
        kube_dns_test_support::hostile::HeaderFlood::MIXED,
        Duration::from_secs(8),
    )
    .await;
    eprintln!("attack: {report:?}");
    report.check(48 * 1024)?;
    let refused = kube_dns_test_support::http_client::metric(
        metrics,
        "dnscache_http_refused_per_client_total",
    )
    .await?;
    assert!(refused > 0.0, "no connection refused per client");
    Ok(())
}

/// An A query with EDNS (1232 bytes) over UDP.
async fn query_udp_edns(server: SocketAddr, name: &str) -> anyhow::Result<Message> {
    let mut msg = query_message(name, RecordType::A)?;
    let mut edns = hickory_proto::op::Edns::new();
    edns.set_max_payload(1232);
    msg.set_edns(edns);
    query_udp_with(server, msg).await
}

/// Issue 12's cache row: 10,000 names whose answers are about 1.2 KB each (about 20 MiB to
/// cache whole, 27 MiB resident without the ceiling) into `--cache-size=10000 --cache-max-bytes=2097152`. The cache's bytes stay
/// under the ceiling, the process's memory grows by less than the answers would take, the
/// newest answers are hits, and an answer over `--cache-max-answer` is served, not cached.
#[tokio::test]
async fn the_cache_is_bounded_in_bytes() -> anyhow::Result<()> {
    use kube_dns_test_support::hostile::{PeakRss, rss_kib};
    use kube_dns_test_support::http_client::metric;
    let upstream = FakeUpstream::start().await?;
    let ips: Vec<IpAddr> = (1..=70).map(|i| IpAddr::from([10, 9, 0, i])).collect();
    upstream.set_default(Rule::Answer { ips, ttl: 600 });
    let cache = start_cache(&[
        server_arg(&upstream),
        "--no-resolv".into(),
        "--cache-size=10000".into(),
        "--cache-max-bytes=2097152".into(),
        "--cache-max-answer=1200".into(),
        "--metrics-address=127.0.0.1:0".into(),
    ])
    .await?;
    let metrics = cache.process.listening_addr("metrics", WAIT).await?;
    let before = rss_kib(cache.process.pid())?;
    let rss = PeakRss::start(cache.process.pid());
    let udp = cache.udp;
    // 50 at a time: one client gets at most half of `--dns-forward-max` (150) tries.
    for batch in 0..200 {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..50 {
            let name = format!("n{}.bulk.example.", batch * 50 + i);
            tasks.spawn(async move {
                let reply = query_udp_edns(udp, &name).await?;
                anyhow::ensure!(reply.answers.len() == 70, "{name}: {reply:?}");
                anyhow::Ok(())
            });
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
    }
    let peak = rss.finish().await;
    let bytes = metric(metrics, "dnscache_cache_bytes").await?;
    let entries = metric(metrics, "dnscache_entries").await?;
    eprintln!("cache: {entries} entries, {bytes} bytes; RSS {before} KiB before, peak {peak} KiB");
    assert!(bytes <= 2_097_152.0, "cache bytes {bytes} over the ceiling");
    assert!(
        entries > 500.0 && entries < 2000.0,
        "{entries} entries of about 2 KB (answer, TTL offsets, bookkeeping) in 2 MiB"
    );
    assert!(
        peak < before + 8 * 1024,
        "RSS grew from {before} KiB to {peak} KiB (the answers are about 20 MiB)"
    );
    let asked = upstream.queries_for("n9999.bulk.example");
    let reply = query_udp_edns(udp, "n9999.bulk.example.").await?;
    assert_eq!(reply.answers.len(), 70);
    assert_eq!(upstream.queries_for("n9999.bulk.example"), asked, "a hit");

    let big: Vec<IpAddr> = (1..=80).map(|i| IpAddr::from([10, 8, 0, i])).collect();
    upstream.set_rule("big.bulk.example", Rule::Answer { ips: big, ttl: 600 });
    for _ in 0..2 {
        let reply = query_tcp(cache.tcp, "big.bulk.example.", RecordType::A).await?;
        assert_eq!(reply.answers.len(), 80);
    }
    assert_eq!(upstream.queries_for("big.bulk.example"), 2, "not cached");
    assert_eq!(
        metric(metrics, "dnscache_not_cached_too_large_total").await?,
        2.0
    );
    Ok(())
}

/// Issue 12's TCP row, scaled: 1,000 connections from one client that send a length prefix of
/// 65535 and stall, then eight clients that fill `--max-tcp-connections=64` between them. The
/// flooding client keeps at most its eighth (8) open, memory stays under 48 MiB, and a
/// newcomer's TCP query is answered at the cap (the busiest client's idlest connection goes).
#[tokio::test]
async fn tcp_connections_are_capped_per_client_and_in_all() -> anyhow::Result<()> {
    use kube_dns_test_support::hostile::{
        PeakRss, stalled_tcp_prefixes, still_open, tcp_query_from,
    };
    let upstream = FakeUpstream::start().await?;
    let cache = start_cache(&[
        server_arg(&upstream),
        "--no-resolv".into(),
        "--max-tcp-connections=64".into(),
    ])
    .await?;
    let rss = PeakRss::start(cache.process.pid());
    let flood = stalled_tcp_prefixes(IpAddr::from([127, 0, 0, 1]), cache.tcp, 1_000, 1_000).await;
    let newcomer = IpAddr::from([127, 0, 0, 2]);
    let rcode = tcp_query_from(newcomer, cache.tcp, "a.example.com.", WAIT).await?;
    assert_eq!(rcode, 0, "a second client's TCP query during the flood");
    let open = still_open(flood, Duration::from_secs(1)).await;
    assert!(
        open <= 8,
        "{open} of the flood's connections still open (per-client cap 8)"
    );

    let mut held = Vec::new();
    for last in 10..18 {
        held.extend(stalled_tcp_prefixes(IpAddr::from([127, 0, 0, last]), cache.tcp, 8, 10).await);
    }
    let rcode = tcp_query_from(newcomer, cache.tcp, "b.example.com.", WAIT).await?;
    assert_eq!(rcode, 0, "a newcomer's TCP query at the cap");
    let peak = rss.finish().await;
    eprintln!("dns-cache peak RSS {peak} KiB under the TCP floods");
    assert!(peak < 48 * 1024, "dns-cache peak RSS {peak} KiB");
    drop(held);
    Ok(())
}

/// Issue 13: after SIGTERM dns-cache keeps answering (cached and forwarded names, over UDP and
/// TCP) for `--lameduck`, its `/healthz` fails meanwhile, and then it exits 0.
#[tokio::test]
async fn sigterm_keeps_answering_for_the_lameduck_period_then_exits_zero() -> anyhow::Result<()> {
    let upstream = FakeUpstream::start().await?;
    // Every upstream answer takes 200 ms: misses are in flight when SIGTERM arrives.
    upstream.set_default(Rule::Delay(
        Duration::from_millis(200),
        Box::new(Rule::Answer {
            ips: vec![IpAddr::V4(UPSTREAM_ANSWER)],
            ttl: 300,
        }),
    ));
    let mut cache = start_cache(&[
        server_arg(&upstream),
        "--no-resolv".into(),
        "--lameduck=3000ms".into(),
        "--metrics-address=127.0.0.1:0".into(),
    ])
    .await?;
    let metrics = cache.process.listening_addr("metrics", WAIT).await?;
    assert!(has_a(
        &query_udp(cache.udp, "cached.example.com.", RecordType::A).await?,
        UPSTREAM_ANSWER
    ));
    let udp = cache.udp;
    let in_flight =
        tokio::spawn(async move { query_udp(udp, "inflight.example.com.", RecordType::A).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let signalled = Instant::now();
    cache
        .process
        .signal(kube_dns_test_support::process::SIGTERM)?;
    assert!(
        has_a(&in_flight.await??, UPSTREAM_ANSWER),
        "a miss in flight at SIGTERM is answered"
    );
    // /healthz fails as soon as the signal is handled.
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let health = kube_dns_test_support::http_client::get(metrics, "/healthz").await?;
        if health.status == 503 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/healthz still {} in lameduck",
            health.status
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut answered = 0;
    while signalled.elapsed() < Duration::from_millis(2_000) {
        let forwarded = format!("new{answered}.example.com.");
        for (name, reply) in [
            (
                "cached",
                query_udp(cache.udp, "cached.example.com.", RecordType::A).await?,
            ),
            (
                "forwarded",
                query_udp(cache.udp, &forwarded, RecordType::A).await?,
            ),
            (
                "tcp",
                query_tcp(cache.tcp, &forwarded, RecordType::A).await?,
            ),
        ] {
            assert!(
                has_a(&reply, UPSTREAM_ANSWER),
                "{name} query {:?} after SIGTERM: {reply:?}",
                signalled.elapsed()
            );
        }
        answered += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        answered >= 3,
        "only {answered} rounds in the lameduck period"
    );
    let status = cache.process.wait_exit(WAIT).await?;
    let took = signalled.elapsed();
    assert!(status.success(), "exit after lameduck: {status:?}");
    assert!(
        took >= Duration::from_millis(3_000) && took < Duration::from_secs(8),
        "exited {took:?} after SIGTERM (lameduck 3 s)"
    );
    Ok(())
}

/// Issue 13: signals that arrive while dns-cache starts (the nanny's SIGHUP or SIGUSR1 to a
/// child it has just spawned) are handled, not the default action that kills the process. Each
/// is sent as soon as the process has started its runtime's threads, before it has bound its
/// sockets; until then the signals are held blocked from main's first line. (What runs before
/// main, the dynamic loader, cannot block them: the nanny's first SIGUSR1 waits a second.)
#[tokio::test]
async fn signals_sent_while_starting_do_not_kill_it() -> anyhow::Result<()> {
    let upstream = FakeUpstream::start().await?;
    for signal in [
        kube_dns_test_support::process::SIGHUP,
        kube_dns_test_support::process::SIGUSR1,
    ] {
        let mut process = spawn_cache(&[server_arg(&upstream), "--no-resolv".into()])?;
        let pid = process.pid();
        let deadline = Instant::now() + WAIT;
        while std::fs::read_dir(format!("/proc/{pid}/task"))?.count() < 2 {
            anyhow::ensure!(Instant::now() < deadline, "no second thread in {pid}");
            std::thread::sleep(Duration::from_micros(200));
        }
        process.signal(signal)?;
        let listening = process.listening_addr("udp", WAIT).await;
        let status = process.try_exit_status()?;
        assert!(
            status.is_none() && listening.is_ok(),
            "signal {signal} while starting: exited {status:?}\n{}",
            process.output_text()
        );
        assert!(has_a(
            &query_udp(listening?, "after.example.com.", RecordType::A).await?,
            UPSTREAM_ANSWER
        ));
    }
    Ok(())
}

/// Issue 14: `--ipv4-only` for some domains and `--ipv6-only` for every name answer the other
/// family's address questions NODATA here (authoritative, EDE 17), never forwarded, counted.
#[tokio::test]
async fn family_modes_answer_nodata_without_forwarding() -> anyhow::Result<()> {
    let upstream = FakeUpstream::start().await?;
    upstream.set_default(Rule::Answer {
        ips: vec!["93.184.216.34".parse()?, "2001:4860::1".parse()?],
        ttl: 30,
    });
    let cache = start_cache(&[
        server_arg(&upstream),
        "--no-resolv".into(),
        "--ipv4-only=/cluster.local/svc.example/".into(),
        "--metrics-address=127.0.0.1:0".into(),
    ])
    .await?;
    let metrics = cache.process.listening_addr("metrics", WAIT).await?;
    for name in [
        "api.github.com.default.svc.cluster.local.",
        "x.svc.example.",
    ] {
        let reply = query_udp(cache.udp, name, RecordType::AAAA).await?;
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert!(
            reply.answers.is_empty() && reply.metadata.authoritative,
            "{reply:?}"
        );
        assert_eq!(upstream.queries_for(name.trim_end_matches('.')), 0);
        let a = query_udp(cache.udp, name, RecordType::A).await?;
        assert!(has_a(&a, "93.184.216.34"), "A is forwarded: {a:?}");
    }
    let outside = query_udp(cache.udp, "www.example.com.", RecordType::AAAA).await?;
    assert_eq!(
        answer_lines(&outside).len(),
        1,
        "outside the domains AAAA is forwarded"
    );
    // The Extended DNS Error "Filtered" tells an EDNS client why.
    let mut with_edns = query_message("y.svc.example.", RecordType::AAAA)?;
    with_edns.set_edns(hickory_proto::op::Edns::new());
    let bytes = kube_dns_test_support::dns_client::raw_udp(cache.udp, &with_edns.to_vec()?)
        .await?
        .context("reply")?;
    let (start, end) = dns_wire::response_layout(&bytes)?.opt.context("OPT")?;
    assert_eq!(
        dns_wire::extended_error(&bytes[usize::from(start) + 11..usize::from(end)]),
        Some(dns_wire::ede::FILTERED)
    );
    assert_eq!(
        kube_dns_test_support::http_client::metric(
            metrics,
            "dnscache_policy_answers_total{option=\"ipv4-only\"}"
        )
        .await?,
        3.0
    );
    let v6 = start_cache(&[
        server_arg(&upstream),
        "--no-resolv".into(),
        "--ipv6-only".into(),
    ])
    .await?;
    let before = upstream.queries();
    let a = query_udp(v6.udp, "anything.example.net.", RecordType::A).await?;
    assert!(a.answers.is_empty() && a.metadata.response_code == ResponseCode::NoError);
    let aaaa = query_udp(v6.udp, "anything.example.net.", RecordType::AAAA).await?;
    assert_eq!(answer_lines(&aaaa).len(), 1);
    assert_eq!(
        upstream.queries(),
        before + 1,
        "only the AAAA question went upstream"
    );
    Ok(())
}
