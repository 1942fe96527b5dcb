//! The per-instance health check of `--health-socket`: a Unix socket in the container's own
//! file system that answers `ok` while DNS is served and `lameduck` after SIGTERM, and
//! `--health-probe`, the client an exec probe runs. Unlike `/healthz` on `--metrics-address`,
//! which a node-local successor shares with SO_REUSEPORT, this reaches this instance only, so
//! the kubelet's probes of a new pod are answered by that pod.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::state::CacheState;

/// How long a probe waits for the answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves the socket at `path` until `stop` (the end of the lameduck), then removes it.
pub async fn serve(path: PathBuf, state: Arc<CacheState>, stop: CancellationToken) {
    let _ = std::fs::remove_file(&path);
    let listener = match tokio::net::UnixListener::bind(&path) {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(path = %path.display(), %error, "cannot listen on --health-socket");
            return;
        }
    };
    tracing::info!(path = %path.display(), "health socket ready");
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => {
                let Ok((mut stream, _)) = accepted else { continue };
                let text: &[u8] = if state.lameduck.load(Ordering::Relaxed) {
                    b"lameduck\n"
                } else {
                    b"ok\n"
                };
                let _ = tokio::time::timeout(PROBE_TIMEOUT, stream.write_all(text)).await;
            }
        }
    }
    let _ = std::fs::remove_file(&path);
}

/// `--health-probe`: asks the socket; Ok when it says `ok`, otherwise what it said (or why it
/// could not be asked).
pub fn probe(path: &Path) -> Result<(), String> {
    let stream = std::os::unix::net::UnixStream::connect(path)
        .map_err(|e| format!("cannot connect to {}: {e}", path.display()))?;
    stream
        .set_read_timeout(Some(PROBE_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stream
        .take(64)
        .read_to_string(&mut answer)
        .map_err(|e| format!("no answer from {}: {e}", path.display()))?;
    match answer.trim() {
        "ok" => Ok(()),
        other => Err(format!("{}: {other}", path.display())),
    }
}
