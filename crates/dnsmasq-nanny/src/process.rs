//! The child process: spawned in its own process group (so signals reach everything it
//! forks), killed if the nanny dies (PR_SET_PDEATHSIG), its output relayed line by line; and
//! orphan reaping for when the nanny is PID 1 of its container.

use std::path::Path;
use std::process::Stdio;

use nix::sys::signal::Signal;
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::supervisor::ChildSignal;

/// Starts `program` with `args`.
#[allow(unsafe_code)]
pub fn spawn(program: &Path, args: &[String]) -> std::io::Result<Child> {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: pre_exec is unsafe because the hook runs between fork and exec; prctl
    // (PR_SET_PDEATHSIG) is async-signal-safe, allocates nothing and touches no parent memory.
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
    let mut child = command.spawn()?;
    if let Some(stdout) = child.stdout.take() {
        tokio::spawn(relay(stdout, "stdout"));
    }
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(relay(stderr, "stderr"));
    }
    Ok(child)
}

async fn relay(stream: impl tokio::io::AsyncRead + Unpin, name: &'static str) {
    let mut lines = BufReader::new(stream).lines();
    loop {
        match lines.next_line().await {
            Ok(Some(line)) => tracing::info!(target: "child", "{line}"),
            Ok(None) => {
                tracing::debug!("got EOF from the child's {name}");
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "error reading the child's {name}");
                return;
            }
        }
    }
}

/// Sends `signal` to the child's process group.
pub fn signal_group(pid: u32, signal: ChildSignal) -> std::io::Result<()> {
    let pid = i32::try_from(pid).map_err(|_| std::io::Error::other("pid out of range"))?;
    let signal = match signal {
        ChildSignal::Hangup => Signal::SIGHUP,
        ChildSignal::User1 => Signal::SIGUSR1,
        ChildSignal::Terminate => Signal::SIGTERM,
        ChildSignal::Kill => Signal::SIGKILL,
    };
    nix::sys::signal::killpg(Pid::from_raw(pid), signal).map_err(std::io::Error::from)
}

/// Reaps exited processes other than `keep` (the supervised child, which tokio reaps). Needed
/// when the nanny is PID 1, where orphans of the child are re-parented to it. Each child is
/// asked by pid, so an exited supervised child (which a peek at "any child" would find first)
/// does not hide the orphans behind it; returns how many were reaped.
pub fn reap_orphans(keep: Option<u32>) -> usize {
    let Some(children) = own_children() else {
        return reap_by_peeking(keep);
    };
    let mut reaped = 0;
    for pid in children {
        if Some(pid) == keep {
            continue;
        }
        let Ok(raw) = i32::try_from(pid) else {
            continue;
        };
        if let Ok(status) = waitpid(Pid::from_raw(raw), Some(WaitPidFlag::WNOHANG))
            && status != WaitStatus::StillAlive
        {
            reaped += 1;
        }
    }
    reaped
}

/// The pids of this process's children (zombies included), from
/// `/proc/self/task/<tid>/children`; None where the kernel has no such file
/// (CONFIG_PROC_CHILDREN).
fn own_children() -> Option<Vec<u32>> {
    let tasks = std::fs::read_dir("/proc/self/task").ok()?;
    let mut children = Vec::new();
    for task in tasks.flatten() {
        let list = std::fs::read_to_string(task.path().join("children")).ok()?;
        children.extend(
            list.split_whitespace()
                .filter_map(|pid| pid.parse::<u32>().ok()),
        );
    }
    Some(children)
}

/// Without the children lists: peeks at any exited child and reaps it unless it is `keep`
/// (then it stops, leaving the rest for the next SIGCHLD, as it is tokio's to reap).
fn reap_by_peeking(keep: Option<u32>) -> usize {
    let mut reaped = 0;
    loop {
        let peeked = waitid(
            Id::All,
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
        );
        let Some(pid) = peeked.ok().and_then(|status| status.pid()) else {
            return reaped;
        };
        if u32::try_from(pid.as_raw()).ok() == keep {
            return reaped;
        }
        if waitpid(pid, Some(WaitPidFlag::WNOHANG)).is_ok() {
            reaped += 1;
        }
    }
}
