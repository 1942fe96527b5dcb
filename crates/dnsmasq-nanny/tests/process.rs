//! Process tests: the real `dnsmasq-nanny` supervising a fake child (a shell script that records
//! its argv and signals), the real `dns-cache`, and a real dnsmasq 2.90.
// Whole-process tests time real processes on the real clocks (see clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{DNSClass, RecordType};
use kube_dns_test_support::dns_client::{answer_lines, query_message, query_udp, query_udp_with};
use kube_dns_test_support::fake_upstream::{FakeUpstream, UPSTREAM_ANSWER};
use kube_dns_test_support::http_client;
use kube_dns_test_support::process::ChildProcess;

const WAIT: Duration = Duration::from_secs(10);

/// A fake child: logs its argv and the signals it gets to `log`, exits 0 on SIGTERM.
fn fake_child(dir: &Path, log: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join("fake-dnsmasq");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\necho \"start $$ $*\" >> {log}\ntrap 'echo \"HUP $$\" >> {log}' HUP\ntrap 'echo \"USR1 $$\" >> {log}' USR1\ntrap 'echo \"TERM $$\" >> {log}; exit 0' TERM\nwhile true; do sleep 0.05; done\n",
            log = log.display()
        ),
    )?;
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    Ok(path)
}

async fn wait_for_log(log: &Path, needle: &str, count: usize) -> anyhow::Result<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.matches(needle).count() >= count {
            return Ok(text);
        }
        if Instant::now() > deadline {
            bail!("{needle:?} x{count} not in child log:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// dns-cache's own arguments after the nanny's `--`: a free loopback port, one worker, no
/// hosts or resolv file (the servers file the nanny writes is its configuration).
fn dns_cache_child_args() -> Vec<String> {
    [
        "-k",
        "-p",
        "0",
        "-a",
        "127.0.0.1",
        "--no-hosts",
        "--no-resolv",
        "--workers=1",
    ]
    .map(String::from)
    .to_vec()
}

/// A ConfigMap directory in `dir` whose stub domain `acme.local` has a nameserver given by
/// name (`ns.dns.cluster.local`, resolved through `-kubednsServer`), and a fake child logging
/// to `child.log`: (config dir, log, child).
fn stub_name_setup(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf, PathBuf)> {
    let config = dir.join("config");
    std::fs::create_dir_all(&config)?;
    kube_dns_test_support::write_configmap_key(
        &config,
        "stubDomains",
        r#"{"acme.local": ["ns.dns.cluster.local"]}"#,
    )?;
    let log = dir.join("child.log");
    let child = fake_child(dir, &log)?;
    Ok((config, log, child))
}

async fn spawn_nanny(args: &[String]) -> anyhow::Result<(ChildProcess, SocketAddr)> {
    let mut all = vec![
        "-healthAddress=127.0.0.1:0".to_owned(),
        "-syncInterval=1s".to_owned(),
        "-restartBackoff=50ms".to_owned(),
    ];
    all.extend(args.iter().cloned());
    let nanny = ChildProcess::spawn(
        env!("CARGO_BIN_EXE_dnsmasq-nanny"),
        &all,
        std::iter::empty::<(&str, &str)>(),
    )?;
    let health = nanny.listening_addr("http", WAIT).await?;
    Ok((nanny, health))
}

#[tokio::test]
async fn real_dnsmasq_child_gets_legacy_argv_and_is_restarted_without_overlap() -> anyhow::Result<()>
{
    let dir = kube_dns_test_support::tempdir("argv")?;
    let config = dir.join("config");
    std::fs::create_dir_all(&config)?;
    kube_dns_test_support::write_configmap_key(
        &config,
        "upstreamNameservers",
        r#"["1.2.3.4:5353"]"#,
    )?;
    let log = dir.join("child.log");
    let child = fake_child(&dir, &log)?;
    let (mut nanny, health) = spawn_nanny(&[
        format!("-dnsmasqExec={}", child.display()),
        format!("-configDir={}", config.display()),
        "-restartDnsmasq=true".into(),
        "--".into(),
        "-k".into(),
        "--cache-size=1000".into(),
    ])
    .await?;
    let text = wait_for_log(&log, "start", 1).await?;
    assert!(
        text.contains("-k --cache-size=1000 --server 1.2.3.4#5353 --no-resolv"),
        "{text}"
    );
    assert_eq!(http_client::get(health, "/healthz").await?.status, 200);
    // A stub domain appears: the old child is stopped (TERM logged) before the new one starts.
    kube_dns_test_support::write_configmap_key(
        &config,
        "stubDomains",
        r#"{"acme.local": ["10.0.0.5"]}"#,
    )?;
    let text = wait_for_log(&log, "start", 2).await?;
    let lines: Vec<&str> = text.lines().collect();
    let term = lines
        .iter()
        .position(|l| l.starts_with("TERM"))
        .context("old child got SIGTERM")?;
    let second = lines
        .iter()
        .rposition(|l| l.starts_with("start"))
        .context("second start")?;
    assert!(
        term < second,
        "stopped before the new one started: {lines:?}"
    );
    assert!(
        lines[second].ends_with("--server /acme.local/10.0.0.5 --server 1.2.3.4#5353 --no-resolv"),
        "{}",
        lines[second]
    );
    // An invalid update is ignored: no restart, the error is reported.
    kube_dns_test_support::write_configmap_key(
        &config,
        "upstreamNameservers",
        r#"["a", "b", "c", "d"]"#,
    )?;
    let deadline = Instant::now() + WAIT;
    loop {
        let body = http_client::get(health, "/healthz").await?.json()?;
        if body["lastConfigError"].is_string() {
            break;
        }
        if Instant::now() > deadline {
            bail!("invalid update not reported: {body}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(std::fs::read_to_string(&log)?.matches("start").count(), 2);
    // SIGTERM: the child is stopped and the nanny exits 0.
    nanny.signal(15)?;
    assert!(nanny.wait_exit(WAIT).await?.success());
    wait_for_log(&log, "TERM", 2).await?;
    Ok(())
}

#[tokio::test]
async fn a_crashing_child_is_restarted_with_backoff() -> anyhow::Result<()> {
    let dir = kube_dns_test_support::tempdir("crash")?;
    let script = dir.join("crash");
    let log = dir.join("crash.log");
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho run >> {}\nexit 3\n", log.display()),
    )?;
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let (_nanny, health) = spawn_nanny(&[
        format!("-dnsmasqExec={}", script.display()),
        format!("-configDir={}", dir.join("none").display()),
    ])
    .await?;
    wait_for_log(&log, "run", 4).await?;
    let metrics = http_client::get(health, "/metrics").await?.text();
    assert!(
        metrics.contains("dnsmasq_nanny_child_restarts_total"),
        "{metrics}"
    );
    let restarts: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("dnsmasq_nanny_child_restarts_total "))
        .and_then(|v| v.parse().ok())
        .context("restart counter")?;
    assert!(restarts >= 3.0);
    // Backoff doubles: 50, 100, 200, 400 ms... so five runs take well over 300 ms.
    let started = Instant::now();
    let before = std::fs::read_to_string(&log)?.matches("run").count();
    wait_for_log(&log, "run", before + 2).await?;
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "backoff grows: {:?}",
        started.elapsed()
    );
    Ok(())
}

async fn chaos_hits(server: SocketAddr) -> anyhow::Result<u64> {
    let mut msg = query_message("hits.bind.", RecordType::TXT)?;
    msg.queries[0].set_query_class(DNSClass::CH);
    let reply = query_udp_with(server, msg).await?;
    let text = reply
        .answers
        .first()
        .context("hits.bind answer")?
        .data
        .to_string();
    Ok(text.trim_matches('"').parse()?)
}

/// The nanny supervising dns-cache, with a ConfigMap directory that names `upstream` (and holds
/// `keys`); returns the nanny, the directory and the cache's UDP address.
async fn nanny_with_dns_cache(
    tag: &str,
    upstream: &FakeUpstream,
    keys: &[(&str, &str)],
) -> anyhow::Result<(ChildProcess, PathBuf, SocketAddr)> {
    let dir = kube_dns_test_support::tempdir(tag)?;
    let config = dir.join("config");
    std::fs::create_dir_all(&config)?;
    kube_dns_test_support::write_configmap_key(
        &config,
        "upstreamNameservers",
        &format!("[\"{}\"]", upstream.addr),
    )?;
    for (key, value) in keys {
        kube_dns_test_support::write_configmap_key(&config, key, value)?;
    }
    let dns_cache = kube_dns_test_support::workspace_binary("dns-cache")?;
    let (nanny, _health) = spawn_nanny(
        &[
            format!("-dnsmasqExec={}", dns_cache.display()),
            format!("-configDir={}", config.display()),
            format!("-serversFile={}", dir.join("servers").display()),
            "--".into(),
        ]
        .into_iter()
        .chain(dns_cache_child_args())
        .collect::<Vec<_>>(),
    )
    .await?;
    let cache = nanny.listening_addr("udp", WAIT).await?;
    Ok((nanny, config, cache))
}

#[tokio::test]
async fn dns_cache_child_reloads_stub_domains_in_place_keeping_its_cache() -> anyhow::Result<()> {
    let upstream = FakeUpstream::start().await?;
    let stub = FakeUpstream::start().await?;
    stub.set_default(kube_dns_test_support::fake_upstream::Rule::Answer {
        ips: vec!["10.9.8.7".parse()?],
        ttl: 60,
    });
    let (_nanny, config, cache) = nanny_with_dns_cache("cache", &upstream, &[]).await?;
    let reply = query_udp(cache, "www.example.com.", RecordType::A).await?;
    assert!(
        answer_lines(&reply)
            .iter()
            .any(|l| l.ends_with(&format!(" A {UPSTREAM_ANSWER}")))
    );
    query_udp(cache, "www.example.com.", RecordType::A).await?;
    let hits_before = chaos_hits(cache).await?;
    // The second query was a hit (hits.bind does not count itself, as in dnsmasq).
    assert!(hits_before >= 1);
    // A stub domain is added: served within two seconds, through SIGHUP (same process).
    kube_dns_test_support::write_configmap_key(
        &config,
        "stubDomains",
        &format!("{{\"acme.local\": [\"{}\"]}}", stub.addr),
    )?;
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let reply = query_udp(cache, "db.acme.local.", RecordType::A).await?;
        if answer_lines(&reply)
            .iter()
            .any(|l| l.ends_with(" A 10.9.8.7"))
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("stub domain not served within 2 s: {reply:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        chaos_hits(cache).await? > hits_before,
        "the cache's counters survive the change"
    );
    let reply = query_udp(cache, "www.example.com.", RecordType::A).await?;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_eq!(
        upstream.queries_for("www.example.com"),
        1,
        "the cached entry survived the reload"
    );
    Ok(())
}

#[tokio::test]
async fn hostnames_resolve_deleted_config_means_defaults_and_log_interval_signals()
-> anyhow::Result<()> {
    let kubedns = FakeUpstream::start().await?;
    let dir = kube_dns_test_support::tempdir("resolve")?;
    let (config, log, child) = stub_name_setup(&dir)?;
    let (_nanny, health) = spawn_nanny(&[
        format!("-dnsmasqExec={}", child.display()),
        format!("-configDir={}", config.display()),
        format!("-kubednsServer={}", kubedns.addr),
        "-restartDnsmasq=true".into(),
        "-logInterval=200ms".into(),
        "--".into(),
        "-k".into(),
    ])
    .await?;
    let text = wait_for_log(&log, "start", 1).await?;
    assert!(
        text.contains(&format!("-k --server /acme.local/{UPSTREAM_ANSWER}")),
        "resolved through kube-dns: {text}"
    );
    wait_for_log(&log, "USR1", 2).await?;
    // A name that does not resolve rejects the update (no restart, error reported).
    kube_dns_test_support::write_configmap_key(
        &config,
        "stubDomains",
        r#"{"acme.local": ["nx.cluster.local"]}"#,
    )?;
    let deadline = Instant::now() + WAIT;
    loop {
        let body = http_client::get(health, "/healthz").await?.json()?;
        if body["lastConfigError"]
            .as_str()
            .is_some_and(|e| e.contains("does not resolve"))
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("unresolvable stub nameserver not reported: {body}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The ConfigMap goes away: defaults, i.e. no --server at all.
    std::fs::remove_dir_all(&config)?;
    let text = wait_for_log(&log, "start", 2).await?;
    let last = text
        .lines()
        .rfind(|l| l.starts_with("start"))
        .unwrap_or_default()
        .to_owned();
    assert!(last.ends_with(" -k"), "defaults: {last}");
    Ok(())
}

#[tokio::test]
async fn a_real_dnsmasq_is_restarted_on_config_change_and_binds_again() -> anyhow::Result<()> {
    let first = FakeUpstream::start().await?;
    let second = FakeUpstream::start().await?;
    second.set_default(kube_dns_test_support::fake_upstream::Rule::Answer {
        ips: vec!["10.2.2.2".parse()?],
        ttl: 60,
    });
    let dir = kube_dns_test_support::tempdir("dnsmasq")?;
    let config = dir.join("config");
    std::fs::create_dir_all(&config)?;
    kube_dns_test_support::write_configmap_key(
        &config,
        "upstreamNameservers",
        &format!("[\"{}\"]", first.addr),
    )?;
    // dnsmasq takes -p 0 as "no DNS": a port that was free a moment ago.
    let port = kube_dns_test_support::free_dns_port()?;
    let dnsmasq = ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .context("dnsmasq is not installed (scripts/test installs dnsmasq-base)")?;
    let (mut nanny, health) = spawn_nanny(&[
        format!("-dnsmasqExec={dnsmasq}"),
        format!("-configDir={}", config.display()),
        "-restartDnsmasq=true".into(),
        "--".into(),
        "-k".into(),
        format!("--port={port}"),
        "--listen-address=127.0.0.1".into(),
        "--bind-interfaces".into(),
        "--no-hosts".into(),
        "--user=root".into(),
        "--pid-file=".into(),
        "--log-facility=-".into(),
        "--cache-size=0".into(),
    ])
    .await?;
    let server = SocketAddr::from(([127, 0, 0, 1], port));
    let answered_by = |ip: &'static str| async move {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(reply) = query_udp(
                server,
                &format!("n{}.example.com.", rand_suffix()),
                RecordType::A,
            )
            .await
                && answer_lines(&reply)
                    .iter()
                    .any(|l| l.ends_with(&format!(" A {ip}")))
            {
                return Ok::<(), anyhow::Error>(());
            }
            if Instant::now() > deadline {
                bail!("dnsmasq did not answer from {ip}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    answered_by("192.0.2.53").await?;
    let pid_before = http_client::get(health, "/healthz").await?.json()?["pid"].clone();
    kube_dns_test_support::write_configmap_key(
        &config,
        "upstreamNameservers",
        &format!("[\"{}\"]", second.addr),
    )?;
    answered_by("10.2.2.2").await?;
    let body = http_client::get(health, "/healthz").await?.json()?;
    assert_ne!(body["pid"], pid_before, "a new dnsmasq runs");
    assert_eq!(body["childRunning"], true);
    assert_eq!(body["restarts"], 0, "a planned restart is not a crash");
    // dnsmasq changes credentials, which clears the parent-death signal: stop it properly.
    nanny.signal(15)?;
    assert!(nanny.wait_exit(WAIT).await?.success());
    let probe = std::net::UdpSocket::bind(server);
    assert!(probe.is_ok(), "dnsmasq is gone and its port is free again");
    Ok(())
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[tokio::test]
async fn a_child_ignoring_sigterm_is_killed_after_the_grace_period() -> anyhow::Result<()> {
    let dir = kube_dns_test_support::tempdir("stubborn")?;
    let script = dir.join("stubborn");
    let log = dir.join("stubborn.log");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ntrap 'echo ignored >> {}' TERM\necho up >> {}\nwhile true; do sleep 0.05; done\n",
            log.display(),
            log.display()
        ),
    )?;
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let (mut nanny, health) = spawn_nanny(&[
        format!("-dnsmasqExec={}", script.display()),
        format!("-configDir={}", dir.join("none").display()),
        "-stopGrace=300ms".into(),
    ])
    .await?;
    wait_for_log(&log, "up", 1).await?;
    let pid = http_client::get(health, "/healthz").await?.json()?["pid"]
        .as_u64()
        .context("child pid")?;
    let started = Instant::now();
    nanny.signal(15)?;
    assert!(nanny.wait_exit(WAIT).await?.success());
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "waited for the grace period"
    );
    wait_for_log(&log, "ignored", 1).await?;
    let deadline = Instant::now() + Duration::from_secs(2);
    while Path::new(&format!("/proc/{pid}")).exists() {
        if Instant::now() > deadline {
            bail!("the child {pid} survived SIGKILL");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Issue 12's HTTP row against the nanny's `-healthAddress`: 150 connections from one client
/// that send up to 390 KB of an unfinished header and stall. Memory stays under 24 MiB (the
/// dnsmasq container's limit is 64Mi, shared with the cache), `/healthz` keeps answering
/// another client, and every attacking connection is closed.
#[tokio::test]
async fn stalled_http_headers_on_the_health_port_are_bounded() -> anyhow::Result<()> {
    let dir = kube_dns_test_support::tempdir("nanny-http")?;
    let log = dir.join("child.log");
    let child = fake_child(&dir, &log)?;
    let (nanny, health) = spawn_nanny(&[
        format!("-dnsmasqExec={}", child.display()),
        format!("-configDir={}", dir.join("none").display()),
    ])
    .await?;
    wait_for_log(&log, "start", 1).await?;
    let report = kube_dns_test_support::hostile::stalled_header_attack(
        nanny.pid(),
        health,
        "/healthz",
        kube_dns_test_support::hostile::HeaderFlood::MIXED,
        Duration::from_secs(8),
    )
    .await;
    eprintln!("attack: {report:?}");
    report.check(24 * 1024)?;
    let refused =
        http_client::metric(health, "dnsmasq_nanny_http_refused_per_client_total").await?;
    assert!(refused > 0.0, "no connection refused per client");
    Ok(())
}

/// A script at `dir/name` with `body` after the shebang, executable.
fn script(dir: &Path, name: &str, body: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}"))?;
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    Ok(path)
}

/// The CPU time (user + system) a process has used, from /proc/<pid>/stat, in clock ticks.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_name = stat.rsplit_once(')').context("stat")?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
}

/// Issue 13: `-restartBackoff=0` (with a zero cap) does not make a busy loop when the child
/// exits at once: one immediate restart, then at least 100 ms between starts.
#[tokio::test]
async fn a_zero_restart_backoff_never_spins() -> anyhow::Result<()> {
    let dir = kube_dns_test_support::tempdir("zero-backoff")?;
    let log = dir.join("runs.log");
    let child = script(
        &dir,
        "exits",
        &format!("echo run >> {}\nexit 1\n", log.display()),
    )?;
    let (nanny, _health) = spawn_nanny(&[
        format!("-dnsmasqExec={}", child.display()),
        format!("-configDir={}", dir.join("none").display()),
        "-restartBackoff=0".into(),
        "-restartBackoffMax=0".into(),
    ])
    .await?;
    wait_for_log(&log, "run", 2).await?;
    let before = cpu_ticks(nanny.pid())?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let runs = std::fs::read_to_string(&log)?.matches("run").count();
    let ticks = cpu_ticks(nanny.pid())? - before;
    assert!(
        runs <= 30,
        "{runs} starts in about 2 s with -restartBackoff=0"
    );
    // 100 ticks a second: a spinning nanny uses about 200 in 2 s.
    assert!(ticks < 50, "the nanny used {ticks} CPU ticks in 2 s");
    Ok(())
}

/// Issue 13: the first `-logInterval` SIGUSR1 waits until the child has had time to install
/// its handlers (here a child that needs 300 ms), and so does the first one after a restart;
/// before, the ticker fired at once and SIGUSR1's default action killed the child.
#[tokio::test]
async fn the_first_log_tick_does_not_kill_a_child_that_is_starting() -> anyhow::Result<()> {
    let dir = kube_dns_test_support::tempdir("first-tick")?;
    let log = dir.join("child.log");
    let child = script(
        &dir,
        "slow-start",
        &format!(
            "echo \"start $$\" >> {log}\nsleep 0.3\ntrap 'echo \"USR1 $$\" >> {log}' USR1\n\
             trap 'exit 0' TERM\nwhile true; do sleep 0.05; done\n",
            log = log.display()
        ),
    )?;
    let (_nanny, _health) = spawn_nanny(&[
        format!("-dnsmasqExec={}", child.display()),
        format!("-configDir={}", dir.join("none").display()),
        "-logInterval=100ms".into(),
    ])
    .await?;
    let text = wait_for_log(&log, "USR1", 3).await?;
    assert_eq!(
        text.matches("start").count(),
        1,
        "the child was killed and restarted:\n{text}"
    );
    Ok(())
}

/// Issue 13: as PID 1 of its own PID namespace (as in a container), the nanny reaps every
/// orphan, also those that exit together with the supervised child (a waitid peek at "any
/// child" found the supervised child first and stopped there, leaving them zombies).
#[tokio::test]
async fn as_pid_1_every_orphan_is_reaped() -> anyhow::Result<()> {
    if !std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .status()
        .is_ok_and(|status| status.success())
    {
        eprintln!("skipped: unshare --pid --fork --mount-proc needs root and util-linux here");
        return Ok(());
    }
    let dir = kube_dns_test_support::tempdir("pid1")?;
    let log = dir.join("child.log");
    // Each run leaves ten grandchildren that outlive it by a moment, then exits: they are
    // re-parented to the nanny and exit about when the next run does.
    let child = script(
        &dir,
        "forks",
        &format!(
            "echo run >> {log}\nfor i in 1 2 3 4 5 6 7 8 9 10; do (sleep 0.2 &) ; done\nsleep 0.2\nexit 1\n",
            log = log.display()
        ),
    )?;
    let nanny = ChildProcess::spawn(
        "unshare",
        [
            "--pid".to_owned(),
            "--fork".to_owned(),
            "--mount-proc".to_owned(),
            "--kill-child".to_owned(),
            env!("CARGO_BIN_EXE_dnsmasq-nanny").to_owned(),
            format!("-dnsmasqExec={}", child.display()),
            format!("-configDir={}", dir.join("none").display()),
            "-restartBackoff=300ms".into(),
            "-restartBackoffMax=300ms".into(),
        ],
        std::iter::empty::<(&str, &str)>(),
    )?;
    wait_for_log(&log, "run", 4).await?;
    // The nanny is unshare's child; its zombie children are listed in the host's /proc.
    let nanny_pid = std::fs::read_to_string(format!(
        "/proc/{}/task/{}/children",
        nanny.pid(),
        nanny.pid()
    ))?
    .split_whitespace()
    .next()
    .context("unshare has no child")?
    .parse::<u32>()?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let zombies: Vec<String> = std::fs::read_dir("/proc")?
        .flatten()
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("stat")).ok())
        .filter(|stat| {
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields.first() == Some(&"Z") && fields.get(1) == Some(&nanny_pid.to_string().as_str())
        })
        .collect();
    // A zombie younger than a SIGCHLD's handling may be seen; a pile of them is the bug.
    assert!(
        zombies.len() <= 2,
        "{} zombies under the nanny (pid {nanny_pid}): {zombies:?}",
        zombies.len()
    );
    Ok(())
}

/// Issue 13: a stub nameserver given as a name that does not resolve yet (kube-dns not synced
/// when the nanny starts) is resolved again with backoff and applied once it resolves; before,
/// the nanny kept the defaults until the ConfigMap changed.
#[tokio::test]
async fn a_stub_nameserver_name_that_resolves_later_is_applied_then() -> anyhow::Result<()> {
    use kube_dns_test_support::fake_upstream::Rule;
    let kubedns = FakeUpstream::start().await?;
    kubedns.set_rule("ns.dns.cluster.local", Rule::ServFail);
    let dir = kube_dns_test_support::tempdir("resolve-later")?;
    let (config, log, child) = stub_name_setup(&dir)?;
    let (_nanny, health) = spawn_nanny(&[
        format!("-dnsmasqExec={}", child.display()),
        format!("-configDir={}", config.display()),
        format!("-kubednsServer={}", kubedns.addr),
        "-restartDnsmasq=true".into(),
        "--".into(),
        "-k".into(),
    ])
    .await?;
    let first = wait_for_log(&log, "start", 1).await?;
    assert!(first.trim_end().ends_with(" -k"), "defaults first: {first}");
    let body = http_client::get(health, "/healthz").await?.json()?;
    assert!(
        body["lastConfigError"]
            .as_str()
            .is_some_and(|e| e.contains("does not resolve")),
        "{body}"
    );
    // kube-dns has synced: the next retry (1 s, then 2 s, ...) resolves it and restarts the
    // dnsmasq child with the stub domain.
    kubedns.set_rule(
        "ns.dns.cluster.local",
        Rule::Answer {
            ips: vec!["10.9.8.7".parse()?],
            ttl: 30,
        },
    );
    let text = wait_for_log(&log, "start", 2).await?;
    assert!(
        text.contains("-k --server /acme.local/10.9.8.7"),
        "applied once resolved: {text}"
    );
    let body = http_client::get(health, "/healthz").await?.json()?;
    assert!(body["lastConfigError"].is_null(), "{body}");
    Ok(())
}

/// Issue 13: a servers file that cannot be written is an error in `/healthz` and a metric, not
/// a configuration reported as applied; the dns-cache child keeps serving.
#[tokio::test]
async fn a_servers_file_that_cannot_be_written_is_reported() -> anyhow::Result<()> {
    let upstream = FakeUpstream::start().await?;
    let dir = kube_dns_test_support::tempdir("servers-file")?;
    let config = dir.join("config");
    std::fs::create_dir_all(&config)?;
    kube_dns_test_support::write_configmap_key(
        &config,
        "upstreamNameservers",
        &format!("[\"{}\"]", upstream.addr),
    )?;
    let dns_cache = kube_dns_test_support::workspace_binary("dns-cache")?;
    // A directory that does not exist: every write fails.
    let servers = dir.join("missing").join("servers");
    let (nanny, health) = spawn_nanny(
        &[
            format!("-dnsmasqExec={}", dns_cache.display()),
            format!("-configDir={}", config.display()),
            format!("-serversFile={}", servers.display()),
            "--".into(),
        ]
        .into_iter()
        .chain(dns_cache_child_args())
        .collect::<Vec<_>>(),
    )
    .await?;
    nanny.listening_addr("udp", WAIT).await?;
    let body = http_client::get(health, "/healthz").await?.json()?;
    assert!(
        body["lastConfigError"]
            .as_str()
            .is_some_and(|e| e.contains("cannot write the servers file")),
        "{body}"
    );
    let errors = http_client::metric(health, "dnsmasq_nanny_servers_file_errors_total ").await?;
    assert!(errors >= 1.0, "{errors} servers file errors counted");
    Ok(())
}

/// Issue 14: the ConfigMap's `ipFamily` reaches a dns-cache child through the servers file (a
/// reload, no restart): on an IPv4-only cluster AAAA questions are answered NODATA without
/// being forwarded, and the other way round for IPv6; without the key both are forwarded.
#[tokio::test]
async fn ip_family_from_the_config_map_answers_the_other_family_locally() -> anyhow::Result<()> {
    let upstream = FakeUpstream::start().await?;
    upstream.set_default(kube_dns_test_support::fake_upstream::Rule::Answer {
        ips: vec!["93.184.216.34".parse()?, "2001:4860::1".parse()?],
        ttl: 0,
    });
    let (_nanny, config, cache) =
        nanny_with_dns_cache("family", &upstream, &[("ipFamily", "IPv4")]).await?;
    // Each round asks new names, so nothing comes from the cache.
    let mut round = 0;
    let mut ask = |rtype: RecordType| {
        round += 1;
        let name = format!("n{round}.example.com.");
        async move {
            let reply = query_udp(cache, &name, rtype).await?;
            anyhow::Ok((name, reply))
        }
    };
    let until = |family: Option<RecordType>| {
        let upstream = &upstream;
        async move {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let (aaaa_name, aaaa) = query_udp(cache, "probe6.example.org.", RecordType::AAAA)
                    .await
                    .map(|r| ("probe6.example.org", r))?;
                let (a_name, a) = query_udp(cache, "probe4.example.org.", RecordType::A)
                    .await
                    .map(|r| ("probe4.example.org", r))?;
                let empty = |r: &hickory_proto::op::Message| r.answers.is_empty();
                let ok = match family {
                    Some(RecordType::AAAA) => empty(&aaaa) && !empty(&a),
                    Some(_) => empty(&a) && !empty(&aaaa),
                    None => !empty(&a) && !empty(&aaaa),
                };
                if ok {
                    return anyhow::Ok(());
                }
                if Instant::now() > deadline {
                    bail!(
                        "{family:?} not applied: {aaaa_name} {aaaa:?} {a_name} {a:?} ({} queries upstream)",
                        upstream.queries()
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    until(Some(RecordType::AAAA)).await?;
    let (name, reply) = ask(RecordType::AAAA).await?;
    assert!(
        reply.answers.is_empty() && reply.metadata.authoritative,
        "{reply:?}"
    );
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_eq!(
        upstream.queries_for(name.trim_end_matches('.')),
        0,
        "never forwarded"
    );
    let (name, reply) = ask(RecordType::A).await?;
    assert!(!reply.answers.is_empty());
    assert_eq!(upstream.queries_for(name.trim_end_matches('.')), 1);
    // IPv6-only, then the key removed: applied by reload, the same child process.
    kube_dns_test_support::write_configmap_key(&config, "ipFamily", "IPv6")?;
    until(Some(RecordType::A)).await?;
    let (name, reply) = ask(RecordType::A).await?;
    assert!(reply.answers.is_empty());
    assert_eq!(upstream.queries_for(name.trim_end_matches('.')), 0);
    std::fs::remove_file(config.join("ipFamily"))?;
    until(None).await?;
    Ok(())
}
