//! Engine: the one restore pipeline, used by `safepoint restore` and by
//! recovery drills: verify the stored artifact against its manifest →
//! load the age identity (encrypted backups) → open and decrypt → decompress
//! → the source's executor → audit. Storage reads that block run on the
//! blocking pool, never on a runtime worker. Also the one place that decides
//! which backup a restore means ("latest verified", "pre-deploy snapshot of
//! a release").

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;

use crate::catalog::{BackupRow, CatalogError};
use crate::engine::context::Context;
use crate::executor::spool::Spool;
use crate::executor::{self, ExecError, Produced, RestoreOptions, RestoreTarget};
use crate::model::{ArtifactProblem, AuditKind, Health, Trigger};
use crate::policy::StorageSpec;
use crate::storage::crypt::{CryptError, Identities};
use crate::storage::{self, Manifest, Storage, StorageError, pipeline};

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(
        "backup {backup} failed its checksum check: {problem}; pick another backup (`safepoint list`)"
    )]
    Unverified {
        backup: String,
        problem: ArtifactProblem,
    },
    /// The artifact could not be read to verify it.
    #[error(transparent)]
    Verify(StorageError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Crypt(#[from] CryptError),
    #[error(transparent)]
    Decompress(std::io::Error),
    #[error("cannot create scratch {}: {source}", path.display())]
    Prepare {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error("restored backup {backup}, but its audit entry could not be written: {source}")]
    Audit {
        backup: String,
        source: CatalogError,
    },
    #[error("internal task failed: {0}")]
    Join(String),
}

impl RestoreError {
    /// Bounded label (metrics, logs).
    pub fn kind(&self) -> &'static str {
        match self {
            RestoreError::Unverified { .. } => "unverified",
            RestoreError::Verify(e) | RestoreError::Storage(e) => e.kind(),
            RestoreError::Crypt(e) => e.kind(),
            RestoreError::Decompress(_) => "decompress",
            RestoreError::Prepare { .. } => "prepare",
            RestoreError::Exec(e) => e.kind(),
            RestoreError::Audit { .. } => "audit",
            RestoreError::Join(_) => "internal",
        }
    }
}

/// Wraps the decompressed stream before the executor reads it.
pub type Wrap<'a> = dyn Fn(Box<dyn Read + Send>) -> Box<dyn Read + Send> + Sync + 'a;

/// One restore to run.
pub struct Restore<'a> {
    pub manifest: &'a Manifest,
    /// The storage holding the backup (`open_storage`).
    pub storage: Arc<dyn Storage>,
    pub target: &'a RestoreTarget,
    pub options: &'a RestoreOptions,
    /// Created (with parents) just before the executor runs: a drill's scratch.
    pub create_dir: Option<&'a Path>,
    /// Wraps the decompressed stream (the CLI's progress line).
    pub wrap: Option<&'a Wrap<'a>>,
}

/// What a finished restore produced.
#[derive(Debug)]
pub struct Restored {
    pub produced: Produced,
    /// Wall time of the whole pipeline, verification included.
    pub seconds: f64,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, RestoreError> + Send + 'static,
) -> Result<T, RestoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RestoreError::Join(e.to_string()))?
}

/// The storage `spec` names, opened relative to the data directory.
pub fn open_storage(ctx: &Context, spec: &StorageSpec) -> Arc<dyn Storage> {
    Arc::from(storage::open(spec, &ctx.settings.base_dir))
}

/// The whole pipeline for an operator's restore: verify, restore, and a
/// `restore` audit entry with `audit_message` (its failure fails the restore).
pub async fn run(
    ctx: &Context,
    job: Restore<'_>,
    audit_message: &str,
) -> Result<Restored, RestoreError> {
    let started = Instant::now();
    verify(&job).await?;
    let produced = restore_verified(ctx, job.clone_ref()).await?;
    let seconds = started.elapsed().as_secs_f64();
    ctx.catalog
        .audit(
            Utc::now(),
            AuditKind::Restore,
            Some(&job.manifest.policy),
            &ctx.actor,
            audit_message,
        )
        .await
        .map_err(|source| RestoreError::Audit {
            backup: job.manifest.id.clone(),
            source,
        })?;
    Ok(Restored { produced, seconds })
}

impl<'a> Restore<'a> {
    fn clone_ref(&self) -> Restore<'a> {
        Restore {
            manifest: self.manifest,
            storage: self.storage.clone(),
            target: self.target,
            options: self.options,
            create_dir: self.create_dir,
            wrap: self.wrap,
        }
    }
}

/// Step 1: the stored artifact matches its manifest (size and checksum),
/// read on the blocking pool. Never restore bytes that do not match:
/// `Unverified` (mismatch) or `Verify` (could not read).
pub async fn verify(job: &Restore<'_>) -> Result<(), RestoreError> {
    let (st, m) = (job.storage.clone(), job.manifest.clone());
    let checked = blocking(move || storage::verify(&*st, &m).map_err(RestoreError::Verify)).await?;
    match checked {
        None => Ok(()),
        Some(problem) => Err(RestoreError::Unverified {
            backup: job.manifest.id.clone(),
            problem,
        }),
    }
}

/// Steps 2–5 after `verify`: identity → open and decrypt (blocking pool) →
/// decompress → executor.
pub async fn restore_verified(ctx: &Context, job: Restore<'_>) -> Result<Produced, RestoreError> {
    let manifest = job.manifest;
    // Encrypted backups are opened with the operator's age identity.
    let identities = match &ctx.settings.age_identity_file {
        Some(path) if manifest.artifact.encryption.is_some() => Some(Identities::from_file(path)?),
        _ => None,
    };
    let (st, m) = (job.storage.clone(), manifest.clone());
    let plain = blocking(move || {
        let reader = st.open(&m)?;
        Ok(storage::crypt::open(
            reader,
            &m.id,
            m.artifact.encryption.as_deref(),
            identities.as_ref(),
        )?)
    })
    .await?;
    let input = pipeline::decompress(plain).map_err(RestoreError::Decompress)?;
    let input = match job.wrap {
        Some(wrap) => wrap(input),
        None => input,
    };
    if let Some(dir) = job.create_dir {
        std::fs::create_dir_all(dir).map_err(|source| RestoreError::Prepare {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let mut options = job.options.clone();
    if options.spool.is_none() {
        options.spool = Some(Spool {
            dir: ctx.settings.data_dir.join("tmp"),
            raw_size: manifest.artifact.raw_size,
            rows: manifest.counts.values().copied().collect(),
        });
    }
    Ok(executor::restore(&manifest.source_kind, input, job.target, &options).await?)
}

/// Which backup a restore means.
#[derive(Debug, Clone, Default)]
pub struct Which {
    pub backup_id: Option<String>,
    pub policy: Option<String>,
    pub latest: bool,
    pub release: Option<String>,
    pub pre_deploy: bool,
}

/// Why `select` could not name a backup.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "name a backup: BACKUP_ID, or --policy P --latest, or --policy P --release TAG [--pre-deploy]"
)]
pub struct Unnamed;

/// The backup `which` means among `rows` (`None`: no such backup). Only
/// verified backups are chosen by policy/release; an explicit id is taken as is
/// (the pipeline verifies it anyway).
pub fn select<'a>(rows: &'a [BackupRow], which: &Which) -> Result<Option<&'a BackupRow>, Unnamed> {
    Ok(match (&which.backup_id, &which.policy, &which.release) {
        (Some(id), _, _) => rows.iter().find(|r| &r.record.id == id),
        (None, Some(p), Some(release)) if which.pre_deploy => latest_pre_deploy(rows, p, release),
        (None, Some(p), Some(release)) => latest_verified(rows, p, |r| {
            r.record.release.as_deref() == Some(release.as_str())
                && matches!(r.record.trigger, Trigger::Release | Trigger::PostDeploy)
        }),
        (None, Some(p), None) if which.latest => latest_verified(rows, p, |_| true),
        _ => return Err(Unnamed),
    })
}

/// The latest verified pre-deploy snapshot of `policy` for `release`: what
/// `restore --pre-deploy` restores and what a failed deploy pins.
pub fn latest_pre_deploy<'a>(
    rows: &'a [BackupRow],
    policy: &str,
    release: &str,
) -> Option<&'a BackupRow> {
    latest_verified(rows, policy, |r| {
        r.record.trigger == Trigger::PreDeploy && r.record.release.as_deref() == Some(release)
    })
}

/// The newest verified backup of `policy` started at or before `at`: for a
/// PITR policy, the base backup a restore point created at `at` needs.
pub fn latest_before<'a>(
    rows: &'a [BackupRow],
    policy: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> Option<&'a BackupRow> {
    latest_verified(rows, policy, |r| r.record.started_at <= at)
}

fn latest_verified<'a>(
    rows: &'a [BackupRow],
    policy: &str,
    also: impl Fn(&BackupRow) -> bool,
) -> Option<&'a BackupRow> {
    rows.iter()
        .filter(|r| r.record.health == Health::Verified && r.record.policy == policy && also(r))
        .max_by_key(|r| r.record.started_at)
}
