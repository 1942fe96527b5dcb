//! The child process: spawned in its own process group (so signals reach everything it
//! forks), killed if the nanny dies (PR_SET_PDEATHSIG), its output relayed line by line; and
//! orphan reaping for when the nanny is PID 1 of its container.

use std::path::Path;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

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
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
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
#[allow(unsafe_code)]
pub fn signal_group(pid: u32, signal: i32) -> std::io::Result<()> {
    let pid = i32::try_from(pid).map_err(|_| std::io::Error::other("pid out of range"))?;
    // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
    if unsafe { libc::kill(-pid, signal) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Reaps exited processes other than `keep` (the supervised child, which tokio reaps). Needed
/// when the nanny is PID 1, where orphans of the child are re-parented to it.
#[allow(unsafe_code)]
pub fn reap_orphans(keep: Option<u32>) {
    loop {
        // SAFETY: siginfo_t is plain data; waitid writes it. WNOWAIT only peeks.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let peeked = unsafe {
            libc::waitid(
                libc::P_ALL,
                0,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        // SAFETY: si_pid is valid for SIGCHLD-style infos filled by waitid.
        let pid = unsafe { info.si_pid() };
        if peeked != 0 || pid == 0 || Some(pid as u32) == keep {
            return;
        }
        let mut status = 0;
        // SAFETY: reaps exactly the orphan we peeked at.
        unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    }
}
