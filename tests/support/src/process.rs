//! A harness for tests that spawn real binaries: collects stdout and stderr line by line, waits
//! for log lines (such as `listening on udp 127.0.0.1:NNNNN`), sends signals, and kills the
//! whole process group on drop.
//!
//! The waits are async so an in-process fake (API server, upstream DNS) on the same tokio
//! runtime keeps serving meanwhile. Do not combine them with `tokio::time::pause()`: the
//! child runs on the real clock.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use tokio::sync::watch;

pub const SIGHUP: i32 = 1;
pub const SIGINT: i32 = 2;
pub const SIGKILL: i32 = 9;
pub const SIGUSR1: i32 = 10;
pub const SIGTERM: i32 = 15;

/// The phrase our binaries log once a listener is bound: `listening on <proto> <ip:port>`.
pub const LISTENING_PHRASE: &str = "listening on";

struct Output {
    lines: Mutex<Vec<String>>,
    /// Bumped on every new line and when a stream closes; waiters watch it.
    changed: watch::Sender<u64>,
    /// Output streams not yet at end of file.
    open_streams: std::sync::atomic::AtomicUsize,
}

impl Output {
    fn push(&self, line: String) {
        self.lines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(line);
        self.changed.send_modify(|n| *n += 1);
    }

    fn snapshot(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// A spawned child process whose output is collected; killed (with its process group) on drop.
pub struct ChildProcess {
    name: String,
    child: Child,
    output: Arc<Output>,
}

impl std::fmt::Debug for ChildProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildProcess")
            .field("name", &self.name)
            .field("pid", &self.child.id())
            .finish_non_exhaustive()
    }
}

impl ChildProcess {
    /// Spawns `program` with `args` and extra environment variables, stdout and stderr piped.
    pub fn spawn<P, A, S, E, K, V>(program: P, args: A, envs: E) -> anyhow::Result<Self>
    where
        P: AsRef<OsStr>,
        A: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
        E: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let mut command = Command::new(program.as_ref());
        command.args(args).envs(envs);
        Self::spawn_command(command)
    }

    /// Spawns a prepared command (for a working directory, cleared environment, ...).
    /// Its stdio is replaced: stdin null, stdout and stderr piped.
    pub fn spawn_command(mut command: Command) -> anyhow::Result<Self> {
        use std::os::unix::process::CommandExt;
        let name = std::path::Path::new(command.get_program())
            .file_name()
            .map_or_else(|| "child".to_owned(), |n| n.to_string_lossy().into_owned());
        // Its own process group, so drop can also reap grandchildren (a supervised dnsmasq).
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = command
            .spawn()
            .with_context(|| format!("spawning {:?}", command.get_program()))?;
        let output = Arc::new(Output {
            lines: Mutex::new(Vec::new()),
            changed: watch::channel(0).0,
            open_streams: std::sync::atomic::AtomicUsize::new(0),
        });
        let prefix = format!("[{name} {}]", child.id());
        if let Some(stdout) = child.stdout.take() {
            spawn_reader(stdout, format!("{prefix} "), output.clone());
        }
        if let Some(stderr) = child.stderr.take() {
            spawn_reader(stderr, format!("{prefix} "), output.clone());
        }
        Ok(ChildProcess {
            name,
            child,
            output,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every line collected so far (stdout and stderr interleaved as they arrived).
    pub fn lines(&self) -> Vec<String> {
        self.output.snapshot()
    }

    /// The collected output as one text, for assertion messages.
    pub fn output_text(&self) -> String {
        self.lines().join("\n")
    }

    /// How many lines have been collected; pass it to [`wait_for_line_since`](Self::wait_for_line_since)
    /// to ignore lines that came before an action.
    pub fn mark(&self) -> usize {
        self.output.snapshot().len()
    }

    /// Waits for a line containing `needle` (including lines already collected) and returns it.
    pub async fn wait_for_line(&self, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        self.wait_for_line_since(0, needle, timeout).await
    }

    /// Waits for a line containing `needle` among lines collected after `mark`.
    pub async fn wait_for_line_since(
        &self,
        mark: usize,
        needle: &str,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        self.wait_for(
            mark,
            timeout,
            &format!("a line containing {needle:?}"),
            |line| line.contains(needle).then(|| line.to_owned()),
        )
        .await
    }

    /// Waits for `listening on <proto> <ip:port>` (proto `udp`, `tcp` or `http`) and returns the
    /// address. Extra text around the phrase (timestamps, levels, fields) is ignored.
    pub async fn listening_addr(
        &self,
        proto: &str,
        timeout: Duration,
    ) -> anyhow::Result<SocketAddr> {
        self.wait_for(
            0,
            timeout,
            &format!("\"{LISTENING_PHRASE} {proto} <addr>\""),
            |line| parse_listening_addr(line, proto),
        )
        .await
    }

    async fn wait_for<T>(
        &self,
        mark: usize,
        timeout: Duration,
        what: &str,
        mut found: impl FnMut(&str) -> Option<T>,
    ) -> anyhow::Result<T> {
        let mut changed = self.output.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            changed.borrow_and_update();
            if let Some(hit) = self
                .output
                .snapshot()
                .iter()
                .skip(mark)
                .find_map(|l| found(l))
            {
                return Ok(hit);
            }
            let woke = tokio::time::timeout_at(deadline, changed.changed()).await;
            if woke.is_err() {
                bail!(
                    "timed out after {timeout:?} waiting for {what} from {} (pid {}); output so far:\n{}",
                    self.name,
                    self.pid(),
                    self.output_text()
                );
            }
            // A closed channel cannot happen while `self` holds the sender; poll politely anyway.
            if woke.is_ok_and(|r| r.is_err()) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// Sends signal `sig` (e.g. [`SIGTERM`]) to the process itself, not its group, at once
    /// (no `kill` process in between).
    pub fn signal(&self, sig: i32) -> anyhow::Result<()> {
        send_signal(self.pid(), sig)
    }

    /// The exit status if the process has exited.
    pub fn try_exit_status(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        self.child.try_wait().context("polling child status")
    }

    /// Waits for the process to exit and for its output to be read to the end (so the last
    /// lines are in [`Self::output_text`]); on timeout the error carries the collected output.
    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit_status()? {
                // A grandchild may still hold the pipes: do not wait past the deadline for it.
                while self
                    .output
                    .open_streams
                    .load(std::sync::atomic::Ordering::SeqCst)
                    > 0
                    && tokio::time::Instant::now() < deadline
                {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                return Ok(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(anyhow!(
                    "{} (pid {}) did not exit within {timeout:?}; output so far:\n{}",
                    self.name,
                    self.pid(),
                    self.output_text()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // Kill the whole group (children of the child too), then reap ours.
            let _ = Command::new("kill")
                .args(["-9", "--", &format!("-{}", self.child.id())])
                .stderr(Stdio::null())
                .status();
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn spawn_reader(stream: impl Read + Send + 'static, prefix: String, output: Arc<Output>) {
    output
        .open_streams
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf)
                        .trim_end_matches(['\n', '\r'])
                        .to_owned();
                    eprintln!("{prefix}{line}");
                    output.push(line);
                }
            }
        }
        output
            .open_streams
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        output.changed.send_modify(|n| *n += 1);
    });
}

/// Removes ANSI escape sequences (`ESC [ ... letter`), in case a logger colours its output.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Parses `... listening on <proto> <addr> ...`; the address may be written `ip:port`,
/// `[v6]:port` or as a URL (`http://127.0.0.1:8080/`), and may be quoted.
pub fn parse_listening_addr(line: &str, proto: &str) -> Option<SocketAddr> {
    let line = strip_ansi(line);
    let phrase = format!("{LISTENING_PHRASE} {proto} ");
    let (_, rest) = line.split_once(&phrase)?;
    let token = rest.split_whitespace().next()?;
    let token = token.trim_matches(|c: char| matches!(c, '"' | '\'' | ',' | ';' | '`'));
    let token = token
        .strip_prefix("http://")
        .or_else(|| token.strip_prefix("https://"))
        .unwrap_or(token)
        .trim_end_matches('/');
    token.parse().ok()
}

/// `kill(pid, sig)`.
pub fn send_signal(pid: u32, sig: i32) -> anyhow::Result<()> {
    let signal = nix::sys::signal::Signal::try_from(sig)?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(i32::try_from(pid)?), signal)
        .with_context(|| format!("kill -{sig} {pid}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_lines_parse_with_surrounding_text() {
        let v4: SocketAddr = "127.0.0.1:5353".parse().expect("addr");
        assert_eq!(
            parse_listening_addr(
                "2025-01-01T00:00:00Z  INFO kube_dns: listening on udp 127.0.0.1:5353",
                "udp"
            ),
            Some(v4)
        );
        assert_eq!(
            parse_listening_addr(
                "\u{1b}[32mINFO\u{1b}[0m listening on tcp \"127.0.0.1:5353\",",
                "tcp"
            ),
            Some(v4)
        );
        assert_eq!(
            parse_listening_addr("listening on http http://[::1]:8081/", "http"),
            Some("[::1]:8081".parse().expect("addr"))
        );
        assert_eq!(
            parse_listening_addr("listening on udp 127.0.0.1:5353", "tcp"),
            None
        );
    }
}
