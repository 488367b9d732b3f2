//! Property tests of the planner's safety invariants over random histories.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, TimeDelta, Utc};
use proptest::prelude::*;

use crate::observed::{
    BackupIndex, BackupRecord, BackupRequest, FailedRun, Health, ObservedState, Trigger,
};
use crate::plan::{Action, PlanOptions, plan};
use crate::policy::{BackupPolicy, DeploySpec, DesiredState, Retention, Schedule, Source};

const TRIGGERS: [Trigger; 7] = [
    Trigger::Schedule,
    Trigger::Rpo,
    Trigger::Release,
    Trigger::PreDeploy,
    Trigger::PostDeploy,
    Trigger::Forensic,
    Trigger::Manual,
];
const CRONS: [&str; 3] = ["0 */6 * * *", "30 * * * *", "0 2 * * *"];

fn now() -> DateTime<Utc> {
    "2026-11-25T07:30:00Z".parse().unwrap()
}

#[derive(Debug, Clone)]
struct PolicyCase {
    retention: Retention,
    schedule: Option<usize>,
    rpo_hours: Option<i64>,
    suspend: bool,
    storage: usize,
    running: bool,
    failure: Option<(i64, u32)>,
    request: Option<(usize, u8)>,
    backups: Vec<BackupCase>,
}

#[derive(Debug, Clone)]
struct BackupCase {
    age_minutes: i64,
    trigger: usize,
    tag: u8,
    pinned: bool,
    /// The pin marker was unreadable in this observation.
    pin_unknown: bool,
    health: u8,
    storage: usize,
}

fn retention(calendar: bool) -> impl Strategy<Value = Retention> {
    let month = if calendar { 0..4_u32 } else { 0..1_u32 };
    (
        0..4_u32,
        0..4_u32,
        0..5_u32,
        0..4_u32,
        month.clone(),
        month,
        0..3_u32,
    )
        .prop_map(|(last, hourly, daily, weekly, monthly, yearly, releases)| {
            let mut r = Retention {
                keep_last: last,
                keep_hourly: hourly,
                keep_daily: daily,
                keep_weekly: weekly,
                keep_monthly: monthly,
                keep_yearly: yearly,
                keep_releases: releases,
            };
            if r.keeps_nothing() {
                r.keep_last = 1;
            }
            r
        })
}

fn backup_case() -> impl Strategy<Value = BackupCase> {
    (
        // Up to ~400 days back; a few share the same minute.
        prop_oneof![0..600_000_i64, (0..50_i64).prop_map(|m| m * 360)],
        0..7_usize,
        0..4_u8,
        prop::bool::weighted(0.1),
        0..20_u8,
        prop::bool::weighted(0.9),
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(age_minutes, trigger, tag, pinned, health, same, pin_unknown)| BackupCase {
                age_minutes,
                trigger,
                tag,
                pinned,
                pin_unknown,
                health,
                storage: usize::from(!same),
            },
        )
}

fn policy_case(calendar: bool) -> impl Strategy<Value = PolicyCase> {
    (
        retention(calendar),
        prop::option::of(0..3_usize),
        prop::option::of(1..48_i64),
        prop::bool::weighted(0.1),
        0..2_usize,
        prop::bool::weighted(0.1),
        prop::option::weighted(0.2, (0..120_i64, 1..6_u32)),
        prop::option::weighted(0.2, (0..7_usize, 0..4_u8)),
        prop::collection::vec(backup_case(), 0..70),
    )
        .prop_map(
            |(
                retention,
                schedule,
                rpo_hours,
                suspend,
                storage,
                running,
                failure,
                request,
                backups,
            )| {
                PolicyCase {
                    retention,
                    schedule,
                    rpo_hours,
                    suspend,
                    storage,
                    running,
                    failure,
                    request,
                    backups,
                }
            },
        )
}

#[derive(Debug, Clone)]
struct Case {
    policies: Vec<PolicyCase>,
    /// The last policy exists only in the observed state (an orphan).
    orphan: bool,
    incomplete: Vec<bool>,
    max_deletions: usize,
    prune_orphans: bool,
}

fn case(calendar: bool) -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(policy_case(calendar), 1..4),
        prop::bool::weighted(0.3),
        prop::collection::vec(prop::bool::weighted(0.15), 2),
        prop_oneof![Just(10_000_usize), 0..20_usize],
        any::<bool>(),
    )
        .prop_map(
            |(policies, orphan, incomplete, max_deletions, prune_orphans)| Case {
                policies,
                orphan,
                incomplete,
                max_deletions,
                prune_orphans,
            },
        )
}

fn storage(i: usize) -> String {
    ["primary", "secondary"][i].to_string()
}

/// Builds the inputs, every instant shifted by `shift`.
fn build(c: &Case, shift: TimeDelta) -> (DesiredState, ObservedState, DateTime<Utc>, PlanOptions) {
    let now = now() + shift;
    let mut desired = DesiredState::default();
    let mut observed = ObservedState::default();
    for (i, p) in c.policies.iter().enumerate() {
        let name = format!("p{i}");
        let orphan = c.orphan && i + 1 == c.policies.len() && i > 0;
        if !orphan {
            desired.policies.insert(name.clone(), policy(&name, p));
        }
        let mut list: Vec<BackupRecord> = p
            .backups
            .iter()
            .map(|b| {
                let started = now - TimeDelta::minutes(b.age_minutes);
                let trigger = TRIGGERS[b.trigger];
                let tagged = crate::plan::retention::is_release_trigger(trigger);
                BackupRecord {
                    id: String::new(),
                    policy: name.clone(),
                    storage: storage(if b.storage == 0 {
                        p.storage
                    } else {
                        1 - p.storage
                    }),
                    trigger,
                    release: tagged.then(|| format!("v1.{}", b.tag)),
                    started_at: started,
                    finished_at: started,
                    size: 1,
                    checksum: String::new(),
                    health: match b.health {
                        0 => Health::Missing,
                        1 => Health::Corrupt,
                        _ => Health::Verified,
                    },
                    pinned: b.pinned.then(|| "pin".to_string()),
                    pin_unknown: b.pin_unknown.then(|| "marker unreadable".to_string()),
                }
            })
            .collect();
        list.sort_by_key(|b| std::cmp::Reverse(b.started_at));
        let n = list.len();
        for (k, b) in list.iter_mut().enumerate() {
            b.id = format!("b{:05}", n - k);
        }
        observed.backups.insert(name.clone(), list);
        if p.running {
            observed.running.insert(name.clone());
        }
        if let Some((minutes, consecutive)) = p.failure {
            observed.failures.insert(
                name.clone(),
                FailedRun {
                    at: now - TimeDelta::minutes(minutes),
                    error: "boom".into(),
                    consecutive,
                    interrupted: false,
                },
            );
        }
        if let Some((trigger, tag)) = p.request {
            let trigger = TRIGGERS[trigger];
            let tagged = crate::plan::retention::is_release_trigger(trigger);
            observed.requests.push(BackupRequest {
                policy: name.clone(),
                trigger,
                release: tagged.then(|| format!("v2.{tag}")),
                requested_by: "prop".into(),
            });
        }
    }
    for (i, incomplete) in c.incomplete.iter().enumerate() {
        if *incomplete {
            observed.incomplete_storages.insert(storage(i));
        }
    }
    let options = PlanOptions {
        max_deletions: c.max_deletions,
        prune_orphans: c.prune_orphans,
        ..PlanOptions::default()
    };
    (desired, observed.indexed(), now, options)
}

fn policy(name: &str, p: &PolicyCase) -> BackupPolicy {
    BackupPolicy {
        name: name.to_string(),
        labels: BTreeMap::new(),
        source: Source::Command {
            backup: "true".into(),
            restore: None,
        },
        storage: storage(p.storage),
        schedule: p.schedule.map(|i| Schedule {
            cron: CRONS[i].to_string(),
            timezone: chrono_tz::UTC,
        }),
        rpo: p.rpo_hours.map(TimeDelta::hours),
        release_tag_pattern: None,
        deploy: DeploySpec::default(),
        retention: p.retention,
        drill: None,
        alerts: Vec::new(),
        suspend: p.suspend,
        timeout: TimeDelta::hours(1),
    }
}

/// What the executor would leave behind: planned backups stored (verified,
/// started at `now`), deleted backups gone, requests consumed, failures of
/// policies that backed up cleared.
fn apply(observed: &ObservedState, actions: &[Action], now: DateTime<Utc>) -> ObservedState {
    let mut next = observed.clone();
    next.requests.clear();
    for (k, action) in actions.iter().enumerate() {
        match action {
            Action::Backup {
                policy,
                trigger,
                release,
                ..
            } => {
                next.failures.remove(policy);
                let list = next.backups.entry(policy.clone()).or_default();
                let record = BackupRecord {
                    id: format!("new{k:04}"),
                    policy: policy.clone(),
                    storage: "primary".into(),
                    trigger: *trigger,
                    release: release.clone(),
                    started_at: now,
                    finished_at: now,
                    size: 1,
                    checksum: String::new(),
                    health: Health::Verified,
                    pinned: None,
                    pin_unknown: None,
                };
                let at = list
                    .partition_point(|b| (b.started_at, &b.id) > (record.started_at, &record.id));
                list.insert(at, record);
            }
            Action::Delete {
                policy, backup_id, ..
            } => {
                if let Some(list) = next.backups.get_mut(policy) {
                    list.retain(|b| &b.id != backup_id);
                }
            }
        }
    }
    next.indexed()
}

fn deleted(actions: &[Action]) -> BTreeSet<(String, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Delete {
                policy, backup_id, ..
            } => Some((policy.clone(), backup_id.clone())),
            Action::Backup { .. } => None,
        })
        .collect()
}

/// Decisions without instants: actions (kind, policy, trigger/id, reason
/// kind), kept (policy, id, reason kinds).
fn decisions(p: &crate::plan::Plan) -> String {
    let mut out = String::new();
    for a in &p.actions {
        match a {
            Action::Backup {
                policy,
                trigger,
                release,
                reason,
            } => out += &format!("backup {policy} {trigger} {release:?} {:?}\n", kind(reason)),
            Action::Delete {
                policy,
                backup_id,
                reason,
                ..
            } => out += &format!("delete {policy} {backup_id} {:?}\n", kind(reason)),
        }
    }
    for k in &p.kept {
        let reasons: Vec<String> = k.reasons.iter().map(kind).collect();
        out += &format!("keep {} {} {reasons:?}\n", k.policy, k.backup_id);
    }
    out
}

fn kind<T: std::fmt::Debug>(v: &T) -> String {
    let s = format!("{v:?}");
    s.split([' ', '{', '(']).next().unwrap_or("").to_string()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn plan_is_a_fixpoint_once_applied(c in case(true)) {
        let (desired, observed, now, options) = build(&c, TimeDelta::zero());
        let first = plan(&desired, &observed, now, &options);
        let capped = first.notes.iter().any(|n| n.text.contains("deferred"));
        prop_assume!(!capped);
        let after = apply(&observed, &first.actions, now);
        let second = plan(&desired, &after, now, &options);
        prop_assert!(second.actions.is_empty(), "first:\n{}\nsecond:\n{}", first.render(), second.render());
    }

    #[test]
    fn the_backup_index_does_not_change_the_plan(c in case(true)) {
        let (desired, observed, now, options) = build(&c, TimeDelta::zero());
        let unindexed = ObservedState { index: BackupIndex::default(), ..observed.clone() };
        prop_assert_eq!(plan(&desired, &observed, now, &options), plan(&desired, &unindexed, now, &options));
    }

    #[test]
    fn newest_verified_backup_survives(c in case(true)) {
        let (desired, observed, now, options) = build(&c, TimeDelta::zero());
        let p = plan(&desired, &observed, now, &options);
        let gone = deleted(&p.actions);
        for name in desired.policies.keys() {
            let list = &observed.backups[name];
            let Some(newest) = list.iter().find(|b| b.health == Health::Verified) else { continue };
            let backs_up = p.actions.iter().any(|a| matches!(a, Action::Backup { policy, .. } if policy == name));
            if !backs_up {
                prop_assert!(!gone.contains(&(name.clone(), newest.id.clone())), "{}", p.render());
            }
            let after = apply(&observed, &p.actions, now);
            prop_assert!(after.backups[name].iter().any(|b| b.health == Health::Verified));
        }
    }

    #[test]
    fn pinned_pin_unknown_missing_corrupt_and_incomplete_storages_are_never_deleted(c in case(true)) {
        let (desired, observed, now, options) = build(&c, TimeDelta::zero());
        let p = plan(&desired, &observed, now, &options);
        let gone = deleted(&p.actions);
        for list in observed.backups.values() {
            for b in list {
                let protected = b.pinned.is_some()
                    || b.pin_unknown.is_some()
                    || b.health != Health::Verified
                    || observed.incomplete_storages.contains(&b.storage);
                if protected {
                    prop_assert!(!gone.contains(&(b.policy.clone(), b.id.clone())), "{}", p.render());
                }
            }
        }
        prop_assert!(gone.len() <= options.max_deletions);
    }

    #[test]
    fn decisions_are_stable_under_a_shift_by_whole_weeks(c in case(false), weeks in -520_i64..520) {
        let (d0, o0, n0, opt0) = build(&c, TimeDelta::zero());
        let (d1, o1, n1, opt1) = build(&c, TimeDelta::weeks(weeks));
        prop_assert_eq!(decisions(&plan(&d0, &o0, n0, &opt0)), decisions(&plan(&d1, &o1, n1, &opt1)));
    }

    #[test]
    fn decisions_are_stable_under_a_shift_by_whole_400_year_cycles(c in case(true), cycles in -3_i64..3) {
        // 400 Gregorian years = 146,097 days = 20,871 weeks: months and
        // years line up again, so calendar buckets must give the same answer.
        let (d0, o0, n0, opt0) = build(&c, TimeDelta::zero());
        let (d1, o1, n1, opt1) = build(&c, TimeDelta::weeks(20_871 * cycles));
        prop_assert_eq!(decisions(&plan(&d0, &o0, n0, &opt0)), decisions(&plan(&d1, &o1, n1, &opt1)));
    }
}

/// Pin state unknown (the pin marker could not be read) is a planner input:
/// such a backup is kept with `PinUnknown`, also inside a long run of plain
/// backups the indexed fast path skips, also by `prune --orphans`, while its
/// neighbours are pruned.
#[test]
fn a_backup_whose_pin_state_is_unknown_is_never_deleted() {
    let plain = |age_minutes| BackupCase {
        age_minutes,
        trigger: 0,
        tag: 0,
        pinned: false,
        pin_unknown: false,
        health: 19,
        storage: 0,
    };
    let mut backups: Vec<BackupCase> = (1..=60).map(|h| plain(h * 60)).collect();
    backups[40].pin_unknown = true;
    let p = PolicyCase {
        retention: Retention {
            keep_last: 1,
            ..Retention::default()
        },
        schedule: None,
        rpo_hours: None,
        suspend: false,
        storage: 0,
        running: false,
        failure: None,
        request: None,
        backups,
    };
    for (orphan, prune_orphans) in [(false, false), (true, true)] {
        let c = Case {
            policies: vec![p.clone(), p.clone()],
            orphan,
            incomplete: vec![false, false],
            max_deletions: 10_000,
            prune_orphans,
        };
        let (desired, observed, now, options) = build(&c, TimeDelta::zero());
        let plan = plan(&desired, &observed, now, &options);
        let gone = deleted(&plan.actions);
        for name in ["p0", "p1"] {
            let list = &observed.backups[name];
            let unknown = list.iter().find(|b| b.pin_unknown.is_some()).unwrap();
            assert!(
                !gone.contains(&(name.to_string(), unknown.id.clone())),
                "{}",
                plan.render()
            );
            let kept = plan
                .kept
                .iter()
                .find(|k| k.policy == name && k.backup_id == unknown.id)
                .unwrap();
            assert!(
                kept.reasons.iter().any(|r| matches!(
                    r,
                    crate::plan::KeepReason::PinUnknown { why } if why == "marker unreadable"
                )),
                "{kept:?}"
            );
            assert_eq!(
                list.iter()
                    .filter(|b| gone.contains(&(name.to_string(), b.id.clone())))
                    .count(),
                // An orphan pruned by `prune --orphans` loses its newest too.
                if orphan && name == "p1" { 59 } else { 58 },
                "every other backup but the newest is pruned:\n{}",
                plan.render()
            );
        }
    }
}
