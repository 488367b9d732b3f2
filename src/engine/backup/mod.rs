//! Engine: backup — one backup run end to end, under the policy's lock: a run
//! recorded as started, attempts (transient failures retried with backoff,
//! each into a fresh artifact), the artifact read back and verified before
//! its manifest is committed, then the catalog, the release bookkeeping and
//! the audit log. A failed run removes its partial data and says why.

mod retry;

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::catalog::NewRun;
use crate::engine::context::{Applied, Context, blocking, storage_for};
use crate::engine::ids::new_backup_id;
use crate::executor::guard::PathGuard;
use crate::executor::{self, ExecContext, Produced};
use crate::lock::{self, PolicyLock};
use crate::model::{AuditKind, RunOutcome};
use crate::observed::{BackupRecord, Health, Trigger};
use crate::policy::BackupPolicy;
use crate::storage::pipeline::{ArtifactWriter, Cancel, Written, checksum_of};
use crate::storage::{
    ArtifactInfo, ArtifactSink, MANIFEST_FORMAT, Manifest, Storage, StorageError, crypt,
};

/// What one backup run ended with: the recorded backup or a one-line error
/// (also recorded in the catalog as a failed run), and how many transient
/// failures it retried on the way (`safepoint_backup_retries_total`).
pub struct BackupRun {
    pub result: Result<BackupRecord, String>,
    pub retries: u32,
}

/// Takes one backup end to end.
pub async fn run_backup(
    ctx: &Context,
    applied: &Applied,
    policy: &BackupPolicy,
    trigger: Trigger,
    release: Option<&str>,
    requested_by: Option<&str>,
) -> BackupRun {
    let mut retries = 0;
    let result = run(
        ctx,
        applied,
        policy,
        (trigger, release, requested_by),
        &mut retries,
    )
    .await;
    BackupRun { result, retries }
}

async fn run(
    ctx: &Context,
    applied: &Applied,
    policy: &BackupPolicy,
    (trigger, release, requested_by): (Trigger, Option<&str>, Option<&str>),
    retries: &mut u32,
) -> Result<BackupRecord, String> {
    ctx.leases.fence(&policy.name).map_err(|e| e.to_string())?;
    let _lock = lock_policy(ctx, policy).await?;
    let Some(storage) = storage_for(ctx, &applied.desired, &policy.storage) else {
        return Err(format!("storage {} is not declared", policy.storage));
    };
    let started_at = Utc::now();
    let id = new_backup_id(started_at, &policy.name);
    let run_id = ctx
        .catalog
        .start_run(&NewRun {
            policy: &policy.name,
            backup_id: &id,
            storage: &policy.storage,
            trigger,
            release,
            requested_by,
            started_at,
        })
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(backup = %id, "backup started");
    let job = BackupJob {
        ctx,
        applied,
        policy,
        storage,
        id: &id,
        trigger,
        release,
        requested_by,
        started_at,
    };
    let result = retry::with_retries(&job, retries).await;
    let now = Utc::now();
    match result {
        Ok(manifest) => record_success(&job, run_id, manifest, now).await,
        Err(failure) => Err(record_failure(&job, run_id, failure, now).await),
    }
}

/// One backup run: what each attempt (`take_backup`) works with.
pub struct BackupJob<'a> {
    pub ctx: &'a Context,
    pub applied: &'a Applied,
    pub policy: &'a BackupPolicy,
    pub storage: Arc<dyn Storage>,
    pub id: &'a str,
    pub trigger: Trigger,
    pub release: Option<&'a str>,
    pub requested_by: Option<&'a str>,
    pub started_at: DateTime<Utc>,
}

/// The policy's backup lock (a probe holding it is waited out; another
/// backup is not).
async fn lock_policy(ctx: &Context, policy: &BackupPolicy) -> Result<PolicyLock, String> {
    match lock::lock_for_backup(&ctx.settings.locks_dir(), &policy.name).await {
        Ok(Some(lock)) => Ok(lock),
        Ok(None) => Err(format!(
            "another backup of {} is running; try again when it ends",
            policy.name
        )),
        Err(e) => Err(format!(
            "cannot take the lock of {} in {}: {e}",
            policy.name,
            ctx.settings.locks_dir().display()
        )),
    }
}

/// The failure kind of work stopped because its lease was lost.
const LEASE_LOST: &str = "lease-lost";

/// Records a stored and verified backup: catalog, run, release tag, audit.
async fn record_success(
    job: &BackupJob<'_>,
    run_id: i64,
    manifest: Manifest,
    now: DateTime<Utc>,
) -> Result<BackupRecord, String> {
    let (ctx, policy, trigger) = (job.ctx, job.policy, job.trigger);
    ctx.catalog
        .upsert_backup(&manifest, Health::Verified, Some(now))
        .await
        .map_err(|e| e.to_string())?;
    ctx.catalog
        .finish_run(run_id, RunOutcome::Succeeded, None, now)
        .await
        .map_err(|e| e.to_string())?;
    if let (Trigger::Release, Some(tag)) = (trigger, job.release) {
        ctx.catalog
            .mark_release(&policy.name, tag, "done", Some(job.id), now)
            .await
            .map_err(|e| e.to_string())?;
    }
    let msg = format!(
        "backup {} of {} ({trigger}) stored on {}: {} bytes, {}",
        job.id, policy.name, policy.storage, manifest.artifact.size, manifest.artifact.checksum
    );
    ctx.catalog
        .audit(
            now,
            AuditKind::BackupSucceeded,
            Some(&policy.name),
            job.requested_by.unwrap_or(&ctx.actor),
            &msg,
        )
        .await
        .map_err(|e| format!("{msg}; but its audit entry could not be written: {e}"))?;
    tracing::info!(backup = %job.id, size = manifest.artifact.size, seconds = (now - job.started_at).num_milliseconds() as f64 / 1000.0, "backup stored and verified");
    Ok(BackupRecord {
        id: job.id.to_string(),
        policy: policy.name.clone(),
        storage: policy.storage.clone(),
        trigger,
        release: job.release.map(str::to_string),
        started_at: job.started_at,
        finished_at: manifest.finished_at,
        size: manifest.artifact.size,
        checksum: manifest.artifact.checksum,
        health: Health::Verified,
        pinned: None,
        pin_unknown: None,
    })
}

/// Removes the failed run's partial data and records the failure (run and
/// audit); returns the one-line error the caller sees.
async fn record_failure(
    job: &BackupJob<'_>,
    run_id: i64,
    Failure { kind, message, .. }: Failure,
    now: DateTime<Utc>,
) -> String {
    let (ctx, policy, id) = (job.ctx, job.policy, job.id);
    let (st, p, i) = (job.storage.clone(), policy.name.clone(), id.to_string());
    let cleanup = blocking(move || st.remove(&p, &i)).await;
    let cleanup_note = match cleanup {
        Ok(Ok(())) => String::new(),
        Ok(Err(e)) => {
            format!(" (partial data not yet removed: {e}; it is collected later)")
        }
        Err(e) => format!(" (cleanup failed: {e})"),
    };
    let mut msg = format!(
        "backup {id} of {} failed: {message}{cleanup_note}",
        policy.name
    );
    // A run stopped because its lease was lost was interrupted, not failed:
    // the lease holder retakes it at once, without failure backoff.
    let outcome = if kind == LEASE_LOST {
        RunOutcome::Interrupted
    } else {
        RunOutcome::Failed
    };
    // The run already failed; a failed bookkeeping write is added to
    // the error the caller sees (and logs) rather than dropped.
    if let Err(e) = ctx
        .catalog
        .finish_run(run_id, outcome, Some((kind, &message)), now)
        .await
    {
        msg.push_str(&format!(
            "; and the run could not be closed in the catalog: {e}"
        ));
    }
    if let Err(e) = ctx
        .catalog
        .audit(
            now,
            AuditKind::BackupFailed,
            Some(&policy.name),
            job.requested_by.unwrap_or(&ctx.actor),
            &msg,
        )
        .await
    {
        msg.push_str(&format!("; and its audit entry could not be written: {e}"));
    }
    tracing::error!(backup = %id, kind, "{msg}");
    msg
}

/// Why a backup attempt failed: bounded kind, message, whether a retry may help.
struct Failure {
    kind: &'static str,
    message: String,
    transient: bool,
}

impl From<(&'static str, String)> for Failure {
    fn from((kind, message): (&'static str, String)) -> Self {
        Failure {
            kind,
            message,
            transient: false,
        }
    }
}

/// The artifact's file name and encryption: encrypted artifacts carry `.age`
/// (`data.sqlite.zst.age`), as `age -d` expects.
fn artifact_name(job: &BackupJob<'_>, recipients: &[String]) -> (String, Option<String>) {
    let encryption = (!recipients.is_empty()).then(|| crypt::AGE.to_string());
    let file = format!(
        "{}{}",
        executor::artifact_file(&job.policy.source),
        if encryption.is_some() {
            crypt::AGE_SUFFIX
        } else {
            ""
        }
    );
    (file, encryption)
}

/// One attempt: produce the artifact, read it back, commit its manifest.
async fn take_backup(job: &BackupJob<'_>) -> Result<Manifest, Failure> {
    let recipients = job
        .applied
        .desired
        .storages
        .get(&job.policy.storage)
        .map(|s| s.age_recipients.clone())
        .unwrap_or_default();
    let (file, encryption) = artifact_name(job, &recipients);
    let cancel = Cancel::new();
    let writer = open_writer(job, &file, &recipients, &cancel).await?;
    let (writer, produced) = produce(job, writer, cancel).await?;
    let written = blocking(move || {
        let (sink, written) = writer.finish()?;
        sink.finish().map_err(std::io::Error::other)?;
        Ok::<_, std::io::Error>(written)
    })
    .await
    .map_err(|e| ("internal", e.to_string()))?
    .map_err(|e| ("write", e.to_string()))?;
    let manifest = manifest(job, file, encryption, &written, produced);
    read_back(job, &manifest, &written).await?;
    // Several replicas: the manifest is what makes a backup visible, so it
    // is written only while this replica still holds the policy's lease
    // (with the lease margin to spare for this write).
    job.ctx
        .leases
        .fence(&job.policy.name)
        .map_err(|e| (LEASE_LOST, e.to_string()))?;
    let (st, m) = (job.storage.clone(), manifest.clone());
    blocking(move || st.commit(&m))
        .await
        .map_err(|e| ("internal", e.to_string()))?
        .map_err(|e| (e.kind(), e.to_string()))?;
    Ok(manifest)
}

type Writer = ArtifactWriter<Box<dyn ArtifactSink>>;

/// A fresh artifact in storage behind the compressing, sealing, hashing writer.
async fn open_writer(
    job: &BackupJob<'_>,
    file: &str,
    recipients: &[String],
    cancel: &Cancel,
) -> Result<Writer, Failure> {
    let (st, p, i, f) = (
        job.storage.clone(),
        job.policy.name.clone(),
        job.id.to_string(),
        file.to_string(),
    );
    let sink = blocking(move || st.create(&p, &i, &f))
        .await
        .map_err(|e| ("internal", e.to_string()))?
        .map_err(|e| (e.kind(), e.to_string()))?;
    let recipients = crypt::recipients(recipients).map_err(|e| (e.kind(), e.to_string()))?;
    Ok(ArtifactWriter::sealed(sink, cancel.clone(), &recipients)
        .map_err(|e| ("write", e.to_string()))?)
}

/// The source's bytes into `writer`, cancelled by the policy's timeout or
/// by shutdown.
async fn produce(
    job: &BackupJob<'_>,
    writer: Writer,
    cancel: Cancel,
) -> Result<(Writer, Produced), Failure> {
    let ctx = job.ctx;
    let exec_ctx = ExecContext {
        base: ctx.settings.base_dir.clone(),
        tmp_dir: ctx.settings.tmp_dir(),
        cancel: cancel.clone(),
        guard: Arc::new(PathGuard::new(&ctx.settings.permissions.protected)),
    };
    let timeout = job
        .policy
        .timeout
        .to_std()
        .unwrap_or(std::time::Duration::from_secs(3600));
    let exec = executor::backup(&job.policy.source, &exec_ctx, writer);
    tokio::pin!(exec);
    let mut hard_stop = ctx.hard_stop.clone();
    let mut lost = ctx.leases.lost(&job.policy.name);
    let produced = tokio::select! {
        r = &mut exec => r,
        _ = tokio::time::sleep(timeout) => {
            cancel.cancel();
            let _ = exec.await;
            return Err(("timeout", format!("backup exceeded its timeout of {}s; raise spec.timeout or check the source", timeout.as_secs())).into());
        }
        _ = async { let _ = hard_stop.wait_for(|stop| *stop).await; } => {
            cancel.cancel();
            let _ = exec.await;
            return Err(("cancelled", "cancelled by shutdown before it finished".to_string()).into());
        }
        // A closed channel without `true` (one node, or no lease) never fires.
        _ = async { if lost.wait_for(|lost| *lost).await.is_err() { std::future::pending::<()>().await } } => {
            cancel.cancel();
            let _ = exec.await;
            let why = ctx.leases.fence(&job.policy.name).err().map(|e| e.to_string()).unwrap_or_default();
            return Err((LEASE_LOST, format!("cancelled: {why}")).into());
        }
    };
    produced.map_err(|e| Failure {
        kind: e.kind(),
        message: e.to_string(),
        transient: e.is_transient(),
    })
}

/// The manifest of the artifact just written.
fn manifest(
    job: &BackupJob<'_>,
    file: String,
    encryption: Option<String>,
    written: &Written,
    produced: Produced,
) -> Manifest {
    let policy = job.policy;
    Manifest {
        format: MANIFEST_FORMAT,
        id: job.id.to_string(),
        policy: policy.name.clone(),
        storage: policy.storage.clone(),
        source_kind: policy.source.kind().to_string(),
        trigger: job.trigger,
        release: job.release.map(str::to_string),
        commit: Some(job.applied.revision.commit.clone()),
        requested_by: job.requested_by.map(str::to_string),
        started_at: job.started_at,
        finished_at: Utc::now(),
        artifact: ArtifactInfo {
            file,
            size: written.stored_size,
            raw_size: written.raw_size,
            checksum: written.checksum.clone(),
            compression: "zstd".into(),
            encryption,
        },
        tools: produced.tools,
        counts: produced.counts,
        status: "complete".into(),
    }
}

/// Reads the stored bytes back: a backup is complete only once verified.
async fn read_back(
    job: &BackupJob<'_>,
    manifest: &Manifest,
    written: &Written,
) -> Result<(), Failure> {
    let (st, m) = (job.storage.clone(), manifest.clone());
    let verified = blocking(move || {
        let reader = st.open(&m)?;
        checksum_of(reader).map_err(|e| StorageError::Io {
            storage: st.name().to_string(),
            op: "read back",
            path: m.artifact.file.clone().into(),
            source: e,
        })
    })
    .await
    .map_err(|e| ("internal", e.to_string()))?
    .map_err(|e| (e.kind(), e.to_string()))?;
    if verified.1 != written.checksum || verified.0 != written.stored_size {
        return Err((
            "verify",
            format!(
                "read-back check failed: stored {} bytes with {}, expected {} bytes with {}",
                verified.0, verified.1, written.stored_size, written.checksum
            ),
        )
            .into());
    }
    Ok(())
}
