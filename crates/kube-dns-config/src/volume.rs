//! The mounted ConfigMap directory, watched for new versions.
//!
//! kubelet updates a ConfigMap volume by writing a new `..<timestamp>` directory and renaming a
//! `..data` symlink over the old one, so a watch on a file dies after the first update. This
//! watches the directory itself with inotify (`notify`), polls every `period` as a backstop, and
//! reports a version only when the content hash (contract §5.2) changes.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config_map::config_version;
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Wait after an inotify event before reading, so one kubelet update is read once.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// The files of one version: name -> bytes, and the content hash (`""` when empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFiles {
    pub version: String,
    pub files: BTreeMap<String, Vec<u8>>,
}

/// Reads the top-level files of a mounted ConfigMap directory, skipping dot-names (`..data`)
/// and subdirectories. A missing directory reads as empty (defaults).
pub fn read_config_dir(dir: &Path) -> io::Result<ConfigFiles> {
    let mut files = BTreeMap::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => Some(entries),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    for entry in entries.into_iter().flatten() {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        // Follows the key -> ..data/key symlinks.
        if std::fs::metadata(&path)?.is_dir() {
            continue;
        }
        files.insert(name, std::fs::read(&path)?);
    }
    Ok(ConfigFiles {
        version: config_version(&files),
        files,
    })
}

/// Sends every new version of `dir` (the first read included) until `shutdown` or until the
/// receiver is gone. Read errors are logged and the current version stays.
pub async fn watch(
    dir: PathBuf,
    period: Duration,
    versions: mpsc::Sender<ConfigFiles>,
    shutdown: CancellationToken,
) {
    let (tx, mut events) = mpsc::unbounded_channel::<()>();
    let mut watcher: Option<notify::RecommendedWatcher> = None;
    let mut ticker = tokio::time::interval(period.max(Duration::from_millis(100)));
    let mut last: Option<String> = None;
    loop {
        if watcher.is_none() {
            watcher = watch_dir(&dir, tx.clone());
        }
        let read = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || read_config_dir(&dir)).await
        };
        match read {
            Ok(Ok(files)) if last.as_deref() != Some(files.version.as_str()) => {
                last = Some(files.version.clone());
                if versions.send(files).await.is_err() {
                    return;
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                tracing::warn!(dir = %dir.display(), %error, "cannot read config directory; keeping the current configuration")
            }
            Err(error) => tracing::error!(%error, "config reader task failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
            Some(()) = events.recv() => {
                tokio::time::sleep(DEBOUNCE).await;
                while events.try_recv().is_ok() {}
            }
        }
    }
}

fn watch_dir(dir: &Path, tx: mpsc::UnboundedSender<()>) -> Option<notify::RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Our own reads of the directory raise access events: only changes count.
        if event.is_ok_and(|e| !matches!(e.kind, notify::EventKind::Access(_))) {
            let _ = tx.send(());
        }
    })
    .ok()?;
    match watcher.watch(dir, RecursiveMode::NonRecursive) {
        Ok(()) => Some(watcher),
        Err(error) => {
            tracing::debug!(dir = %dir.display(), %error, "cannot watch config directory yet; polling");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_keys_through_symlinks_and_skips_hidden_entries() {
        let dir = std::env::temp_dir().join(format!("config-volume-{}", std::process::id()));
        let data = dir.join("..2026_01_01");
        std::fs::create_dir_all(&data).expect("dir");
        std::fs::write(data.join("stubDomains"), "{}").expect("write");
        let _ = std::fs::remove_file(dir.join("..data"));
        std::os::unix::fs::symlink("..2026_01_01", dir.join("..data")).expect("link");
        let _ = std::fs::remove_file(dir.join("stubDomains"));
        std::os::unix::fs::symlink("..data/stubDomains", dir.join("stubDomains")).expect("link");
        let files = read_config_dir(&dir).expect("reads");
        assert_eq!(files.files.keys().collect::<Vec<_>>(), vec!["stubDomains"]);
        assert_eq!(files.version.len(), 64);
        let missing = read_config_dir(&dir.join("nope")).expect("missing is empty");
        assert_eq!(missing.version, "");
    }
}
