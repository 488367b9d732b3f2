//! Pure: the counters of one retention walk (`Walk`): how many backups each
//! rule may still keep, the bucket each rule last kept, the release tags
//! kept, and the horizon past which no rule can keep a plain backup.

use chrono::{DateTime, Datelike, NaiveDate, Utc};

use super::labels::{label_day, label_hour, label_month, label_week, label_year};
use super::{Decision, gallop, is_release_trigger};
use crate::observed::{BackupRecord, Health};
use crate::plan::KeepReason;
use crate::policy::Retention;

/// Counters of one walk.
pub(super) struct Walk<'a> {
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
    pub(super) fn new(r: &Retention) -> Self {
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
    pub(super) fn plain_pruned(&mut self, run: &[i64]) -> usize {
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
    pub(super) fn existing(&mut self, b: &'a BackupRecord) -> Decision {
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
    pub(super) fn plain(&mut self, secs: i64, b: &'a BackupRecord) -> Decision {
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
    pub(super) fn count(
        &mut self,
        at: DateTime<Utc>,
        tag: Option<&'a str>,
        out: &mut Vec<KeepReason>,
    ) {
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
