//! Engine: recovery drills. Restore a backup into a scratch target
//! with a name safepoint generates (`safepoint_drill_<policy>_<stamp>`),
//! run the named checks (checksum, restore, completeness, the user's queries,
//! recovery time), record the verdict, and always remove the scratch copy —
//! also after a crash, where a later drill removes what the dead one created
//! (recorded in the catalog before it was created), and only that.
//! A PITR policy's drill restores to a random point of its recoverable
//! window into a scratch cluster (`pitr`).

mod checks;
mod pitr;
mod scratch;
pub mod verdict;

use chrono::Utc;

use crate::catalog::CheckResult;
use crate::engine::context::{Applied, Context};
use crate::engine::restore;
use crate::lock::{self, PolicyLock};
use crate::model::AuditKind;
use crate::policy::BackupPolicy;
use scratch::scratch_for;
pub use scratch::scratch_name;

pub use crate::model::DrillOutcome;

/// Removes scratch copies of drills whose process died (policy lock free),
/// and marks those drills failed. Only names recorded in the catalog.
pub async fn collect_leftovers(ctx: &Context, applied: &Applied) -> Result<usize, String> {
    let mut removed = 0;
    for d in ctx
        .catalog
        .running_drills()
        .await
        .map_err(|e| e.to_string())?
    {
        if !ctx.leases.holds(&d.policy) {
            continue;
        }
        let Ok(Some(_held)) = lock::try_lock(&ctx.settings.locks_dir(), &d.policy) else {
            continue;
        };
        let Some(spec) = applied
            .desired
            .policies
            .get(&d.policy)
            .and_then(|p| p.drill.as_ref())
        else {
            continue;
        };
        if let Ok(scratch) = scratch_for(ctx, spec, &d.scratch) {
            scratch.remove().await?;
        }
        let check = CheckResult {
            name: "interrupted".into(),
            passed: false,
            detail: format!("the drill's process died; scratch {} removed", d.scratch),
        };
        ctx.catalog
            .finish_drill(d.id, false, None, &[check], Utc::now())
            .await
            .map_err(|e| e.to_string())?;
        removed += 1;
    }
    Ok(removed)
}

/// Runs one drill of `policy` on `backup_id`.
pub async fn run(
    ctx: &Context,
    applied: &Applied,
    policy: &BackupPolicy,
    backup_id: &str,
    requested_by: Option<&str>,
) -> Result<DrillOutcome, String> {
    let Some(spec) = &policy.drill else {
        return Err(format!(
            "policy {} declares no `drill:`; add one to run drills",
            policy.name
        ));
    };
    if policy.source.pitr().is_some() {
        // A random point of the window, from the base backup it needs.
        return pitr::run(ctx, applied, policy, spec, requested_by).await;
    }
    let _lock = lock_policy(ctx, policy).await?;
    let row = ctx
        .catalog
        .backup(backup_id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            format!(
                "no backup {backup_id}; run `safepoint list --policy {}`",
                policy.name
            )
        })?;
    let Some(st_spec) = applied.desired.storages.get(&row.manifest.storage) else {
        return Err(format!(
            "storage {} of backup {backup_id} is not declared",
            row.manifest.storage
        ));
    };
    let st = restore::open_storage(ctx, st_spec);
    let name = scratch_name(&policy.name);
    let scratch = scratch_for(ctx, spec, &name)?;
    let drill_id = ctx
        .catalog
        .start_drill(
            &policy.name,
            backup_id,
            &scratch.describe(),
            &name,
            requested_by,
            Utc::now(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let (mut checks, restore_seconds) =
        checks::checks(ctx, spec, &row.manifest, st, &scratch).await;
    if let Err(e) = scratch.remove().await {
        checks.push(CheckResult {
            name: "cleanup".into(),
            passed: false,
            detail: e,
        });
    }
    let outcome = DrillOutcome {
        policy: policy.name.clone(),
        backup_id: backup_id.to_string(),
        passed: checks.iter().all(|c| c.passed),
        scratch: name,
        restore_seconds,
        checks,
    };
    record(ctx, drill_id, &outcome, requested_by).await?;
    Ok(outcome)
}

/// The policy's lock: a drill never runs beside a backup or another drill;
/// it waits for the one running to end (each is bounded by its own
/// timeouts), as a backup waits for a drill (`lock::lock_for_backup`).
/// Failing instead answered a valid API request 500 whenever the scheduled
/// lane happened to run a backup or drill of the same policy.
async fn lock_policy(ctx: &Context, policy: &BackupPolicy) -> Result<PolicyLock, String> {
    let dir = ctx.settings.locks_dir();
    let failed = |e: std::io::Error| {
        format!(
            "cannot take the lock of {} in {}: {e}",
            policy.name,
            dir.display()
        )
    };
    loop {
        if let Some(held) = lock::try_lock(&dir, &policy.name).map_err(failed)? {
            return Ok(held);
        }
        lock::released(&dir, &policy.name, LOCK_POLL)
            .await
            .map_err(failed)?;
    }
}

/// How often a lock held by another process is checked for its release.
const LOCK_POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// Records the verdict in the catalog and the audit log.
async fn record(
    ctx: &Context,
    drill_id: i64,
    outcome: &DrillOutcome,
    requested_by: Option<&str>,
) -> Result<(), String> {
    let (passed, checks, backup_id) = (outcome.passed, &outcome.checks, &outcome.backup_id);
    let now = Utc::now();
    ctx.catalog
        .finish_drill(drill_id, passed, outcome.restore_seconds, checks, now)
        .await
        .map_err(|e| e.to_string())?;
    let summary: Vec<String> = checks
        .iter()
        .map(|c| format!("{} {}", c.name, if c.passed { "ok" } else { "FAILED" }))
        .collect();
    let msg = format!(
        "drill of backup {backup_id} {}: {}",
        if passed { "passed" } else { "FAILED" },
        summary.join(", ")
    );
    let kind = if passed {
        AuditKind::DrillPassed
    } else {
        AuditKind::DrillFailed
    };
    let actor = requested_by.unwrap_or(&ctx.actor);
    // The verdict is already recorded; without its audit entry the drill
    // still fails, so the gap is visible rather than silent.
    ctx.catalog
        .audit(now, kind, Some(&outcome.policy), actor, &msg)
        .await
        .map_err(|e| format!("{msg}; but its audit entry could not be written: {e}"))?;
    if passed {
        tracing::info!(policy = %outcome.policy, backup = %backup_id, "{msg}");
    } else {
        tracing::error!(policy = %outcome.policy, backup = %backup_id, "{msg}");
    }
    Ok(())
}
