//! What the dns-cache process tests share: starting the binary and reading its answers.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::Message;
use kube_dns_test_support::dns_client::answer_lines;
use kube_dns_test_support::fake_upstream::FakeUpstream;
use kube_dns_test_support::process::ChildProcess;

pub const WAIT: Duration = Duration::from_secs(10);

pub struct Cache {
    pub process: ChildProcess,
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
}

/// dns-cache on a free loopback port, one UDP worker, no hosts file, plus `args`.
pub async fn start_cache(args: &[String]) -> anyhow::Result<Cache> {
    let process = spawn_cache(args)?;
    let udp = process.listening_addr("udp", WAIT).await?;
    let tcp = process.listening_addr("tcp", WAIT).await?;
    Ok(Cache { process, udp, tcp })
}

/// The process of [`start_cache`], without waiting for it to listen.
pub fn spawn_cache(args: &[String]) -> anyhow::Result<ChildProcess> {
    let mut all = vec![
        "-k".to_owned(),
        "-p".to_owned(),
        "0".to_owned(),
        "-a".to_owned(),
        "127.0.0.1".to_owned(),
        "--no-hosts".to_owned(),
        "--workers=1".to_owned(),
    ];
    all.extend(args.iter().cloned());
    ChildProcess::spawn(
        env!("CARGO_BIN_EXE_dns-cache"),
        &all,
        std::iter::empty::<(&str, &str)>(),
    )
}

pub fn server_arg(upstream: &FakeUpstream) -> String {
    format!("--server={}#{}", upstream.addr.ip(), upstream.addr.port())
}

pub fn has_a(reply: &Message, ip: impl std::fmt::Display) -> bool {
    answer_lines(reply)
        .iter()
        .any(|l| l.ends_with(&format!(" A {ip}")))
}
