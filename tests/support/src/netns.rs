//! Network namespaces made by a test (as root): a "node" and a "pod" joined by a veth pair,
//! processes started inside one (`ip netns exec`), sockets bound inside one from a thread that
//! entered it ([`Netns::enter`]), and blocking DNS queries sent from inside one.
//!
//! Namespaces are named uniquely per process and test, and deleted on drop.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;

use crate::process::ChildProcess;

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Why namespace tests cannot run here (None: they can): not root, or no `ip netns`.
pub fn unavailable() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("not root: network namespace tests need root".into());
    }
    match Command::new("ip").args(["netns", "list"]).output() {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!(
            "ip netns does not work: {}",
            String::from_utf8_lossy(&out.stderr)
        )),
        Err(e) => Some(format!("no ip command (iproute2): {e}")),
    }
}

/// Runs `program args`, failing with its stderr when it fails.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<Output> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// A network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// A fresh namespace with loopback up.
    pub fn create(role: &str) -> anyhow::Result<Self> {
        let name = format!(
            "kdrs-{role}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run("ip", &["netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip -n <ns> args`.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<Output> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// `program args` inside the namespace; its stdout.
    pub fn exec(&self, program: &str, args: &[&str]) -> anyhow::Result<String> {
        let mut all = vec!["netns", "exec", self.name.as_str(), program];
        all.extend_from_slice(args);
        Ok(String::from_utf8_lossy(&run("ip", &all)?.stdout).into_owned())
    }

    /// `program args` inside the namespace, whatever its exit status.
    pub fn exec_status(&self, program: &str, args: &[&str]) -> anyhow::Result<Output> {
        Ok(Command::new("ip")
            .args(["netns", "exec", self.name.as_str(), program])
            .args(args)
            .output()?)
    }

    /// Starts `program args` inside the namespace (`ip netns exec` becomes the program: the
    /// child's pid is the program's).
    pub fn spawn(
        &self,
        program: &std::path::Path,
        args: &[String],
    ) -> anyhow::Result<ChildProcess> {
        let mut all = vec![
            "netns".to_owned(),
            "exec".to_owned(),
            self.name.clone(),
            program.display().to_string(),
        ];
        all.extend(args.iter().cloned());
        ChildProcess::spawn("ip", all, std::iter::empty::<(&str, &str)>())
    }

    /// Runs `f` on a thread that entered the namespace: sockets it makes belong to it, and
    /// stay there when handed back.
    pub fn enter<T: Send>(
        &self,
        f: impl FnOnce() -> anyhow::Result<T> + Send,
    ) -> anyhow::Result<T> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let file = std::fs::File::open(&path).with_context(|| path.clone())?;
                    nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                        .with_context(|| format!("entering {path}"))?;
                    f()
                })
                .join()
                .map_err(|_| anyhow::anyhow!("the thread in {path} panicked"))?
        })
    }

    /// A veth pair: `here` in this namespace with `here_ip` (/24), `there` in `other` with
    /// `there_ip`, both up, and `other`'s default route through `here_ip`.
    pub fn veth_to(
        &self,
        other: &Netns,
        (here, here_ip): (&str, &str),
        (there, there_ip): (&str, &str),
    ) -> anyhow::Result<()> {
        self.ip(&[
            "link",
            "add",
            here,
            "type",
            "veth",
            "peer",
            "name",
            there,
            "netns",
            &other.name,
        ])?;
        self.ip(&["addr", "add", &format!("{here_ip}/24"), "dev", here])?;
        self.ip(&["link", "set", here, "up"])?;
        other.ip(&["addr", "add", &format!("{there_ip}/24"), "dev", there])?;
        other.ip(&["link", "set", there, "up"])?;
        other.ip(&["route", "add", "default", "via", here_ip])?;
        Ok(())
    }

    /// The namespace's conntrack table: `/proc/net/nf_conntrack` as seen from inside, or
    /// `conntrack -L` on kernels without that file (both name each flow's `dst=`).
    pub fn conntrack(&self) -> anyhow::Result<String> {
        self.exec("cat", &["/proc/net/nf_conntrack"])
            .or_else(|_| self.exec("conntrack", &["-L"]))
    }

    /// One UDP query from inside the namespace.
    pub fn query_udp(
        &self,
        server: SocketAddr,
        name: &str,
        rtype: RecordType,
        timeout: Duration,
    ) -> anyhow::Result<Message> {
        self.query(server, name, rtype, timeout, |bytes| {
            let socket = UdpSocket::bind(if server.is_ipv6() {
                "[::]:0"
            } else {
                "0.0.0.0:0"
            })?;
            socket.set_read_timeout(Some(timeout))?;
            socket.send_to(bytes, server)?;
            let mut buf = vec![0u8; 65535];
            let n = socket.recv(&mut buf)?;
            buf.truncate(n);
            Ok(buf)
        })
    }

    /// One TCP query from inside the namespace.
    pub fn query_tcp(
        &self,
        server: SocketAddr,
        name: &str,
        rtype: RecordType,
        timeout: Duration,
    ) -> anyhow::Result<Message> {
        self.query(server, name, rtype, timeout, |bytes| {
            let mut stream = TcpStream::connect_timeout(&server, timeout)?;
            stream.set_read_timeout(Some(timeout))?;
            let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(bytes);
            stream.write_all(&framed)?;
            let mut len = [0u8; 2];
            stream.read_exact(&mut len)?;
            let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
            stream.read_exact(&mut reply)?;
            Ok(reply)
        })
    }

    /// The query for `name` `rtype`, exchanged from inside the namespace by `exchange`.
    fn query(
        &self,
        server: SocketAddr,
        name: &str,
        rtype: RecordType,
        timeout: Duration,
        exchange: impl FnOnce(&[u8]) -> std::io::Result<Vec<u8>> + Send,
    ) -> anyhow::Result<Message> {
        let bytes = crate::dns_client::query_message(name, rtype)?.to_vec()?;
        let reply = self.enter(|| {
            exchange(&bytes).with_context(|| {
                format!("no answer from {server} to {name} {rtype} within {timeout:?}")
            })
        })?;
        Ok(Message::from_vec(&reply)?)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}
