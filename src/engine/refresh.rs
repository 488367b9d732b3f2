//! Engine: refresh — the desired state from Git. Fetches (remote) and reads
//! the tracked branch; a new head commit is validated, previewed against the
//! revision in force (the deletion guard) and applied, or recorded as
//! rejected with its diagnostics while the last valid revision stays.

use chrono::{DateTime, Utc};

use crate::catalog::RevisionRecord;
use crate::engine::context::{Applied, Context, ReconcileError, RepoState, blocking};
use crate::git::{self, GitError};
use crate::model::AuditKind;
use crate::policy::{self, DesiredState};

/// Fetches (remote) and reads the tracked branch; applies the head commit if
/// it is new and valid, records it as rejected otherwise. Returns true when
/// a new revision was applied.
pub async fn refresh(ctx: &Context, state: &mut RepoState) -> Result<bool, ReconcileError> {
    let cfg = ctx.settings.repo.clone();
    blocking(move || git::sync(&cfg)).await??;
    if !ctx.leases.is_coordinator() {
        return follow(ctx, state).await;
    }
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

/// Several replicas: the coordinator validates and applies each new
/// revision (once: one record, one audit entry, one alert for a bad commit);
/// every other replica acts on the revision the catalog says is applied.
/// Returns true when that revision changed.
async fn follow(ctx: &Context, state: &mut RepoState) -> Result<bool, ReconcileError> {
    state.attempted = ctx.catalog.last_attempted().await?;
    let Some(applied) = ctx.catalog.last_applied().await? else {
        return Ok(false);
    };
    if state
        .applied
        .as_ref()
        .is_some_and(|a| a.revision.commit == applied.commit)
    {
        return Ok(false);
    }
    let (cfg, commit) = (ctx.settings.repo.clone(), applied.commit.clone());
    let (revision, files) = blocking(move || git::read(&cfg, &commit)).await??;
    match policy::load_permitted(&files, &ctx.settings.permissions) {
        Ok(desired) => {
            tracing::info!(commit = %applied.commit, policies = desired.policies.len(), "following the revision the coordinator applied");
            state.applied = Some(Applied { revision, desired });
            Ok(true)
        }
        Err(diags) => {
            // The coordinator accepted it: this replica's permissions file
            // differs. Keep acting on the last revision it could load.
            tracing::error!(commit = %applied.commit, "the applied revision does not pass this replica's permissions (is --permissions the same on every replica?): {}", diags.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "));
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
