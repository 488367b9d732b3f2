//! IO wiring: work handed to the daemon loop by the HTTP API. The API never
//! executes anything itself: it enqueues a job, the daemon runs it through
//! `reconcile::cycle` (deploy starts and manual backups that arrive together
//! share one cycle, so 100 concurrent gates cost one observation), and the
//! API can wait for the reply.

use std::collections::BTreeMap;

use serde::Serialize;
use tokio::sync::oneshot;

use crate::deploy::{self, DeployError, Selection};
use crate::observed::{BackupRequest, DrillRequest, Trigger};
use crate::reconcile::{self, Context, CycleReport, RepoState, Scope};

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

#[derive(Debug)]
pub struct Job {
    pub kind: JobKind,
    /// `token:<name>` of the API caller.
    pub caller: String,
    /// Where to send the outcome; `None` when the caller did not wait.
    pub reply: Option<oneshot::Sender<JobReply>>,
}

fn send(reply: Option<oneshot::Sender<JobReply>>, answer: JobReply) {
    if let Some(tx) = reply {
        let _ = tx.send(answer);
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

/// Runs a batch of jobs; returns the cycle reports (for metrics).
pub async fn run_batch(ctx: &Context, state: &RepoState, jobs: Vec<Job>) -> Vec<CycleReport> {
    let mut reports = Vec::new();
    let desired = match state.desired() {
        Ok(d) => d,
        Err(e) => {
            for job in jobs {
                send(job.reply, JobReply::error(503, e.to_string()));
            }
            return reports;
        }
    };
    // 1. Everything that is a backup request shares one cycle (or a few: see `rounds`).
    let mut batched: Batched = Vec::new();
    let mut rest = Vec::new();
    for job in jobs {
        let requests = match &job.kind {
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
            _ => {
                rest.push(job);
                continue;
            }
        };
        match requests {
            Ok(r) => batched.push((job, r)),
            Err(e) => send(job.reply, JobReply::from_deploy_error(e)),
        }
    }
    for round in rounds(batched) {
        let all: Vec<BackupRequest> = round.iter().flat_map(|(_, r)| r.clone()).collect();
        let scope = Scope::answering(&all);
        match reconcile::cycle(ctx, state, all, scope, false).await {
            Ok(report) => {
                for (job, requests) in round {
                    let outcomes = deploy::outcomes_for(&requests, &report);
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
                    send(job.reply, answer);
                }
                reports.push(report);
            }
            Err(e) => {
                for (job, _) in round {
                    send(job.reply, JobReply::error(500, e.to_string()));
                }
            }
        }
    }
    // 2. The others one by one.
    for job in rest {
        let job_ctx = Context {
            actor: job.caller.clone(),
            ..ctx.clone()
        };
        let answer = match &job.kind {
            JobKind::DeployFinish {
                release,
                success,
                selection,
            } => match deploy::finish(&job_ctx, state, release, *success, selection).await {
                Ok(r) => JobReply::ok(r.ok, r),
                Err(e) => JobReply::from_deploy_error(e),
            },
            JobKind::Drill { policy, backup } => {
                if desired
                    .policies
                    .get(policy)
                    .is_none_or(|p| p.drill.is_none())
                {
                    JobReply::error(
                        404,
                        format!("policy {policy} does not exist or declares no drill"),
                    )
                } else {
                    let request = DrillRequest {
                        policy: policy.clone(),
                        backup_id: backup.clone(),
                        requested_by: job.caller.clone(),
                    };
                    let scope = Scope::Drills(vec![policy.clone()]);
                    match reconcile::cycle_with(
                        &job_ctx,
                        state,
                        Vec::new(),
                        vec![request],
                        scope,
                        false,
                    )
                    .await
                    {
                        Ok(report) => {
                            let answer = match report.drills.first() {
                                Some(Ok(o)) => JobReply::ok(o.passed, o),
                                Some(Err((_, why))) => JobReply::error(500, why.clone()),
                                None => {
                                    JobReply::error(409, "no drill could run (no verified backup?)")
                                }
                            };
                            reports.push(report);
                            answer
                        }
                        Err(e) => JobReply::error(500, e.to_string()),
                    }
                }
            }
            JobKind::DeployStart { .. } | JobKind::Backup { .. } => {
                JobReply::error(500, "internal: job not batched")
            }
        };
        send(job.reply, answer);
    }
    reports
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
        let job = Job {
            kind: JobKind::DeployStart {
                release: release.into(),
                selection: Selection::default(),
            },
            caller: "token:ci".into(),
            reply: None,
        };
        (job, vec![request])
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
