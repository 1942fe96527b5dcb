//! In-process tests: `kube_dns::run` on 127.0.0.1:0 against the fake API server and a fake
//! upstream, all in one runtime with tokio's clock paused. Time moves only when every task
//! waits, straight to the next timer, so timing is asserted exactly instead of with sleeps.
//! Queries go over TCP, which `run` serves on this runtime (the UDP workers are threads with
//! clocks of their own).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use kube_dns::cli::{Cli, MetricsEnv};
use kube_dns::{Config, Listeners};
use kube_dns_test_support::dns_client::{query_tcp, query_tcp_timeout};
use kube_dns_test_support::fake_upstream::FakeUpstream;
use kube_dns_test_support::forwarding::{delayed, has_a};
use kube_dns_test_support::{FakeApiServer, fixtures_dir, http_client};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Longer than any deadline under test: the client must not give up first.
const WAIT: Duration = Duration::from_secs(60);

struct Server {
    tcp: SocketAddr,
    http: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), kube_dns::RunError>>,
    _api: FakeApiServer,
}

async fn start(extra: &[String]) -> anyhow::Result<Server> {
    let api = FakeApiServer::new();
    api.load_yaml_file(fixtures_dir().join("cluster.yaml"))?;
    let (api_addr, _task) = api.serve("127.0.0.1:0".parse()?).await?;
    let mut args = vec![
        "kube-dns".to_owned(),
        format!("--kube-master-url=http://{api_addr}"),
        "--dns-bind-address=127.0.0.1".into(),
        "--dns-port=0".into(),
        "--healthz-bind-address=127.0.0.1".into(),
        "--healthz-port=0".into(),
        "--dns-workers=1".into(),
    ];
    args.extend(extra.iter().cloned());
    let cli = Cli::parse_args(args)?;
    let config = Config::from_cli(&cli, MetricsEnv::default())?;
    let listeners = Listeners::bind(&config.listen)?;
    let tcp = listeners.tcp.local_addr()?;
    let http = listeners.http.local_addr()?;
    let client = kube_dns::api_client(&config.api).await?;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(kube_dns::run(config, listeners, client, shutdown.clone()));
    let server = Server {
        tcp,
        http,
        shutdown,
        task,
        _api: api,
    };
    // Ready once the first lists are in (time jumps over the poll on the paused clock).
    while http_client::get(server.http, "/readiness").await?.status != 200 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(server)
}

#[tokio::test(start_paused = true)]
async fn lameduck_keeps_answering_for_exactly_its_period_then_run_returns() -> anyhow::Result<()> {
    let server = start(&["--lameduck=7s".into()]).await?;
    let name = "kubernetes.default.svc.cluster.local.";
    assert!(has_a(
        &query_tcp(server.tcp, name, RecordType::A).await?,
        "10.0.0.1"
    ));
    server.shutdown.cancel();
    let started = dns_transport::clock::now();
    // Readiness fails at once, with no time passing.
    while http_client::get(server.http, "/readiness").await?.status != 503 {
        tokio::task::yield_now().await;
    }
    assert_eq!(started.elapsed(), Duration::ZERO);
    // DNS keeps answering well into the period.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(
        has_a(
            &query_tcp(server.tcp, name, RecordType::A).await?,
            "10.0.0.1"
        ),
        "answers 6 s into a 7 s lameduck"
    );
    server.task.await??;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(7) && elapsed < Duration::from_millis(7_010),
        "run returned {elapsed:?} after shutdown, lameduck 7 s"
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_slow_upstream_gets_servfail_exactly_at_the_forward_deadline() -> anyhow::Result<()> {
    let upstream = FakeUpstream::start().await?;
    upstream.set_rule(
        "slow.example.com",
        delayed(30_000, Ipv4Addr::new(192, 0, 2, 9)),
    );
    upstream.set_rule(
        "late.example.com",
        delayed(3_900, Ipv4Addr::new(192, 0, 2, 10)),
    );
    let server = start(&[
        format!("--nameservers={}", upstream.addr),
        "--forward-deadline=4s".into(),
    ])
    .await?;

    let started = dns_transport::clock::now();
    let reply = query_tcp_timeout(server.tcp, "slow.example.com.", RecordType::A, WAIT).await?;
    let elapsed = started.elapsed();
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    assert!(
        elapsed >= Duration::from_secs(4) && elapsed < Duration::from_millis(4_010),
        "SERVFAIL after {elapsed:?}, deadline 4 s"
    );

    // An answer just inside the deadline still gets through, however long it took.
    let started = dns_transport::clock::now();
    let reply = query_tcp_timeout(server.tcp, "late.example.com.", RecordType::A, WAIT).await?;
    let elapsed = started.elapsed();
    assert!(has_a(&reply, "192.0.2.10"), "{reply:?}");
    assert!(
        elapsed >= Duration::from_millis(3_900) && elapsed < Duration::from_secs(4),
        "answered after {elapsed:?}"
    );
    server.shutdown.cancel();
    server.task.await??;
    Ok(())
}
