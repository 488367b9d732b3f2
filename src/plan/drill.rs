//! Pure: which recovery drills are due. A drill is due when the
//! latest slot of the policy's `drill.schedule` passed with no drill started
//! at or after it, or when someone asked (`safepoint drill`). It restores the
//! newest verified backup unless a specific one was asked for. One drill per
//! policy per plan; none while one is running or the policy is suspended.

use chrono::{DateTime, Utc};

use crate::observed::{Health, ObservedState};
use crate::plan::schedule::{last_slot, next_slot};
use crate::plan::{Drill, Note, Plan, Reason};
use crate::policy::DesiredState;

pub(crate) fn plan_drills(
    plan: &mut Plan,
    desired: &DesiredState,
    observed: &ObservedState,
    now: DateTime<Utc>,
) {
    for (name, policy) in &desired.policies {
        let Some(spec) = &policy.drill else {
            continue;
        };
        let history = observed.drills.get(name);
        if history.is_some_and(|h| h.running) {
            continue;
        }
        let newest = observed
            .backups
            .get(name)
            .and_then(|list| list.iter().find(|b| b.health == Health::Verified));
        let request = observed.drill_requests.iter().find(|r| &r.policy == name);
        if let Some(r) = request {
            match r.backup_id.clone().or_else(|| newest.map(|b| b.id.clone())) {
                Some(backup_id) => plan.drills.push(Drill {
                    policy: name.clone(),
                    backup_id,
                    reason: Reason::Requested {
                        by: r.requested_by.clone(),
                    },
                }),
                None => plan.notes.push(Note {
                    policy: name.clone(),
                    text: "drill requested, but the policy has no verified backup to restore"
                        .into(),
                }),
            }
            continue;
        }
        if policy.suspend {
            continue;
        }
        let Some(schedule) = &spec.schedule else {
            continue;
        };
        if let Some(next) = next_slot(schedule, now)
            && plan.next_wakeup.is_none_or(|w| next < w)
        {
            plan.next_wakeup = Some(next);
        }
        let Some(slot) = last_slot(schedule, now) else {
            continue;
        };
        if history
            .and_then(|h| h.last_attempt)
            .is_some_and(|at| at >= slot)
        {
            continue;
        }
        match newest {
            Some(b) => plan.drills.push(Drill {
                policy: name.clone(),
                backup_id: b.id.clone(),
                reason: Reason::DrillDue { slot },
            }),
            None => plan.notes.push(Note {
                policy: name.clone(),
                text: "drill due, but the policy has no verified backup yet".into(),
            }),
        }
    }
}
