//! Tests of `preview`: real policy YAML through `policy::load`, histories
//! built by hand.

use chrono::{DateTime, TimeDelta, Utc};

use super::*;
use crate::observed::{BackupRecord, Health, ObservedState, Trigger};
use crate::plan::{KeepReason, PlanOptions};
use crate::policy::{DesiredState, PolicyFile, load};

const STORAGE: &str = "apiVersion: safepoint/v1\nkind: Storage\nmetadata: {name: local}\nspec: {type: local, path: /tmp/sp}\n";

fn now() -> DateTime<Utc> {
    "2026-11-25T07:30:00Z".parse().unwrap()
}

/// A policy backing up `dir`, yearly schedule (never due in these tests),
/// with `extra` YAML lines under `spec:` and `annotations` under metadata.
fn policy(name: &str, dir: &str, retention: &str, annotations: &str) -> String {
    format!(
        "apiVersion: safepoint/v1\nkind: BackupPolicy\nmetadata:\n  name: {name}\n  annotations: {{{annotations}}}\nspec:\n  source: {{type: directory, path: {dir}}}\n  storage: local\n  schedule: {{cron: \"0 3 1 1 *\"}}\n  retention: {{{retention}}}\n"
    )
}

fn desired(docs: &[String]) -> DesiredState {
    let mut files = vec![PolicyFile::new("storage.yaml", STORAGE)];
    for (i, d) in docs.iter().enumerate() {
        files.push(PolicyFile::new(format!("p{i}.yaml"), d.clone()));
    }
    load(&files).unwrap_or_else(|d| panic!("{d:?}"))
}

/// `n` verified backups of `policy`, one a day, the newest a day old.
fn history(policy: &str, n: usize) -> Vec<BackupRecord> {
    (0..n)
        .map(|i| {
            let started = now() - TimeDelta::days(1 + i as i64);
            BackupRecord {
                id: format!("{policy}-{i}"),
                policy: policy.into(),
                storage: "local".into(),
                trigger: Trigger::Schedule,
                release: None,
                started_at: started,
                finished_at: started + TimeDelta::seconds(5),
                size: 10,
                checksum: "x".into(),
                health: Health::Verified,
                pinned: None,
                pin_unknown: None,
            }
        })
        .collect()
}

fn observed(lists: &[(&str, usize)]) -> ObservedState {
    let mut o = ObservedState::default();
    for (p, n) in lists {
        o.backups.insert(p.to_string(), history(p, *n));
    }
    o.indexed()
}

#[test]
fn a_retention_cut_lists_its_deletions_with_the_rule_that_kept_them_and_is_refused() {
    let current = desired(&[policy("orders", "/d", "keepLast: 5", "")]);
    let proposed = desired(&[policy("orders", "/d", "keepLast: 2", "")]);
    let p = preview(
        &current,
        &proposed,
        &observed(&[("orders", 5)]),
        now(),
        &PlanOptions::default(),
    );
    let ids: Vec<&str> = p
        .all_deletions()
        .map(|(_, d)| d.backup_id.as_str())
        .collect();
    assert_eq!(ids, ["orders-4", "orders-3", "orders-2"]);
    assert!(
        p.all_deletions()
            .all(|(_, d)| d.caused_by_change && !d.newest_verified)
    );
    let orders = &p.deletions[0];
    assert_eq!(orders.backups[2].kept_today_by, [KeepReason::Last { n: 3 }]);
    assert_eq!(
        (
            orders.policy.as_str(),
            orders.rules.as_str(),
            orders.count,
            orders.caused
        ),
        ("orders", "keepLast=2", 3, 3)
    );
    assert_eq!(p.policies.len(), 1);
    assert_eq!(p.policies[0].fields[0].field, "retention.keepLast");
    assert!(p.refused());
    assert!(
        p.refusals()[0].contains("safepoint.io/allow-deletions\"]: \"3\""),
        "{:?}",
        p.refusals()
    );
    let md = p.markdown("main → cut");
    assert!(
        md.contains("**REFUSED**") && md.contains("`orders-2`"),
        "{md}"
    );
}

#[test]
fn an_acknowledgement_lets_exactly_the_acknowledged_number_through() {
    let current = desired(&[policy("orders", "/d", "keepLast: 5", "")]);
    let obs = observed(&[("orders", 5)]);
    let ack = |n: &str| {
        let proposed = desired(&[policy(
            "orders",
            "/d",
            "keepLast: 2",
            &format!("safepoint.io/allow-deletions: \"{n}\""),
        )]);
        preview(&current, &proposed, &obs, now(), &PlanOptions::default())
    };
    assert!(!ack("3").refused());
    assert!(!ack("10").refused());
    assert!(ack("2").refused());
    // A guard threshold lets small cuts through without an annotation.
    let proposed = desired(&[policy("orders", "/d", "keepLast: 2", "")]);
    let options = PlanOptions {
        deletion_guard: 3,
        ..PlanOptions::default()
    };
    assert!(!preview(&current, &proposed, &obs, now(), &options).refused());
}

#[test]
fn a_rename_orphans_the_history_and_starts_a_new_one() {
    let current = desired(&[policy("orders", "/d", "keepLast: 5", "")]);
    let proposed = desired(&[policy("orders-db", "/d", "keepLast: 5", "")]);
    let obs = observed(&[("orders", 3)]);
    let p = preview(&current, &proposed, &obs, now(), &PlanOptions::default());
    assert_eq!(p.policies.len(), 2);
    assert_eq!(p.policies[0].renamed.as_deref(), Some("orders"));
    assert_eq!(p.orphaned.len(), 1);
    assert_eq!(p.orphaned[0].backups, 3);
    assert_eq!(p.orphaned[0].renamed_to.as_deref(), Some("orders-db"));
    assert_eq!(p.backups.len(), 1);
    assert_eq!(p.backups[0].reason, Reason::FirstBackup);
    assert!(p.deletions.is_empty());
    assert!(p.refused());
    assert_eq!(p.guard[0].kind, GuardKind::Orphans);

    let acked = desired(&[policy(
        "orders-db",
        "/d",
        "keepLast: 5",
        "safepoint.io/allow-orphans: \"orders\"",
    )]);
    assert!(!preview(&current, &acked, &obs, now(), &PlanOptions::default()).refused());
}

#[test]
fn a_schedule_change_shows_the_next_run_before_and_after() {
    let current = desired(&[policy("orders", "/d", "keepLast: 5", "")]);
    let moved = policy("orders", "/d", "keepLast: 5", "").replace("0 3 1 1 *", "0 12 * * *");
    let proposed = desired(&[moved]);
    let p = preview(
        &current,
        &proposed,
        &observed(&[("orders", 1)]),
        now(),
        &PlanOptions::default(),
    );
    assert_eq!(p.schedules.len(), 1);
    let s = &p.schedules[0];
    assert_eq!(s.next_before, Some("2027-01-01T03:00:00Z".parse().unwrap()));
    assert_eq!(s.next_after, Some("2026-11-25T12:00:00Z".parse().unwrap()));
    assert!(!p.refused());
}

#[test]
fn a_change_that_deletes_the_newest_verified_backup_is_refused_whatever_the_threshold() {
    // keepLast 1 and a schedule that is due now: the new backup replaces the
    // newest verified one, which is then deleted.
    let current = desired(&[policy("orders", "/d", "keepLast: 1", "")]);
    let due = policy("orders", "/d", "keepLast: 1", "").replace("0 3 1 1 *", "0 * * * *");
    let proposed = desired(&[due]);
    let options = PlanOptions {
        deletion_guard: 100,
        ..PlanOptions::default()
    };
    let p = preview(
        &current,
        &proposed,
        &observed(&[("orders", 1)]),
        now(),
        &options,
    );
    assert_eq!(p.backups.len(), 1);
    assert!(p.backups[0].caused_by_change);
    assert_eq!(p.deletion_count(), 1);
    assert!(p.deletions[0].backups[0].newest_verified);
    assert_eq!(p.guard[0].kind, GuardKind::NewestVerified);
    assert!(p.refused());
}

#[test]
fn the_same_revision_previews_as_quiet() {
    let d = desired(&[policy("orders", "/d", "keepLast: 5", "")]);
    let p = preview(
        &d,
        &d,
        &observed(&[("orders", 9)]),
        now(),
        &PlanOptions::default(),
    );
    // Deletions pending anyway are listed, but are not the change's doing.
    assert_eq!(p.deletion_count(), 4);
    assert_eq!(p.caused_count(), 0);
    assert!(p.all_deletions().all(|(_, d)| !d.caused_by_change));
    assert!(p.policies.is_empty() && p.guard.is_empty() && !p.refused());
}

#[test]
fn annotations_are_validated() {
    let bad = policy(
        "orders",
        "/d",
        "keepLast: 5",
        "safepoint.io/allow-deletion: \"3\"",
    );
    let files = vec![
        PolicyFile::new("storage.yaml", STORAGE),
        PolicyFile::new("p.yaml", bad),
    ];
    let diags = load(&files).unwrap_err();
    assert!(
        diags[0]
            .to_string()
            .contains("did you mean `safepoint.io/allow-deletions`"),
        "{diags:?}"
    );
    let nan = policy(
        "orders",
        "/d",
        "keepLast: 5",
        "safepoint.io/allow-deletions: many",
    );
    let files = vec![files[0].clone(), PolicyFile::new("p.yaml", nan)];
    let diags = load(&files).unwrap_err();
    assert!(diags[0].message.contains("must be a number"), "{diags:?}");
    assert_eq!(diags[0].line, 5);
}

/// `n` policies with `backups` daily backups each, cut from keepLast 30 to
/// keepLast 5 on every other one.
fn fleet(n: usize, backups: usize) -> (DesiredState, DesiredState, ObservedState) {
    let names: Vec<String> = (0..n).map(|i| format!("p{i:03}")).collect();
    let docs = |cut: bool| -> Vec<String> {
        names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let keep = if cut && i % 2 == 0 { 5 } else { 30 };
                policy(
                    name,
                    &format!("/d/{name}"),
                    &format!("keepLast: {keep}"),
                    "",
                )
            })
            .collect()
    };
    let lists: Vec<(&str, usize)> = names.iter().map(|n| (n.as_str(), backups)).collect();
    (
        desired(&docs(false)),
        desired(&docs(true)),
        observed(&lists),
    )
}

fn delete_set(plan: &crate::plan::Plan) -> std::collections::BTreeSet<(String, String)> {
    plan.actions
        .iter()
        .filter_map(|a| match a {
            crate::plan::Action::Delete {
                policy, backup_id, ..
            } => Some((policy.clone(), backup_id.clone())),
            crate::plan::Action::Backup { .. } => None,
        })
        .collect()
}

#[test]
fn the_deletions_are_those_of_the_planner_with_deletions_unbounded() {
    let (current, proposed, obs) = fleet(12, 40);
    let p = preview(&current, &proposed, &obs, now(), &PlanOptions::default());
    let unbounded = PlanOptions {
        max_deletions: usize::MAX,
        ..PlanOptions::default()
    };
    let before = delete_set(&crate::plan::plan(&current, &obs, now(), &unbounded));
    let after = delete_set(&crate::plan::plan(&proposed, &obs, now(), &unbounded));
    let listed: std::collections::BTreeSet<(String, String)> = p
        .all_deletions()
        .map(|(policy, d)| (policy.to_string(), d.backup_id.clone()))
        .collect();
    assert_eq!(listed, after);
    assert_eq!(p.deletion_count(), after.len());
    for (policy, d) in p.all_deletions() {
        let pending = before.contains(&(policy.to_string(), d.backup_id.clone()));
        assert_eq!(d.caused_by_change, !pending, "{policy} {}", d.backup_id);
    }
    // Per policy, oldest first, with the counts the Markdown shows.
    for group in &p.deletions {
        assert!(
            group
                .backups
                .windows(2)
                .all(|w| w[0].started_at <= w[1].started_at)
        );
        assert_eq!(group.count, group.backups.len());
        let caused = group.backups.iter().filter(|d| d.caused_by_change).count();
        assert_eq!(group.caused, caused);
    }
    assert_eq!(p.caused_count(), 6 * 25);
    assert_eq!(p.deletion_count(), 12 * 10 + 6 * 25);
}

#[test]
fn the_markdown_of_a_large_change_summarises_per_policy_and_says_how_many_more() {
    let (current, proposed, obs) = fleet(120, 60);
    let p = preview(&current, &proposed, &obs, now(), &PlanOptions::default());
    assert_eq!(p.deletions.len(), 120);
    assert_eq!(p.caused_count(), 60 * 25);
    let md = p.markdown("big");
    assert!(md.len() < 65_536, "{} characters", md.len());
    assert!(
        md.contains("#### Deletions: 5100 backup(s) of 120 policies, 1500 caused by this change"),
        "{md}"
    );
    // The summary: policies with deletions the change causes first, then
    // the rest, cut at MAX_ROWS.
    assert!(md.contains("| `p000` | 55 | 25 | keepLast=5 |"), "{md}");
    assert!(!md.contains("| `p001` | 30 | 0 |"), "{md}");
    assert!(md.contains("… and 80 more (all of them in `--output json`)"));
    // The rows: those the change causes first, then the count of the rest.
    assert!(md.contains("… and 5060 more (all of them in `--output json`)"));
    assert!(!md.contains("no (already pending)"), "{md}");
    // The guard lists 40 of its 60 refusals.
    assert!(md.contains("… and 20 more (all of them in `--output json`)"));
    assert_eq!(p.refusals().len(), 60);
    // The JSON lists every deletion.
    let json = serde_json::to_value(&p).unwrap();
    let listed: usize = json["deletions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["backups"].as_array().unwrap().len())
        .sum();
    assert_eq!(listed, 5100);
}

#[test]
fn deletion_times_serialize_exactly_as_chrono_does() {
    for t in [
        "2026-11-25T06:30:00Z",
        "0001-01-01T00:00:00Z",
        "2026-11-25T06:30:00.250Z",
        "2026-11-25T06:30:00.000001Z",
        "9999-12-31T23:59:59Z",
    ] {
        let at: DateTime<Utc> = t.parse().unwrap();
        let mut fast = serde_json::Serializer::new(Vec::new());
        crate::plan::preview_effects::rfc3339(&at, &mut fast).unwrap();
        let fast = String::from_utf8(fast.into_inner()).unwrap();
        assert_eq!(fast, serde_json::to_string(&at).unwrap(), "{t}");
    }
}

#[test]
fn the_answer_lists_every_caused_deletion_but_only_the_first_pending_ones() {
    let d = |i: usize, caused: bool, newest: bool| Deletion {
        backup_id: format!("b{i:03}"),
        started_at: now() - TimeDelta::hours(i as i64),
        trigger: Trigger::Schedule,
        caused_by_change: caused,
        newest_verified: newest,
        kept_today_by: Vec::new(),
    };
    let mut backups: Vec<Deletion> = (0..100).map(|i| d(i, false, false)).collect();
    backups.push(d(100, true, false));
    backups.push(d(101, false, true));
    let mut p = PolicyDeletions {
        policy: "orders".into(),
        rules: "keepLast 1".into(),
        count: backups.len(),
        caused: 1,
        backups,
        unlisted: 0,
    };
    p.trim();
    assert_eq!(p.backups.len(), LISTED_PENDING + 2);
    assert_eq!(p.unlisted, 100 - LISTED_PENDING);
    assert_eq!(p.count, 102, "the count stays the whole number");
    assert!(p.backups.iter().any(|b| b.caused_by_change));
    assert!(p.backups.iter().any(|b| b.newest_verified));
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(json["unlisted"], 80);
}
