//! The process harness, exercised on the `fake-apiserver` binary and on `sh`.
// Whole-process tests time real processes on the real clocks (see clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::time::Duration;

use kube_dns_test_support::http_client;
use kube_dns_test_support::process::{ChildProcess, SIGTERM};

const WAIT: Duration = Duration::from_secs(10);
const FAKE_APISERVER: &str = env!("CARGO_BIN_EXE_fake-apiserver");

fn temp_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "kube-dns-test-support-{}-{name}",
        std::process::id()
    ))
}

#[tokio::test]
async fn fake_apiserver_binary_serves_the_cluster_file_and_stops_on_sigterm() {
    let cluster = temp_path("cluster.yaml");
    let kubeconfig = temp_path("kubeconfig");
    std::fs::write(
        &cluster,
        "apiVersion: v1\nkind: Service\nmetadata: {name: kubernetes, namespace: default}\nspec: {clusterIP: 10.0.0.1}\n",
    )
    .expect("write cluster");
    let cluster_arg = cluster.to_string_lossy().into_owned();
    let kubeconfig_arg = kubeconfig.to_string_lossy().into_owned();
    let mut child = ChildProcess::spawn(
        FAKE_APISERVER,
        [
            "--listen",
            "127.0.0.1:0",
            "--cluster",
            &cluster_arg,
            "--kubeconfig-out",
            &kubeconfig_arg,
        ],
        [("RUST_LOG", "info")],
    )
    .expect("spawn");
    let addr = child
        .listening_addr("http", WAIT)
        .await
        .expect("listening line");
    assert!(addr.ip().is_loopback() && addr.port() != 0);
    let written =
        std::fs::read_to_string(&kubeconfig).expect("kubeconfig written before the listening line");
    assert!(
        written.contains(&format!("server: http://{addr}")),
        "{written}"
    );

    let list = http_client::get(addr, "/api/v1/services")
        .await
        .expect("GET")
        .json()
        .expect("json");
    assert_eq!(list["items"][0]["metadata"]["name"], "kubernetes");

    child.signal(SIGTERM).expect("signal");
    let status = child.wait_exit(WAIT).await.expect("exit");
    assert!(status.success(), "{status}: {}", child.output_text());
    let _ = std::fs::remove_file(&cluster);
    let _ = std::fs::remove_file(&kubeconfig);
}

#[tokio::test]
async fn fake_apiserver_binary_rejects_a_bad_cluster_file_with_exit_64() {
    let mut child = ChildProcess::spawn(
        FAKE_APISERVER,
        ["--cluster", "/nonexistent/cluster.yaml"],
        [("RUST_LOG", "off")],
    )
    .expect("spawn");
    let status = child.wait_exit(WAIT).await.expect("exit");
    assert_eq!(status.code(), Some(64), "{}", child.output_text());
    child
        .wait_for_line("/nonexistent/cluster.yaml", WAIT)
        .await
        .expect("error names the file");
}

#[tokio::test]
async fn waits_time_out_with_the_collected_output_and_drop_kills_the_child() {
    let child = ChildProcess::spawn(
        "sh",
        ["-c", "echo first; echo second >&2; exec sleep 30"],
        Vec::<(&str, &str)>::new(),
    )
    .expect("spawn");
    assert_eq!(
        child
            .wait_for_line("econ", WAIT)
            .await
            .expect("stderr line"),
        "second"
    );
    // stdout and stderr race; mark only after both lines are in.
    child
        .wait_for_line("first", WAIT)
        .await
        .expect("stdout line");
    let mark = child.mark();
    let err = child
        .wait_for_line_since(mark, "first", Duration::from_millis(200))
        .await
        .expect_err("only old lines");
    let message = format!("{err:#}");
    assert!(
        message.contains("first") && message.contains("second"),
        "{message}"
    );

    let pid = child.pid();
    let started = std::time::Instant::now();
    drop(child);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "drop waited for the child instead of killing it"
    );
    let alive = std::process::Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status()
        .expect("kill -0");
    assert!(!alive.success(), "pid {pid} survived drop");
}
