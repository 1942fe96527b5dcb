//! The last good zone on disk (`--snapshot-dir`): every object the snapshot builder holds,
//! written after changes at a bounded rate, atomically (a temporary file, fsync, rename), and
//! read at start so a restarted kube-dns answers at once while it syncs with the API.
//!
//! File `zone` in the directory: the magic `KDNSZONE`, the format version (u32), the time it
//! was written (u64 Unix seconds), the zone name (u16 length and bytes), the body (u32 length
//! and the objects as JSON), then a SHA-256 of everything before it. A file that is damaged,
//! of another format version or zone, or older than `--snapshot-max-age` is ignored, with the
//! reason.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kube_dns_core::SavedModels;
use sha2::{Digest, Sha256};
use thiserror::Error;

const MAGIC: &[u8; 8] = b"KDNSZONE";
/// Raised whenever the layout or the models' serialisation changes.
pub const FORMAT_VERSION: u32 = 1;
const FILE_NAME: &str = "zone";
const DIGEST_LEN: usize = 32;
/// A larger file is not read: it would cost more memory than a zone kube-dns can serve within
/// its container's limit (the manifest's emptyDir has the same limit; 10,000 Services and
/// 100,000 endpoints take about 8 MB).
pub const MAX_FILE_BYTES: u64 = 64 << 20;

/// Why a saved zone was not used or not written. None of the read errors is retried: the next
/// write replaces the file.
#[derive(Debug, Error)]
pub enum SavedZoneError {
    #[error("no saved zone at {0}")]
    Missing(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{size} bytes, more than the {MAX_FILE_BYTES} a saved zone may have")]
    TooLarge { size: u64 },
    #[error("not a saved zone (bad magic or cut short)")]
    NotAZone,
    #[error("format version {found}, this kube-dns reads {FORMAT_VERSION}")]
    Version { found: u32 },
    #[error("checksum mismatch: the file is damaged")]
    Checksum,
    #[error("saved for zone {found:?}, serving {expected:?}")]
    OtherZone { found: String, expected: String },
    #[error("written {age:?} ago, more than --snapshot-max-age {max:?}")]
    TooOld { age: Duration, max: Duration },
    #[error("cannot decode the objects: {0}")]
    Decode(#[source] serde_json::Error),
    #[error("cannot encode the objects: {0}")]
    Encode(#[source] serde_json::Error),
}

/// A zone read back.
#[derive(Debug)]
pub struct SavedZone {
    pub models: SavedModels,
    /// Unix seconds when it was written.
    pub written: u64,
}

/// The file in `dir`.
pub fn path_in(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// The file's bytes for `models` of `zone`, written at `now` (Unix seconds).
pub fn encode(models: &SavedModels, zone: &str, now: u64) -> Result<Vec<u8>, SavedZoneError> {
    let body = serde_json::to_vec(models).map_err(SavedZoneError::Encode)?;
    let mut out = Vec::with_capacity(body.len() + 64 + zone.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    out.extend_from_slice(&now.to_be_bytes());
    let zone_len = u16::try_from(zone.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&zone_len.to_be_bytes());
    out.extend_from_slice(&zone.as_bytes()[..usize::from(zone_len)]);
    let body_len = u32::try_from(body.len()).map_err(|_| {
        SavedZoneError::Encode(serde_json::Error::io(std::io::Error::other(
            "more than 4 GiB of objects",
        )))
    })?;
    out.extend_from_slice(&body_len.to_be_bytes());
    out.extend_from_slice(&body);
    let digest = Sha256::digest(&out);
    out.extend_from_slice(&digest);
    Ok(out)
}

/// Reads back what [`encode`] wrote, checking everything the module docs list.
pub fn decode(
    bytes: &[u8],
    zone: &str,
    now: u64,
    max_age: Duration,
) -> Result<SavedZone, SavedZoneError> {
    let Some(content_len) = bytes.len().checked_sub(DIGEST_LEN) else {
        return Err(SavedZoneError::NotAZone);
    };
    if bytes.get(..MAGIC.len()) != Some(&MAGIC[..]) {
        return Err(SavedZoneError::NotAZone);
    }
    let mut reader = Reader {
        bytes: &bytes[..content_len],
        at: MAGIC.len(),
    };
    let version = u32::from_be_bytes(reader.take()?);
    if version != FORMAT_VERSION {
        return Err(SavedZoneError::Version { found: version });
    }
    if Sha256::digest(&bytes[..content_len]).as_slice() != &bytes[content_len..] {
        return Err(SavedZoneError::Checksum);
    }
    let written = u64::from_be_bytes(reader.take()?);
    let zone_len = usize::from(u16::from_be_bytes(reader.take()?));
    let found = String::from_utf8_lossy(reader.slice(zone_len)?).into_owned();
    if found != zone {
        return Err(SavedZoneError::OtherZone {
            found,
            expected: zone.to_owned(),
        });
    }
    let age = Duration::from_secs(now.saturating_sub(written));
    if age > max_age {
        return Err(SavedZoneError::TooOld { age, max: max_age });
    }
    let body_len = u32::from_be_bytes(reader.take()?) as usize;
    let body = reader.slice(body_len)?;
    if reader.at != content_len {
        return Err(SavedZoneError::NotAZone);
    }
    let models = serde_json::from_slice(body).map_err(SavedZoneError::Decode)?;
    Ok(SavedZone { models, written })
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn slice(&mut self, len: usize) -> Result<&'a [u8], SavedZoneError> {
        let part = self
            .bytes
            .get(self.at..self.at + len)
            .ok_or(SavedZoneError::NotAZone)?;
        self.at += len;
        Ok(part)
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], SavedZoneError> {
        self.slice(N)?
            .try_into()
            .map_err(|_| SavedZoneError::NotAZone)
    }
}

/// Reads the zone saved in `dir`.
pub fn read(
    dir: &Path,
    zone: &str,
    now: u64,
    max_age: Duration,
) -> Result<SavedZone, SavedZoneError> {
    let path = path_in(dir);
    let file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(SavedZoneError::Missing(path));
        }
        Err(source) => return Err(SavedZoneError::Io { path, source }),
    };
    let io = |source| SavedZoneError::Io {
        path: path.clone(),
        source,
    };
    let size = file.metadata().map_err(io)?.len();
    if size > MAX_FILE_BYTES {
        return Err(SavedZoneError::TooLarge { size });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    // Read at most one byte past the limit, whatever the size said.
    std::io::Read::read_to_end(
        &mut std::io::Read::take(file, MAX_FILE_BYTES + 1),
        &mut bytes,
    )
    .map_err(io)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(SavedZoneError::TooLarge {
            size: bytes.len() as u64,
        });
    }
    decode(&bytes, zone, now, max_age)
}

/// Writes `bytes` as the zone file in `dir` atomically: a temporary file written and synced,
/// renamed over the old one, and the directory synced. Returns the size.
pub fn write(dir: &Path, bytes: &[u8]) -> Result<usize, SavedZoneError> {
    let path = path_in(dir);
    let tmp = dir.join(format!("{FILE_NAME}.tmp"));
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| SavedZoneError::Io { path, source }
    };
    let mut file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    file.write_all(bytes).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    drop(file);
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok(bytes.len())
}

/// Loads the zone saved in `config.dir` into a builder for `zone`, or says why not (logged
/// and counted here; a missing file is only logged).
pub fn load(
    config: &crate::config::SavedZoneConfig,
    zone: &kube_dns_core::ZoneSettings,
    metrics: &crate::metrics::Metrics,
) -> Option<kube_dns_core::SnapshotBuilder> {
    let now = daemon_support::clock::unix_secs();
    match read(&config.dir, &zone.zone, now, config.max_age) {
        Ok(mut saved) => {
            // Pods are kept only with --pods=verified; a file saved in that mode brings none
            // into another.
            if zone.pods != kube_dns_core::PodsMode::Verified {
                saved.models.pods.clear();
            }
            tracing::info!(
                services = saved.models.services.len(),
                slices = saved.models.slices.len(),
                age_secs = now.saturating_sub(saved.written),
                "answering from the saved zone until the API's data arrives"
            );
            Some(kube_dns_core::SnapshotBuilder::from_models(
                zone.clone(),
                saved.models,
            ))
        }
        Err(SavedZoneError::Missing(path)) => {
            tracing::info!(path = %path.display(), "no saved zone yet");
            None
        }
        Err(error) => {
            metrics.saved_zone_refused.inc();
            tracing::warn!(path = %path_in(&config.dir).display(), %error, "saved zone not used");
            None
        }
    }
}

/// What a file says apart from when it was written: equal for the same zone and objects.
fn content_digest(bytes: &[u8]) -> [u8; DIGEST_LEN] {
    // The magic and version, then everything after the time, without the checksum.
    let time_end = MAGIC.len() + 4 + 8;
    let end = bytes.len().saturating_sub(DIGEST_LEN).max(time_end);
    let mut hasher = Sha256::new();
    hasher.update(bytes.get(..MAGIC.len() + 4).unwrap_or_default());
    hasher.update(bytes.get(time_end..end).unwrap_or_default());
    hasher.finalize().into()
}

/// Saves the zone every `config.interval` when its objects changed since the last save and
/// every watch has synced (a zone still being listed is not saved), until `stop`. Copying the
/// objects, encoding and writing run on a blocking thread; an unchanged zone is not written.
pub async fn keep_saved(
    config: crate::config::SavedZoneConfig,
    watches: crate::watch::Watches,
    stop: tokio_util::sync::CancellationToken,
) {
    let zone = watches.state.snapshot.load().settings.zone.to_string();
    let mut saved_serial = None;
    let mut saved_content: Option<[u8; DIGEST_LEN]> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(config.interval) => {}
        }
        let serial = watches.state.snapshot.load().serial;
        if !watches.sync.all_synced() || saved_serial == Some(serial) {
            continue;
        }
        let builder = watches.builder.clone();
        let dir = config.dir.clone();
        let zone = zone.clone();
        let written = tokio::task::spawn_blocking(move || {
            let models = match builder.lock() {
                Ok(builder) => builder.models(),
                Err(_) => return Ok(None),
            };
            let bytes = encode(&models, &zone, daemon_support::clock::unix_secs())?;
            let content = content_digest(&bytes);
            if saved_content == Some(content) {
                return Ok(Some((0, content)));
            }
            write(&dir, &bytes).map(|size| Some((size, content)))
        })
        .await;
        match written {
            Ok(Ok(Some((bytes, content)))) => {
                if bytes > 0 {
                    watches.state.metrics.saved_zone_writes.inc();
                    tracing::debug!(bytes, serial, "zone saved");
                }
                saved_serial = Some(serial);
                saved_content = Some(content);
            }
            Ok(Ok(None)) => return,
            Ok(Err(error)) => {
                watches.state.metrics.saved_zone_write_errors.inc();
                tracing::warn!(%error, "cannot save the zone; trying again at the next change");
                saved_serial = Some(serial);
            }
            Err(error) => {
                watches.state.metrics.saved_zone_write_errors.inc();
                tracing::error!(%error, "the zone saver panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_dns_core::model::{PortModel, ServiceModel, ServiceSpecModel};
    use std::sync::Arc;

    fn models() -> SavedModels {
        SavedModels {
            services: vec![ServiceModel {
                namespace: Arc::from("default"),
                name: Arc::from("kubernetes"),
                spec: ServiceSpecModel::ClusterIp {
                    ips: vec!["10.0.0.1".parse().expect("ip")],
                },
                ports: vec![PortModel {
                    name: Some("https".into()),
                    protocol: "tcp".into(),
                    port: 443,
                }],
                publish_not_ready: false,
            }],
            ..SavedModels::default()
        }
    }

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn a_zone_written_reads_back() {
        let bytes = encode(&models(), "cluster.local", 1_000).expect("encode");
        let zone = decode(&bytes, "cluster.local", 1_060, DAY).expect("decode");
        assert_eq!(zone.models, models());
        assert_eq!(zone.written, 1_000);
        let dir = std::env::temp_dir().join(format!("saved-zone-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        assert_eq!(write(&dir, &bytes).expect("write"), bytes.len());
        let read_back = read(&dir, "cluster.local", 1_060, DAY).expect("read");
        assert_eq!(read_back.models, models());
        assert!(!dir.join("zone.tmp").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_content_digest_ignores_only_the_time() {
        let at = |now| encode(&models(), "cluster.local", now).expect("encode");
        assert_eq!(content_digest(&at(1)), content_digest(&at(2)));
        let other = encode(&SavedModels::default(), "cluster.local", 1).expect("encode");
        assert_ne!(content_digest(&at(1)), content_digest(&other));
    }

    #[test]
    fn every_bad_file_is_refused_with_its_reason() {
        let good = encode(&models(), "cluster.local", 1_000).expect("encode");
        let check = |bytes: &[u8], zone: &str, now: u64| decode(bytes, zone, now, DAY);
        let mut flipped = good.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0x40;
        assert!(matches!(
            check(&flipped, "cluster.local", 1_000),
            Err(SavedZoneError::Checksum)
        ));
        assert!(matches!(
            check(&good[..good.len() - 1], "cluster.local", 1_000),
            Err(SavedZoneError::Checksum)
        ));
        assert!(matches!(
            check(b"KDNS", "cluster.local", 1_000),
            Err(SavedZoneError::NotAZone)
        ));
        let mut future = good.clone();
        future[8..12].copy_from_slice(&2u32.to_be_bytes());
        assert!(matches!(
            check(&future, "cluster.local", 1_000),
            Err(SavedZoneError::Version { found: 2 })
        ));
        assert!(matches!(
            check(&good, "other.zone", 1_000),
            Err(SavedZoneError::OtherZone { .. })
        ));
        assert!(matches!(
            check(&good, "cluster.local", 1_000 + 86_401),
            Err(SavedZoneError::TooOld { .. })
        ));
        let missing = read(
            Path::new("/nonexistent-kube-dns-dir"),
            "cluster.local",
            0,
            DAY,
        );
        assert!(matches!(missing, Err(SavedZoneError::Missing(_))));
        // A huge file is refused before it is read (a sparse file: no disk used).
        let dir = std::env::temp_dir().join(format!("saved-zone-huge-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let huge = std::fs::File::create(path_in(&dir)).expect("create");
        huge.set_len(MAX_FILE_BYTES + 1).expect("set_len");
        assert!(matches!(
            read(&dir, "cluster.local", 0, DAY),
            Err(SavedZoneError::TooLarge { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
