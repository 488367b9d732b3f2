//! Engine: execute — run a plan's actions in a caller's scope: per policy,
//! backups first, then deletions only when every backup of that policy
//! succeeded; policies run concurrently up to `settings.concurrency`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::engine::backup::{BackupRun, run_backup};
use crate::engine::context::{Applied, Context};
use crate::engine::prune::run_delete;
use crate::model::{ActionKind, Outcome};
use crate::observed::{BackupRequest, Trigger};
use crate::plan::{self, Action, Plan};

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
    let mut per_policy = actions_per_policy(plan, scope);
    // Several replicas: only a policy's lease holder acts on it. Scheduled
    // work of other policies is their holders'; requested work reaches the
    // holder as a job, and fails clearly here if the lease moved meanwhile.
    per_policy.retain(|policy, _| ctx.leases.holds(policy) || matches!(scope, Scope::Requests(_)));
    let semaphore = Arc::new(Semaphore::new(ctx.settings.concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    // One shared copy: a clone of the whole desired state per task made
    // memory grow with policies² (2,000 policies: 2.6 GB).
    let applied = Arc::new(applied.clone());
    let mut outcomes = Vec::new();
    // A task is spawned only once it holds its permit: a waiting task is a
    // policy's whole backup future (tens of KB), so spawning all of them up
    // front made memory grow with the estate instead of `--concurrency`.
    for actions in per_policy.into_values() {
        let Ok(permit) = semaphore.clone().acquire_owned().await else {
            break;
        };
        while let Some(done) = tasks.try_join_next() {
            collect(&mut outcomes, done);
        }
        let ctx = ctx.clone();
        let applied = applied.clone();
        tasks.spawn(async move {
            let _permit = permit;
            execute_policy(&ctx, &applied, actions).await
        });
    }
    while let Some(done) = tasks.join_next().await {
        collect(&mut outcomes, done);
    }
    outcomes.sort_by(|a, b| (&a.policy, &a.action).cmp(&(&b.policy, &b.action)));
    outcomes
}

/// Adds a finished policy task's outcomes (or its panic, as an internal
/// failure) to `outcomes`.
fn collect(outcomes: &mut Vec<Outcome>, done: Result<Vec<Outcome>, tokio::task::JoinError>) {
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
            retries: 0,
            detail: e.to_string(),
        }),
    }
}

/// The actions in `scope`, grouped per policy in plan order. Deletions were
/// computed counting the backups planned before them; when such a backup is
/// outside the scope, its policy's deletions wait too.
fn actions_per_policy(plan: &Plan, scope: &Scope) -> BTreeMap<String, Vec<Action>> {
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
    per_policy
}

/// One policy's actions in order; a failed backup skips the deletions after it.
async fn execute_policy(ctx: &Context, applied: &Applied, actions: Vec<Action>) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    let mut backups_ok = true;
    for action in actions {
        let outcome = match action {
            Action::Backup {
                policy,
                trigger,
                release,
                reason,
            } => {
                let o = backup(ctx, applied, policy, trigger, release, reason).await;
                backups_ok &= o.ok;
                o
            }
            Action::Delete {
                policy, backup_id, ..
            } if !backups_ok => Outcome {
                policy,
                action: ActionKind::Delete,
                backup_id: Some(backup_id),
                trigger: None,
                release: None,
                ok: false,
                seconds: 0.0,
                retries: 0,
                detail:
                    "skipped: the backup planned before it failed, so retention must be recomputed"
                        .into(),
            },
            Action::Delete {
                policy,
                storage,
                backup_id,
                reason,
            } => {
                delete(
                    ctx,
                    applied,
                    policy,
                    &storage,
                    backup_id,
                    reason.to_string(),
                )
                .await
            }
        };
        outcomes.push(outcome);
    }
    outcomes
}

/// Runs one planned backup and describes its outcome.
async fn backup(
    ctx: &Context,
    applied: &Applied,
    policy: String,
    trigger: Trigger,
    release: Option<String>,
    reason: plan::Reason,
) -> Outcome {
    let by = match &reason {
        plan::Reason::Requested { by } => Some(by.clone()),
        _ => None,
    };
    let span = tracing::info_span!("backup", policy = %policy, trigger = %trigger);
    let started = std::time::Instant::now();
    let run = match applied.desired.policies.get(&policy) {
        Some(p) => {
            run_backup(ctx, applied, p, trigger, release.as_deref(), by.as_deref())
                .instrument(span)
                .await
        }
        None => BackupRun {
            result: Err(format!("policy {policy} is not in the applied revision")),
            retries: 0,
        },
    };
    let retried = match run.retries {
        0 => String::new(),
        1 => ", after 1 retried attempt".to_string(),
        n => format!(", after {n} retried attempts"),
    };
    let (ok, backup_id, detail) = match run.result {
        Ok(record) => (
            true,
            Some(record.id),
            format!(
                "{} bytes stored, checksum verified{retried} ({reason})",
                record.size
            ),
        ),
        Err(detail) => (false, None, detail),
    };
    Outcome {
        policy,
        action: ActionKind::Backup,
        backup_id,
        trigger: Some(trigger),
        release,
        ok,
        seconds: started.elapsed().as_secs_f64(),
        detail,
        retries: run.retries,
    }
}

/// Runs one planned deletion and describes its outcome.
async fn delete(
    ctx: &Context,
    applied: &Applied,
    policy: String,
    storage: &str,
    backup_id: String,
    reason: String,
) -> Outcome {
    let started = std::time::Instant::now();
    let result = run_delete(ctx, &applied.desired, &policy, storage, &backup_id, &reason).await;
    Outcome {
        policy,
        action: ActionKind::Delete,
        backup_id: Some(backup_id),
        trigger: None,
        release: None,
        ok: result.is_ok(),
        seconds: started.elapsed().as_secs_f64(),
        retries: 0,
        detail: result.err().unwrap_or(reason),
    }
}
