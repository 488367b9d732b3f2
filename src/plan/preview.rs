//! Pure: the consequences of a proposed policy revision against the live
//! observed state, never executed. The same planner (`plan::plan`'s walk,
//! `decide::plan_all`) is run twice at the same `now` — with the revision in
//! force and with the proposed one, deletions unbounded — and the two plans
//! are compared:
//!
//! - desired-state diff: policies added, removed, renamed-looking (a removed
//!   and an added policy with the same source), changed fields (one level
//!   into `source`, `retention`, `schedule`, ...); storages and notifiers
//!   added/removed/changed;
//! - deletions of the proposed plan, grouped by policy (`PolicyDeletions`,
//!   every one listed, oldest first), each with the rules that keep it today
//!   and whether the change causes it (`caused_by_change`: the plan in force
//!   does not delete it);
//! - backups the proposed plan takes (first backups, newly due ones);
//! - schedules that change, with the next run before and after;
//! - drills added/removed/changed; policies whose history becomes orphaned;
//! - the guard (`GuardCheck`): a change that deletes more than
//!   `PlanOptions::deletion_guard` backups of a policy, or its newest
//!   verified backup, or orphans a policy's history, must acknowledge it in
//!   the revision itself (`policy::annotations`); `Preview::refused` says
//!   whether it does not. The daemon applies the same guard before applying
//!   a revision (`engine::refresh`).
//!
//! The diff is in `preview_diff.rs`, the consequences in
//! `preview_effects.rs`, the Markdown for a pull-request comment in
//! `preview_render.rs`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use super::preview_effects::rfc3339;
use super::{KeepReason, PlanOptions, Reason, decide, preview_diff, preview_effects};
use crate::observed::{ObservedState, Trigger};
use crate::policy::DesiredState;
use crate::policy::annotations::{ALLOW_DELETIONS, ALLOW_ORPHANS};

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Preview {
    /// The instant both plans were made at.
    pub now: Option<DateTime<Utc>>,
    pub policies: Vec<PolicyChange>,
    pub storages: Vec<NamedChange>,
    pub notifiers: Vec<NamedChange>,
    /// Policies whose drill was added, removed or changed.
    pub drills: Vec<NamedChange>,
    pub schedules: Vec<ScheduleChange>,
    /// What the proposed revision's next cycles would delete, per policy.
    pub deletions: Vec<PolicyDeletions>,
    /// Backups the proposed revision's next cycle would take.
    pub backups: Vec<NewBackup>,
    /// Removed policies whose backups stay behind as orphans.
    pub orphaned: Vec<Orphaned>,
    /// Every destructive consequence and whether the revision acknowledges it.
    pub guard: Vec<GuardCheck>,
}

impl Preview {
    /// True when a destructive consequence is not acknowledged.
    pub fn refused(&self) -> bool {
        self.guard.iter().any(|g| !g.acknowledged)
    }

    /// The unacknowledged consequences, one line each.
    pub fn refusals(&self) -> Vec<String> {
        self.guard
            .iter()
            .filter(|g| !g.acknowledged)
            .map(|g| g.message.clone())
            .collect()
    }

    /// Every deletion with its policy, policy by policy.
    pub fn all_deletions(&self) -> impl Iterator<Item = (&str, &Deletion)> {
        self.deletions
            .iter()
            .flat_map(|p| p.backups.iter().map(|d| (p.policy.as_str(), d)))
    }

    /// How many backups the proposed revision deletes.
    pub fn deletion_count(&self) -> usize {
        self.deletions.iter().map(|p| p.count).sum()
    }

    /// How many of them the change causes (not pending without it).
    pub fn caused_count(&self) -> usize {
        self.deletions.iter().map(|p| p.caused).sum()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Change {
    Added,
    Removed,
    Changed,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyChange {
    pub policy: String,
    pub change: Change,
    /// Changed fields, dotted (`retention.keepDaily`), with old and new value.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldChange>,
    /// Added: the removed policy with the same source it looks renamed from;
    /// removed: the added one it looks renamed to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub renamed: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldChange {
    pub field: String,
    pub before: Value,
    pub after: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NamedChange {
    pub name: String,
    pub change: Change,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScheduleChange {
    pub policy: String,
    /// `cron (time zone)`; `None`: no schedule.
    pub before: Option<String>,
    pub after: Option<String>,
    pub next_before: Option<DateTime<Utc>>,
    pub next_after: Option<DateTime<Utc>>,
}

/// The deletions of one policy (or orphaned history).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyDeletions {
    pub policy: String,
    /// The proposed rules, which no longer keep them (`orphan`: the policy
    /// is gone from the revision).
    pub rules: String,
    /// `backups.len()`.
    pub count: usize,
    /// How many of them the change causes.
    pub caused: usize,
    /// Oldest first: every one the change causes (and the newest verified
    /// backup, if it goes); of those the revision in force deletes anyway,
    /// the first `LISTED_PENDING` (`unlisted` counts the rest).
    pub backups: Vec<Deletion>,
    /// Deletions the revision in force makes anyway that are not listed.
    #[serde(skip_serializing_if = "is_zero")]
    pub unlisted: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Preview {
    /// The preview as answered (JSON): long lists of deletions the revision
    /// in force makes anyway are counted, not listed (`PolicyDeletions::trim`).
    /// Decisions (guard, refusals, Markdown) are made on the whole preview.
    pub fn compact(mut self) -> Preview {
        for d in &mut self.deletions {
            d.trim();
        }
        self
    }
}

/// How many deletions the revision in force makes anyway are listed per
/// policy: they happen whatever the change, and listing them all made the
/// answer for a large estate hundreds of MB.
pub const LISTED_PENDING: usize = 20;

impl PolicyDeletions {
    /// Drops pending deletions past `LISTED_PENDING` (never one the change
    /// causes, never the newest verified backup), counting them in `unlisted`.
    pub fn trim(&mut self) {
        let mut pending = 0;
        let before = self.backups.len();
        self.backups.retain(|d| {
            if d.caused_by_change || d.newest_verified {
                return true;
            }
            pending += 1;
            pending <= LISTED_PENDING
        });
        self.unlisted += before - self.backups.len();
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Deletion {
    pub backup_id: String,
    #[serde(serialize_with = "rfc3339")]
    pub started_at: DateTime<Utc>,
    pub trigger: Trigger,
    /// False when the revision in force deletes it too (already pending).
    pub caused_by_change: bool,
    /// It is the policy's newest verified backup today (omitted when not).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub newest_verified: bool,
    /// The rules that keep it under the revision in force (omitted when
    /// none: it is already pending).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kept_today_by: Vec<KeepReason>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewBackup {
    pub policy: String,
    pub trigger: Trigger,
    pub reason: Reason,
    /// False when the revision in force takes it too.
    pub caused_by_change: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Orphaned {
    pub policy: String,
    pub backups: usize,
    pub newest: Option<DateTime<Utc>>,
    /// The added policy it looks renamed to, if any.
    pub renamed_to: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GuardKind {
    /// More deletions than `deletion_guard`, or more than acknowledged.
    Deletions,
    /// The policy's newest verified backup would be deleted.
    NewestVerified,
    /// A removed policy leaves its backups behind.
    Orphans,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GuardCheck {
    pub policy: String,
    pub kind: GuardKind,
    pub acknowledged: bool,
    /// What happens and, when not acknowledged, the line that acknowledges it.
    pub message: String,
}

/// Compares the plans of `current` and `proposed` over `observed` at `now`.
pub fn preview(
    current: &DesiredState,
    proposed: &DesiredState,
    observed: &ObservedState,
    now: DateTime<Utc>,
    options: &PlanOptions,
) -> Preview {
    let unbounded = PlanOptions {
        prune_orphans: false,
        ..options.clone()
    };
    let (before, pending) = decide::plan_all(current, observed, now, &unbounded);
    let (after, deleted) = decide::plan_all(proposed, observed, now, &unbounded);
    let mut out = Preview {
        now: Some(now),
        ..Preview::default()
    };
    preview_diff::diff(current, proposed, now, &mut out);
    out.deletions = preview_effects::deletions(&before, &pending, &deleted, proposed);
    out.backups = preview_effects::new_backups(&before, &after);
    out.orphaned = preview_effects::orphaned(current, proposed, observed, &out.policies);
    out.guard = guard(&out, proposed, options.deletion_guard);
    out
}

/// The destructive consequences of `p` and whether `proposed` acknowledges
/// each (see the module documentation).
fn guard(p: &Preview, proposed: &DesiredState, threshold: usize) -> Vec<GuardCheck> {
    let mut out = Vec::new();
    for d in p.deletions.iter().filter(|d| d.caused > 0) {
        let (policy, n) = (d.policy.as_str(), d.caused);
        let newest = d
            .backups
            .iter()
            .any(|b| b.caused_by_change && b.newest_verified);
        let ack = proposed.acknowledged.deletions.get(policy).copied();
        let needs = n > threshold || newest || ack.is_some();
        if !needs {
            continue;
        }
        let acknowledged = ack.is_some_and(|a| n <= a as usize);
        let (kind, what) = if newest {
            (
                GuardKind::NewestVerified,
                format!("deletes {n} backup(s) of {policy}, including its newest verified backup"),
            )
        } else {
            (
                GuardKind::Deletions,
                format!("deletes {n} backup(s) of {policy}"),
            )
        };
        let message = match (acknowledged, ack) {
            (true, Some(a)) => format!("{what}: acknowledged ({ALLOW_DELETIONS}: \"{a}\")"),
            (_, Some(a)) => format!(
                "{what}, more than the {a} acknowledged: set metadata.annotations[\"{ALLOW_DELETIONS}\"]: \"{n}\" on BackupPolicy {policy}"
            ),
            (_, None) => format!(
                "{what} (guard: {threshold} without acknowledgement): acknowledge with metadata.annotations[\"{ALLOW_DELETIONS}\"]: \"{n}\" on BackupPolicy {policy}"
            ),
        };
        out.push(GuardCheck {
            policy: policy.to_string(),
            kind,
            acknowledged,
            message,
        });
    }
    for o in &p.orphaned {
        let acknowledged = proposed.acknowledged.orphans.contains(&o.policy);
        let what = format!(
            "removes policy {} and orphans its {} backup(s) (kept until `safepoint prune --orphans`)",
            o.policy, o.backups
        );
        let message = if acknowledged {
            format!("{what}: acknowledged ({ALLOW_ORPHANS})")
        } else {
            format!(
                "{what}: acknowledge with metadata.annotations[\"{ALLOW_ORPHANS}\"]: \"{}\" on any document of the revision",
                o.policy
            )
        };
        out.push(GuardCheck {
            policy: o.policy.clone(),
            kind: GuardKind::Orphans,
            acknowledged,
            message,
        });
    }
    out
}

#[cfg(test)]
#[path = "preview_tests.rs"]
mod tests;
