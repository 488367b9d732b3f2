//! Pure: when a policy needs a backup.
//!
//! Semantics:
//! - Explicit requests: one backup per distinct (policy, trigger, release);
//!   several requesters of the same backup are listed together. Requests
//!   ignore failure backoff and `suspend` (suspend stops the automation, not
//!   an operator or a deploy gate), but wait while a backup of the policy is
//!   running. Requests for a policy not in Git become notes.
//! - Automatic (no request for the policy, not suspended, not running):
//!   - first backup: schedule or rpo set and no verified backup at all;
//!   - rpo missed: `now - newest verified started_at >= rpo`;
//!   - schedule due: the latest cron slot `<= now` has no verified backup
//!     started at or after it (any trigger counts).
//!
//!   When both rpo and schedule are due, one backup is planned with the rpo
//!   reason (trigger `rpo`): the objective is already violated, which is the
//!   more urgent fact for the operator.
//! - Failure backoff: after a failed attempt, an automatic backup waits until
//!   `failed_at + retry_backoff * 2^(consecutive - 1)` (capped by
//!   `max_retry_backoff`); once due it carries `Reason::Retry`. A single
//!   interrupted run (its process died: a crash, a replica killed and taken
//!   over) is retried at once; repeated interruptions back off the same way.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};

use crate::observed::{BackupRequest, FailedRun, Trigger};
use crate::plan::{Note, PlanOptions, Reason};
use crate::policy::{BackupPolicy, DesiredState};

/// Requests for one (policy, trigger, release), in arrival order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request<'a> {
    pub trigger: Trigger,
    pub release: Option<&'a str>,
    pub by: Vec<&'a str>,
}

/// Groups requests per known policy; unknown policies become notes.
pub(crate) fn group_requests<'a>(
    desired: &DesiredState,
    requests: &'a [BackupRequest],
    notes: &mut Vec<Note>,
) -> BTreeMap<&'a str, Vec<Request<'a>>> {
    let mut known: BTreeMap<&'a str, Vec<Request<'a>>> = BTreeMap::new();
    let mut unknown: BTreeMap<&'a str, Vec<Request<'a>>> = BTreeMap::new();
    for r in requests {
        let map = if desired.policies.contains_key(&r.policy) {
            &mut known
        } else {
            &mut unknown
        };
        let list = map.entry(r.policy.as_str()).or_default();
        let release = r.release.as_deref();
        match list
            .iter_mut()
            .find(|q| q.trigger == r.trigger && q.release == release)
        {
            Some(q) => {
                if !q.by.contains(&r.requested_by.as_str()) {
                    q.by.push(&r.requested_by);
                }
            }
            None => list.push(Request {
                trigger: r.trigger,
                release,
                by: vec![&r.requested_by],
            }),
        }
    }
    for (policy, list) in unknown {
        for q in list {
            notes.push(Note {
                policy: policy.to_string(),
                text: format!(
                    "{} backup requested by {} ignored: no such policy in Git",
                    describe_request(q.trigger, q.release),
                    q.by.join(", ")
                ),
            });
        }
    }
    known
}

/// `pre-deploy v1.4.0`, `manual`.
pub(crate) fn describe_request(trigger: Trigger, release: Option<&str>) -> String {
    match release {
        Some(tag) => format!("{trigger} {tag}"),
        None => trigger.to_string(),
    }
}

/// What the automation wants for one policy.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Auto {
    Idle,
    Due {
        trigger: Trigger,
        reason: Reason,
    },
    /// A backup is due but the last attempt failed too recently.
    Waiting {
        retry_at: DateTime<Utc>,
    },
}

pub(crate) fn automatic(
    policy: &BackupPolicy,
    newest: Option<DateTime<Utc>>,
    last_slot: Option<DateTime<Utc>>,
    failure: Option<&FailedRun>,
    now: DateTime<Utc>,
    options: &PlanOptions,
) -> Auto {
    let due = match newest {
        None if policy.schedule.is_some() || policy.rpo.is_some() => {
            Some((Trigger::Schedule, Reason::FirstBackup))
        }
        None => None,
        Some(newest) => {
            let age = now - newest;
            let rpo = policy.rpo.filter(|rpo| age >= *rpo).map(|rpo| {
                let reason = Reason::RpoMissed {
                    newest: Some(newest),
                    rpo_seconds: rpo.num_seconds(),
                    age_seconds: Some(age.num_seconds()),
                };
                (Trigger::Rpo, reason)
            });
            let schedule = last_slot
                .filter(|slot| newest < *slot)
                .map(|slot| (Trigger::Schedule, Reason::ScheduleDue { slot }));
            rpo.or(schedule)
        }
    };
    let Some((trigger, reason)) = due else {
        return Auto::Idle;
    };
    match failure {
        None => Auto::Due { trigger, reason },
        Some(failed) => {
            let retry_at = retry_at(failed, options);
            if now < retry_at {
                Auto::Waiting { retry_at }
            } else {
                let reason = Reason::Retry {
                    failed_at: failed.at,
                    consecutive: failed.consecutive,
                };
                Auto::Due { trigger, reason }
            }
        }
    }
}

/// `at + retry_backoff * 2^(consecutive-1)`, capped by `max_retry_backoff`.
pub(crate) fn retry_at(failed: &FailedRun, options: &PlanOptions) -> DateTime<Utc> {
    if failed.interrupted && failed.consecutive == 1 {
        return failed.at;
    }
    let doublings = failed.consecutive.saturating_sub(1).min(30);
    let delay = options
        .retry_backoff
        .checked_mul(1_i32 << doublings)
        .unwrap_or(options.max_retry_backoff)
        .min(options.max_retry_backoff)
        .max(TimeDelta::zero());
    failed
        .at
        .checked_add_signed(delay)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(at: &str, consecutive: u32) -> FailedRun {
        FailedRun {
            at: DateTime::parse_from_rfc3339(at)
                .unwrap()
                .with_timezone(&Utc),
            error: "boom".into(),
            consecutive,
            interrupted: false,
        }
    }

    #[test]
    fn backoff_doubles_per_failure_and_is_capped() {
        let o = PlanOptions::default(); // 1 min, capped at 1 h
        let f = |n| retry_at(&failed("2026-11-25T05:00:00Z", n), &o).to_rfc3339();
        assert_eq!(f(1), "2026-11-25T05:01:00+00:00");
        assert_eq!(f(3), "2026-11-25T05:04:00+00:00");
        assert_eq!(f(7), "2026-11-25T06:00:00+00:00");
        assert_eq!(f(u32::MAX), "2026-11-25T06:00:00+00:00");
    }

    #[test]
    fn one_interrupted_run_is_retried_at_once_repeated_ones_back_off() {
        let o = PlanOptions::default();
        let f = |n| {
            let failed = FailedRun {
                interrupted: true,
                ..failed("2026-11-25T05:00:00Z", n)
            };
            retry_at(&failed, &o).to_rfc3339()
        };
        assert_eq!(f(1), "2026-11-25T05:00:00+00:00");
        assert_eq!(f(2), "2026-11-25T05:02:00+00:00");
    }
}
