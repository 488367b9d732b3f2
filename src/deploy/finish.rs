//! Engine: `deploy finish` — on success the baselines; on failure, as each
//! policy's `deploy.onFailure` says, the pre-deploy snapshot pinned (catalog
//! and storage marker), a forensic snapshot, an alert (audit entry and a
//! notice in the catalog's outbox); then the finish records.

use chrono::{DateTime, Utc};

use super::{DeployError, DeployReport, Selection, Step, restore_command, run_requests};
use crate::catalog::{self, DeployRecord};
use crate::engine::context::{Context, RepoState};
use crate::model::AuditKind;
use crate::notify::alerts::{self, EventDetail};
use crate::observed::{BackupRequest, Trigger};
use crate::policy::{BackupPolicy, DesiredState, OnFailure};

/// `deploy finish`: success => baselines; failure => pin the pre-deploy
/// snapshot, forensic snapshot, alert — as each policy's `deploy` says.
pub async fn finish(
    ctx: &Context,
    state: &RepoState,
    release: &str,
    success: bool,
    selection: &Selection,
) -> Result<DeployReport, DeployError> {
    let desired = state.desired()?;
    let started = started_policies(ctx, release).await?;
    if started.is_empty() && selection.is_empty() {
        return Err(DeployError::NotFound(format!(
            "release {release} has no recorded `deploy start`; pass --policy/--selector to finish it anyway"
        )));
    }
    let policies = selection.pick(desired, |p| started.contains(&p.name))?;
    let now = Utc::now();
    let mut steps = Vec::new();
    let mut requests = Vec::new();
    for p in &policies {
        if success {
            if p.deploy.baseline_on_success {
                requests.push(request(ctx, p, Trigger::PostDeploy, release));
            }
            continue;
        }
        if p.deploy.on_failure.contains(&OnFailure::PinPreDeploy) {
            steps.push(pin_pre_deploy(ctx, desired, &p.name, release).await?);
        }
        if p.deploy.on_failure.contains(&OnFailure::ForensicSnapshot) {
            requests.push(request(ctx, p, Trigger::Forensic, release));
        }
        if p.deploy.on_failure.contains(&OnFailure::Alert) {
            steps.push(alert(ctx, desired, &p.name, release, now).await?);
        }
    }
    let action = if success {
        "baseline"
    } else {
        "forensic snapshot"
    };
    for o in run_requests(ctx, state, requests).await? {
        steps.push(Step {
            policy: o.policy,
            action: action.into(),
            ok: o.ok,
            backup_id: o.backup_id,
            detail: o.detail,
            restore_command: None,
        });
    }
    record_finish(ctx, release, success, &policies, &steps).await?;
    steps.sort_by(|a, b| a.policy.cmp(&b.policy));
    Ok(DeployReport {
        release: release.to_string(),
        ok: steps.iter().all(|s| s.ok),
        steps,
    })
}

/// The policies whose deploy of `release` started. The deploy records are
/// catalog history; a pre-deploy snapshot of the release (from its
/// manifest) also shows the deploy started, so finishing works after the
/// catalog was lost and rebuilt.
async fn started_policies(ctx: &Context, release: &str) -> Result<Vec<String>, DeployError> {
    let mut started: Vec<String> = ctx
        .catalog
        .deploys(Some(release))
        .await?
        .into_iter()
        .filter(|d| d.phase == "start")
        .map(|d| d.policy)
        .collect();
    for b in ctx.catalog.backups().await? {
        if b.record.trigger == Trigger::PreDeploy
            && b.record.release.as_deref() == Some(release)
            && !started.contains(&b.record.policy)
        {
            started.push(b.record.policy);
        }
    }
    Ok(started)
}

/// The policies a `deploy finish` of `release` with `selection` concerns
/// (several replicas route the finish to their lease holders).
pub async fn finish_targets(
    ctx: &Context,
    desired: &DesiredState,
    release: &str,
    selection: &Selection,
) -> Result<Vec<String>, DeployError> {
    let started = started_policies(ctx, release).await?;
    Ok(selection
        .pick(desired, |p| started.contains(&p.name))?
        .into_iter()
        .map(|p| p.name.clone())
        .collect())
}

/// A backup of `policy` for `release`, requested by the caller.
fn request(ctx: &Context, policy: &BackupPolicy, trigger: Trigger, release: &str) -> BackupRequest {
    BackupRequest {
        policy: policy.name.clone(),
        trigger,
        release: Some(release.to_string()),
        requested_by: ctx.actor.clone(),
    }
}

/// The alert of a failed deploy: an audit entry and one `deploy-failed`
/// notice for the policy's notifiers, queued in the catalog's outbox (sent
/// by the daemon, docs/operations.md). A notice that cannot be queued is
/// logged; the audit entry stands.
async fn alert(
    ctx: &Context,
    desired: &DesiredState,
    policy: &str,
    release: &str,
    now: DateTime<Utc>,
) -> Result<Step, DeployError> {
    let command = restore_command_of(desired, policy, release);
    let msg = format!(
        "deploy {release} FAILED for {policy}: restore the pre-deploy snapshot with `{command}`"
    );
    tracing::error!(policy, release, "{msg}");
    ctx.catalog
        .audit(now, AuditKind::Alert, Some(policy), &ctx.actor, &msg)
        .await?;
    let snapshot = pre_deploy_snapshot(ctx, desired, policy, release).await?;
    let event = EventDetail {
        detail: format!(
            "deploy of release {release} reported failure by {}",
            ctx.actor
        ),
        next: format!("restore the pre-deploy snapshot with `{command}`"),
        backups: snapshot.into_iter().map(|b| b.record.id).collect(),
        restore_command: Some(command.clone()),
    };
    let recipients = alerts::policy_recipients(desired, policy);
    let notice = alerts::event_notice(policy, "deploy-failed", event, recipients, now);
    tracing::warn!(policy, reason = %notice.reason, kind = notice.kind.as_str(), recipients = notice.recipients.len(), "alert");
    // Any process may queue; the daemon delivers it: at once when it queued
    // it itself (the outbox bell), within `--outbox-poll` otherwise.
    let queued = match catalog::outbox_rows(&notice, true) {
        Ok(rows) => ctx
            .catalog
            .queue_notifications(&rows, now)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(format!("cannot encode the webhook payload: {e}")),
    };
    if let Err(e) = queued {
        tracing::error!(policy, error = %e, "cannot queue the deploy-failed alert");
    }
    Ok(Step {
        policy: policy.to_string(),
        action: "alert".into(),
        ok: true,
        backup_id: None,
        detail: msg,
        restore_command: Some(command),
    })
}

/// The `finish` record and audit entry of each policy of the deploy.
async fn record_finish(
    ctx: &Context,
    release: &str,
    success: bool,
    policies: &[&BackupPolicy],
    steps: &[Step],
) -> Result<(), DeployError> {
    let status = if success { "success" } else { "failure" };
    for p in policies {
        let backup_id = steps
            .iter()
            .find(|s| s.policy == p.name && s.backup_id.is_some())
            .and_then(|s| s.backup_id.clone());
        ctx.catalog
            .record_deploy(&DeployRecord {
                release: release.to_string(),
                policy: p.name.clone(),
                phase: "finish".into(),
                status: status.into(),
                backup_id,
                caller: ctx.actor.clone(),
                detail: String::new(),
                at: Utc::now(),
            })
            .await?;
        let done: Vec<String> = steps
            .iter()
            .filter(|s| s.policy == p.name)
            .map(|s| format!("{} {}", s.action, if s.ok { "ok" } else { "FAILED" }))
            .collect();
        let msg = format!(
            "deploy finish {release}: {status}; {}",
            if done.is_empty() {
                "nothing to do".into()
            } else {
                done.join(", ")
            }
        );
        ctx.catalog
            .audit(
                Utc::now(),
                AuditKind::DeployFinish,
                Some(&p.name),
                &ctx.actor,
                &msg,
            )
            .await?;
    }
    Ok(())
}

/// The newest verified pre-deploy snapshot of `policy` for `release`.
async fn pre_deploy_snapshot(
    ctx: &Context,
    desired: &DesiredState,
    policy: &str,
    release: &str,
) -> Result<Option<crate::catalog::BackupRow>, DeployError> {
    let rows = ctx.catalog.backups().await?;
    if !is_pitr(desired, policy) {
        return Ok(crate::engine::restore::latest_pre_deploy(&rows, policy, release).cloned());
    }
    // A PITR policy's gate took no snapshot: what restores to its restore
    // point is the newest base backup taken before the deploy started.
    let started = ctx
        .catalog
        .deploys(Some(release))
        .await?
        .into_iter()
        .filter(|d| d.phase == "start" && d.policy == policy)
        .map(|d| d.at)
        .min();
    Ok(started.and_then(|at| crate::engine::restore::latest_before(&rows, policy, at).cloned()))
}

/// True when `policy` archives WAL continuously (its gate is a restore point).
fn is_pitr(desired: &DesiredState, policy: &str) -> bool {
    desired
        .policies
        .get(policy)
        .is_some_and(|p| p.source.pitr().is_some())
}

/// How to get back to the state before `release`: the pre-deploy snapshot,
/// or for a PITR policy its restore point.
fn restore_command_of(desired: &DesiredState, policy: &str, release: &str) -> String {
    if is_pitr(desired, policy) {
        super::pitr_gate::restore_command(policy, release)
    } else {
        restore_command(policy, release)
    }
}

/// Pins the newest verified pre-deploy snapshot of `release`, in the catalog
/// and as a marker in storage (`crate::pins`), so the pin survives the loss
/// of the catalog. The step fails when there is no snapshot, or when the
/// marker could not be written (the catalog pin holds meanwhile and the next
/// observation writes the marker).
async fn pin_pre_deploy(
    ctx: &Context,
    desired: &DesiredState,
    policy: &str,
    release: &str,
) -> Result<Step, DeployError> {
    let snapshot = pre_deploy_snapshot(ctx, desired, policy, release).await?;
    let Some(snapshot) = snapshot else {
        return Ok(Step {
            policy: policy.to_string(),
            action: "pin pre-deploy snapshot".into(),
            ok: false,
            backup_id: None,
            detail: format!("no verified pre-deploy snapshot of {policy} for release {release}"),
            restore_command: None,
        });
    };
    let why = format!("failed deploy {release}");
    let pinned =
        match crate::pins::pin(ctx, desired, &snapshot.record.id, &why, Some(release)).await {
            Ok(pinned) => pinned,
            Err(crate::pins::PinError::Catalog(e)) => return Err(e.into()),
            Err(e) => {
                return Ok(Step {
                    policy: policy.to_string(),
                    action: "pin pre-deploy snapshot".into(),
                    ok: false,
                    backup_id: Some(snapshot.record.id),
                    detail: e.to_string(),
                    restore_command: Some(restore_command_of(desired, policy, release)),
                });
            }
        };
    Ok(Step {
        policy: policy.to_string(),
        action: "pin pre-deploy snapshot".into(),
        ok: pinned.marker_error.is_none(),
        backup_id: Some(snapshot.record.id),
        detail: pinned.message,
        restore_command: Some(restore_command_of(desired, policy, release)),
    })
}
