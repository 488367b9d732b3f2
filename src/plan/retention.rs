//! Pure: restic-style retention over ONE policy's backups.
//!
//! Rules, as restic `forget` applies them:
//! - The list is walked newest to oldest, once. Only *verified* backups count
//!   toward a rule; missing/corrupt ones are kept (`Unhealthy`), never count.
//! - `keepLast N`: the N newest verified backups.
//! - `keepHourly/Daily/Weekly/Monthly/Yearly N`: the newest backup of each of
//!   the N most recent distinct buckets *that hold a backup* (not the last N
//!   calendar periods before `now`). Buckets are computed in UTC; weeks are ISO
//!   weeks (Monday to Sunday).
//! - `keepReleases N`: every backup carrying a release tag (triggers
//!   `release`, `pre-deploy`, `post-deploy`, `forensic`) whose tag is one of
//!   the N most recent distinct tags (recency = the newest backup of the tag),
//!   so a release baseline keeps its pre-deploy snapshot with it.
//! - Pinned backups are kept (and still count toward the other rules), and
//!   so are backups whose pin state is unknown (`PinUnknown`: the pin marker
//!   in storage could not be read).
//! - The newest verified backup is always kept (`NewestVerified`).
//! - A kept backup lists every reason that keeps it, in rule order.
//!
//! Planned backups (decided in the same plan) take part as verified backups
//! started at `now`, placed before every existing backup not newer than
//! `now`; they consume rule slots but are never reported (they have no id yet).
//!
//! Performance: one pass, no sorting, no allocation for a backup that is not
//! kept; bucket keys are integer arithmetic on the UTC timestamp and stop being
//! computed once every counter is exhausted. With the policy's `PolicyIndex`
//! (src/observed.rs), runs of plain backups are decided from their start
//! seconds without reading the records (docs/performance.md, "Planner").
//!
//! Here: the walk over the list and the verdicts; `walk` holds the rules'
//! counters, `labels` the bucket labels of the keep reasons.

mod labels;
mod walk;

use std::ops::Range;

use chrono::{DateTime, Utc};

use crate::observed::{BackupRecord, PolicyIndex, Trigger};
use crate::plan::KeepReason;
use crate::policy::Retention;
use walk::Walk;

/// A backup planned in the same plan, counted as if it already existed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedBackup<'a> {
    pub trigger: Trigger,
    pub release: Option<&'a str>,
}

/// What retention decided for one existing backup.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Keep(Vec<KeepReason>),
    /// No rule keeps it.
    Prune,
}

/// True for the triggers whose backups belong to a release (`keepReleases`).
pub fn is_release_trigger(trigger: Trigger) -> bool {
    matches!(
        trigger,
        Trigger::Release | Trigger::PreDeploy | Trigger::PostDeploy | Trigger::Forensic
    )
}

/// Receives retention's verdicts, in list order.
pub trait Verdicts {
    fn decide(&mut self, index: usize, decision: Decision);
    /// Every backup of `run` is pruned: plain backups that no rule keeps.
    fn prune_run(&mut self, run: Range<usize>) {
        for i in run {
            self.decide(i, Decision::Prune);
        }
    }
}

impl<F: FnMut(usize, Decision)> Verdicts for F {
    fn decide(&mut self, index: usize, decision: Decision) {
        self(index, decision)
    }
}

/// Gives a verdict on every backup of `backups` (newest first, as
/// `ObservedState` guarantees), in order.
pub fn retain<'a>(
    backups: &'a [BackupRecord],
    planned: &[PlannedBackup<'a>],
    now: DateTime<Utc>,
    rules: &Retention,
    verdicts: &mut impl Verdicts,
) {
    let index = PolicyIndex::build(backups);
    retain_indexed(backups, &index, planned, now, rules, verdicts);
}

/// `retain` with the index of `backups` at hand: runs of plain backups that
/// fall in the current bucket of every rule still counting (or come after
/// every rule is exhausted) are decided from the index alone.
pub fn retain_indexed<'a>(
    backups: &'a [BackupRecord],
    index: &PolicyIndex,
    planned: &[PlannedBackup<'a>],
    now: DateTime<Utc>,
    rules: &Retention,
    verdicts: &mut impl Verdicts,
) {
    let mut state = Walk::new(rules);
    // Existing backups newer than `now` (clock skew) stay in front.
    let split = if planned.is_empty() {
        0
    } else {
        gallop(backups, |b| b.started_at > now)
    };
    for (i, b) in backups[..split].iter().enumerate() {
        verdicts.decide(i, state.existing(b));
    }
    for p in planned {
        let tag = p.release.filter(|_| is_release_trigger(p.trigger));
        let mut sink = Vec::new();
        state.count(now, tag, &mut sink);
    }
    let special = index.special();
    let mut special = special[special.partition_point(|&s| s < split)..].iter();
    let mut next_special = special.next().copied().unwrap_or(usize::MAX);
    let mut i = split;
    while i < backups.len() {
        if i == next_special {
            verdicts.decide(i, state.existing(&backups[i]));
            next_special = special.next().copied().unwrap_or(usize::MAX);
            i += 1;
            continue;
        }
        // backups[i..end] are plain.
        let end = next_special.min(backups.len());
        let pruned = state.plain_pruned(&index.started()[i..end]);
        if pruned > 0 {
            verdicts.prune_run(i..i + pruned);
            i += pruned;
        } else {
            verdicts.decide(i, state.plain(index.started()[i], &backups[i]));
            i += 1;
        }
    }
}

/// `slice.partition_point(pred)` for a `pred` that usually turns false
/// after a few elements: probes 1, 2, 4, ... elements ahead, then bisects.
fn gallop<T>(slice: &[T], pred: impl Fn(&T) -> bool) -> usize {
    let (mut lo, mut step) = (0, 1);
    while lo + step <= slice.len() && pred(&slice[lo + step - 1]) {
        lo += step;
        step *= 2;
    }
    let hi = (lo + step).min(slice.len());
    lo + slice[lo..hi].partition_point(pred)
}

/// The rules in force, as users write them: `keepLast=3, keepDaily=7`.
pub fn describe(r: &Retention) -> String {
    let rules = [
        ("keepLast", r.keep_last),
        ("keepHourly", r.keep_hourly),
        ("keepDaily", r.keep_daily),
        ("keepWeekly", r.keep_weekly),
        ("keepMonthly", r.keep_monthly),
        ("keepYearly", r.keep_yearly),
        ("keepReleases", r.keep_releases),
    ];
    let parts: Vec<String> = rules
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(name, n)| format!("{name}={n}"))
        .collect();
    if parts.is_empty() {
        "no rule".to_string()
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
#[path = "retention_tests.rs"]
mod tests;
