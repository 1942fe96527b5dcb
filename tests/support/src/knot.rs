//! A real Knot DNS server (Debian `knot`, which `scripts/test` installs) on loopback, as the
//! primary of a zone file or the secondary of another primary, for the zone-transfer
//! interoperability tests. Knot 3.2 sends NOTIFY over TCP.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::process::ChildProcess;

/// What the Knot server does for its one zone.
#[derive(Debug, Clone)]
pub enum KnotRole {
    /// Serves `zone_file` (text), sends NOTIFY to `notify` after a reload, allows transfers to
    /// loopback; IXFR comes from the differences between reloads.
    Primary {
        zone_file: String,
        notify: Option<SocketAddr>,
    },
    /// Transfers the zone from `primary` (and takes NOTIFY from loopback), refreshing at
    /// least every 5 s.
    Secondary { primary: SocketAddr },
}

/// A running knotd.
#[derive(Debug)]
pub struct Knot {
    pub process: ChildProcess,
    pub addr: SocketAddr,
    pub zone: String,
    dir: PathBuf,
    conf: PathBuf,
}

/// Starts knotd for `zone` (with its trailing dot) on 127.0.0.1:`port` (from
/// [`crate::free_dns_port`], so a primary can be told to NOTIFY it first) in a fresh directory.
pub async fn start_knot(zone: &str, role: KnotRole, port: u16) -> anyhow::Result<Knot> {
    if std::process::Command::new("knotd")
        .arg("--version")
        .output()
        .is_err()
    {
        bail!("knotd is not installed (scripts/test installs knot and knot-dnsutils)");
    }
    let dir = crate::tempdir("knot")?;
    for sub in ["run", "storage", "zones"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let zone_path = dir.join("zones").join(format!("{zone}zone"));
    let mut conf = format!(
        "server:\n    rundir: \"{run}\"\n    listen: 127.0.0.1@{port}\n\nlog:\n  - target: stderr\n    any: info\n\ndatabase:\n    storage: \"{storage}\"\n\n",
        run = dir.join("run").display(),
        storage = dir.join("storage").display(),
    );
    match &role {
        KnotRole::Primary { zone_file, notify } => {
            std::fs::write(&zone_path, zone_file)?;
            if let Some(notify) = notify {
                conf.push_str(&format!(
                    "remote:\n  - id: secondary\n    address: {}@{}\n\n",
                    notify.ip(),
                    notify.port()
                ));
            }
            conf.push_str(&format!(
                "acl:\n  - id: transfer\n    address: 127.0.0.0/8\n    action: transfer\n\nzone:\n  - domain: {zone}\n    file: \"{}\"\n    acl: transfer\n    zonefile-load: difference\n    journal-content: changes\n    zonefile-sync: -1\n    retry-max-interval: 5\n",
                zone_path.display()
            ));
            if notify.is_some() {
                conf.push_str("    notify: secondary\n");
            }
        }
        KnotRole::Secondary { primary } => {
            conf.push_str(&format!(
                "remote:\n  - id: primary\n    address: {}@{}\n\nacl:\n  - id: notify\n    address: 127.0.0.1\n    action: notify\n\nzone:\n  - domain: {zone}\n    master: primary\n    acl: notify\n    file: \"{}\"\n    refresh-min-interval: 2\n    refresh-max-interval: 5\n    retry-min-interval: 1\n    retry-max-interval: 2\n",
                primary.ip(),
                primary.port(),
                zone_path.display()
            ));
        }
    }
    let conf_path = dir.join("knot.conf");
    std::fs::write(&conf_path, conf)?;
    let process = ChildProcess::spawn(
        "knotd",
        ["-c".to_owned(), conf_path.display().to_string()],
        std::iter::empty::<(&str, &str)>(),
    )?;
    let knot = Knot {
        process,
        addr,
        zone: zone.to_owned(),
        dir,
        conf: conf_path,
    };
    knot.wait_listening().await?;
    Ok(knot)
}

impl Knot {
    async fn wait_listening(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(self.addr).await.is_err() {
            if Instant::now() > deadline {
                bail!(
                    "knotd never listened on {}:\n{}",
                    self.addr,
                    self.process.output_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Replaces the primary's zone file and reloads it (`knotc zone-reload`, waiting for the
    /// load); knotd then sends its NOTIFY.
    pub fn reload(&self, zone_file: &str) -> anyhow::Result<()> {
        let zone_path = self.dir.join("zones").join(format!("{}zone", self.zone));
        std::fs::write(&zone_path, zone_file)?;
        let output = std::process::Command::new("knotc")
            .args(["-b", "-c"])
            .arg(&self.conf)
            .args(["zone-reload", &self.zone])
            .output()
            .context("running knotc")?;
        if !output.status.success() {
            bail!(
                "knotc zone-reload: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }
}

impl Drop for Knot {
    /// The directory goes; the process is killed as its field drops.
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
