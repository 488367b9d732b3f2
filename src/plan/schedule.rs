//! Pure: cron slots of a `Schedule`. Slots are computed on the wall clock of
//! the schedule's time zone (croner handles DST gaps and folds) and returned
//! in UTC.
//!
//! DST rules (croner's, documented here because the planner relies on them):
//! - spring forward: a fixed-time job whose wall-clock time does not exist
//!   that day (`0 2 * * *` in Europe/Berlin on the last Sunday of March) runs
//!   at the first real instant after the gap (03:00 CEST = 01:00 UTC);
//! - fall back: a fixed-time job in the repeated hour runs once, on the first
//!   (earlier) occurrence.
//!
//! Cron strings in the model were validated by `policy::load`; should one
//! still fail to parse here, the schedule simply has no slot (`None`), never a
//! panic.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use croner::Cron;

use crate::policy::Schedule;

/// The first slot strictly after `after`.
pub fn next_slot(schedule: &Schedule, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let cron = schedule.cron.parse::<Cron>().ok()?;
    next_with(&cron, schedule, after)
}

/// The latest slot at or before `at_or_before`.
pub fn last_slot(schedule: &Schedule, at_or_before: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let cron = schedule.cron.parse::<Cron>().ok()?;
    last_with(&cron, schedule, at_or_before)
}

fn next_with(cron: &Cron, schedule: &Schedule, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let local = after.with_timezone(&schedule.timezone);
    let next = cron.find_next_occurrence(&local, false).ok()?;
    Some(next.with_timezone(&Utc))
}

fn last_with(cron: &Cron, schedule: &Schedule, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let local = at.with_timezone(&schedule.timezone);
    let last = cron.find_previous_occurrence(&local, true).ok()?;
    Some(last.with_timezone(&Utc))
}

/// The last slot at or before `now` and the first slot after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slots {
    pub last: Option<DateTime<Utc>>,
    pub next: Option<DateTime<Utc>>,
}

/// Slots of every distinct (cron, time zone) pair at one `now`, computed once
/// per plan: fleets share a handful of schedules, and parsing plus searching a
/// cron costs microseconds, which adds up over 10,000 policies.
pub(crate) struct SlotCache<'a> {
    now: DateTime<Utc>,
    slots: HashMap<(&'a str, chrono_tz::Tz), Slots>,
}

impl<'a> SlotCache<'a> {
    pub fn new(now: DateTime<Utc>) -> Self {
        SlotCache {
            now,
            slots: HashMap::new(),
        }
    }

    pub fn get(&mut self, schedule: &'a Schedule) -> Slots {
        let now = self.now;
        *self
            .slots
            .entry((schedule.cron.as_str(), schedule.timezone))
            .or_insert_with(|| match schedule.cron.parse::<Cron>() {
                Ok(cron) => Slots {
                    last: last_with(&cron, schedule, now),
                    next: next_with(&cron, schedule, now),
                },
                Err(_) => Slots {
                    last: None,
                    next: None,
                },
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn sched(cron: &str, tz: chrono_tz::Tz) -> Schedule {
        Schedule {
            cron: cron.to_string(),
            timezone: tz,
        }
    }

    #[test]
    fn every_six_hours_in_utc() {
        let s = sched("0 */6 * * *", chrono_tz::UTC);
        let now = at("2026-11-25T07:30:00Z");
        assert_eq!(last_slot(&s, now), Some(at("2026-11-25T06:00:00Z")));
        assert_eq!(next_slot(&s, now), Some(at("2026-11-25T12:00:00Z")));
    }

    #[test]
    fn last_slot_is_inclusive_and_next_slot_exclusive() {
        let s = sched("0 */6 * * *", chrono_tz::UTC);
        let now = at("2026-11-25T06:00:00Z");
        assert_eq!(last_slot(&s, now), Some(now));
        assert_eq!(next_slot(&s, now), Some(at("2026-11-25T12:00:00Z")));
    }

    #[test]
    fn slots_follow_the_schedule_time_zone() {
        let s = sched("0 2 * * *", chrono_tz::Europe::Berlin);
        // Winter: 02:00 CET = 01:00 UTC.
        let now = at("2026-11-25T12:00:00Z");
        assert_eq!(last_slot(&s, now), Some(at("2026-11-25T01:00:00Z")));
        // Summer: 02:00 CEST = 00:00 UTC.
        let now = at("2026-07-01T12:00:00Z");
        assert_eq!(last_slot(&s, now), Some(at("2026-07-01T00:00:00Z")));
    }

    #[test]
    fn spring_forward_day_runs_after_the_gap_without_panicking() {
        // 2026-03-29: Berlin jumps from 02:00 CET to 03:00 CEST (01:00 UTC).
        let s = sched("0 2 * * *", chrono_tz::Europe::Berlin);
        let day_before = chrono_tz::Europe::Berlin
            .with_ymd_and_hms(2026, 3, 28, 2, 0, 0)
            .unwrap()
            .with_timezone(&Utc);
        let next = next_slot(&s, day_before).expect("a slot on the spring-forward day");
        assert_eq!(next, at("2026-03-29T01:00:00Z"));
        let evening = at("2026-03-29T20:00:00Z");
        assert_eq!(last_slot(&s, evening), Some(next));
        // The day after is back to 02:00 local (00:00 UTC).
        assert_eq!(next_slot(&s, next), Some(at("2026-03-30T00:00:00Z")));
    }

    #[test]
    fn fall_back_day_runs_once() {
        // 2026-10-25: Berlin repeats 02:00-03:00.
        let s = sched("30 2 * * *", chrono_tz::Europe::Berlin);
        let first = next_slot(&s, at("2026-10-24T12:00:00Z")).unwrap();
        assert_eq!(first, at("2026-10-25T00:30:00Z"));
        assert_eq!(next_slot(&s, first), Some(at("2026-10-26T01:30:00Z")));
    }

    #[test]
    fn invalid_cron_has_no_slot() {
        let s = sched("not a cron", chrono_tz::UTC);
        assert_eq!(next_slot(&s, at("2026-11-25T00:00:00Z")), None);
        assert_eq!(last_slot(&s, at("2026-11-25T00:00:00Z")), None);
        let mut cache = SlotCache::new(at("2026-11-25T00:00:00Z"));
        assert_eq!(
            cache.get(&s),
            Slots {
                last: None,
                next: None
            }
        );
    }
}
