//! Deploy integration end to end: the pre-deploy gate, the outcome (baseline
//! or pin + forensic + alert), restore by release, release tags.

use crate::common::{Fixture, STORAGE, git, sqlite};

fn deploy_policy(name: &str, db: &str) -> String {
    format!(
        r#"apiVersion: safepoint/v1
kind: BackupPolicy
metadata:
  name: {name}
  labels: {{team: payments}}
spec:
  source: {{type: sqlite, path: {db}}}
  storage: local
  releases: {{tagPattern: "v*"}}
  deploy:
    before: snapshot
    onSuccess: baseline
    onFailure: [pin-pre-deploy, forensic-snapshot, alert]
  retention: {{keepLast: 1}}
"#
    )
}

fn setup() -> Fixture {
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        ("orders.yaml", &deploy_policy("orders", "orders.db")),
    ]);
    f.make_sqlite("orders.db");
    f
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn deploy_start_takes_a_verified_snapshot_and_prints_the_restore_command() {
    let f = setup();
    let out = f
        .cmd()
        .args(["deploy", "start", "--release", "v1.4.0", "--timeout", "5m"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    assert!(
        text.contains("safepoint restore --policy orders --release v1.4.0 --pre-deploy --to"),
        "{text}"
    );
    let b = &f.backups("orders")[0];
    assert_eq!(b["trigger"], "pre-deploy");
    assert_eq!(b["release"], "v1.4.0");
    assert!(text.contains(b["id"].as_str().unwrap()));
    let report = f.json(&[
        "deploy",
        "start",
        "--release",
        "v1.5.0",
        "--selector",
        "team=payments",
    ]);
    assert_eq!(report["ok"], true);
}

#[test]
fn failed_gate_exits_non_zero_and_unknown_policy_or_release_exit_4() {
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        ("orders.yaml", &deploy_policy("orders", "missing.db")),
    ]);
    let out = f
        .cmd()
        .args(["deploy", "start", "--release", "v2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("FAILED"));
    f.cmd()
        .args(["deploy", "start", "--release", "v2", "--policy", "nope"])
        .assert()
        .code(4);
    f.cmd()
        .args([
            "deploy",
            "finish",
            "--release",
            "never-started",
            "--status",
            "success",
        ])
        .assert()
        .code(4);
}

#[test]
fn failed_deploy_pins_the_snapshot_takes_a_forensic_copy_and_alerts_with_the_restore_command() {
    let f = setup();
    let db = f.work().join("orders.db");
    f.cmd()
        .args(["deploy", "start", "--release", "v1.4.0"])
        .assert()
        .success();
    let before = sqlite(&db, ".dump");
    sqlite(&db, "DELETE FROM events; DROP VIEW user_events;"); // the bad migration
    let out = f
        .cmd()
        .args([
            "deploy",
            "finish",
            "--release",
            "v1.4.0",
            "--status",
            "failure",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let backups = f.backups("orders");
    let pre = backups
        .iter()
        .find(|b| b["trigger"] == "pre-deploy")
        .unwrap();
    assert!(pre["pinned"].as_str().unwrap().contains("v1.4.0"));
    assert!(backups.iter().any(|b| b["trigger"] == "forensic"));

    // keepLast: 1, yet the pinned snapshot survives pruning.
    f.cmd().arg("prune").assert().success();
    assert!(f.backups("orders").iter().any(|b| b["id"] == pre["id"]));

    let audit = f.cmd().args(["audit", "export"]).output().unwrap();
    let audit = stdout(&audit);
    assert!(
        audit.lines().any(|l| l.contains("\"alert\"")
            && l.contains("safepoint restore --policy orders --release v1.4.0 --pre-deploy")),
        "{audit}"
    );

    // Recover without knowing any id.
    let restored = f.work().join("recovered.db");
    f.cmd()
        .args([
            "restore",
            "--policy",
            "orders",
            "--release",
            "v1.4.0",
            "--pre-deploy",
            "--to",
        ])
        .arg(&restored)
        .assert()
        .success();
    assert_eq!(sqlite(&restored, ".dump"), before);

    let id = pre["id"].as_str().unwrap();
    f.cmd().args(["unpin", id]).assert().success();
    f.cmd().arg("prune").assert().success();
    assert!(
        !f.backups("orders").iter().any(|b| b["id"] == id),
        "unpinned => retention applies"
    );
}

#[test]
fn successful_deploy_takes_a_baseline() {
    let f = setup();
    f.cmd()
        .args(["deploy", "start", "--release", "v3"])
        .assert()
        .success();
    f.cmd()
        .args(["deploy", "finish", "--release", "v3", "--status", "success"])
        .assert()
        .success();
    assert!(
        f.backups("orders")
            .iter()
            .any(|b| b["trigger"] == "post-deploy" && b["release"] == "v3")
    );
}

#[test]
fn a_new_release_tag_gets_exactly_one_baseline_and_old_tags_none() {
    let f = setup();
    git(&f.repo(), &["tag", "v0.9.0"]); // exists before the policy is first seen
    f.cmd().args(["daemon", "--once"]).assert().success();
    assert!(
        f.backups("orders")
            .iter()
            .all(|b| b["trigger"] != "release")
    );

    git(&f.repo(), &["tag", "v1.0.0"]);
    git(&f.repo(), &["tag", "other-tag"]);
    for _ in 0..3 {
        f.cmd().args(["daemon", "--once"]).assert().success();
    }
    let releases: Vec<_> = f
        .backups("orders")
        .into_iter()
        .filter(|b| b["trigger"] == "release")
        .collect();
    assert_eq!(releases.len(), 1, "{releases:?}");
    assert_eq!(releases[0]["release"], "v1.0.0");
}
