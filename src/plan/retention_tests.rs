use chrono::NaiveDate;

use super::labels::{label_day, label_week, label_year};
use super::*;
use crate::observed::Health;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn backup(id: &str, started: &str) -> BackupRecord {
    let t = at(started);
    BackupRecord {
        id: id.to_string(),
        policy: "p".into(),
        storage: "s".into(),
        trigger: Trigger::Schedule,
        release: None,
        started_at: t,
        finished_at: t,
        size: 1,
        checksum: String::new(),
        health: Health::Verified,
        pinned: None,
        pin_unknown: None,
    }
}

/// (id, rendered reasons) for kept, (id, "prune") for the rest.
fn run(backups: &[BackupRecord], rules: Retention) -> Vec<(String, String)> {
    run_planned(backups, &[], at("2030-01-01T00:00:00Z"), rules)
}

fn run_planned(
    backups: &[BackupRecord],
    planned: &[PlannedBackup<'_>],
    now: DateTime<Utc>,
    rules: Retention,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    retain(
        backups,
        planned,
        now,
        &rules,
        &mut |i: usize, d: Decision| {
            let text = match d {
                Decision::Keep(r) => r
                    .iter()
                    .map(|r| format!("{r:#}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                Decision::Prune => "prune".into(),
            };
            out.push((backups[i].id.clone(), text));
        },
    );
    out
}

fn daily_series(days: u32) -> Vec<BackupRecord> {
    // Two backups a day, newest first, from 2026-11-30 backwards.
    let end = at("2026-11-30T18:00:00Z");
    (0..days * 2)
        .map(|i| {
            let t = end - chrono::TimeDelta::hours(12 * i64::from(i));
            backup(&format!("b{i:03}"), &t.to_rfc3339())
        })
        .collect()
}

#[test]
fn keep_last_keeps_the_newest_n_and_prunes_the_rest() {
    let b = daily_series(2);
    let r = run(
        &b,
        Retention {
            keep_last: 2,
            ..Retention::default()
        },
    );
    assert_eq!(r[0].1, "last #1, newest verified backup");
    assert_eq!(r[1].1, "last #2");
    assert_eq!(r[2].1, "prune");
    assert_eq!(r[3].1, "prune");
}

#[test]
fn daily_keeps_the_newest_backup_of_each_of_the_last_n_days() {
    let b = daily_series(5);
    let r = run(
        &b,
        Retention {
            keep_daily: 3,
            ..Retention::default()
        },
    );
    let kept: Vec<_> = r.iter().filter(|(_, t)| t != "prune").collect();
    assert_eq!(kept.len(), 3);
    assert_eq!(r[0].1, "daily 2026-11-30, newest verified backup");
    assert_eq!(r[1].1, "prune"); // 2026-11-30 06:00, same day
    assert_eq!(r[2].1, "daily 2026-11-29");
    assert_eq!(r[4].1, "daily 2026-11-28");
}

#[test]
fn weekly_buckets_are_iso_weeks_starting_monday() {
    // Sunday 2026-11-29 and Monday 2026-11-30 are in different ISO weeks.
    let b = vec![
        backup("mon", "2026-11-30T01:00:00Z"),
        backup("sun", "2026-11-29T23:00:00Z"),
        backup("sat", "2026-11-28T23:00:00Z"),
    ];
    let r = run(
        &b,
        Retention {
            keep_weekly: 5,
            ..Retention::default()
        },
    );
    assert_eq!(r[0].1, "weekly 2026-W49, newest verified backup");
    assert_eq!(r[1].1, "weekly 2026-W48");
    assert_eq!(r[2].1, "prune");
}

#[test]
fn monthly_and_yearly_buckets() {
    let b = vec![
        backup("a", "2027-01-02T00:00:00Z"),
        backup("b", "2026-12-31T00:00:00Z"),
        backup("c", "2026-12-01T00:00:00Z"),
        backup("d", "2026-11-15T00:00:00Z"),
    ];
    let r = run(
        &b,
        Retention {
            keep_monthly: 2,
            keep_yearly: 2,
            ..Retention::default()
        },
    );
    assert_eq!(
        r[0].1,
        "monthly 2027-01, yearly 2027, newest verified backup"
    );
    assert_eq!(r[1].1, "monthly 2026-12, yearly 2026");
    assert_eq!(r[2].1, "prune");
    assert_eq!(r[3].1, "prune");
}

#[test]
fn hourly_buckets_are_labelled_with_the_hour() {
    let b = vec![
        backup("a", "2026-11-30T10:45:00Z"),
        backup("b", "2026-11-30T10:15:00Z"),
        backup("c", "2026-11-30T09:59:00Z"),
    ];
    let r = run(
        &b,
        Retention {
            keep_hourly: 24,
            ..Retention::default()
        },
    );
    assert_eq!(r[0].1, "hourly 2026-11-30 10:00, newest verified backup");
    assert_eq!(r[1].1, "prune");
    assert_eq!(r[2].1, "hourly 2026-11-30 09:00");
}

#[test]
fn unhealthy_backups_are_kept_and_never_count() {
    let mut b = daily_series(2);
    b[0].health = Health::Missing;
    b[1].health = Health::Corrupt;
    let r = run(
        &b,
        Retention {
            keep_last: 1,
            ..Retention::default()
        },
    );
    assert_eq!(r[0].1, "missing or corrupt, never deleted automatically");
    assert_eq!(r[1].1, "missing or corrupt, never deleted automatically");
    assert_eq!(r[2].1, "last #1, newest verified backup");
    assert_eq!(r[3].1, "prune");
}

#[test]
fn pinned_backups_are_kept_with_every_reason() {
    let mut b = daily_series(2);
    b[0].pinned = Some("failed deploy v1.4.0".into());
    b[3].pinned = Some("audit".into());
    let r = run(
        &b,
        Retention {
            keep_last: 1,
            ..Retention::default()
        },
    );
    assert_eq!(
        r[0].1,
        "last #1, pinned (failed deploy v1.4.0), newest verified backup"
    );
    assert_eq!(r[3].1, "pinned (audit)");
}

#[test]
fn backups_whose_pin_state_is_unknown_are_kept_with_the_reason() {
    let mut b = daily_series(2);
    b[3].pin_unknown = Some("pin marker unreadable".into());
    b[2].pin_unknown = Some("marker gone".into());
    b[2].health = Health::Corrupt;
    let r = run(
        &b,
        Retention {
            keep_last: 1,
            ..Retention::default()
        },
    );
    assert_eq!(r[1].1, "prune");
    assert_eq!(
        r[2].1,
        "pin state unknown (marker gone), missing or corrupt, never deleted automatically"
    );
    assert_eq!(r[3].1, "pin state unknown (pin marker unreadable)");
}

#[test]
fn keep_releases_keeps_every_backup_of_the_last_n_tags() {
    let mut b = daily_series(3);
    let tag = |b: &mut BackupRecord, t: Trigger, tag: &str| {
        b.trigger = t;
        b.release = Some(tag.into());
    };
    tag(&mut b[1], Trigger::PostDeploy, "v3");
    tag(&mut b[2], Trigger::PreDeploy, "v3");
    tag(&mut b[3], Trigger::Release, "v2");
    tag(&mut b[4], Trigger::PreDeploy, "v2");
    tag(&mut b[5], Trigger::Release, "v1");
    let r = run(
        &b,
        Retention {
            keep_releases: 2,
            ..Retention::default()
        },
    );
    assert_eq!(r[0].1, "newest verified backup");
    assert_eq!(r[1].1, "release v3");
    assert_eq!(r[2].1, "release v3");
    assert_eq!(r[3].1, "release v2");
    assert_eq!(r[4].1, "release v2");
    assert_eq!(r[5].1, "prune");
}

#[test]
fn manual_backups_with_a_release_field_do_not_count_as_releases() {
    let mut b = daily_series(1);
    b[1].trigger = Trigger::Manual;
    b[1].release = Some("v9".into());
    let r = run(
        &b,
        Retention {
            keep_releases: 5,
            ..Retention::default()
        },
    );
    assert_eq!(r[1].1, "prune");
}

#[test]
fn planned_backups_take_rule_slots_and_newest_verified() {
    let b = daily_series(1);
    let planned = [PlannedBackup {
        trigger: Trigger::Schedule,
        release: None,
    }];
    let r = run_planned(
        &b,
        &planned,
        at("2026-12-01T00:00:00Z"),
        Retention {
            keep_last: 2,
            ..Retention::default()
        },
    );
    assert_eq!(r[0].1, "last #2");
    assert_eq!(r[1].1, "prune");
}

#[test]
fn newest_verified_is_kept_even_when_no_rule_keeps_it() {
    let b = daily_series(1);
    let mut rules = Retention {
        keep_releases: 1,
        ..Retention::default()
    };
    let r = run(&b, rules);
    assert_eq!(r[0].1, "newest verified backup");
    assert_eq!(r[1].1, "prune");
    rules.keep_releases = 0;
    assert_eq!(run(&b, rules)[0].1, "newest verified backup");
}

#[test]
fn describe_lists_the_rules_in_force() {
    let r = Retention {
        keep_last: 3,
        keep_daily: 7,
        ..Retention::default()
    };
    assert_eq!(describe(&r), "keepLast=3, keepDaily=7");
    assert_eq!(describe(&Retention::default()), "no rule");
}

#[test]
fn labels_pad_digits() {
    assert_eq!(
        label_day(NaiveDate::from_ymd_opt(987, 1, 2).unwrap()),
        "0987-01-02"
    );
    assert_eq!(
        label_week(NaiveDate::from_ymd_opt(2027, 1, 1).unwrap()),
        "2026-W53"
    );
    assert_eq!(label_year(-44), "-0044");
}
