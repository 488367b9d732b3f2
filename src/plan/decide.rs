//! Pure: the planner proper — walks every policy of the desired state and
//! every orphaned policy of the observed state once, in name order.
//!
//! Order of the result: backups (per policy: requests in arrival order, then
//! the automatic one), then deletions (oldest first, at most
//! `max_deletions`). Kept backups per policy newest first, then orphans.
//!
//! Prune guards (safety). Retention always runs, so kept backups list
//! their rule reasons; a backup retention would delete is instead kept with
//! the guard as its only reason when:
//! - the policy's storage, or the storage of any of its backups, is in
//!   `incomplete_storages` (`StorageIncomplete`);
//! - the policy is suspended (`Suspended`);
//! - a backup of the policy is running (`Running`): its outcome changes
//!   retention, and one operation per policy runs at a time.
//!
//! Orphans (backups of a policy no longer in Git) are kept with `Orphaned`
//! and a note, unless `prune_orphans`; then every verified, unpinned orphan is
//! deleted (`OrphanPruned`). Missing/corrupt and pinned backups, and those
//! whose pin state is unknown (`pin_unknown`: their pin marker is unreadable),
//! are never deleted, not even by `prune --orphans`, nor anything in an
//! incomplete storage (whose pin markers could not be listed either).
//!
//! `next_wakeup`: the earliest instant after `now` among: the next cron slot
//! of each non-suspended policy, each RPO deadline (newest verified backup —
//! or the backup planned now — plus rpo), and each retry time.

use std::ops::Range;

use chrono::{DateTime, Utc};

use crate::observed::{BackupRecord, Health, ObservedState};
use crate::plan::backup::{self, Auto, Request};
use crate::plan::prune::{Deletions, Offered, Why};
use crate::plan::render::Instant;
use crate::plan::retention::{self, Decision, PlannedBackup, Verdicts};
use crate::plan::schedule::SlotCache;
use crate::plan::{Action, KeepReason, Kept, Note, Plan, PlanOptions, Reason};
use crate::policy::{BackupPolicy, DesiredState};

struct Cx<'a> {
    observed: &'a ObservedState,
    now: DateTime<Utc>,
    options: &'a PlanOptions,
    slots: SlotCache<'a>,
    deletions: Deletions<'a>,
    out: Plan,
}

impl Cx<'_> {
    fn note(&mut self, policy: &str, text: String) {
        self.out.notes.push(Note {
            policy: policy.to_string(),
            text,
        });
    }

    fn wake_at(&mut self, at: Option<DateTime<Utc>>) {
        if let Some(at) = at.filter(|at| *at > self.now) {
            self.out.next_wakeup = Some(self.out.next_wakeup.map_or(at, |w| w.min(at)));
        }
    }

    fn storage_incomplete(&self, policy_storage: &str, backups: &[BackupRecord]) -> bool {
        let incomplete = &self.observed.incomplete_storages;
        !incomplete.is_empty()
            && (incomplete.contains(policy_storage)
                || backups.iter().any(|b| incomplete.contains(&b.storage)))
    }
}

pub(crate) fn plan(
    desired: &DesiredState,
    observed: &ObservedState,
    now: DateTime<Utc>,
    options: &PlanOptions,
) -> Plan {
    let (mut out, deletions) = walk(
        desired,
        observed,
        now,
        options,
        Deletions::bounded(options.max_deletions),
    );
    if let Deletions::Bounded(d) = deletions {
        d.finish(&mut out.actions, &mut out.notes);
    }
    out
}

/// `plan` without the bound: no `Delete` action, every deletion candidate as
/// ranges of the observed lists instead (previews; see `prune`).
pub(crate) fn plan_all<'a>(
    desired: &'a DesiredState,
    observed: &'a ObservedState,
    now: DateTime<Utc>,
    options: &'a PlanOptions,
) -> (Plan, Vec<Offered<'a>>) {
    match walk(desired, observed, now, options, Deletions::all()) {
        (out, Deletions::All(all)) => (out, all),
        (out, Deletions::Bounded(_)) => (out, Vec::new()),
    }
}

fn walk<'a>(
    desired: &'a DesiredState,
    observed: &'a ObservedState,
    now: DateTime<Utc>,
    options: &'a PlanOptions,
    deletions: Deletions<'a>,
) -> (Plan, Deletions<'a>) {
    let mut cx = Cx {
        observed,
        now,
        options,
        slots: SlotCache::new(now),
        deletions,
        out: Plan::default(),
    };
    let mut requests = backup::group_requests(desired, &observed.requests, &mut cx.out.notes);
    for (name, policy) in &desired.policies {
        let backups = observed.backups.get(name).map_or(&[][..], Vec::as_slice);
        let reqs = requests.remove(name.as_str()).unwrap_or_default();
        plan_policy(&mut cx, name, policy, backups, reqs);
    }
    for (name, backups) in &observed.backups {
        if !desired.policies.contains_key(name) && !backups.is_empty() {
            plan_orphan(&mut cx, name, backups);
        }
    }
    (cx.out, cx.deletions)
}

fn plan_policy<'a>(
    cx: &mut Cx<'a>,
    name: &'a str,
    policy: &'a BackupPolicy,
    backups: &'a [BackupRecord],
    requests: Vec<Request<'a>>,
) {
    let running = cx.observed.running.contains(name);
    let planned = plan_backups(cx, name, policy, backups, requests, running);

    if policy.suspend {
        cx.note(
            name,
            "suspended: no automatic backup, nothing pruned".to_string(),
        );
    } else {
        let next = policy.schedule.as_ref().and_then(|s| cx.slots.get(s).next);
        cx.wake_at(next);
        if let Some(rpo) = policy.rpo {
            let base = if planned.is_empty() {
                newest_verified(backups)
            } else {
                Some(cx.now)
            };
            cx.wake_at(base.and_then(|b| b.checked_add_signed(rpo)));
        }
    }

    let incomplete = cx.storage_incomplete(&policy.storage, backups);
    let guard = if incomplete {
        Some(KeepReason::StorageIncomplete)
    } else if policy.suspend {
        Some(KeepReason::Suspended)
    } else if running {
        Some(KeepReason::Running)
    } else {
        None
    };
    let index = cx.observed.policy_index(name, backups);
    let Cx {
        now,
        deletions,
        out,
        ..
    } = cx;
    let mut verdicts = PolicyVerdicts {
        policy: name,
        backups,
        started: index.started(),
        why: Why::NotRetained(&policy.retention),
        guard,
        spared: 0,
        deletions,
        kept: Vec::new(),
    };
    retention::retain_indexed(
        backups,
        &index,
        &planned,
        *now,
        &policy.retention,
        &mut verdicts,
    );
    let PolicyVerdicts { spared, kept, .. } = verdicts;
    keep_all(&mut out.kept, name, backups, kept);
    if spared > 0 && incomplete {
        cx.note(
            name,
            format!("storage listing incomplete: {spared} backup(s) not pruned this cycle"),
        );
    }
}

/// Where retention's verdicts on one policy's backups go: deletions, or kept
/// with their reasons (with the guard as the reason when a guard spares them).
struct PolicyVerdicts<'a, 'c> {
    policy: &'a str,
    backups: &'a [BackupRecord],
    /// `PolicyIndex::started` of `backups`.
    started: &'c [i64],
    why: Why<'a>,
    guard: Option<KeepReason>,
    spared: usize,
    deletions: &'c mut Deletions<'a>,
    /// Kept backups (position, reasons), in order, for `keep_all`.
    kept: Vec<(usize, Vec<KeepReason>)>,
}

impl Verdicts for PolicyVerdicts<'_, '_> {
    fn decide(&mut self, i: usize, decision: Decision) {
        match (decision, &self.guard) {
            (Decision::Prune, None) => {
                self.deletions.offer(self.policy, self.backups, i, self.why);
            }
            (Decision::Keep(reasons), _) => self.kept.push((i, reasons)),
            (Decision::Prune, Some(guard)) => {
                self.spared += 1;
                self.kept.push((i, vec![guard.clone()]));
            }
        }
    }

    fn prune_run(&mut self, run: Range<usize>) {
        if self.guard.is_none() {
            let started = &self.started[run.clone()];
            self.deletions
                .offer_run(self.policy, self.backups, run, started, self.why);
        } else {
            for i in run {
                self.decide(i, Decision::Prune);
            }
        }
    }
}

/// Decides the policy's backups (actions + notes); returns them as planned
/// backups for retention.
fn plan_backups<'a>(
    cx: &mut Cx<'a>,
    name: &'a str,
    policy: &'a BackupPolicy,
    backups: &'a [BackupRecord],
    requests: Vec<Request<'a>>,
    running: bool,
) -> Vec<PlannedBackup<'a>> {
    let mut planned = Vec::new();
    if running {
        for r in &requests {
            let what = backup::describe_request(r.trigger, r.release);
            let text = format!(
                "{what} backup requested by {} waits: a backup of this policy is running",
                r.by.join(", ")
            );
            cx.note(name, text);
        }
        let text = "a backup is running: no automatic backup, no pruning until it finishes";
        cx.note(name, text.to_string());
        return planned;
    }
    for r in requests {
        cx.out.actions.push(Action::Backup {
            policy: name.to_string(),
            trigger: r.trigger,
            release: r.release.map(str::to_string),
            reason: Reason::Requested {
                by: r.by.join(", "),
            },
        });
        planned.push(PlannedBackup {
            trigger: r.trigger,
            release: r.release,
        });
    }
    if !planned.is_empty() || policy.suspend {
        return planned;
    }
    let last_slot = policy.schedule.as_ref().and_then(|s| cx.slots.get(s).last);
    let failure = cx.observed.failures.get(name);
    let newest = newest_verified(backups);
    match backup::automatic(policy, newest, last_slot, failure, cx.now, cx.options) {
        Auto::Idle => {}
        Auto::Due { trigger, reason } => {
            cx.out.actions.push(Action::Backup {
                policy: name.to_string(),
                trigger,
                release: None,
                reason,
            });
            planned.push(PlannedBackup {
                trigger,
                release: None,
            });
        }
        Auto::Waiting { retry_at } => {
            if let Some(f) = failure {
                let plural = if f.consecutive == 1 { "" } else { "s" };
                let text = format!(
                    "backup due but the last attempt failed at {} ({} consecutive failure{plural}: {}); retry at {}",
                    Instant(f.at),
                    f.consecutive,
                    f.error,
                    Instant(retry_at)
                );
                cx.note(name, text);
            }
            cx.wake_at(Some(retry_at));
        }
    }
    planned
}

/// Appends the kept backups of one policy. At fleet scale, copying an id is
/// two cache misses (the record, then the string's bytes), which would each
/// wait behind the allocations of the copy before. So the records are read
/// first, then the first byte of each id, in tight loops with no dependency
/// between iterations: the misses overlap, and the copies find the bytes in
/// cache.
fn keep_all(
    out: &mut Vec<Kept>,
    policy: &str,
    backups: &[BackupRecord],
    kept: Vec<(usize, Vec<KeepReason>)>,
) {
    let ids: Vec<&str> = kept.iter().map(|(i, _)| backups[*i].id.as_str()).collect();
    let touched = ids.iter().fold(0_u8, |acc, id| {
        acc ^ id.as_bytes().first().copied().unwrap_or(0)
    });
    std::hint::black_box(touched);
    out.reserve(kept.len());
    for ((_, reasons), id) in kept.into_iter().zip(ids) {
        out.push(Kept {
            policy: policy.to_string(),
            backup_id: id.to_string(),
            reasons,
        });
    }
}

fn newest_verified(backups: &[BackupRecord]) -> Option<DateTime<Utc>> {
    backups
        .iter()
        .find(|b| b.health == Health::Verified)
        .map(|b| b.started_at)
}

fn plan_orphan<'a>(cx: &mut Cx<'a>, name: &'a str, backups: &'a [BackupRecord]) {
    let prune = cx.options.prune_orphans;
    let incomplete = cx.storage_incomplete("", backups);
    let mut pruned = 0_usize;
    for (i, b) in backups.iter().enumerate() {
        let verified = b.health == Health::Verified;
        if prune && verified && b.pinned.is_none() && b.pin_unknown.is_none() && !incomplete {
            cx.deletions.offer(name, backups, i, Why::Orphan);
            pruned += 1;
            continue;
        }
        let mut reasons = vec![KeepReason::Orphaned];
        if let Some(why) = &b.pinned {
            reasons.push(KeepReason::Pinned { why: why.clone() });
        }
        if let Some(why) = &b.pin_unknown {
            reasons.push(KeepReason::PinUnknown { why: why.clone() });
        }
        if !verified {
            reasons.push(KeepReason::Unhealthy);
        }
        if prune && incomplete {
            reasons.push(KeepReason::StorageIncomplete);
        }
        cx.out.kept.push(Kept {
            policy: name.to_string(),
            backup_id: b.id.clone(),
            reasons,
        });
    }
    let kept = backups.len() - pruned;
    let text = if prune {
        format!("policy deleted from Git: {pruned} backup(s) pruned (--orphans), {kept} kept")
    } else {
        format!(
            "policy deleted from Git: {kept} backup(s) kept (run `safepoint prune --orphans` to delete)"
        )
    };
    cx.note(name, text);
}
