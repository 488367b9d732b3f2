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
    let ids: Vec<&str> = p.deletions.iter().map(|d| d.backup_id.as_str()).collect();
    assert_eq!(ids, ["orders-4", "orders-3", "orders-2"]);
    assert!(
        p.deletions
            .iter()
            .all(|d| d.caused_by_change && !d.newest_verified)
    );
    assert_eq!(p.deletions[2].kept_today_by, [KeepReason::Last { n: 3 }]);
    assert_eq!(p.deletions[0].rules, "keepLast=2");
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
    assert_eq!(p.deletions.len(), 1);
    assert!(p.deletions[0].newest_verified);
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
    assert_eq!(p.deletions.len(), 4);
    assert!(p.deletions.iter().all(|d| !d.caused_by_change));
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
