//! Pure: the consequences half of a preview — what the proposed plan
//! deletes (grouped by policy, each compared with the plan in force), the
//! backups it takes, the histories it orphans.
//!
//! At fleet scale the deletions are the bulk (2,000 policies with a backlog
//! of 1,000 backups each: ~2 M), so they come from `decide::plan_all` as
//! ranges of the observed lists and are compared position by position, with
//! no set of ids and no `Delete` action built (docs/performance.md,
//! "Preview").

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Serialize, Serializer};

use super::preview::{Change, Deletion, NewBackup, Orphaned, PolicyChange, PolicyDeletions};
use super::prune::Offered;
use super::{Action, KeepReason, Plan, retention};
use crate::observed::{Health, ObservedState, Trigger};
use crate::policy::DesiredState;

/// The deletions of `deleted` (the proposed plan's), grouped by policy in
/// plan order (the policies by name, then orphans), each oldest first;
/// `pending` are the plan in force's and `before` its kept backups.
pub(super) fn deletions(
    before: &Plan,
    pending: &[Offered<'_>],
    deleted: &[Offered<'_>],
    proposed: &DesiredState,
) -> Vec<PolicyDeletions> {
    let mut pending_of: HashMap<&str, Vec<&Offered<'_>>> = HashMap::new();
    for o in pending {
        pending_of.entry(o.policy).or_default().push(o);
    }
    // Built on the first deletion the change causes (most are pending).
    let mut kept_today: Option<HashMap<(&str, &str), &[KeepReason]>> = None;
    let mut out = Vec::new();
    for group in deleted.chunk_by(|a, b| a.policy == b.policy) {
        let (policy, list) = (group[0].policy, group[0].list);
        // Per position: 0 not pending, 1 pending, 2 pending if plain (run).
        let mut mask = vec![0_u8; list.len()];
        for o in pending_of.get(policy).into_iter().flatten() {
            let mark = if o.run { 2 } else { 1 };
            let end = o.range.end.min(mask.len());
            for m in mask.get_mut(o.range.start..end).into_iter().flatten() {
                *m = mark;
            }
        }
        let newest = list.iter().position(|b| b.health == Health::Verified);
        let len: usize = group.iter().map(|o| o.range.len()).sum();
        let mut backups = Vec::with_capacity(len);
        let mut caused = 0;
        for o in group.iter().rev() {
            for i in o.range.clone().rev() {
                let b = &list[i];
                if !o.deletes(i) {
                    continue;
                }
                let is_pending = match mask[i] {
                    0 => false,
                    1 => true,
                    _ => b.is_plain(),
                };
                let kept_today_by = if is_pending {
                    Vec::new()
                } else {
                    caused += 1;
                    let kept = kept_today.get_or_insert_with(|| kept_index(before));
                    kept.get(&(policy, b.id.as_str()))
                        .map_or_else(Vec::new, |r| r.to_vec())
                };
                backups.push(Deletion {
                    backup_id: b.id.clone(),
                    started_at: b.started_at,
                    trigger: b.trigger,
                    caused_by_change: !is_pending,
                    newest_verified: newest == Some(i),
                    kept_today_by,
                });
            }
        }
        if backups.is_empty() {
            continue;
        }
        out.push(PolicyDeletions {
            policy: policy.to_string(),
            rules: proposed.policies.get(policy).map_or_else(
                || "orphan".to_string(),
                |p| retention::describe(&p.retention),
            ),
            count: backups.len(),
            caused,
            backups,
            unlisted: 0,
        });
    }
    out
}

fn kept_index(plan: &Plan) -> HashMap<(&str, &str), &[KeepReason]> {
    plan.kept
        .iter()
        .map(|k| {
            (
                (k.policy.as_str(), k.backup_id.as_str()),
                k.reasons.as_slice(),
            )
        })
        .collect()
}

/// `DateTime<Utc>` exactly as chrono serializes it (`2026-11-25T06:30:00Z`),
/// written by hand for whole seconds of years 0-9999: a fleet-sized preview
/// has millions of them and chrono's formatting machinery costs several
/// times more. Anything else goes through chrono.
pub(super) fn rfc3339<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    let n = t.naive_utc();
    if n.nanosecond() != 0 || !(0..=9999).contains(&n.year()) {
        return t.serialize(s);
    }
    let mut buf = *b"0000-00-00T00:00:00Z";
    let mut put = |at: usize, width: usize, mut v: u32| {
        for k in (at..at + width).rev() {
            buf[k] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, n.year().unsigned_abs());
    put(5, 2, n.month());
    put(8, 2, n.day());
    put(11, 2, n.hour());
    put(14, 2, n.minute());
    put(17, 2, n.second());
    match std::str::from_utf8(&buf) {
        Ok(text) => s.serialize_str(text),
        Err(_) => t.serialize(s),
    }
}

pub(super) fn new_backups(before: &Plan, after: &Plan) -> Vec<NewBackup> {
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

pub(super) fn orphaned(
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
