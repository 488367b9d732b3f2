//! Deploy integration: the pre-deploy gate and the deploy outcome.
//! Both turn into backup requests that go through `engine::cycle` (the one
//! execution path); this module only chooses the requests, pins, and records
//! the deploy events. Used by the CLI (and the HTTP API).

mod finish;
mod pitr_gate;

use chrono::Utc;
use serde::{Deserialize, Serialize};

use crate::catalog::DeployRecord;
use crate::engine::context::{Context, ReconcileError, RepoState};
use crate::engine::cycle::{self, CycleReport};
use crate::engine::execute::Scope;
use crate::model::Outcome;
use crate::model::{ActionKind, AuditKind};
use crate::observed::{BackupRequest, Trigger};
use crate::policy::{BackupPolicy, DesiredState};
pub use finish::{finish, finish_targets};
pub use pitr_gate::{BeforeDeploy, before_deploy};

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(transparent)]
    Reconcile(#[from] ReconcileError),
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),
    #[error("{0}")]
    NotFound(String),
}

impl DeployError {
    pub fn kind(&self) -> &'static str {
        match self {
            DeployError::Reconcile(_) => "reconcile",
            DeployError::Catalog(_) => "catalog",
            DeployError::NotFound(_) => "not-found",
        }
    }
}

/// Which policies a deploy concerns: named ones, or those whose labels match
/// every `key=value` selector; empty = decided by the deploy settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    pub policies: Vec<String>,
    pub selectors: Vec<(String, String)>,
}

impl Selection {
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty() && self.selectors.is_empty()
    }

    fn matches(&self, p: &BackupPolicy) -> bool {
        (self.policies.is_empty() || self.policies.contains(&p.name))
            && self
                .selectors
                .iter()
                .all(|(k, v)| p.labels.get(k).is_some_and(|l| l == v))
    }

    /// Selected policies, or those passing `default` when nothing is selected.
    fn pick<'a>(
        &self,
        desired: &'a DesiredState,
        default: impl Fn(&BackupPolicy) -> bool,
    ) -> Result<Vec<&'a BackupPolicy>, DeployError> {
        for name in &self.policies {
            if !desired.policies.contains_key(name) {
                let known: Vec<&str> = desired.policies.keys().map(String::as_str).collect();
                return Err(DeployError::NotFound(format!(
                    "policy {name} is not in the applied revision; known policies: {}",
                    known.join(", ")
                )));
            }
        }
        Ok(desired
            .policies
            .values()
            .filter(|p| {
                if self.is_empty() {
                    default(p)
                } else {
                    self.matches(p)
                }
            })
            .collect())
    }
}

/// The result for one policy of a deploy step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    pub policy: String,
    pub action: String,
    pub ok: bool,
    pub backup_id: Option<String>,
    pub detail: String,
    /// How to get back to the pre-deploy state.
    pub restore_command: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeployReport {
    pub release: String,
    pub ok: bool,
    pub steps: Vec<Step>,
}

pub fn restore_command(policy: &str, release: &str) -> String {
    format!("safepoint restore --policy {policy} --release {release} --pre-deploy --to <TARGET>")
}

async fn run_requests(
    ctx: &Context,
    state: &RepoState,
    requests: Vec<BackupRequest>,
) -> Result<Vec<Outcome>, DeployError> {
    if requests.is_empty() {
        return Ok(Vec::new());
    }
    let scope = Scope::answering(&requests);
    let report = cycle::cycle(ctx, state, requests.clone(), scope, false).await?;
    Ok(outcomes_for(&requests, &report))
}

/// The outcomes answering `requests` in a cycle's report. A request the
/// planner could not serve (e.g. a backup of that policy is running) is a
/// failure, with the planner's note as the reason.
pub fn outcomes_for(requests: &[BackupRequest], report: &CycleReport) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    for r in requests {
        let found = report.outcomes.iter().find(|o| {
            o.policy == r.policy
                && o.action == ActionKind::Backup
                && o.trigger == Some(r.trigger)
                && o.release == r.release
        });
        if let Some(o) = found {
            outcomes.push(o.clone());
            continue;
        }
        let why: Vec<String> = report
            .plan
            .notes
            .iter()
            .filter(|n| n.policy == r.policy)
            .map(|n| n.text.clone())
            .collect();
        outcomes.push(Outcome {
            policy: r.policy.clone(),
            action: ActionKind::Backup,
            backup_id: None,
            trigger: Some(r.trigger),
            release: r.release.clone(),
            ok: false,
            seconds: 0.0,
            retries: 0,
            detail: if why.is_empty() {
                "no backup could be started".into()
            } else {
                why.join("; ")
            },
        });
    }
    outcomes
}

/// `deploy start`: a verified pre-deploy snapshot of every selected policy
/// (default: those with `deploy.before: snapshot`); a PITR policy gets a
/// restore point in the archived WAL instead (`pitr_gate`).
pub async fn start(
    ctx: &Context,
    state: &RepoState,
    release: &str,
    selection: &Selection,
) -> Result<DeployReport, DeployError> {
    let desired = state.desired()?;
    let mut requests = start_requests(desired, release, selection, &ctx.actor)?;
    // PITR policies: a restore point instead of a snapshot.
    let gates = pitr_gate::take(desired, &mut requests);
    let (outcomes, points) = tokio::join!(
        run_requests(ctx, state, requests),
        pitr_gate::run(ctx, release, gates)
    );
    let mut report = record_start(ctx, release, outcomes?).await?;
    report.steps.extend(points?);
    report.steps.sort_by(|a, b| a.policy.cmp(&b.policy));
    report.ok = report.steps.iter().all(|s| s.ok);
    Ok(report)
}

/// The backup requests of `deploy start` (pre-deploy snapshots).
pub fn start_requests(
    desired: &DesiredState,
    release: &str,
    selection: &Selection,
    caller: &str,
) -> Result<Vec<BackupRequest>, DeployError> {
    let policies = selection.pick(desired, |p| p.deploy.snapshot_before)?;
    if policies.is_empty() {
        return Err(DeployError::NotFound(format!(
            "no policy matches {}; declare `deploy.before: snapshot` or pass --policy/--selector",
            if selection.is_empty() {
                "the deploy (none has deploy.before: snapshot)".to_string()
            } else {
                format!("{selection:?}")
            }
        )));
    }
    Ok(policies
        .iter()
        .map(|p| BackupRequest {
            policy: p.name.clone(),
            trigger: Trigger::PreDeploy,
            release: Some(release.to_string()),
            requested_by: caller.to_string(),
        })
        .collect())
}

/// Records the snapshots of `deploy start` and builds its report.
pub async fn record_start(
    ctx: &Context,
    release: &str,
    outcomes: Vec<Outcome>,
) -> Result<DeployReport, DeployError> {
    let mut steps = Vec::new();
    for o in outcomes
        .into_iter()
        .filter(|o| o.action == ActionKind::Backup)
    {
        let now = Utc::now();
        ctx.catalog
            .record_deploy(&DeployRecord {
                release: release.to_string(),
                policy: o.policy.clone(),
                phase: "start".into(),
                status: if o.ok { "ok".into() } else { "failed".into() },
                backup_id: o.backup_id.clone(),
                caller: ctx.actor.clone(),
                detail: o.detail.clone(),
                at: now,
            })
            .await?;
        let msg = format!(
            "deploy start {release}: pre-deploy snapshot {} {}",
            o.backup_id.as_deref().unwrap_or("-"),
            if o.ok {
                "stored and verified".to_string()
            } else {
                format!("FAILED: {}", o.detail)
            }
        );
        ctx.catalog
            .audit(
                now,
                AuditKind::DeployStart,
                Some(&o.policy),
                &ctx.actor,
                &msg,
            )
            .await?;
        steps.push(Step {
            restore_command: o.ok.then(|| restore_command(&o.policy, release)),
            policy: o.policy,
            action: "pre-deploy snapshot".into(),
            ok: o.ok,
            backup_id: o.backup_id,
            detail: o.detail,
        });
    }
    steps.sort_by(|a, b| a.policy.cmp(&b.policy));
    Ok(DeployReport {
        release: release.to_string(),
        ok: steps.iter().all(|s| s.ok),
        steps,
    })
}
