//! A real dnsmasq (Debian `dnsmasq-base`, which `scripts/test` installs) on loopback, for the
//! interoperability tests.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::process::ChildProcess;

/// How long dnsmasq gets to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running dnsmasq and the UDP/TCP address it serves on.
#[derive(Debug)]
pub struct Dnsmasq {
    pub process: ChildProcess,
    pub addr: SocketAddr,
}

/// Starts `dnsmasq -k` on 127.0.0.1 with `args` added (`--no-resolv`, `--no-hosts`, logging to
/// stderr and no pid file are already set). dnsmasq takes `-p 0` as "no DNS", so it gets a port
/// that was free a moment ago; its real port is then read back from /proc.
pub async fn start_dnsmasq<S: AsRef<str>>(args: &[S]) -> anyhow::Result<Dnsmasq> {
    if std::process::Command::new("dnsmasq")
        .arg("--version")
        .output()
        .is_err()
    {
        bail!("dnsmasq is not installed (scripts/test installs dnsmasq-base)");
    }
    let port = crate::free_dns_port()?.to_string();
    let mut all: Vec<String> = [
        "-k",
        "-p",
        &port,
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        "--no-resolv",
        "--no-hosts",
        "--user=root",
        "--log-facility=-",
        "--pid-file=",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    all.extend(args.iter().map(|s| s.as_ref().to_owned()));
    let process = ChildProcess::spawn("dnsmasq", &all, std::iter::empty::<(&str, &str)>())?;
    let addr = udp_listening_addr(process.pid()).await?;
    Ok(Dnsmasq { process, addr })
}

/// The 127.0.0.1 UDP port a process listens on, from /proc/net/udp and its socket inodes.
pub async fn udp_listening_addr(pid: u32) -> anyhow::Result<SocketAddr> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))?
            .filter_map(|e| e.ok())
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .filter_map(|l| {
                l.to_string_lossy()
                    .strip_prefix("socket:[")
                    .map(|s| s.trim_end_matches(']').to_owned())
            })
            .collect();
        let table = std::fs::read_to_string("/proc/net/udp")?;
        for line in table.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() > 9
                && inodes.iter().any(|i| i == fields[9])
                && fields[1].starts_with("0100007F:")
            {
                let port = u16::from_str_radix(&fields[1][9..], 16)?;
                return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
            }
        }
        if Instant::now() > deadline {
            bail!("process {pid} is not listening on 127.0.0.1 over UDP");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
