//! App: API jobs across replicas. A job for policies this replica does not
//! hold becomes one catalog job row per policy (the job narrowed to that
//! policy); each row is claimed by the policy's lease holder (`claim_loop`),
//! run through the holder's requested lane like any local job, and answered
//! in the row. The replica the caller talks to polls its rows, merges the
//! answers into one and answers the caller. A holder that dies mid-job loses
//! its lease; the next holder claims the row again and runs it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use super::{Job, JobAnswer, JobError, JobKind, JobResult, JobState};
use crate::deploy::{DeployReport, Selection};
use crate::engine::context::Context;
use crate::model::{DrillOutcome, Outcome};

/// How often rows are looked at, on both ends: bounds the latency a
/// forwarded gate adds (about two polls).
pub const POLL: Duration = Duration::from_millis(100);

/// A job's answer as a row holds it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Wire {
    Deploy(DeployReport),
    Backups(Vec<Outcome>),
    Drill(DrillOutcome),
    Error(JobError),
}

fn to_wire(answer: JobAnswer) -> Wire {
    match answer {
        Ok(JobResult::Deploy(r)) => Wire::Deploy(r),
        Ok(JobResult::Backups(o)) => Wire::Backups(o),
        Ok(JobResult::Drill(d)) => Wire::Drill(d),
        Err(e) => Wire::Error(e),
    }
}

fn from_wire(wire: Wire) -> JobAnswer {
    match wire {
        Wire::Deploy(r) => Ok(JobResult::Deploy(r)),
        Wire::Backups(o) => Ok(JobResult::Backups(o)),
        Wire::Drill(d) => Ok(JobResult::Drill(d)),
        Wire::Error(e) => Err(e),
    }
}

/// `kind` for `policy` alone.
fn narrowed(kind: &JobKind, policy: &str) -> JobKind {
    let only = Selection {
        policies: vec![policy.to_string()],
        selectors: Vec::new(),
    };
    match kind {
        JobKind::DeployStart { release, .. } => JobKind::DeployStart {
            release: release.clone(),
            selection: only,
        },
        JobKind::DeployFinish {
            release, success, ..
        } => JobKind::DeployFinish {
            release: release.clone(),
            success: *success,
            selection: only,
        },
        other => other.clone(),
    }
}

/// One answer from the answers of the job's policies (in policy order): a
/// deploy's steps together, ok when all are; the backups together; an
/// error of any policy is the answer, naming the policy.
fn merge(kind: &JobKind, answers: BTreeMap<String, JobAnswer>) -> JobAnswer {
    let mut steps = Vec::new();
    let mut outcomes = Vec::new();
    let mut drill = None;
    for (policy, answer) in answers {
        match answer {
            Ok(JobResult::Deploy(r)) => steps.extend(r.steps),
            Ok(JobResult::Backups(o)) => outcomes.extend(o),
            Ok(JobResult::Drill(d)) => drill = Some(d),
            Err(JobError::NotFound(m)) => return Err(JobError::NotFound(m)),
            Err(JobError::Failed(m)) => return Err(JobError::Failed(format!("{policy}: {m}"))),
            Err(e) => return Err(e),
        }
    }
    match kind {
        JobKind::DeployStart { release, .. } | JobKind::DeployFinish { release, .. } => {
            steps.sort_by(|a, b| a.policy.cmp(&b.policy));
            Ok(JobResult::Deploy(DeployReport {
                release: release.clone(),
                ok: steps.iter().all(|s| s.ok),
                steps,
            }))
        }
        JobKind::Backup { .. } => Ok(JobResult::Backups(outcomes)),
        JobKind::Drill { .. } => drill.map(JobResult::Drill).ok_or(JobError::NothingToDrill),
    }
}

/// Sends `job` (concerning `policies`) to their lease holders as job rows,
/// waits for every answer and answers the job with their merge.
pub(super) async fn forward(ctx: Context, job: Job, policies: Vec<String>) {
    let kind_of = |p: &str| serde_json::to_string(&narrowed(&job.kind, p));
    let mut pending = BTreeMap::new();
    for policy in policies {
        let queued = match kind_of(&policy) {
            Ok(kind) => ctx
                .catalog
                .queue_job(&policy, &kind, &job.caller)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match queued {
            Ok(id) => {
                pending.insert(id, policy);
            }
            Err(e) => {
                withdraw(&ctx, pending.keys().copied()).await;
                let why = format!("cannot hand the job to the replica holding {policy}: {e}");
                return job.answer(Err(JobError::Failed(why)));
            }
        }
    }
    job.waiting(&format!(
        "handed to the replicas holding {} (jobs {})",
        pending.values().cloned().collect::<Vec<_>>().join(", "),
        pending
            .keys()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let mut answers = BTreeMap::new();
    let mut stop = ctx.hard_stop.clone();
    while !pending.is_empty() {
        for (id, policy) in pending.clone() {
            let Ok(Some((answer, by))) = ctx.catalog.job_answer(id).await else {
                continue;
            };
            let answer = serde_json::from_str::<Wire>(&answer)
                .map(from_wire)
                .unwrap_or_else(|e| {
                    Err(JobError::Failed(format!(
                        "replica {by} answered job {id} in a form this replica cannot read ({e}); are all replicas the same version?"
                    )))
                });
            job.note(
                &format!("replica {by} answered for {policy}"),
                JobState::Running,
            );
            answers.insert(policy, answer);
            pending.remove(&id);
        }
        let stopped = tokio::select! {
            _ = tokio::time::sleep(POLL) => false,
            _ = async {
                if stop.wait_for(|s| *s).await.is_err() {
                    std::future::pending::<()>().await;
                }
            } => true,
        };
        if stopped {
            withdraw(&ctx, pending.keys().copied()).await;
            return job.answer(Err(JobError::ShuttingDown));
        }
    }
    let answer = merge(&job.kind, answers);
    job.answer(answer);
}

/// Withdraws rows nobody claimed yet (the caller's job ended without them).
async fn withdraw(ctx: &Context, ids: impl Iterator<Item = i64>) {
    for id in ids {
        if let Err(e) = ctx.catalog.withdraw_job(id).await {
            tracing::warn!(job = id, error = %e, "cannot withdraw a forwarded job");
        }
    }
}

/// Claims the job rows of the policies this replica holds and runs each
/// through the requested lane (`lane`), writing its answer back to the
/// row, until `quit` is set.
pub(crate) async fn claim_loop(
    ctx: Context,
    lane: mpsc::Sender<Job>,
    mut quit: watch::Receiver<bool>,
) {
    let Some(me) = ctx.leases.replica().map(str::to_string) else {
        return;
    };
    // Rows this process runs now; a row claimed under this replica's id
    // but not running here was claimed by an earlier run of this replica.
    let running: Running = Default::default();
    while !*quit.borrow() {
        match ctx.catalog.open_jobs().await {
            Ok(rows) => {
                for row in rows {
                    let ours = row.claimed_by.as_deref() == Some(me.as_str());
                    let here = running.lock().is_ok_and(|r| r.contains(&row.id));
                    if here || !ctx.leases.holds(&row.policy) {
                        continue;
                    }
                    let claimed = if ours {
                        Ok(true)
                    } else {
                        ctx.catalog.claim_job(row.id, &me).await
                    };
                    match claimed {
                        Ok(true) => run_claimed(&ctx, &lane, &me, row, &running).await,
                        Ok(false) => {}
                        Err(e) => {
                            tracing::warn!(job = row.id, error = %e, "cannot claim a forwarded job")
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read forwarded jobs from the catalog"),
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = quit.wait_for(|q| *q) => {}
        }
    }
}

type Running = std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<i64>>>;

/// Runs a claimed row as a local job; its answer goes back to the row.
async fn run_claimed(
    ctx: &Context,
    lane: &mpsc::Sender<Job>,
    me: &str,
    row: crate::catalog::JobRow,
    running: &Running,
) {
    let kind: JobKind = match serde_json::from_str(&row.kind) {
        Ok(kind) => kind,
        Err(e) => {
            let answer = Err(JobError::Failed(format!(
                "replica {me} cannot read job {} ({e}); are all replicas the same version?",
                row.id
            )));
            return write_answer(ctx, row.id, me, answer).await;
        }
    };
    tracing::info!(job = row.id, policy = %row.policy, caller = %row.caller, "running a job handed over by another replica");
    let (job, mut view) = Job::new(row.id as u64, kind, row.caller);
    if lane.send(job).await.is_err() {
        return write_answer(ctx, row.id, me, Err(JobError::ShuttingDown)).await;
    }
    let (ctx, me, running) = (ctx.clone(), me.to_string(), running.clone());
    if let Ok(mut r) = running.lock() {
        r.insert(row.id);
    }
    tokio::spawn(async move {
        let answer = match view.wait_for(|v| v.answer.is_some()).await {
            Ok(v) => v.answer.clone().unwrap_or(Err(JobError::ShuttingDown)),
            Err(_) => Err(JobError::ShuttingDown),
        };
        write_answer(&ctx, row.id, &me, answer).await;
        if let Ok(mut r) = running.lock() {
            r.remove(&row.id);
        }
    });
}

async fn write_answer(ctx: &Context, id: i64, me: &str, answer: JobAnswer) {
    let text = serde_json::to_string(&to_wire(answer))
        .unwrap_or_else(|e| format!(r#"{{"error":{{"error":"failed","message":"{e}"}}}}"#));
    match ctx.catalog.answer_job(id, me, &text).await {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            job = id,
            "the forwarded job was claimed by another replica meanwhile; its answer stands"
        ),
        Err(e) => {
            tracing::error!(job = id, error = %e, "cannot write the answer of a forwarded job; the caller's replica keeps waiting, the next holder runs it again")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::Step;

    fn step(policy: &str, ok: bool) -> Step {
        Step {
            policy: policy.into(),
            action: "pre-deploy snapshot".into(),
            ok,
            backup_id: Some(format!("{policy}-1")),
            detail: "stored".into(),
            restore_command: None,
        }
    }

    fn deploy(steps: Vec<Step>) -> JobAnswer {
        Ok(JobResult::Deploy(DeployReport {
            release: "v1".into(),
            ok: steps.iter().all(|s| s.ok),
            steps,
        }))
    }

    #[test]
    fn answers_travel_through_the_wire_form_unchanged() {
        for answer in [
            deploy(vec![step("orders", true)]),
            Err(JobError::NotFound("policy x".into())),
            Err(JobError::NothingToDrill),
        ] {
            let text = serde_json::to_string(&to_wire(answer.clone())).unwrap();
            let back = from_wire(serde_json::from_str(&text).unwrap());
            assert_eq!(format!("{back:?}"), format!("{answer:?}"));
        }
        let kind = JobKind::DeployFinish {
            release: "v1".into(),
            success: false,
            selection: Selection::default(),
        };
        let text = serde_json::to_string(&narrowed(&kind, "orders")).unwrap();
        let back: JobKind = serde_json::from_str(&text).unwrap();
        assert_eq!(
            back,
            JobKind::DeployFinish {
                release: "v1".into(),
                success: false,
                selection: Selection {
                    policies: vec!["orders".into()],
                    selectors: Vec::new()
                }
            }
        );
    }

    #[test]
    fn a_deploy_answered_by_several_replicas_is_one_report_ok_only_when_all_are() {
        let kind = JobKind::DeployStart {
            release: "v1".into(),
            selection: Selection::default(),
        };
        let mut answers = BTreeMap::new();
        answers.insert("orders".to_string(), deploy(vec![step("orders", true)]));
        answers.insert("billing".to_string(), deploy(vec![step("billing", false)]));
        let Ok(JobResult::Deploy(report)) = merge(&kind, answers.clone()) else {
            panic!("a deploy report");
        };
        assert!(!report.ok);
        let names: Vec<&str> = report.steps.iter().map(|s| s.policy.as_str()).collect();
        assert_eq!(names, ["billing", "orders"]);
        answers.insert(
            "billing".to_string(),
            Err(JobError::Failed("storage unreachable".into())),
        );
        assert_eq!(
            merge(&kind, answers).unwrap_err(),
            JobError::Failed("billing: storage unreachable".into())
        );
    }
}
