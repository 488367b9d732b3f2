//! The one meeting point of pure decisions and IO: refresh desired state from
//! Git -> observe catalog and storage -> plan -> execute -> record. The daemon
//! loop, the CLI commands (`backup`, `prune`, `plan`, `status`) and later the
//! API all go through these functions; nothing else executes actions.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::catalog::{NewRun, RevisionRecord};
use crate::engine::import;
use crate::executor::guard::PathGuard;
use crate::executor::{self, ExecContext};
use crate::git::{self, GitError};
use crate::lock;
use crate::model::{ActionKind, AuditKind, RunOutcome};
use crate::observed::{BackupRecord, BackupRequest, DrillRequest, Health, ObservedState, Trigger};
use crate::plan::{self, Action, Plan};
use crate::policy::{self, BackupPolicy, DesiredState};
use crate::storage::pipeline::{ArtifactWriter, Cancel, checksum_of};
use crate::storage::{self, ArtifactInfo, MANIFEST_FORMAT, Manifest, Storage, StorageError, crypt};

use crate::engine::context::blocking;
pub use crate::engine::context::{Applied, Context, ReconcileError, RepoState};
pub use crate::engine::ids::new_backup_id;
pub use crate::model::Outcome;

/// Fetches (remote) and reads the tracked branch; applies the head commit if
/// it is new and valid, records it as rejected otherwise. Returns true when
/// a new revision was applied.
pub async fn refresh(ctx: &Context, state: &mut RepoState) -> Result<bool, ReconcileError> {
    let cfg = ctx.settings.repo.clone();
    blocking(move || git::sync(&cfg)).await??;
    let cfg = ctx.settings.repo.clone();
    let head = blocking(move || git::head(&cfg)).await??;
    let already = state
        .attempted
        .as_ref()
        .is_some_and(|a| a.commit == head.commit)
        && (state.applied.is_some() || state.attempted.as_ref().is_some_and(|a| !a.valid));
    if already {
        return Ok(false);
    }
    let cfg = ctx.settings.repo.clone();
    let commit = head.commit.clone();
    let read = blocking(move || git::read(&cfg, &commit)).await?;
    let now = Utc::now();
    let result = match read {
        Ok((_, files)) => policy::load_permitted(&files, &ctx.settings.permissions)
            .map_err(|diags| diags.iter().map(ToString::to_string).collect()),
        Err(e @ GitError::NoPath { .. }) => Err(vec![e.to_string()]),
        Err(e) => return Err(e.into()),
    };
    let result = match result {
        Ok(desired) => deletion_guard(ctx, state, desired, now).await?,
        Err(diags) => Err(diags),
    };
    let record = RevisionRecord {
        commit: head.commit.clone(),
        branch: ctx.settings.repo.branch.clone(),
        author: head.author.clone(),
        summary: head.summary.clone(),
        attempted_at: now,
        valid: result.is_ok(),
        diagnostics: result.as_ref().err().cloned().unwrap_or_default(),
    };
    ctx.catalog.record_revision(&record).await?;
    state.attempted = Some(record);
    match result {
        Ok(desired) => {
            let msg = format!(
                "applied revision {} ({}) by {}: {} policies",
                head.short(),
                head.summary,
                head.author,
                desired.policies.len()
            );
            tracing::info!(commit = %head.commit, policies = desired.policies.len(), "policy revision applied");
            ctx.catalog
                .audit(now, AuditKind::RevisionApplied, None, &ctx.actor, &msg)
                .await?;
            state.applied = Some(Applied {
                revision: head,
                desired,
            });
            Ok(true)
        }
        Err(diags) => {
            tracing::error!(commit = %head.commit, problems = diags.len(), "policy revision rejected; the last valid revision stays in force");
            for d in &diags {
                tracing::error!("{d}");
            }
            let msg = format!(
                "rejected revision {} ({}) by {}: {}",
                head.short(),
                head.summary,
                head.author,
                diags.join("; ")
            );
            ctx.catalog
                .audit(now, AuditKind::RevisionRejected, None, &ctx.actor, &msg)
                .await?;
            Ok(false)
        }
    }
}

/// The deletion guard: unacknowledged destructive consequences reject the
/// revision like validation problems (docs/policy-reference.md).
async fn deletion_guard(
    ctx: &Context,
    state: &RepoState,
    desired: DesiredState,
    now: DateTime<Utc>,
) -> Result<Result<DesiredState, Vec<String>>, ReconcileError> {
    let current = state.applied.as_ref().map(|a| &a.desired);
    Ok(crate::preview::guard(&ctx.catalog, current, desired, now, &ctx.settings.plan).await?)
}

// ---- observe -------------------------------------------------------------

/// What observation found besides the state itself (for logs and status).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ObserveReport {
    pub imported: Vec<String>,
    /// Pins restored into the catalog from their marker in storage.
    pub pins_restored: Vec<String>,
    /// Pin markers rewritten into storage from the catalog.
    pub pin_markers_rewritten: Vec<String>,
    pub interrupted: Vec<String>,
    pub leftovers_removed: Vec<String>,
    pub problems: Vec<String>,
}

fn storage_for(ctx: &Context, desired: &DesiredState, name: &str) -> Option<Arc<dyn Storage>> {
    desired
        .storages
        .get(name)
        .map(|spec| Arc::from(storage::open(spec, &ctx.settings.base_dir)))
}

/// Reads catalog and storage into an `ObservedState`, reconciling the catalog
/// with storage on the way: untracked manifests are imported, pins are
/// reconciled with their markers in storage (`crate::pins`), vanished or
/// altered artifacts are marked, runs of dead processes are closed as
/// interrupted and their leftovers removed.
pub async fn observe(
    ctx: &Context,
    desired: &DesiredState,
    requests: Vec<BackupRequest>,
    drill_requests: Vec<DrillRequest>,
    now: DateTime<Utc>,
) -> Result<(ObservedState, ObserveReport), ReconcileError> {
    let mut report = ObserveReport::default();
    let locks = ctx.settings.locks_dir();
    let mut running = BTreeSet::new();

    // Runs recorded as running whose policy lock is free died with their process.
    for run in ctx.catalog.running_runs().await? {
        match lock::try_lock(&locks, &run.policy) {
            Ok(Some(_held)) => {
                let msg = format!(
                    "backup {} of {} was interrupted (the process running it died); partial data removed",
                    run.backup_id, run.policy
                );
                if let Some(st) = storage_for(ctx, desired, &run.storage) {
                    let (p, id) = (run.policy.clone(), run.backup_id.clone());
                    if let Ok(Err(e)) = blocking(move || st.remove(&p, &id)).await {
                        report.problems.push(e.to_string());
                    }
                }
                ctx.catalog
                    .finish_run(
                        run.id,
                        RunOutcome::Interrupted,
                        Some(("interrupted", &msg)),
                        now,
                    )
                    .await?;
                ctx.catalog
                    .audit(
                        now,
                        AuditKind::BackupInterrupted,
                        Some(&run.policy),
                        &ctx.actor,
                        &msg,
                    )
                    .await?;
                tracing::warn!(policy = %run.policy, backup = %run.backup_id, "{msg}");
                report.interrupted.push(run.backup_id);
            }
            Ok(None) => {
                running.insert(run.policy.clone());
            }
            Err(e) => report
                .problems
                .push(format!("cannot check lock of {}: {e}", run.policy)),
        }
    }

    let known: BTreeMap<String, crate::catalog::BackupRow> = ctx
        .catalog
        .backups()
        .await?
        .into_iter()
        .map(|b| (b.record.id.clone(), b))
        .collect();
    let mut incomplete = BTreeSet::new();
    let mut pin_unknown: BTreeMap<String, String> = BTreeMap::new();
    let mut storage_names: BTreeSet<String> = desired.storages.keys().cloned().collect();
    storage_names.extend(known.values().map(|b| b.record.storage.clone()));

    for name in storage_names {
        let Some(st) = storage_for(ctx, desired, &name) else {
            // Backups on a storage no longer declared cannot be checked.
            incomplete.insert(name);
            continue;
        };
        let st2 = st.clone();
        let listing = match blocking(move || st2.list()).await? {
            Ok(listing) => listing,
            Err(e) => {
                tracing::error!(storage = %name, error = %e, "storage listing failed; nothing there is pruned this cycle");
                report.problems.push(e.to_string());
                incomplete.insert(name);
                continue;
            }
        };
        for bad in &listing.unreadable {
            report.problems.push(bad.to_string());
        }
        let listed: BTreeSet<String> = listing.manifests.iter().map(|m| m.id.clone()).collect();
        for manifest in listing.manifests {
            let row = known.get(&manifest.id);
            if row.is_none() {
                import::import_manifest(
                    ctx,
                    &manifest,
                    import::Record::Untracked {
                        storage: &name,
                        now,
                    },
                )
                .await?;
                report.imported.push(manifest.id.clone());
            }
            // Unhealthy backups are re-verified every cycle: a cheap size check
            // must never declare a corrupt artifact good again.
            let due = row.is_none_or(|r| {
                r.record.health != Health::Verified
                    || r.checked_at
                        .is_none_or(|at| now - at >= ctx.settings.verify_interval)
            });
            let st2 = st.clone();
            let m2 = manifest.clone();
            let check = if due {
                blocking(move || storage::verify(&*st2, &m2)).await?
            } else {
                blocking(move || storage::check_size(&*st2, &m2)).await?
            };
            let previous = row.map(|r| r.record.health).unwrap_or(Health::Verified);
            match check {
                Ok(None) => {
                    if due || previous != Health::Verified {
                        ctx.catalog
                            .set_health(&manifest.id, Health::Verified, None, now)
                            .await?;
                    }
                }
                Ok(Some(problem)) => {
                    let health = problem.health;
                    if previous != health {
                        let kind = problem.audit_kind();
                        let msg = format!("backup {}/{}: {problem}", manifest.policy, manifest.id);
                        ctx.catalog
                            .audit(now, kind, Some(&manifest.policy), &ctx.actor, &msg)
                            .await?;
                        tracing::error!("{msg}");
                    }
                    ctx.catalog
                        .set_health(&manifest.id, health, Some(&problem.detail), now)
                        .await?;
                }
                Err(e) => report.problems.push(e.to_string()),
            }
        }
        let found = crate::pins::ListedPins {
            markers: listing.pins,
            unreadable: listing.unreadable_pins,
            listed: &listed,
        };
        let pins = crate::pins::reconcile_listing(ctx, &st, found, &known, now).await?;
        report.pins_restored.extend(pins.restored);
        report.pin_markers_rewritten.extend(pins.rewritten);
        report.problems.extend(pins.problems);
        pin_unknown.extend(pins.unknown);
        for row in known.values().filter(|r| r.record.storage == name) {
            if !listed.contains(&row.record.id) && row.record.health != Health::Missing {
                let problem = "manifest and artifact are gone from storage";
                let msg = format!("backup {}/{}: {problem}", row.record.policy, row.record.id);
                ctx.catalog
                    .set_health(&row.record.id, Health::Missing, Some(problem), now)
                    .await?;
                ctx.catalog
                    .audit(
                        now,
                        AuditKind::ArtifactMissing,
                        Some(&row.record.policy),
                        &ctx.actor,
                        &msg,
                    )
                    .await?;
                tracing::error!("{msg}");
            }
        }
        for leftover in listing.leftovers {
            if running.contains(&leftover.policy) {
                continue;
            }
            match lock::try_lock(&locks, &leftover.policy) {
                Ok(Some(_held)) => {
                    let st2 = st.clone();
                    let (p, id) = (leftover.policy.clone(), leftover.id.clone());
                    match blocking(move || st2.remove(&p, &id)).await? {
                        Ok(()) => report
                            .leftovers_removed
                            .push(format!("{}/{}", leftover.policy, leftover.id)),
                        Err(e) => report.problems.push(e.to_string()),
                    }
                }
                Ok(None) => {
                    running.insert(leftover.policy.clone());
                }
                Err(e) => report.problems.push(e.to_string()),
            }
        }
    }

    let mut backups = backups_by_policy(ctx).await?;
    mark_pin_unknown(&mut backups, &pin_unknown);
    let observed = ObservedState {
        backups,
        running,
        failures: ctx.catalog.failures().await?,
        incomplete_storages: incomplete,
        requests,
        drills: ctx.catalog.drill_history().await?,
        drill_requests,
        ..ObservedState::default()
    }
    .indexed();
    Ok((observed, report))
}

/// Hands the backups whose pin marker could not be read to the planner as
/// `pin_unknown` (never pruned while it lasts).
fn mark_pin_unknown(
    backups: &mut BTreeMap<String, Vec<BackupRecord>>,
    unknown: &BTreeMap<String, String>,
) {
    if unknown.is_empty() {
        return;
    }
    for b in backups.values_mut().flatten() {
        if let Some(why) = unknown.get(&b.id) {
            b.pin_unknown = Some(why.clone());
        }
    }
}

// ---- execute ---------------------------------------------------------------

/// Which planned actions a caller wants executed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// `safepoint daemon --once` and tests: everything.
    All,
    /// The daemon's scheduled lane: automatic backups, release-tag baselines,
    /// pruning, scheduled drills; work requested through the API (gates,
    /// manual backups, drills) runs in its own lane (`jobs`).
    Scheduled,
    /// `safepoint backup`, `deploy start|finish`: only the backups answering
    /// these requests (policy, trigger, release).
    Requests(Vec<(String, Trigger, Option<String>)>),
    /// `safepoint prune`: only deletions.
    Deletions,
    /// `safepoint drill`: only the drills of these policies.
    Drills(Vec<String>),
}

impl Scope {
    /// The scope that executes exactly the backups asked for by `requests`.
    pub fn answering(requests: &[BackupRequest]) -> Scope {
        Scope::Requests(
            requests
                .iter()
                .map(|r| (r.policy.clone(), r.trigger, r.release.clone()))
                .collect(),
        )
    }

    pub fn includes(&self, action: &Action) -> bool {
        match (self, action) {
            (Scope::All, _) => true,
            (
                Scope::Scheduled,
                Action::Backup {
                    trigger,
                    reason: plan::Reason::Requested { .. },
                    ..
                },
            ) => *trigger == Trigger::Release,
            (Scope::Scheduled, _) => true,
            (
                Scope::Requests(wanted),
                Action::Backup {
                    policy,
                    trigger,
                    release,
                    reason: plan::Reason::Requested { .. },
                },
            ) => wanted
                .iter()
                .any(|(p, t, r)| p == policy && t == trigger && r == release),
            (Scope::Deletions, Action::Delete { .. }) => true,
            _ => false,
        }
    }

    pub fn includes_drill(&self, drill: &plan::Drill) -> bool {
        match self {
            Scope::All => true,
            Scope::Scheduled => !matches!(drill.reason, plan::Reason::Requested { .. }),
            Scope::Drills(policies) => policies.contains(&drill.policy),
            _ => false,
        }
    }
}

/// Executes the plan's actions in `scope`: per policy, backups first, then
/// deletions only if every backup of that policy succeeded; policies run
/// concurrently up to `settings.concurrency`.
pub async fn execute(ctx: &Context, applied: &Applied, plan: &Plan, scope: &Scope) -> Vec<Outcome> {
    // Deletions were computed counting the backups planned before them; when
    // such a backup is outside the scope, its policy's deletions wait too.
    let deferred: BTreeSet<&str> = plan
        .actions
        .iter()
        .filter(|a| matches!(a, Action::Backup { .. }) && !scope.includes(a))
        .map(Action::policy)
        .collect();
    let mut per_policy: BTreeMap<String, Vec<Action>> = BTreeMap::new();
    for action in plan.actions.iter().filter(|a| scope.includes(a)) {
        if matches!(action, Action::Delete { .. }) && deferred.contains(action.policy()) {
            continue;
        }
        per_policy
            .entry(action.policy().to_string())
            .or_default()
            .push(action.clone());
    }
    let semaphore = Arc::new(Semaphore::new(ctx.settings.concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    // One shared copy: a clone of the whole desired state per task made
    // memory grow with policies² (2,000 policies: 2.6 GB).
    let applied = Arc::new(applied.clone());
    for (policy, actions) in per_policy {
        let ctx = ctx.clone();
        let applied = applied.clone();
        let semaphore = semaphore.clone();
        tasks.spawn(async move {
            let _permit = semaphore.acquire_owned().await;
            execute_policy(&ctx, &applied, &policy, actions).await
        });
    }
    let mut outcomes = Vec::new();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(mut o) => outcomes.append(&mut o),
            Err(e) => outcomes.push(Outcome {
                policy: "?".into(),
                action: ActionKind::Internal,
                backup_id: None,
                trigger: None,
                release: None,
                ok: false,
                seconds: 0.0,
                detail: e.to_string(),
            }),
        }
    }
    outcomes.sort_by(|a, b| (&a.policy, &a.action).cmp(&(&b.policy, &b.action)));
    outcomes
}

async fn execute_policy(
    ctx: &Context,
    applied: &Applied,
    policy_name: &str,
    actions: Vec<Action>,
) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    let mut backups_ok = true;
    for action in actions {
        match action {
            Action::Backup {
                policy,
                trigger,
                release,
                reason,
            } => {
                let by = match &reason {
                    plan::Reason::Requested { by } => Some(by.clone()),
                    _ => None,
                };
                let span = tracing::info_span!("backup", policy = %policy, trigger = %trigger);
                let started = std::time::Instant::now();
                let result = match applied.desired.policies.get(&policy) {
                    Some(p) => {
                        run_backup(ctx, applied, p, trigger, release.as_deref(), by.as_deref())
                            .instrument(span)
                            .await
                    }
                    None => Err(format!("policy {policy} is not in the applied revision")),
                };
                backups_ok &= result.is_ok();
                outcomes.push(match result {
                    Ok(record) => Outcome {
                        policy,
                        action: ActionKind::Backup,
                        backup_id: Some(record.id.clone()),
                        trigger: Some(trigger),
                        release: release.clone(),
                        ok: true,
                        seconds: started.elapsed().as_secs_f64(),
                        detail: format!(
                            "{} bytes stored, checksum verified ({reason})",
                            record.size
                        ),
                    },
                    Err(detail) => Outcome {
                        policy,
                        action: ActionKind::Backup,
                        backup_id: None,
                        trigger: Some(trigger),
                        release,
                        ok: false,
                        seconds: started.elapsed().as_secs_f64(),
                        detail,
                    },
                });
            }
            Action::Delete {
                policy,
                storage,
                backup_id,
                reason,
            } => {
                if !backups_ok {
                    outcomes.push(Outcome {
                        policy,
                        action: ActionKind::Delete,
                        backup_id: Some(backup_id),
                        trigger: None,
                        release: None,
                        ok: false,
                        seconds: 0.0,
                        detail: "skipped: the backup planned before it failed, so retention must be recomputed".into(),
                    });
                    continue;
                }
                let started = std::time::Instant::now();
                let result = run_delete(
                    ctx,
                    &applied.desired,
                    &policy,
                    &storage,
                    &backup_id,
                    &reason.to_string(),
                )
                .await;
                outcomes.push(Outcome {
                    policy,
                    action: ActionKind::Delete,
                    backup_id: Some(backup_id),
                    trigger: None,
                    release: None,
                    ok: result.is_ok(),
                    seconds: started.elapsed().as_secs_f64(),
                    detail: result.err().unwrap_or_else(|| reason.to_string()),
                });
            }
        }
    }
    let _ = policy_name;
    outcomes
}

/// Takes one backup end to end. Returns the recorded backup or a one-line
/// error (also recorded in the catalog as a failed run).
pub async fn run_backup(
    ctx: &Context,
    applied: &Applied,
    policy: &BackupPolicy,
    trigger: Trigger,
    release: Option<&str>,
    requested_by: Option<&str>,
) -> Result<BackupRecord, String> {
    let _lock = match lock::lock_for_backup(&ctx.settings.locks_dir(), &policy.name).await {
        Ok(Some(lock)) => lock,
        Ok(None) => {
            return Err(format!(
                "another backup of {} is running; try again when it ends",
                policy.name
            ));
        }
        Err(e) => {
            return Err(format!(
                "cannot take the lock of {} in {}: {e}",
                policy.name,
                ctx.settings.locks_dir().display()
            ));
        }
    };
    let Some(st) = storage_for(ctx, &applied.desired, &policy.storage) else {
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
    // Transient failures (server unreachable or restarting, lock timeouts)
    // are retried with exponential backoff and jitter, each attempt into a
    // fresh artifact after the previous attempt's partial data is removed.
    let mut attempt = 1;
    let result = loop {
        let result = take_backup(
            ctx,
            applied,
            policy,
            st.clone(),
            &id,
            trigger,
            release,
            requested_by,
            started_at,
        )
        .await;
        match result {
            Err(f) if f.transient && attempt < BACKUP_ATTEMPTS && !*ctx.hard_stop.borrow() => {
                let (st2, p, i) = (st.clone(), policy.name.clone(), id.clone());
                let _ = blocking(move || st2.remove(&p, &i)).await;
                let wait = retry_delay(attempt);
                tracing::warn!(backup = %id, attempt, kind = f.kind, "transient failure, retrying in {:.1}s: {}", wait.as_secs_f64(), f.message);
                let mut stop = ctx.hard_stop.clone();
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = async { let _ = stop.wait_for(|s| *s).await; } => break Err(f),
                }
                attempt += 1;
            }
            Err(mut f) => {
                if attempt > 1 {
                    f.message = format!("{} (attempt {attempt} of {BACKUP_ATTEMPTS})", f.message);
                }
                break Err(f);
            }
            ok => break ok,
        }
    };
    let now = Utc::now();
    match result {
        Ok(manifest) => {
            ctx.catalog
                .upsert_backup(&manifest, Health::Verified, Some(now))
                .await
                .map_err(|e| e.to_string())?;
            ctx.catalog
                .finish_run(run_id, RunOutcome::Succeeded, None, now)
                .await
                .map_err(|e| e.to_string())?;
            if let (Trigger::Release, Some(tag)) = (trigger, release) {
                ctx.catalog
                    .mark_release(&policy.name, tag, "done", Some(&id), now)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            let msg = format!(
                "backup {} of {} ({trigger}) stored on {}: {} bytes, {}",
                id, policy.name, policy.storage, manifest.artifact.size, manifest.artifact.checksum
            );
            ctx.catalog
                .audit(
                    now,
                    AuditKind::BackupSucceeded,
                    Some(&policy.name),
                    requested_by.unwrap_or(&ctx.actor),
                    &msg,
                )
                .await
                .map_err(|e| format!("{msg}; but its audit entry could not be written: {e}"))?;
            tracing::info!(backup = %id, size = manifest.artifact.size, seconds = (now - started_at).num_milliseconds() as f64 / 1000.0, "backup stored and verified");
            Ok(BackupRecord {
                id,
                policy: policy.name.clone(),
                storage: policy.storage.clone(),
                trigger,
                release: release.map(str::to_string),
                started_at,
                finished_at: manifest.finished_at,
                size: manifest.artifact.size,
                checksum: manifest.artifact.checksum,
                health: Health::Verified,
                pinned: None,
                pin_unknown: None,
            })
        }
        Err(Failure { kind, message, .. }) => {
            let (p, i) = (policy.name.clone(), id.clone());
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
            // The run already failed; a failed bookkeeping write is added to
            // the error the caller sees (and logs) rather than dropped.
            if let Err(e) = ctx
                .catalog
                .finish_run(run_id, RunOutcome::Failed, Some((kind, &message)), now)
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
                    requested_by.unwrap_or(&ctx.actor),
                    &msg,
                )
                .await
            {
                msg.push_str(&format!("; and its audit entry could not be written: {e}"));
            }
            tracing::error!(backup = %id, kind, "{msg}");
            Err(msg)
        }
    }
}

/// Attempts of one backup run when failures are transient.
const BACKUP_ATTEMPTS: u32 = 3;

/// Backoff before retry `attempt` (1-based): 1 s, 2 s, ... times a random
/// factor in [0.5, 1.5) so that policies failing together spread out.
fn retry_delay(attempt: u32) -> std::time::Duration {
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let jitter = 0.5 + (random % 1000) as f64 / 1000.0;
    std::time::Duration::from_secs_f64(2f64.powi(attempt as i32 - 1) * jitter)
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

#[allow(clippy::too_many_arguments)]
async fn take_backup(
    ctx: &Context,
    applied: &Applied,
    policy: &BackupPolicy,
    st: Arc<dyn Storage>,
    id: &str,
    trigger: Trigger,
    release: Option<&str>,
    requested_by: Option<&str>,
    started_at: DateTime<Utc>,
) -> Result<Manifest, Failure> {
    // Encrypted artifacts carry `.age` (`data.sqlite.zst.age`), as `age -d` expects.
    let recipients = applied
        .desired
        .storages
        .get(&policy.storage)
        .map(|s| s.age_recipients.clone())
        .unwrap_or_default();
    let encryption = (!recipients.is_empty()).then(|| crypt::AGE.to_string());
    let file = format!(
        "{}{}",
        executor::artifact_file(&policy.source),
        if encryption.is_some() {
            crypt::AGE_SUFFIX
        } else {
            ""
        }
    );
    let (st2, p, i, f) = (
        st.clone(),
        policy.name.clone(),
        id.to_string(),
        file.clone(),
    );
    let sink = blocking(move || st2.create(&p, &i, &f))
        .await
        .map_err(|e| ("internal", e.to_string()))?
        .map_err(|e| (e.kind(), e.to_string()))?;
    let cancel = Cancel::new();
    let writer = {
        let recipients = crypt::recipients(&recipients).map_err(|e| (e.kind(), e.to_string()))?;
        ArtifactWriter::sealed(sink, cancel.clone(), &recipients)
            .map_err(|e| ("write", e.to_string()))?
    };
    let exec_ctx = ExecContext {
        base: ctx.settings.base_dir.clone(),
        tmp_dir: ctx.settings.tmp_dir(),
        cancel: cancel.clone(),
        guard: Arc::new(PathGuard::new(&ctx.settings.permissions.protected)),
    };
    let timeout = policy
        .timeout
        .to_std()
        .unwrap_or(std::time::Duration::from_secs(3600));
    let exec = executor::backup(&policy.source, &exec_ctx, writer);
    tokio::pin!(exec);
    let mut hard_stop = ctx.hard_stop.clone();
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
    };
    let (writer, produced) = produced.map_err(|e| Failure {
        kind: e.kind(),
        message: e.to_string(),
        transient: e.is_transient(),
    })?;
    let written = blocking(move || {
        let (sink, written) = writer.finish()?;
        sink.finish().map_err(std::io::Error::other)?;
        Ok::<_, std::io::Error>(written)
    })
    .await
    .map_err(|e| ("internal", e.to_string()))?
    .map_err(|e| ("write", e.to_string()))?;
    let finished_at = Utc::now();
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        id: id.to_string(),
        policy: policy.name.clone(),
        storage: policy.storage.clone(),
        source_kind: policy.source.kind().to_string(),
        trigger,
        release: release.map(str::to_string),
        commit: Some(applied.revision.commit.clone()),
        requested_by: requested_by.map(str::to_string),
        started_at,
        finished_at,
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
    };
    // Read the stored bytes back: a backup is complete only once verified.
    let (st2, m2) = (st.clone(), manifest.clone());
    let verified = blocking(move || {
        let reader = st2.open(&m2)?;
        checksum_of(reader).map_err(|e| StorageError::Io {
            storage: st2.name().to_string(),
            op: "read back",
            path: m2.artifact.file.clone().into(),
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
    let (st2, m2) = (st, manifest.clone());
    blocking(move || st2.commit(&m2))
        .await
        .map_err(|e| ("internal", e.to_string()))?
        .map_err(|e| (e.kind(), e.to_string()))?;
    Ok(manifest)
}

async fn run_delete(
    ctx: &Context,
    desired: &DesiredState,
    policy: &str,
    storage_name: &str,
    id: &str,
    reason: &str,
) -> Result<(), String> {
    let Some(st) = storage_for(ctx, desired, storage_name) else {
        return Err(format!(
            "storage {storage_name} is not declared; backup {id} stays"
        ));
    };
    let (p, i) = (policy.to_string(), id.to_string());
    let now = Utc::now();
    match blocking(move || st.remove(&p, &i)).await {
        Ok(Ok(())) => {
            ctx.catalog
                .mark_deleted(id, now)
                .await
                .map_err(|e| e.to_string())?;
            let msg = format!("deleted backup {policy}/{id}: {reason}");
            ctx.catalog
                .audit(now, AuditKind::BackupPruned, Some(policy), &ctx.actor, &msg)
                .await
                .map_err(|e| format!("{msg}; but its audit entry could not be written: {e}"))?;
            tracing::info!(policy, backup = id, reason, "backup pruned");
            Ok(())
        }
        Ok(Err(e)) => {
            let mut msg = format!("delete of {policy}/{id} failed, it stays tracked: {e}");
            if let Err(e) = ctx
                .catalog
                .audit(now, AuditKind::PruneFailed, Some(policy), &ctx.actor, &msg)
                .await
            {
                msg.push_str(&format!("; and its audit entry could not be written: {e}"));
            }
            Err(msg)
        }
        Err(e) => Err(format!("delete of {policy}/{id} failed: {e}")),
    }
}

// ---- one cycle -------------------------------------------------------------

/// What one pass of observe -> plan -> execute did.
#[derive(Debug, Clone, Serialize)]
pub struct CycleReport {
    pub now: DateTime<Utc>,
    pub plan: Plan,
    pub observe: ObserveReport,
    pub outcomes: Vec<Outcome>,
    /// Drills run in this cycle: the outcome, or (policy, why it could not run).
    pub drills: Vec<Result<crate::drill::DrillOutcome, (String, String)>>,
}

/// Observe, plan and (unless `dry_run`) execute the actions in `scope`.
pub async fn cycle(
    ctx: &Context,
    state: &RepoState,
    requests: Vec<BackupRequest>,
    scope: Scope,
    dry_run: bool,
) -> Result<CycleReport, ReconcileError> {
    cycle_with(ctx, state, requests, Vec::new(), scope, dry_run).await
}

/// `cycle` with explicit drill requests (`safepoint drill`).
pub async fn cycle_with(
    ctx: &Context,
    state: &RepoState,
    requests: Vec<BackupRequest>,
    drill_requests: Vec<DrillRequest>,
    scope: Scope,
    dry_run: bool,
) -> Result<CycleReport, ReconcileError> {
    let desired = state.desired()?;
    let applied = state
        .applied
        .as_ref()
        .ok_or_else(|| ReconcileError::NoValidRevision(String::new()))?;
    let now = Utc::now();
    let mut requests = requests;
    requests.extend(release_requests(ctx, desired, now).await?);
    if !dry_run && let Err(e) = crate::drill::collect_leftovers(ctx, applied).await {
        tracing::error!(error = %e, "cannot clean up after interrupted drills");
    }
    let (observed, observe) = observe(ctx, desired, requests, drill_requests, now).await?;
    let plan = plan::plan(desired, &observed, now, &ctx.settings.plan);
    let (outcomes, drills) = if dry_run {
        (Vec::new(), Vec::new())
    } else {
        let outcomes = execute(ctx, applied, &plan, &scope).await;
        let mut drills = Vec::new();
        for d in plan.drills.iter().filter(|d| scope.includes_drill(d)) {
            let Some(policy) = desired.policies.get(&d.policy) else {
                continue;
            };
            let by = match &d.reason {
                plan::Reason::Requested { by } => Some(by.as_str()),
                _ => None,
            };
            let span = tracing::info_span!("drill", policy = %d.policy, backup = %d.backup_id);
            drills.push(
                crate::drill::run(ctx, applied, policy, &d.backup_id, by)
                    .instrument(span)
                    .await
                    .map_err(|e| (d.policy.clone(), e)),
            );
        }
        (outcomes, drills)
    };
    Ok(CycleReport {
        now,
        plan,
        observe,
        outcomes,
        drills,
    })
}

/// The catalog's backups grouped per policy, newest first (the catalog
/// query orders them), as `ObservedState::backups` wants them.
async fn backups_by_policy(
    ctx: &Context,
) -> Result<BTreeMap<String, Vec<BackupRecord>>, ReconcileError> {
    let mut backups: BTreeMap<String, Vec<BackupRecord>> = BTreeMap::new();
    for row in ctx.catalog.backups().await? {
        backups
            .entry(row.record.policy.clone())
            .or_default()
            .push(row.record);
    }
    Ok(backups)
}

/// When the current state next needs attention (next cron slot, RPO
/// deadline, retry), from a fresh read-only plan.
pub async fn next_wakeup(
    ctx: &Context,
    state: &RepoState,
) -> Result<Option<DateTime<Utc>>, ReconcileError> {
    let desired = state.desired()?;
    let now = Utc::now();
    let backups = backups_by_policy(ctx).await?;
    let observed = ObservedState {
        backups,
        failures: ctx.catalog.failures().await?,
        drills: ctx.catalog.drill_history().await?,
        ..ObservedState::default()
    }
    .indexed();
    Ok(plan::plan(desired, &observed, now, &ctx.settings.plan).next_wakeup)
}

/// A backup request for every tag matching a policy's `releases.tagPattern`
/// that has not been handled yet. The first time a policy's pattern is seen,
/// the tags that already exist are recorded as baseline (no backup), so adding
/// a policy to a repository with 200 old tags does not take 200 backups.
pub async fn release_requests(
    ctx: &Context,
    desired: &DesiredState,
    now: DateTime<Utc>,
) -> Result<Vec<BackupRequest>, ReconcileError> {
    let with_pattern: Vec<&BackupPolicy> = desired
        .policies
        .values()
        .filter(|p| p.release_tag_pattern.is_some())
        .collect();
    if with_pattern.is_empty() {
        return Ok(Vec::new());
    }
    let cfg = ctx.settings.repo.clone();
    let tags = blocking(move || git::tags(&cfg)).await??;
    let mut requests = Vec::new();
    for policy in with_pattern {
        let Some(pattern) = policy
            .release_tag_pattern
            .as_deref()
            .and_then(|p| glob::Pattern::new(p).ok())
        else {
            continue;
        };
        let matching: Vec<&String> = tags.iter().filter(|t| pattern.matches(t)).collect();
        if ctx.catalog.arm_releases(&policy.name, now).await? {
            for tag in &matching {
                ctx.catalog
                    .mark_release(&policy.name, tag, "existing", None, now)
                    .await?;
            }
            continue;
        }
        let handled = ctx.catalog.handled_releases(&policy.name).await?;
        for tag in matching {
            if !handled.contains(tag) {
                requests.push(BackupRequest {
                    policy: policy.name.clone(),
                    trigger: Trigger::Release,
                    release: Some(tag.clone()),
                    requested_by: format!("git tag {tag}"),
                });
            }
        }
    }
    Ok(requests)
}
