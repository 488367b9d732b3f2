//! Engine: continuous WAL archiving of the PITR policies in force. One
//! archiver per policy with `source.pitr` (not suspended): it creates the
//! replication slot if missing, runs `pg_receivewal` into a spool under the
//! data directory (`<data-dir>/pitr/<policy>/`), restarts it with backoff
//! (1 s doubling to 60 s, reset after a minute of streaming), and every
//! `walFlushInterval` stores what the spool holds: each completed segment
//! (then removed from the spool, and its partial copies from the storage)
//! and the segment being written, as `<segment>.partial`, when it changed.
//! The set of archivers follows the applied revision; on shutdown each
//! stops its `pg_receivewal` and flushes once more.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncBufReadExt;
use tokio::sync::{Mutex, watch};

use super::pitr_prune::SlotSource;
use super::pitr_window::Tracker;
use crate::engine::context::{Context, RepoState};
use crate::executor::pitr_wal::Stream;
use crate::policy::{BackupPolicy, Pitr, SecretRef, Source, StorageSpec};
use crate::storage::wal::{self, PARTIAL};
use crate::storage::{self as store, Storage, StorageError};

/// How often the supervisor compares the archivers with the applied revision.
const FOLLOW: Duration = Duration::from_secs(2);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// How long the server's position may take to read before a flush.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(2);

/// What one archiver needs; a change restarts it.
#[derive(Debug, Clone, PartialEq)]
struct Archive {
    policy: String,
    url: String,
    password_from: Option<SecretRef>,
    bin_dir: Option<PathBuf>,
    pitr: Pitr,
    storage: StorageSpec,
}

impl Archive {
    fn of(p: &BackupPolicy, storages: &BTreeMap<String, StorageSpec>) -> Option<Archive> {
        let Source::Postgres {
            url,
            password_from,
            bin_dir,
            pitr: Some(pitr),
        } = &p.source
        else {
            return None;
        };
        Some(Archive {
            policy: p.name.clone(),
            url: url.clone(),
            password_from: password_from.clone(),
            bin_dir: bin_dir.clone(),
            pitr: pitr.clone(),
            storage: storages.get(&p.storage)?.clone(),
        })
        .filter(|_| !p.suspend)
    }

    fn stream(&self) -> Stream<'_> {
        Stream {
            url: &self.url,
            password_from: self.password_from.as_ref(),
            bin_dir: self.bin_dir.as_deref(),
            slot: &self.pitr.slot,
        }
    }
}

/// The spool of `policy` under the data directory.
pub fn spool_dir(data_dir: &Path, policy: &str) -> PathBuf {
    data_dir.join("pitr").join(policy)
}

/// Runs the archivers of the applied revision until `quit` is set.
pub async fn supervise(ctx: &Context, state: &Mutex<RepoState>, mut quit: watch::Receiver<bool>) {
    let mut running: BTreeMap<String, (Archive, watch::Sender<bool>, tokio::task::JoinHandle<()>)> =
        BTreeMap::new();
    while !*quit.borrow() {
        let wanted: BTreeMap<String, Archive> = match &state.lock().await.applied {
            Some(a) => a
                .desired
                .policies
                .values()
                // Several replicas: the policy's lease holder archives it.
                .filter(|p| ctx.leases.holds(&p.name))
                .filter_map(|p| Archive::of(p, &a.desired.storages))
                .map(|a| (a.policy.clone(), a))
                .collect(),
            None => BTreeMap::new(),
        };
        let stale: Vec<String> = running
            .iter()
            .filter(|(name, (a, _, _))| wanted.get(*name) != Some(a))
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            if let Some((_, stop, task)) = running.remove(&name) {
                let _ = stop.send(true);
                let _ = task.await;
            }
        }
        for (name, archive) in wanted {
            if running.contains_key(&name) {
                continue;
            }
            let (stop, stopped) = watch::channel(false);
            let task = tokio::spawn(archiver(ctx.clone(), archive.clone(), stopped));
            running.insert(name, (archive, stop, task));
        }
        tokio::select! {
            _ = tokio::time::sleep(FOLLOW) => {}
            _ = quit.wait_for(|q| *q) => {}
        }
    }
    for (_, (_, stop, task)) in running {
        let _ = stop.send(true);
        let _ = task.await;
    }
}

/// One policy's archiver: slot, `pg_receivewal` with backoff, uploads.
async fn archiver(ctx: Context, archive: Archive, mut stop: watch::Receiver<bool>) {
    let spool = spool_dir(&ctx.settings.data_dir, &archive.policy);
    let st: Arc<dyn Storage> = Arc::from(store::open(&archive.storage, &ctx.settings.base_dir));
    let uploader = Arc::new(std::sync::Mutex::new(Uploader::new(
        &archive,
        st.clone(),
        &spool,
    )));
    let mut tracker = Tracker::new(&archive.policy);
    let interval = archive
        .pitr
        .wal_flush_interval
        .to_std()
        .unwrap_or(Duration::from_secs(10));
    let mut backoff = Duration::from_secs(1);
    record_source(&ctx, &archive).await;
    tracing::info!(policy = %archive.policy, slot = %archive.pitr.slot, spool = %spool.display(), "WAL archiving started");
    while !*stop.borrow() {
        let started = Instant::now();
        match start(&archive, &spool).await {
            Ok(mut child) => {
                log_stderr(&archive, &mut child);
                loop {
                    tokio::select! {
                        exit = child.wait() => {
                            tracing::warn!(policy = %archive.policy, status = ?exit, "pg_receivewal stopped; restarting it");
                            break;
                        }
                        _ = tokio::time::sleep(interval) => {
                            // Bounded: a slow server never delays the upload.
                            let position = tokio::time::timeout(SAMPLE_TIMEOUT, archive.stream().position()).await;
                            tracker.sampled(position.ok().and_then(Result::ok));
                            let stored = flush(&uploader).await;
                            tracker.flushed(&ctx, &st, stored).await;
                        }
                        _ = stopped(&mut stop) => {
                            let _ = child.kill().await;
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                tracing::error!(policy = %archive.policy, error = %e, "cannot stream WAL; retrying");
            }
        }
        flush(&uploader).await;
        if started.elapsed() > BACKOFF_MAX {
            backoff = Duration::from_secs(1);
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stopped(&mut stop) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
    tracing::info!(policy = %archive.policy, "WAL archiving stopped");
}

/// Records where the slot is, so `prune --orphans` can drop it once the
/// policy is gone from Git (`engine::pitr_prune`).
async fn record_source(ctx: &Context, a: &Archive) {
    let source = SlotSource {
        url: a.url.clone(),
        password_from: a.password_from.clone(),
        bin_dir: a.bin_dir.clone(),
        slot: a.pitr.slot.clone(),
        storage: a.storage.name.clone(),
    };
    let recorded = match serde_json::to_string(&source) {
        Ok(json) => ctx
            .catalog
            .record_pitr_source(&a.policy, &json, chrono::Utc::now())
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = recorded {
        tracing::warn!(policy = %a.policy, error = %e, "cannot record the slot; `prune --orphans` will not drop it");
    }
}

/// Resolves once the archiver is told to stop.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn start(archive: &Archive, spool: &Path) -> Result<tokio::process::Child, String> {
    archive
        .stream()
        .create_slot()
        .await
        .map_err(|e| e.to_string())?;
    let (a, dir) = (archive.clone(), spool.to_path_buf());
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create the WAL spool {}: {e}", dir.display()))?;
        a.stream().spawn(&dir).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Logs what `pg_receivewal` says (redacted), line by line.
fn log_stderr(archive: &Archive, child: &mut tokio::process::Child) {
    let Some(stderr) = child.stderr.take() else {
        return;
    };
    let a = archive.clone();
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::warn!(policy = %a.policy, "pg_receivewal: {}", a.stream().redact(&line));
        }
    });
}

/// One flush; true when everything the spool held is stored.
async fn flush(uploader: &Arc<std::sync::Mutex<Uploader>>) -> bool {
    let u = uploader.clone();
    let result = tokio::task::spawn_blocking(move || match u.lock() {
        Ok(mut u) => u.flush(),
        Err(_) => Ok(()),
    })
    .await;
    match result {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "WAL upload failed; retrying at the next flush");
            false
        }
        Err(e) => {
            tracing::error!(error = %e, "WAL upload task failed");
            false
        }
    }
}

/// Moves the spool's WAL into the storage (blocking).
struct Uploader {
    policy: String,
    st: Arc<dyn Storage>,
    spool: PathBuf,
    recipients: Vec<String>,
    /// Checksum of the partial segment stored last, per segment.
    last_partial: Option<(String, blake3::Hash)>,
}

#[derive(Debug, thiserror::Error)]
enum UploadError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("cannot read the WAL spool {path}: {source}")]
    Spool {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Uploader {
    fn new(archive: &Archive, st: Arc<dyn Storage>, spool: &Path) -> Uploader {
        Uploader {
            policy: archive.policy.clone(),
            st,
            spool: spool.to_path_buf(),
            recipients: archive.storage.age_recipients.clone(),
            last_partial: None,
        }
    }

    fn flush(&mut self) -> Result<(), UploadError> {
        let spool_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| UploadError::Spool { path, source }
        };
        let mut names: Vec<String> = match std::fs::read_dir(&self.spool) {
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| wal::is_wal_file(n))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(spool_err(&self.spool)(e)),
        };
        names.sort();
        let stored = wal::list(&*self.st, &self.policy)?;
        for name in names {
            let path = self.spool.join(&name);
            let raw = match std::fs::read(&path) {
                Ok(raw) => raw,
                // Renamed from .partial to complete meanwhile: next round.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(spool_err(&path)(e)),
            };
            if let Some(segment) = name.strip_suffix(PARTIAL) {
                let hash = blake3::hash(&raw);
                if self.last_partial.as_ref() == Some(&(segment.to_string(), hash)) {
                    continue;
                }
                let object = wal::upload(&*self.st, &self.policy, &name, &raw, &self.recipients)?;
                self.remove_partials(&stored, segment, Some(&object.object))?;
                self.last_partial = Some((segment.to_string(), hash));
            } else {
                wal::upload(&*self.st, &self.policy, &name, &raw, &self.recipients)?;
                self.remove_partials(&stored, &name, None)?;
                std::fs::remove_file(&path).map_err(spool_err(&path))?;
                tracing::debug!(policy = %self.policy, wal = %name, "WAL archived");
            }
        }
        Ok(())
    }

    /// Removes the stored partial copies of `segment` except `keep`.
    fn remove_partials(
        &self,
        stored: &[wal::WalObject],
        segment: &str,
        keep: Option<&str>,
    ) -> Result<(), StorageError> {
        for o in stored {
            if o.is_partial() && o.segment() == segment && Some(o.object.as_str()) != keep {
                self.st.remove_wal(&self.policy, &o.object)?;
            }
        }
        Ok(())
    }
}
