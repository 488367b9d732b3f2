//! Engine: one cycle — release tags → observe → plan → execute the actions
//! in a caller's scope → run the due drills. The daemon's two lanes, the API's
//! jobs, deploys and every CLI command that acts go through `cycle`; nothing
//! else executes actions.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tracing::Instrument;

use crate::engine::context::{Applied, Context, ReconcileError, RepoState};
use crate::engine::execute::{Scope, execute};
use crate::engine::observe::{ObserveReport, backups_by_policy, observe};
use crate::engine::releases::release_requests;
use crate::model::{DrillOutcome, Outcome};
use crate::observed::{BackupRequest, DrillRequest, ObservedState};
use crate::plan::{self, Plan};

/// What one pass of observe -> plan -> execute did.
#[derive(Debug, Clone, Serialize)]
pub struct CycleReport {
    pub now: DateTime<Utc>,
    pub plan: Plan,
    pub observe: ObserveReport,
    pub outcomes: Vec<Outcome>,
    /// Drills run in this cycle: the outcome, or (policy, why it could not run).
    pub drills: Vec<Result<DrillOutcome, (String, String)>>,
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
        wal_retention(ctx, desired, &scope, &outcomes, &observed).await;
        (outcomes, run_drills(ctx, applied, &plan, &scope).await)
    };
    Ok(CycleReport {
        now,
        plan,
        observe,
        outcomes,
        drills,
    })
}

/// WAL retention of PITR policies beyond the deletions' own: `prune`
/// (`Scope::Deletions`) checks every PITR policy; other cycles the policies
/// that just took a base backup (the first one makes the WAL archived
/// before it unneeded). Failures are logged and audited by `pitr_prune`.
async fn wal_retention(
    ctx: &Context,
    desired: &crate::policy::DesiredState,
    scope: &Scope,
    outcomes: &[Outcome],
    observed: &ObservedState,
) {
    let backed_up: Vec<String> = outcomes
        .iter()
        .filter(|o| o.ok && o.action == crate::model::ActionKind::Backup)
        .map(|o| o.policy.clone())
        .collect();
    let which = match scope {
        Scope::Deletions => None,
        _ if backed_up.is_empty() => return,
        _ => Some(backed_up.as_slice()),
    };
    let incomplete = &observed.incomplete_storages;
    crate::engine::pitr_prune::retain(ctx, desired, which, incomplete).await;
}

/// Runs the plan's drills in `scope`, one after the other.
async fn run_drills(
    ctx: &Context,
    applied: &Applied,
    plan: &Plan,
    scope: &Scope,
) -> Vec<Result<DrillOutcome, (String, String)>> {
    let mut drills = Vec::new();
    // Several replicas: scheduled drills are their policy's lease holder's.
    let ours = |d: &&plan::Drill| ctx.leases.holds(&d.policy) || matches!(scope, Scope::Drills(_));
    for d in plan
        .drills
        .iter()
        .filter(|d| scope.includes_drill(d))
        .filter(ours)
    {
        let Some(policy) = applied.desired.policies.get(&d.policy) else {
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
    drills
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
