//! App: the daemon's requested lane. Work asked for through the HTTP API
//! (deploy start/finish, manual backups, drills) becomes a job; the lane
//! runs it through `engine::cycle`, concurrently with the scheduled lane
//! and never behind it (deploy starts and manual backups that arrive
//! together share one cycle, so 100 concurrent gates cost one observation;
//! each outcome names the request it answers, so gates of one policy for
//! two releases each get their own snapshot). A job whose policy has a
//! backup running waits for that backup only, says so on the job, then
//! reuses it or queues behind it. The API serves each job's progress from
//! the `Board` and can wait for its typed answer (`JobAnswer`; `http` maps
//! it to a status code). The lane reports every cycle it ran to a
//! `CycleObserver` (the daemon's monitor), which it does not know.

mod forward;
mod job;

pub(crate) use forward::claim_loop;
pub use job::{Board, Job, JobAnswer, JobError, JobKind, JobResult, JobState, JobView};

use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::{mpsc, watch};

use crate::deploy::{self, DeployError, Selection};
use crate::engine::context::{Context, RepoState};
use crate::engine::cycle::{self, CycleReport};
use crate::engine::execute::Scope;
use crate::engine::refresh;
use crate::lock;
use crate::model::Outcome;
use crate::observed::{BackupRequest, DrillRequest, Health, Trigger};

/// Told about every cycle the requested lane ran (the daemon's monitor:
/// status, metrics, alerts).
pub(crate) trait CycleObserver {
    async fn cycle_done(&self, state: &RepoState, report: CycleReport, elapsed: Duration);
}

/// The backup requests a job asks for (deploy start, manual backup); `None`
/// for the others.
fn backup_requests(
    desired: &crate::policy::DesiredState,
    job: &Job,
) -> Option<Result<Vec<BackupRequest>, DeployError>> {
    Some(match &job.kind {
        JobKind::DeployStart { release, selection } => {
            let requests = deploy::start_requests(desired, release, selection, &job.caller);
            // A PITR policy's gate is a restore point, not a backup: such a
            // deploy runs on its own through `deploy::start` (`run_other`).
            if requests.as_ref().is_ok_and(|r| has_pitr(desired, r)) {
                return None;
            }
            requests
        }
        JobKind::Backup { policy } if desired.policies.contains_key(policy) => {
            Ok(vec![BackupRequest {
                policy: policy.clone(),
                trigger: Trigger::Manual,
                release: None,
                requested_by: job.caller.clone(),
            }])
        }
        JobKind::Backup { policy } => Err(DeployError::NotFound(format!(
            "policy {policy} is not in the applied revision"
        ))),
        _ => return None,
    })
}

/// True when one of `requests` is for a PITR policy.
fn has_pitr(desired: &crate::policy::DesiredState, requests: &[BackupRequest]) -> bool {
    requests.iter().any(|r| {
        desired
            .policies
            .get(&r.policy)
            .is_some_and(|p| p.source.pitr().is_some())
    })
}

/// Policies of a `deploy finish` that may take a backup (baseline, forensic).
async fn finish_policies(ctx: &Context, release: &str, selection: &Selection) -> Vec<String> {
    let mut policies = selection.policies.clone();
    if let Ok(rows) = ctx.catalog.deploys(Some(release)).await {
        policies.extend(
            rows.into_iter()
                .filter(|d| d.phase == "start")
                .map(|d| d.policy),
        );
    }
    policies
}

/// Several replicas: the policies of `job` when one of them is held by
/// another replica (the job then goes to their holders); `None` when this
/// replica runs it.
async fn held_elsewhere(
    ctx: &Context,
    desired: &crate::policy::DesiredState,
    job: &Job,
    policies: &[String],
) -> Option<Vec<String>> {
    ctx.leases.replica()?;
    let policies = match &job.kind {
        // The exact policies a finish concerns (selectors resolved).
        JobKind::DeployFinish {
            release, selection, ..
        } => deploy::finish_targets(ctx, desired, release, selection)
            .await
            .ok()?,
        _ => policies.to_vec(),
    };
    (!policies.is_empty() && policies.iter().any(|p| !ctx.leases.holds(p))).then_some(policies)
}

/// Jobs of one batch that can run now: those asking for backups (with
/// their requests) and the others.
#[derive(Default)]
struct Sorted {
    backups: Vec<(Job, Vec<BackupRequest>)>,
    others: Vec<Job>,
}

/// Sorts a batch: a job that cannot run is answered, one that needs a
/// policy whose backup is running is handed to `wait_behind`.
async fn sort(
    ctx: &Context,
    desired: &crate::policy::DesiredState,
    jobs: Vec<Job>,
    requeue: &mpsc::Sender<Job>,
) -> Sorted {
    let locks = ctx.settings.locks_dir();
    let mut sorted = Sorted::default();
    for job in jobs {
        let (requests, policies) = match backup_requests(desired, &job) {
            Some(Ok(mut r)) => {
                r.retain(|r| !job.reused.iter().any(|o| o.policy == r.policy));
                let policies = r.iter().map(|r| r.policy.clone()).collect();
                (Some(r), policies)
            }
            Some(Err(e)) => {
                job.answer(Err(e.into()));
                continue;
            }
            None => match &job.kind {
                JobKind::DeployFinish {
                    release, selection, ..
                } => (None, finish_policies(ctx, release, selection).await),
                JobKind::Drill { policy, .. } => (None, vec![policy.clone()]),
                JobKind::DeployStart { release, selection } => {
                    let requests = deploy::start_requests(desired, release, selection, &job.caller);
                    let policies = requests.unwrap_or_default().into_iter().map(|r| r.policy);
                    (None, policies.collect())
                }
                _ => (None, Vec::new()),
            },
        };
        if let Some(elsewhere) = held_elsewhere(ctx, desired, &job, &policies).await {
            tokio::spawn(forward::forward(ctx.clone(), job, elsewhere));
            continue;
        }
        let busy: Vec<String> = policies
            .into_iter()
            .filter(|p| lock::busy(&locks, p).unwrap_or(false))
            .collect();
        if !busy.is_empty() {
            tokio::spawn(wait_behind(ctx.clone(), job, busy, requeue.clone()));
            continue;
        }
        match requests {
            Some(r) => sorted.backups.push((job, r)),
            None => sorted.others.push(job),
        }
    }
    sorted
}

/// Runs a batch of jobs; returns the cycle reports (for metrics). A job
/// that needs a policy whose backup is running is handed to `wait_behind`,
/// which sends it back on `requeue` once that backup ended.
pub async fn run_batch(
    ctx: &Context,
    state: &RepoState,
    jobs: Vec<Job>,
    requeue: &mpsc::Sender<Job>,
) -> Vec<CycleReport> {
    let desired = match state.desired() {
        Ok(d) => d,
        Err(e) => {
            for job in jobs {
                job.answer(Err(JobError::NoRevision(e.to_string())));
            }
            return Vec::new();
        }
    };
    let sorted = sort(ctx, desired, jobs, requeue).await;
    // 1. Everything that is a backup request shares one cycle.
    let mut reports: Vec<CycleReport> = run_backups(ctx, state, sorted.backups, requeue)
        .await
        .into_iter()
        .collect();
    // 2. The others one by one.
    for job in sorted.others {
        job.note("running", JobState::Running);
        let (answer, report) = run_other(ctx, state, desired, &job).await;
        reports.extend(report);
        job.answer(answer);
    }
    reports
}

/// One cycle for the backup requests of every job in `batched`; each job is
/// answered with the outcomes of its own requests (an outcome names the
/// policy, trigger and release it answers).
async fn run_backups(
    ctx: &Context,
    state: &RepoState,
    batched: Vec<(Job, Vec<BackupRequest>)>,
    requeue: &mpsc::Sender<Job>,
) -> Option<CycleReport> {
    let all: Vec<BackupRequest> = batched.iter().flat_map(|(_, r)| r.clone()).collect();
    for (job, _) in &batched {
        job.note("taking the requested backups", JobState::Running);
    }
    let report = if all.is_empty() {
        None
    } else {
        let scope = Scope::answering(&all);
        match cycle::cycle(ctx, state, all, scope, false).await {
            Ok(report) => Some(report),
            Err(e) => {
                for (job, _) in batched {
                    job.answer(Err(JobError::Failed(e.to_string())));
                }
                return None;
            }
        }
    };
    for (job, requests) in batched {
        let outcomes = match &report {
            Some(report) => deploy::outcomes_for(&requests, report),
            None => Vec::new(),
        };
        answer_backups(ctx, job, outcomes, requeue).await;
    }
    report
}

/// Answers a job that asked for backups with `outcomes` (and what it
/// reused while waiting), unless a backup of one of its policies started
/// (in the other lane or process) since it was sorted: then it waits for
/// that one as well.
async fn answer_backups(
    ctx: &Context,
    mut job: Job,
    mut outcomes: Vec<Outcome>,
    requeue: &mpsc::Sender<Job>,
) {
    let locks = ctx.settings.locks_dir();
    let raced: Vec<String> = outcomes
        .iter()
        .filter(|o| !o.ok && !job.waited.contains_key(&o.policy))
        .filter(|o| lock::busy(&locks, &o.policy).unwrap_or(false))
        .map(|o| o.policy.clone())
        .collect();
    if !raced.is_empty() {
        job.reused.extend(outcomes.into_iter().filter(|o| o.ok));
        tokio::spawn(wait_behind(ctx.clone(), job, raced, requeue.clone()));
        return;
    }
    outcomes.append(&mut job.reused);
    for o in &mut outcomes {
        if let Some(waited) = job.waited.get(&o.policy) {
            o.detail = format!("{waited}; {}", o.detail);
        }
    }
    let answer = match &job.kind {
        JobKind::DeployStart { release, .. } => {
            let job_ctx = Context {
                actor: job.caller.clone(),
                ..ctx.clone()
            };
            deploy::record_start(&job_ctx, release, outcomes)
                .await
                .map(JobResult::Deploy)
                .map_err(JobError::from)
        }
        _ => Ok(JobResult::Backups(outcomes)),
    };
    job.answer(answer);
}

/// A `deploy finish` or a drill.
async fn run_other(
    ctx: &Context,
    state: &RepoState,
    desired: &crate::policy::DesiredState,
    job: &Job,
) -> (JobAnswer, Option<CycleReport>) {
    let job_ctx = Context {
        actor: job.caller.clone(),
        ..ctx.clone()
    };
    match &job.kind {
        JobKind::DeployFinish {
            release,
            success,
            selection,
        } => {
            let finished = deploy::finish(&job_ctx, state, release, *success, selection).await;
            (
                finished.map(JobResult::Deploy).map_err(JobError::from),
                None,
            )
        }
        JobKind::Drill { policy, backup } => {
            if desired
                .policies
                .get(policy)
                .is_none_or(|p| p.drill.is_none())
            {
                let why = format!("policy {policy} does not exist or declares no drill");
                return (Err(JobError::NotFound(why)), None);
            }
            let request = DrillRequest {
                policy: policy.clone(),
                backup_id: backup.clone(),
                requested_by: job.caller.clone(),
            };
            let scope = Scope::Drills(vec![policy.clone()]);
            match cycle::cycle_with(&job_ctx, state, Vec::new(), vec![request], scope, false).await
            {
                Ok(report) => {
                    let answer = match report.drills.first() {
                        Some(Ok(o)) => Ok(JobResult::Drill(o.clone())),
                        Some(Err((_, why))) => Err(JobError::Failed(why.clone())),
                        None => Err(JobError::NothingToDrill),
                    };
                    (answer, Some(report))
                }
                Err(e) => (Err(JobError::Failed(e.to_string())), None),
            }
        }
        // With a PITR policy: restore points and snapshots (`deploy::start`).
        JobKind::DeployStart { release, selection } => {
            let started = deploy::start(&job_ctx, state, release, selection).await;
            (started.map(JobResult::Deploy).map_err(JobError::from), None)
        }
        JobKind::Backup { .. } => (
            Err(JobError::Failed("internal: job not batched".into())),
            None,
        ),
    }
}

/// How often a backup running in another process is checked for its end
/// (one in this process wakes its waiters at once).
const OTHER_PROCESS_POLL: Duration = Duration::from_millis(250);

/// Waits for the running backups of `busy` (policies of `job`) to end, one
/// after the other, saying so on the job; then either reuses each (it
/// started after the job was requested and answers the same kind of
/// request) or queues the job behind it, and sends the job back to the lane.
async fn wait_behind(ctx: Context, mut job: Job, busy: Vec<String>, requeue: mpsc::Sender<Job>) {
    let locks = ctx.settings.locks_dir();
    for policy in busy {
        let run = match ctx.catalog.running_runs().await {
            Ok(runs) => runs.into_iter().rev().find(|r| r.policy == policy),
            Err(_) => None,
        };
        let waiting = match &run {
            Some(r) => format!(
                "waiting for the running backup of {policy} started at {} ({} backup {})",
                r.started_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                r.trigger,
                r.backup_id
            ),
            None => format!("waiting for the running backup of {policy}"),
        };
        job.waiting(&waiting);
        if let Err(e) = lock::released(&locks, &policy, OTHER_PROCESS_POLL).await {
            let why = format!(
                "cannot check the lock of {policy} in {}: {e}",
                locks.display()
            );
            job.answer(Err(JobError::Failed(why)));
            return;
        }
        let reused = match &run {
            Some(r) if r.started_at >= job.requested_at => reusable(&ctx, &job, r).await,
            _ => None,
        };
        let waited = format!("waited for the running backup of {policy}");
        match reused {
            Some(mut outcome) => {
                outcome.detail = format!(
                    "{waited}, which started after this request: reusing it ({})",
                    outcome.detail
                );
                job.note(
                    &format!("the running backup of {policy} ended; reusing it"),
                    JobState::Queued,
                );
                job.reused.push(outcome);
            }
            None => {
                job.note(
                    &format!(
                        "the running backup of {policy} ended; taking the requested backup now"
                    ),
                    JobState::Queued,
                );
                job.waited.insert(policy, waited);
            }
        }
    }
    if let Err(mpsc::error::SendError(job)) = requeue.send(job).await {
        job.answer(Err(JobError::ShuttingDown));
    }
}

/// The finished backup of `run` as the outcome of `job`, when it is verified
/// and answers the same request: any backup for a manual backup, a pre-deploy
/// snapshot of the same release for a gate (restore by release finds it).
async fn reusable(ctx: &Context, job: &Job, run: &crate::catalog::RunRow) -> Option<Outcome> {
    let row = ctx.catalog.backup(&run.backup_id).await.ok()??;
    let b = row.record;
    let answers = match &job.kind {
        JobKind::Backup { .. } => true,
        JobKind::DeployStart { release, .. } => {
            b.trigger == Trigger::PreDeploy && b.release.as_deref() == Some(release)
        }
        _ => false,
    };
    (answers && b.health == Health::Verified).then(|| Outcome {
        policy: b.policy.clone(),
        action: crate::model::ActionKind::Backup,
        backup_id: Some(b.id.clone()),
        trigger: Some(b.trigger),
        release: b.release.clone(),
        ok: true,
        seconds: 0.0,
        retries: 0,
        detail: format!("{} bytes stored, checksum verified", b.size),
    })
}

/// The requested lane: takes the jobs waiting on `rx` as one batch (several
/// gates arriving together share one cycle), runs up to `bound` batches at
/// once, independently of the scheduled lane, until `quit` is set; then
/// lets the running batches finish.
pub(crate) async fn lane(
    ctx: &Context,
    state: &tokio::sync::Mutex<RepoState>,
    mut rx: mpsc::Receiver<Job>,
    requeue: mpsc::Sender<Job>,
    observer: &impl CycleObserver,
    mut quit: watch::Receiver<bool>,
) {
    let bound = ctx.settings.concurrency.max(1);
    let mut running = FuturesUnordered::new();
    loop {
        tokio::select! {
            Some(job) = rx.recv(), if running.len() < bound => {
                let mut batch = vec![job];
                while let Ok(more) = rx.try_recv() {
                    batch.push(more);
                }
                let snapshot = {
                    let mut s = state.lock().await;
                    if let Err(e) = refresh::refresh(ctx, &mut s).await {
                        tracing::error!(error = %e, "cannot read the policy repository; jobs run on the last applied revision");
                    }
                    s.clone()
                };
                let requeue = requeue.clone();
                running.push(async move {
                    let started = std::time::Instant::now();
                    for report in run_batch(ctx, &snapshot, batch, &requeue).await {
                        observer.cycle_done(&snapshot, report, started.elapsed()).await;
                    }
                });
            }
            Some(()) = running.next(), if !running.is_empty() => {}
            _ = quit.wait_for(|q| *q) => {
                while running.next().await.is_some() {}
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ActionKind;

    fn gate(policy: &str, release: &str) -> BackupRequest {
        BackupRequest {
            policy: policy.into(),
            trigger: Trigger::PreDeploy,
            release: Some(release.into()),
            requested_by: "token:ci".into(),
        }
    }

    fn taken(policy: &str, release: &str, id: &str) -> Outcome {
        Outcome {
            policy: policy.into(),
            action: ActionKind::Backup,
            backup_id: Some(id.into()),
            trigger: Some(Trigger::PreDeploy),
            release: Some(release.into()),
            ok: true,
            seconds: 1.0,
            retries: 0,
            detail: "stored".into(),
        }
    }

    fn report(outcomes: Vec<Outcome>) -> CycleReport {
        CycleReport {
            now: chrono::Utc::now(),
            plan: crate::plan::Plan::default(),
            observe: Default::default(),
            outcomes,
            drills: Vec::new(),
        }
    }

    fn ids(outcomes: &[Outcome]) -> Vec<Option<&str>> {
        outcomes.iter().map(|o| o.backup_id.as_deref()).collect()
    }

    #[test]
    fn gates_of_one_policy_for_two_releases_get_their_own_answers() {
        // One cycle took a snapshot per release (the planner takes one
        // backup per policy, trigger and release), in either order.
        let cycle = report(vec![
            taken("orders", "r2", "b-r2"),
            taken("orders", "r1", "b-r1"),
            taken("billing", "r2", "c-r2"),
        ]);
        let answer = |requests: &[BackupRequest]| deploy::outcomes_for(requests, &cycle);
        assert_eq!(ids(&answer(&[gate("orders", "r1")])), [Some("b-r1")]);
        assert_eq!(ids(&answer(&[gate("orders", "r2")])), [Some("b-r2")]);
        // The same gate sent twice shares its snapshot.
        assert_eq!(ids(&answer(&[gate("orders", "r1")])), [Some("b-r1")]);
        assert_eq!(
            ids(&answer(&[gate("orders", "r2"), gate("billing", "r2")])),
            [Some("b-r2"), Some("c-r2")]
        );
    }

    #[test]
    fn a_gate_whose_release_got_no_snapshot_fails_instead_of_taking_another() {
        let cycle = report(vec![taken("orders", "r1", "b-r1")]);
        let answer = deploy::outcomes_for(&[gate("orders", "r2")], &cycle);
        assert_eq!(ids(&answer), [None]);
        assert!(!answer[0].ok, "{answer:?}");
        assert_eq!(answer[0].release.as_deref(), Some("r2"));
    }
}
