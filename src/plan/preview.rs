//! Pure: the consequences of a proposed policy revision against the live
//! observed state, never executed. The same planner (`plan::plan`) is run
//! twice at the same `now` — with the revision in force and with the proposed
//! one, deletions unbounded — and the two plans are compared:
//!
//! - desired-state diff: policies added, removed, renamed-looking (a removed
//!   and an added policy with the same source), changed fields (one level
//!   into `source`, `retention`, `schedule`, ...); storages and notifiers
//!   added/removed/changed;
//! - deletions of the proposed plan, each with the rules that keep it today
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
//! Rendering (Markdown for a pull-request comment) is in `preview_render.rs`.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use super::{Action, KeepReason, PlanOptions, Reason, retention, schedule};
use crate::observed::{BackupRecord, Health, ObservedState, Trigger};
use crate::policy::annotations::{ALLOW_DELETIONS, ALLOW_ORPHANS};
use crate::policy::{BackupPolicy, DesiredState, Schedule};

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
    /// What the proposed revision's next cycles would delete, oldest first.
    pub deletions: Vec<Deletion>,
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

    /// Deletions caused by the change (not pending without it).
    pub fn caused_deletions(&self) -> impl Iterator<Item = &Deletion> {
        self.deletions.iter().filter(|d| d.caused_by_change)
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

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Deletion {
    pub policy: String,
    pub backup_id: String,
    pub started_at: Option<DateTime<Utc>>,
    pub trigger: Option<Trigger>,
    /// False when the revision in force deletes it too (already pending).
    pub caused_by_change: bool,
    /// It is the policy's newest verified backup today.
    pub newest_verified: bool,
    /// The rules that keep it under the revision in force.
    pub kept_today_by: Vec<KeepReason>,
    /// The proposed rules, which no longer keep it.
    pub rules: String,
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
        max_deletions: usize::MAX,
        prune_orphans: false,
        ..options.clone()
    };
    let before = super::plan(current, observed, now, &unbounded);
    let after = super::plan(proposed, observed, now, &unbounded);
    let mut out = Preview {
        now: Some(now),
        ..Preview::default()
    };
    diff_policies(current, proposed, &mut out);
    out.storages = diff_named(&current.storages, &proposed.storages);
    out.notifiers = diff_named(&current.notifiers, &proposed.notifiers);
    diff_drills_and_schedules(current, proposed, now, &mut out);
    out.deletions = deletions(&before, &after, proposed, observed);
    out.backups = new_backups(&before, &after);
    out.orphaned = orphaned(current, proposed, observed, &out.policies);
    out.guard = guard(&out, proposed, options.deletion_guard);
    out
}

fn diff_policies(current: &DesiredState, proposed: &DesiredState, out: &mut Preview) {
    let removed: Vec<&BackupPolicy> = current
        .policies
        .values()
        .filter(|p| !proposed.policies.contains_key(&p.name))
        .collect();
    let mut renamed_to: BTreeMap<&str, &str> = BTreeMap::new();
    for (name, p) in &proposed.policies {
        let Some(old) = current.policies.get(name) else {
            let from = removed
                .iter()
                .find(|r| r.source == p.source && !renamed_to.contains_key(r.name.as_str()))
                .copied();
            if let Some(r) = from {
                renamed_to.insert(r.name.as_str(), name.as_str());
            }
            out.policies.push(PolicyChange {
                policy: name.clone(),
                change: Change::Added,
                fields: Vec::new(),
                renamed: from.map(|r| r.name.clone()),
            });
            continue;
        };
        if old != p {
            out.policies.push(PolicyChange {
                policy: name.clone(),
                change: Change::Changed,
                fields: field_changes(old, p),
                renamed: None,
            });
        }
    }
    for r in removed {
        out.policies.push(PolicyChange {
            policy: r.name.clone(),
            change: Change::Removed,
            fields: Vec::new(),
            renamed: renamed_to.get(r.name.as_str()).map(|s| s.to_string()),
        });
    }
}

/// Dotted paths whose values differ, one level of nesting deep enough for
/// `retention.keepDaily` and `source.path`; lists compare as a whole.
fn field_changes(old: &BackupPolicy, new: &BackupPolicy) -> Vec<FieldChange> {
    let (a, b) = (
        serde_json::to_value(old).unwrap_or_default(),
        serde_json::to_value(new).unwrap_or_default(),
    );
    let mut out = Vec::new();
    diff_values("", &a, &b, &mut out);
    out
}

fn diff_values(path: &str, a: &Value, b: &Value, out: &mut Vec<FieldChange>) {
    if a == b {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let field = if path.is_empty() {
                    camel(k)
                } else {
                    format!("{path}.{}", camel(k))
                };
                let (va, vb) = (
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                );
                diff_values(&field, va, vb, out);
            }
        }
        _ => out.push(FieldChange {
            field: path.to_string(),
            before: a.clone(),
            after: b.clone(),
        }),
    }
}

/// The model's snake_case field names as users write them in YAML.
fn camel(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut upper = false;
    for c in s.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn diff_named<T: PartialEq>(a: &BTreeMap<String, T>, b: &BTreeMap<String, T>) -> Vec<NamedChange> {
    let mut out = Vec::new();
    for (name, x) in a {
        match b.get(name) {
            None => out.push(named(name, Change::Removed)),
            Some(y) if x != y => out.push(named(name, Change::Changed)),
            Some(_) => {}
        }
    }
    for name in b.keys().filter(|n| !a.contains_key(*n)) {
        out.push(named(name, Change::Added));
    }
    out
}

fn named(name: &str, change: Change) -> NamedChange {
    NamedChange {
        name: name.to_string(),
        change,
    }
}

fn describe_schedule(s: &Schedule) -> String {
    format!("{} ({})", s.cron, s.timezone.name())
}

fn diff_drills_and_schedules(
    current: &DesiredState,
    proposed: &DesiredState,
    now: DateTime<Utc>,
    out: &mut Preview,
) {
    fn drill(d: &DesiredState) -> BTreeMap<String, &crate::policy::DrillSpec> {
        d.policies
            .iter()
            .filter_map(|(n, p)| p.drill.as_ref().map(|d| (n.clone(), d)))
            .collect()
    }
    out.drills = diff_named(&drill(current), &drill(proposed));
    let names: std::collections::BTreeSet<&String> = current
        .policies
        .keys()
        .chain(proposed.policies.keys())
        .collect();
    for name in names {
        let a = current.policies.get(name).and_then(|p| p.schedule.as_ref());
        let b = proposed
            .policies
            .get(name)
            .and_then(|p| p.schedule.as_ref());
        if a == b {
            continue;
        }
        out.schedules.push(ScheduleChange {
            policy: name.clone(),
            before: a.map(describe_schedule),
            after: b.map(describe_schedule),
            next_before: a.and_then(|s| schedule::next_slot(s, now)),
            next_after: b.and_then(|s| schedule::next_slot(s, now)),
        });
    }
}

fn deletions(
    before: &super::Plan,
    after: &super::Plan,
    proposed: &DesiredState,
    observed: &ObservedState,
) -> Vec<Deletion> {
    let pending: HashSet<(&str, &str)> = delete_ids(before).collect();
    let deleted: Vec<(&str, &str)> = delete_ids(after).collect();
    if deleted.is_empty() {
        return Vec::new();
    }
    let wanted: HashSet<(&str, &str)> = deleted.iter().copied().collect();
    let mut kept_by: HashMap<(&str, &str), &Vec<KeepReason>> = HashMap::new();
    for k in &before.kept {
        let key = (k.policy.as_str(), k.backup_id.as_str());
        if wanted.contains(&key) {
            kept_by.insert(key, &k.reasons);
        }
    }
    let mut records: HashMap<&str, HashMap<&str, &BackupRecord>> = HashMap::new();
    let mut out = Vec::with_capacity(deleted.len());
    for (policy, id) in deleted {
        let list = observed.backups.get(policy).map_or(&[][..], Vec::as_slice);
        let by_id = records
            .entry(policy)
            .or_insert_with(|| list.iter().map(|b| (b.id.as_str(), b)).collect());
        let record = by_id.get(id);
        let newest = list.iter().find(|b| b.health == Health::Verified);
        out.push(Deletion {
            policy: policy.to_string(),
            backup_id: id.to_string(),
            started_at: record.map(|r| r.started_at),
            trigger: record.map(|r| r.trigger),
            caused_by_change: !pending.contains(&(policy, id)),
            newest_verified: newest.is_some_and(|n| n.id == id),
            kept_today_by: kept_by
                .get(&(policy, id))
                .map_or(Vec::new(), |r| (*r).clone()),
            rules: proposed.policies.get(policy).map_or_else(
                || "orphan".to_string(),
                |p| retention::describe(&p.retention),
            ),
        });
    }
    out
}

fn delete_ids(plan: &super::Plan) -> impl Iterator<Item = (&str, &str)> {
    plan.actions.iter().filter_map(|a| match a {
        Action::Delete {
            policy, backup_id, ..
        } => Some((policy.as_str(), backup_id.as_str())),
        Action::Backup { .. } => None,
    })
}

fn new_backups(before: &super::Plan, after: &super::Plan) -> Vec<NewBackup> {
    let taken: HashSet<(&str, Trigger, Option<&str>)> = before
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Backup {
                policy,
                trigger,
                release,
                ..
            } => Some((policy.as_str(), *trigger, release.as_deref())),
            Action::Delete { .. } => None,
        })
        .collect();
    after
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Backup {
                policy,
                trigger,
                release,
                reason,
            } => Some(NewBackup {
                policy: policy.clone(),
                trigger: *trigger,
                reason: reason.clone(),
                caused_by_change: !taken.contains(&(policy.as_str(), *trigger, release.as_deref())),
            }),
            Action::Delete { .. } => None,
        })
        .collect()
}

fn orphaned(
    current: &DesiredState,
    proposed: &DesiredState,
    observed: &ObservedState,
    changes: &[PolicyChange],
) -> Vec<Orphaned> {
    current
        .policies
        .keys()
        .filter(|n| !proposed.policies.contains_key(*n))
        .filter_map(|name| {
            let list = observed.backups.get(name).filter(|l| !l.is_empty())?;
            let renamed_to = changes
                .iter()
                .find(|c| c.change == Change::Removed && &c.policy == name)
                .and_then(|c| c.renamed.clone());
            Some(Orphaned {
                policy: name.clone(),
                backups: list.len(),
                newest: list.first().map(|b| b.started_at),
                renamed_to,
            })
        })
        .collect()
}

/// The destructive consequences of `p` and whether `proposed` acknowledges
/// each (see the module documentation).
fn guard(p: &Preview, proposed: &DesiredState, threshold: usize) -> Vec<GuardCheck> {
    let mut per_policy: BTreeMap<&str, (usize, bool)> = BTreeMap::new();
    for d in p.caused_deletions() {
        let e = per_policy.entry(d.policy.as_str()).or_default();
        e.0 += 1;
        e.1 |= d.newest_verified;
    }
    let mut out = Vec::new();
    for (policy, (n, newest)) in per_policy {
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
