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

use std::ops::Range;

use chrono::{DateTime, Datelike, NaiveDate, Utc};

use crate::observed::{BackupRecord, Health, PolicyIndex, Trigger};
use crate::plan::KeepReason;
use crate::policy::Retention;

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

/// Counters of one walk.
struct Walk<'a> {
    last: u32,
    hourly: Bucket,
    daily: Bucket,
    weekly: Bucket,
    monthly: Bucket,
    yearly: Bucket,
    releases_left: u32,
    releases: Vec<&'a str>,
    /// Any bucket or `keepLast` counter left: bucket keys still needed.
    counting: bool,
    /// With `keepLast` exhausted, a backup started at or after this instant
    /// (Unix seconds) falls in the same bucket as the previous one for every
    /// rule still counting: no rule can keep it, no key needs computing.
    horizon: Option<i64>,
    verified_seen: u32,
}

#[derive(Clone, Copy)]
struct Bucket {
    left: u32,
    prev: Option<i64>,
}

impl Bucket {
    fn new(n: u32) -> Self {
        Bucket {
            left: n,
            prev: None,
        }
    }
    /// True when `key` opens a new bucket that is kept.
    fn take(&mut self, key: i64) -> bool {
        if self.left == 0 || self.prev == Some(key) {
            return false;
        }
        self.prev = Some(key);
        self.left -= 1;
        true
    }
}

impl<'a> Walk<'a> {
    fn new(r: &Retention) -> Self {
        let mut w = Walk {
            last: r.keep_last,
            hourly: Bucket::new(r.keep_hourly),
            daily: Bucket::new(r.keep_daily),
            weekly: Bucket::new(r.keep_weekly),
            monthly: Bucket::new(r.keep_monthly),
            yearly: Bucket::new(r.keep_yearly),
            releases_left: r.keep_releases,
            releases: Vec::new(),
            counting: true,
            horizon: None,
            verified_seen: 0,
        };
        w.refresh();
        w
    }

    fn refresh(&mut self) {
        self.counting = self.last > 0
            || self.hourly.left > 0
            || self.daily.left > 0
            || self.weekly.left > 0
            || self.monthly.left > 0
            || self.yearly.left > 0;
    }

    /// The hot path, most of a long history: how many of a run of plain
    /// backups (their start seconds, newest first) no rule keeps, counting
    /// them as seen. They are the ones before the first that `existing` must
    /// count: none before a verified backup was seen (it is the newest
    /// verified), all once every counter is exhausted, else those started at
    /// or after the horizon, found by galloping from the front.
    fn plain_pruned(&mut self, run: &[i64]) -> usize {
        let n = if self.verified_seen == 0 {
            0
        } else if !self.counting {
            run.len()
        } else if let Some(h) = self.horizon {
            gallop(run, |&t| t >= h)
        } else {
            0
        };
        let counted = u32::try_from(n).unwrap_or(u32::MAX);
        self.verified_seen = self.verified_seen.saturating_add(counted);
        n
    }

    #[inline(never)]
    fn existing(&mut self, b: &'a BackupRecord) -> Decision {
        let verified = b.health == Health::Verified;
        let mut reasons = Vec::new();
        if verified {
            let tag = if self.counting_releases() {
                b.release
                    .as_deref()
                    .filter(|_| is_release_trigger(b.trigger))
            } else {
                None
            };
            let first = self.verified_seen == 0;
            self.count(b.started_at, tag, &mut reasons);
            if let Some(why) = &b.pinned {
                reasons.push(KeepReason::Pinned { why: why.clone() });
            }
            if let Some(why) = &b.pin_unknown {
                reasons.push(KeepReason::PinUnknown { why: why.clone() });
            }
            if first {
                reasons.push(KeepReason::NewestVerified);
            }
        } else {
            if let Some(why) = &b.pinned {
                reasons.push(KeepReason::Pinned { why: why.clone() });
            }
            if let Some(why) = &b.pin_unknown {
                reasons.push(KeepReason::PinUnknown { why: why.clone() });
            }
            reasons.push(KeepReason::Unhealthy);
        }
        if reasons.is_empty() {
            Decision::Prune
        } else {
            Decision::Keep(reasons)
        }
    }

    /// `existing` for a plain backup, from its start second (which gives the
    /// same buckets and labels as its exact start): the record stays unread.
    fn plain(&mut self, secs: i64, b: &'a BackupRecord) -> Decision {
        let Some(at) = DateTime::from_timestamp(secs, 0) else {
            return self.existing(b);
        };
        let first = self.verified_seen == 0;
        let mut reasons = Vec::new();
        self.count(at, None, &mut reasons);
        if first {
            reasons.push(KeepReason::NewestVerified);
        }
        if reasons.is_empty() {
            Decision::Prune
        } else {
            Decision::Keep(reasons)
        }
    }

    fn counting_releases(&self) -> bool {
        self.releases_left > 0 || !self.releases.is_empty()
    }

    /// Counts one verified backup toward every rule, pushing the rules that
    /// keep it.
    fn count(&mut self, at: DateTime<Utc>, tag: Option<&'a str>, out: &mut Vec<KeepReason>) {
        self.verified_seen += 1;
        // `h` is a whole second: `at < h` compares `at` rounded down.
        if self.counting && self.horizon.is_none_or(|h| at.timestamp() < h) {
            self.count_buckets(at, out);
        }
        if let Some(tag) = tag {
            if self.releases.contains(&tag) {
                out.push(KeepReason::Release {
                    tag: tag.to_string(),
                });
            } else if self.releases_left > 0 {
                self.releases_left -= 1;
                self.releases.push(tag);
                out.push(KeepReason::Release {
                    tag: tag.to_string(),
                });
            }
        }
    }

    fn count_buckets(&mut self, at: DateTime<Utc>, out: &mut Vec<KeepReason>) {
        if self.last > 0 {
            self.last -= 1;
            out.push(KeepReason::Last {
                n: self.verified_seen,
            });
        }
        let ts = at.timestamp();
        if self.hourly.take(ts.div_euclid(3600)) {
            out.push(KeepReason::Hourly {
                bucket: label_hour(at),
            });
        }
        let days = ts.div_euclid(86_400);
        if self.daily.take(days) {
            out.push(KeepReason::Daily {
                bucket: label_day(at.date_naive()),
            });
        }
        // 1970-01-01 was a Thursday: +3 makes weeks start on Monday.
        if self.weekly.take((days + 3).div_euclid(7)) {
            out.push(KeepReason::Weekly {
                bucket: label_week(at.date_naive()),
            });
        }
        if self.monthly.left > 0 || self.yearly.left > 0 {
            let date = at.date_naive();
            let year = i64::from(date.year());
            if self.monthly.take(year * 12 + i64::from(date.month0())) {
                out.push(KeepReason::Monthly {
                    bucket: label_month(date),
                });
            }
            if self.yearly.take(year) {
                out.push(KeepReason::Yearly {
                    bucket: label_year(date.year()),
                });
            }
        }
        self.refresh();
        self.horizon = if self.counting && self.last == 0 {
            self.bucket_start()
        } else {
            None
        };
    }

    /// The latest start (Unix seconds) of the current bucket of the rules
    /// still counting.
    fn bucket_start(&self) -> Option<i64> {
        // `None` inside: some rule's bucket start is unknown, no horizon.
        let mut start: Option<Option<i64>> = None;
        let mut consider = |bucket: &Bucket, first_second: fn(i64) -> Option<i64>| {
            if bucket.left > 0 {
                let s = bucket.prev.and_then(first_second);
                start = Some(match (start, s) {
                    (None, s) => s,
                    (Some(Some(a)), Some(b)) => Some(a.max(b)),
                    (Some(_), _) => None,
                });
            }
        };
        consider(&self.hourly, |h| h.checked_mul(3600));
        consider(&self.daily, |d| d.checked_mul(86_400));
        consider(&self.weekly, |w| (w * 7 - 3).checked_mul(86_400));
        consider(&self.monthly, |m| {
            let date = NaiveDate::from_ymd_opt(
                i32::try_from(m.div_euclid(12)).ok()?,
                u32::try_from(m.rem_euclid(12)).ok()? + 1,
                1,
            )?;
            Some(date.and_hms_opt(0, 0, 0)?.and_utc().timestamp())
        });
        consider(&self.yearly, |y| {
            let date = NaiveDate::from_ymd_opt(i32::try_from(y).ok()?, 1, 1)?;
            Some(date.and_hms_opt(0, 0, 0)?.and_utc().timestamp())
        });
        start?
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

// Labels are built by hand: hundreds of thousands of them per plan at fleet
// scale, and `format!` costs several times more.

fn push_num(s: &mut String, n: u32, width: usize) {
    let mut buf = [b'0'; 10];
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let digits = buf.len() - i;
    for _ in digits..width {
        s.push('0');
    }
    for &c in &buf[i..] {
        s.push(char::from(c));
    }
}

fn push_year(s: &mut String, year: i32) {
    if year < 0 {
        s.push('-');
    }
    push_num(s, year.unsigned_abs(), 4);
}

fn label_year(year: i32) -> String {
    let mut s = String::with_capacity(6);
    push_year(&mut s, year);
    s
}

fn label_month(d: NaiveDate) -> String {
    let mut s = String::with_capacity(8);
    push_year(&mut s, d.year());
    s.push('-');
    push_num(&mut s, d.month(), 2);
    s
}

fn label_day(d: NaiveDate) -> String {
    let mut s = String::with_capacity(10);
    push_year(&mut s, d.year());
    s.push('-');
    push_num(&mut s, d.month(), 2);
    s.push('-');
    push_num(&mut s, d.day(), 2);
    s
}

fn label_hour(at: DateTime<Utc>) -> String {
    use chrono::Timelike;
    let mut s = label_day(at.date_naive());
    s.reserve(6);
    s.push(' ');
    push_num(&mut s, at.hour(), 2);
    s.push_str(":00");
    s
}

fn label_week(d: NaiveDate) -> String {
    let w = d.iso_week();
    let mut s = String::with_capacity(8);
    push_year(&mut s, w.year());
    s.push_str("-W");
    push_num(&mut s, w.week(), 2);
    s
}

#[cfg(test)]
#[path = "retention_tests.rs"]
mod tests;
