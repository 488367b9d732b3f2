//! IO wiring: the daemon's requested lane. Work asked for through the HTTP
//! API (deploy start/finish, manual backups, drills) becomes a job; the lane
//! runs it through `engine::cycle`, concurrently with the scheduled lane
//! and never behind it (deploy starts and manual backups that arrive
//! together share one cycle, so 100 concurrent gates cost one observation).
//! A job whose policy has a backup running waits for that backup only, says
//! so on the job, then reuses it or queues behind it. The API serves each
//! job's progress from the `Board` and can wait for the answer.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::deploy::{self, DeployError, Selection};
use crate::engine::context::{Context, RepoState};
use crate::engine::cycle::{self, CycleReport};
use crate::engine::execute::Scope;
use crate::engine::refresh;
use crate::lock;
use crate::model::Outcome;
use crate::monitor::Monitor;
use crate::observed::{BackupRequest, DrillRequest, Health, Trigger};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "job", rename_all = "kebab-case")]
pub enum JobKind {
    DeployStart {
        release: String,
        selection: Selection,
    },
    DeployFinish {
        release: String,
        success: bool,
        selection: Selection,
    },
    Backup {
        policy: String,
    },
    Drill {
        policy: String,
        backup: Option<String>,
    },
}

/// HTTP-shaped answer: a status code and a JSON body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobReply {
    pub status: u16,
    pub body: serde_json::Value,
}

impl JobReply {
    fn ok(ok: bool, body: impl Serialize) -> JobReply {
        JobReply {
            status: if ok { 200 } else { 422 },
            body: serde_json::to_value(body).unwrap_or_default(),
        }
    }

    fn error(status: u16, message: impl Into<String>) -> JobReply {
        JobReply {
            status,
            body: serde_json::json!({ "error": message.into() }),
        }
    }

    fn from_deploy_error(e: DeployError) -> JobReply {
        match e {
            DeployError::NotFound(m) => JobReply::error(404, m),
            other => JobReply::error(500, other.to_string()),
        }
    }
}

/// Where a job stands (`GET /api/v1/jobs/{id}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobState {
    Queued,
    /// Behind a running backup of the same policy (`waiting_for` says which).
    Waiting,
    Running,
    Done,
}

/// The job resource the API serves while the job runs and after.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    pub id: u64,
    #[serde(flatten)]
    pub kind: JobKind,
    pub state: JobState,
    pub requested_at: DateTime<Utc>,
    /// Bumped on every change (long polls wait for a newer one).
    pub version: u64,
    /// What the job waits for right now, in words.
    pub waiting_for: Option<String>,
    /// Everything the job reported, oldest first.
    pub messages: Vec<String>,
    /// The answer, once `state` is `done`.
    pub result: Option<JobReply>,
}

#[derive(Debug)]
pub struct Job {
    pub kind: JobKind,
    /// `token:<name>` of the API caller.
    pub caller: String,
    pub requested_at: DateTime<Utc>,
    /// Progress and the answer; the API holds the receivers.
    progress: watch::Sender<JobView>,
    /// Outcomes settled by a backup of the same policy that ran while the job waited.
    reused: Vec<Outcome>,
    /// Per policy: the running backup the job waited for (prefixed to its outcome).
    waited: BTreeMap<String, String>,
}

impl Job {
    pub fn new(id: u64, kind: JobKind, caller: String) -> (Job, watch::Receiver<JobView>) {
        let requested_at = Utc::now();
        let (progress, rx) = watch::channel(JobView {
            id,
            kind: kind.clone(),
            state: JobState::Queued,
            requested_at,
            version: 0,
            waiting_for: None,
            messages: Vec::new(),
            result: None,
        });
        let job = Job {
            kind,
            caller,
            requested_at,
            progress,
            reused: Vec::new(),
            waited: BTreeMap::new(),
        };
        (job, rx)
    }

    /// The job's id on the `Board`.
    pub fn progress_id(&self) -> u64 {
        self.progress.borrow().id
    }

    fn update(&self, f: impl FnOnce(&mut JobView)) {
        self.progress.send_modify(|v| {
            f(v);
            v.version += 1;
        });
    }

    fn waiting(&self, message: &str) {
        tracing::info!(job = self.progress_id(), "{message}");
        self.update(|v| {
            v.state = JobState::Waiting;
            v.waiting_for = Some(message.to_string());
            v.messages.push(message.to_string());
        });
    }

    fn note(&self, message: &str, state: JobState) {
        self.update(|v| {
            v.state = state;
            v.waiting_for = None;
            v.messages.push(message.to_string());
        });
    }

    fn answer(self, reply: JobReply) {
        self.update(|v| {
            v.state = JobState::Done;
            v.waiting_for = None;
            v.result = Some(reply);
        });
    }
}

/// The jobs the API knows, for `GET /api/v1/jobs/{id}`: the newest
/// `Board::KEEP`, finished or not.
#[derive(Debug, Default)]
pub struct Board {
    inner: Mutex<(u64, BTreeMap<u64, watch::Receiver<JobView>>)>,
}

impl Board {
    pub const KEEP: usize = 1000;

    /// A new job with the next id, remembered on the board.
    pub fn create(&self, kind: JobKind, caller: String) -> (Job, watch::Receiver<JobView>) {
        let Ok(mut inner) = self.inner.lock() else {
            return Job::new(0, kind, caller);
        };
        let (next, jobs) = &mut *inner;
        *next += 1;
        let (job, rx) = Job::new(*next, kind, caller);
        jobs.insert(*next, rx.clone());
        while jobs.len() > Board::KEEP {
            jobs.pop_first();
        }
        (job, rx)
    }

    pub fn get(&self, id: u64) -> Option<watch::Receiver<JobView>> {
        self.inner.lock().ok()?.1.get(&id).cloned()
    }
}

type Batched = Vec<(Job, Vec<BackupRequest>)>;

/// Splits backup-requesting jobs into as few rounds (one cycle each) as
/// possible such that no round asks for the same policy and trigger under two
/// different releases: a cycle's outcomes are matched to requests by policy
/// and trigger, so two gates of one policy for releases r1 and r2 sharing a
/// cycle would both be answered with the same snapshot. Identical requests
/// (the same gate sent twice) stay together and share one backup.
fn rounds(batched: Batched) -> Vec<Batched> {
    type Taken = BTreeMap<(String, Trigger), Option<String>>;
    let mut rounds: Vec<(Taken, Batched)> = Vec::new();
    for (job, requests) in batched {
        let fits = |taken: &Taken| {
            requests.iter().all(|r| {
                taken
                    .get(&(r.policy.clone(), r.trigger))
                    .is_none_or(|release| *release == r.release)
            })
        };
        let at = match rounds.iter().position(|(taken, _)| fits(taken)) {
            Some(at) => at,
            None => {
                rounds.push((Taken::new(), Vec::new()));
                rounds.len() - 1
            }
        };
        let (taken, jobs) = &mut rounds[at];
        for r in &requests {
            taken.insert((r.policy.clone(), r.trigger), r.release.clone());
        }
        jobs.push((job, requests));
    }
    rounds.into_iter().map(|(_, jobs)| jobs).collect()
}

/// The backup requests a job asks for (deploy start, manual backup); `None`
/// for the others.
fn backup_requests(
    desired: &crate::policy::DesiredState,
    job: &Job,
) -> Option<Result<Vec<BackupRequest>, DeployError>> {
    Some(match &job.kind {
        JobKind::DeployStart { release, selection } => {
            deploy::start_requests(desired, release, selection, &job.caller)
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

/// Runs a batch of jobs; returns the cycle reports (for metrics). A job
/// that needs a policy whose backup is running is handed to `wait_behind`,
/// which sends it back on `requeue` once that backup ended.
pub async fn run_batch(
    ctx: &Context,
    state: &RepoState,
    jobs: Vec<Job>,
    requeue: &mpsc::Sender<Job>,
) -> Vec<CycleReport> {
    let mut reports = Vec::new();
    let desired = match state.desired() {
        Ok(d) => d,
        Err(e) => {
            for job in jobs {
                job.answer(JobReply::error(503, e.to_string()));
            }
            return reports;
        }
    };
    let locks = ctx.settings.locks_dir();
    // 1. Everything that is a backup request shares one cycle (or a few: see `rounds`).
    let mut batched: Batched = Vec::new();
    let mut rest = Vec::new();
    for job in jobs {
        let (requests, policies) = match backup_requests(desired, &job) {
            Some(Ok(mut r)) => {
                r.retain(|r| !job.reused.iter().any(|o| o.policy == r.policy));
                let policies = r.iter().map(|r| r.policy.clone()).collect();
                (Some(r), policies)
            }
            Some(Err(e)) => {
                job.answer(JobReply::from_deploy_error(e));
                continue;
            }
            None => match &job.kind {
                JobKind::DeployFinish {
                    release, selection, ..
                } => (None, finish_policies(ctx, release, selection).await),
                _ => (None, Vec::new()),
            },
        };
        let busy: Vec<String> = policies
            .into_iter()
            .filter(|p| lock::busy(&locks, p).unwrap_or(false))
            .collect();
        if !busy.is_empty() {
            tokio::spawn(wait_behind(ctx.clone(), job, busy, requeue.clone()));
            continue;
        }
        match requests {
            Some(r) => batched.push((job, r)),
            None => rest.push(job),
        }
    }
    for round in rounds(batched) {
        let all: Vec<BackupRequest> = round.iter().flat_map(|(_, r)| r.clone()).collect();
        for (job, _) in &round {
            job.note("taking the requested backups", JobState::Running);
        }
        let scope = Scope::answering(&all);
        let report = if all.is_empty() {
            None
        } else {
            match cycle::cycle(ctx, state, all, scope, false).await {
                Ok(report) => Some(report),
                Err(e) => {
                    for (job, _) in round {
                        job.answer(JobReply::error(500, e.to_string()));
                    }
                    continue;
                }
            }
        };
        for (mut job, requests) in round {
            let mut outcomes = match &report {
                Some(report) => deploy::outcomes_for(&requests, report),
                None => Vec::new(),
            };
            // A backup of the policy started (in the other lane or process)
            // between the check above and this cycle: wait for it as well.
            let raced: Vec<String> = outcomes
                .iter()
                .filter(|o| !o.ok && !job.waited.contains_key(&o.policy))
                .filter(|o| lock::busy(&locks, &o.policy).unwrap_or(false))
                .map(|o| o.policy.clone())
                .collect();
            if !raced.is_empty() {
                job.reused.extend(outcomes.into_iter().filter(|o| o.ok));
                tokio::spawn(wait_behind(ctx.clone(), job, raced, requeue.clone()));
                continue;
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
                    match deploy::record_start(&job_ctx, release, outcomes).await {
                        Ok(r) => JobReply::ok(r.ok, r),
                        Err(e) => JobReply::from_deploy_error(e),
                    }
                }
                _ => JobReply::ok(outcomes.iter().all(|o| o.ok), &outcomes),
            };
            job.answer(answer);
        }
        reports.extend(report);
    }
    // 2. The others one by one.
    for job in rest {
        job.note("running", JobState::Running);
        let (answer, report) = run_other(ctx, state, desired, &job).await;
        reports.extend(report);
        job.answer(answer);
    }
    reports
}

/// A `deploy finish` or a drill.
async fn run_other(
    ctx: &Context,
    state: &RepoState,
    desired: &crate::policy::DesiredState,
    job: &Job,
) -> (JobReply, Option<CycleReport>) {
    let job_ctx = Context {
        actor: job.caller.clone(),
        ..ctx.clone()
    };
    match &job.kind {
        JobKind::DeployFinish {
            release,
            success,
            selection,
        } => match deploy::finish(&job_ctx, state, release, *success, selection).await {
            Ok(r) => (JobReply::ok(r.ok, r), None),
            Err(e) => (JobReply::from_deploy_error(e), None),
        },
        JobKind::Drill { policy, backup } => {
            if desired
                .policies
                .get(policy)
                .is_none_or(|p| p.drill.is_none())
            {
                let why = format!("policy {policy} does not exist or declares no drill");
                return (JobReply::error(404, why), None);
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
                        Some(Ok(o)) => JobReply::ok(o.passed, o),
                        Some(Err((_, why))) => JobReply::error(500, why.clone()),
                        None => JobReply::error(409, "no drill could run (no verified backup?)"),
                    };
                    (answer, Some(report))
                }
                Err(e) => (JobReply::error(500, e.to_string()), None),
            }
        }
        JobKind::DeployStart { .. } | JobKind::Backup { .. } => {
            (JobReply::error(500, "internal: job not batched"), None)
        }
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
            job.answer(JobReply::error(500, why));
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
        job.answer(JobReply::error(503, "the daemon is shutting down"));
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
        ok: true,
        seconds: 0.0,
        detail: format!("{} bytes stored, checksum verified", b.size),
    })
}

/// The requested lane: takes the jobs waiting on `rx` as one batch (several
/// gates arriving together share one cycle), runs up to `bound` batches at
/// once, independently of the scheduled lane, until `quit` is set; then
/// lets the running batches finish.
pub async fn lane(
    ctx: &Context,
    state: &tokio::sync::Mutex<RepoState>,
    mut rx: mpsc::Receiver<Job>,
    requeue: mpsc::Sender<Job>,
    monitor: &Monitor,
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
                        monitor.after_cycle(&snapshot, Some(&Ok(report)), started.elapsed()).await;
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

    fn gate(policy: &str, release: &str) -> (Job, Vec<BackupRequest>) {
        let request = BackupRequest {
            policy: policy.into(),
            trigger: Trigger::PreDeploy,
            release: Some(release.into()),
            requested_by: "token:ci".into(),
        };
        let kind = JobKind::DeployStart {
            release: release.into(),
            selection: Selection::default(),
        };
        (Job::new(0, kind, "token:ci".into()).0, vec![request])
    }

    fn releases(round: &Batched) -> Vec<(String, String)> {
        round
            .iter()
            .flat_map(|(_, rs)| rs.iter())
            .map(|r| (r.policy.clone(), r.release.clone().unwrap_or_default()))
            .collect()
    }

    #[test]
    fn gates_of_one_policy_for_two_releases_never_share_a_cycle() {
        let split = rounds(vec![
            gate("orders", "r1"),
            gate("orders", "r2"),
            gate("orders", "r1"),
            gate("billing", "r2"),
        ]);
        assert_eq!(split.len(), 2);
        let pair = |p: &str, r: &str| (p.to_string(), r.to_string());
        assert_eq!(
            releases(&split[0]),
            [
                pair("orders", "r1"),
                pair("orders", "r1"),
                pair("billing", "r2")
            ]
        );
        assert_eq!(releases(&split[1]), [pair("orders", "r2")]);
    }

    #[test]
    fn gates_of_different_policies_share_one_cycle() {
        let batch: Batched = (0..100)
            .map(|i| gate(&format!("svc{i}"), &format!("svc{i}-v1")))
            .collect();
        assert_eq!(rounds(batch).len(), 1);
    }
}
