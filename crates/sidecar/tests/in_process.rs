//! In-process tests: `sidecar::run` on 127.0.0.1:0 probing a fake DNS server, both in one
//! runtime with tokio's clock paused, so the probe schedule is asserted exactly instead of with
//! sleeps.

use std::time::Duration;

use kube_dns_test_support::fake_upstream::{FakeUpstream, Rule};
use kube_dns_test_support::forwarding::delayed;
use kube_dns_test_support::http_client;
use sidecar::cli::Cli;
use tokio_util::sync::CancellationToken;

const NAME: &str = "probe.example.com";
const TICK: Duration = Duration::from_millis(100);

/// Waits (on the paused clock) until the upstream has seen `count` probes; returns when.
async fn probe_arrival(upstream: &FakeUpstream, count: usize) -> tokio::time::Instant {
    while upstream.queries_for(NAME) < count {
        tokio::time::sleep(TICK).await;
    }
    dns_transport::clock::now()
}

#[tokio::test(start_paused = true)]
async fn probes_keep_their_interval_however_slow_the_answer_and_fail_health_when_dropped()
-> anyhow::Result<()> {
    let upstream = FakeUpstream::start().await?;
    // Every answer takes 1.8 s (under the 2 s probe timeout): the schedule must not drift to
    // 11.8 s.
    upstream.set_rule(NAME, delayed(1_800, "192.0.2.53".parse()?));
    let cli = Cli::parse_args([
        "sidecar".to_owned(),
        format!("--probe=kubedns,{},{NAME},10,A", upstream.addr),
        "--prometheus-addr=127.0.0.1".into(),
        "--prometheus-port=0".into(),
        "--dnsmasq-poll-interval-ms=0".into(),
    ])?;
    let listener = sidecar::bind(&cli).await?;
    let http = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(sidecar::run(cli, listener, shutdown.clone()));

    let mut arrivals = Vec::new();
    for count in 1..=4 {
        arrivals.push(probe_arrival(&upstream, count).await);
    }
    for pair in arrivals.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap > Duration::from_secs(10) - TICK && gap < Duration::from_secs(10) + TICK,
            "probes {gap:?} apart, interval 10 s"
        );
    }
    // The fourth probe's answer arrives 1.8 s after it was asked.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        http_client::get(http, "/healthcheck/kubedns").await?.status,
        200
    );

    // The server stops answering: health holds until the next probe has timed out, then fails.
    upstream.set_rule(NAME, Rule::Drop);
    let asked = probe_arrival(&upstream, 5).await;
    assert_eq!(
        http_client::get(http, "/healthcheck/kubedns").await?.status,
        200,
        "the last result stands while the probe waits"
    );
    loop {
        let response = http_client::get(http, "/healthcheck/kubedns").await?;
        if response.status == 503 {
            assert!(
                dns_transport::clock::now() - asked <= sidecar::probe::PROBE_TIMEOUT + TICK,
                "fails when the lost probe times out"
            );
            break;
        }
        tokio::time::sleep(TICK).await;
    }
    shutdown.cancel();
    task.await??;
    Ok(())
}
