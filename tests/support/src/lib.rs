//! Test-only support for kube-dns-rs: a fake Kubernetes API server, Kubernetes object builders,
//! a DNS test client, a minimal HTTP client, a harness for spawned processes, and the forwarding
//! scenarios every forwarder (dns-cache, kube-dns, a real dnsmasq) is put through.
// Whole-process tests time real processes on the real clocks (see clippy.toml).
#![allow(clippy::disallowed_methods)]

pub mod dns_client;
pub mod dnsmasq;
pub mod fake_api;
pub mod fake_upstream;
pub mod forwarding;
pub mod hostile;
pub mod http_client;
pub mod knot;
pub mod netns;
pub mod objects;
pub mod process;

pub use fake_api::{FakeApiServer, Resource, write_kubeconfig};

use std::path::PathBuf;

/// A loopback port that was free a moment ago for both UDP and TCP, for servers that cannot be
/// told port 0 and read back (a real dnsmasq; dns-cache under the nanny, which must come back on
/// the same port).
///
/// It is picked below the kernel's ephemeral range (`ip_local_port_range`) when there is room:
/// a port from that range can be taken, before the server binds it, as the local port of any
/// outgoing connection on the machine (a watch of the fake API server, say), which no retry of
/// the server's fixes. Failing that, the kernel's pick (where that clash is tried again).
pub fn free_dns_port() -> anyhow::Result<u16> {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    const FLOOR: u16 = 10_000;
    if low > FLOOR + 1000 {
        // Spread over the range by the process and the clock, then walk it.
        let span = u32::from(low - FLOOR);
        let seed = std::process::id()
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .subsec_nanos();
        for i in 0..200u32 {
            let port = FLOOR + (seed.wrapping_add(i.wrapping_mul(7919)) % span) as u16;
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            if let Ok(bound) = dns_transport::bind_dns_port(addr, 1) {
                return Ok(bound.tcp.local_addr()?.port());
            }
        }
    }
    let port = dns_transport::bind_dns_port("127.0.0.1:0".parse()?, 1)?;
    Ok(port.tcp.local_addr()?.port())
}

/// Absolute path of the workspace's `tests/fixtures` directory.
pub fn fixtures_dir() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/support has a parent directory")
        .join("fixtures")
}

/// Writes one key of a mounted ConfigMap the way kubelet does: a new `..<timestamp>` directory
/// holding every key, an atomic rename of `..data_tmp` over `..data`, and `key -> ..data/key`.
pub fn write_configmap_key(dir: &std::path::Path, key: &str, value: &str) -> anyhow::Result<()> {
    let stamp = format!(
        "..{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos()
    );
    let data = dir.join(&stamp);
    std::fs::create_dir_all(&data)?;
    if let Ok(current) = std::fs::read_dir(dir.join("..data")) {
        for entry in current.flatten() {
            std::fs::copy(entry.path(), data.join(entry.file_name()))?;
        }
    }
    std::fs::write(data.join(key), value)?;
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&stamp, &tmp)?;
    std::fs::rename(&tmp, dir.join("..data"))?;
    let link = dir.join(key);
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink(format!("..data/{key}"), &link)?;
    }
    Ok(())
}

/// A fresh directory under the system temp dir, unique per process, tag and call.
pub fn tempdir(tag: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "kube-dns-rs-{tag}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A binary of another workspace package, from the target directory the running test binary
/// lives in (`target/<profile>/deps/<test>` -> `target/<profile>/<name>`). Cargo builds every
/// workspace binary for `cargo test --workspace`, which `scripts/test` runs.
pub fn workspace_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .ok_or_else(|| anyhow::anyhow!("unexpected test binary path {}", exe.display()))?;
    let path = profile_dir.join(name);
    anyhow::ensure!(
        path.exists(),
        "{} is missing: build the workspace first (scripts/test does)",
        path.display()
    );
    Ok(path)
}
