//! Drills of PITR policies on a throwaway cluster (initdb on a free port):
//! two PITR policies stream the same cluster while rows are inserted; one
//! drill's checks hold, the other's fail. Both restore to a random point of
//! the recorded window into a scratch cluster under the daemon's data dir,
//! start it, and leave neither the scratch nor a server behind. Validation
//! of `drill` on a PITR policy is checked without a server.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::common::{Fixture, STORAGE, sqlite};
use crate::dbs::{Cluster, db_policy, psql_at};
use crate::pitr::{Stopped, archived_of, daemon, inserter, wait_until};

const GOOD: &str = "pitr-drill-good";
const BAD: &str = "pitr-drill-bad";
const SCHEDULED: &str = "pitr-drill-scheduled";

/// A PITR policy streaming `url` every second, with `drill`.
fn pitr_policy(name: &str, url: &str, drill: &str) -> String {
    db_policy(name, "postgres", url, drill).replacen(
        "\n  storage: local",
        "\n    pitr: {walFlushInterval: 1s}\n  storage: local",
        1,
    )
}

/// Processes whose command line names `path`.
fn processes_under(path: &std::path::Path) -> Vec<String> {
    let out = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&*path.to_string_lossy()))
        .map(str::to_string)
        .collect()
}

fn check<'a>(outcome: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    outcome["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {outcome}"))
}

#[test]
fn pitr_drills_restore_a_random_point_run_the_checks_and_leave_nothing_behind() {
    let cluster = Cluster::start_with(None, "");
    let port = cluster.port;
    psql_at(
        port,
        "postgres",
        "CREATE TABLE t (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())",
    );
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let good = pitr_policy(
        GOOD,
        &url,
        "  drill:\n    verify:\n      checks:\n        - {name: rows, sql: \"SELECT count(*) FROM t\", expect: \"> 0\"}\n        - {name: promoted, sql: \"SELECT pg_is_in_recovery()::int\", expect: \"= 0\"}\n",
    );
    let bad = pitr_policy(
        BAD,
        &url,
        "  drill:\n    verify:\n      checks:\n        - {name: impossible, sql: \"SELECT count(*) FROM t\", expect: \"< 0\"}\n",
    );
    let scheduled = pitr_policy(
        SCHEDULED,
        &url,
        "  drill:\n    schedule: {cron: \"* * * * *\"}\n    verify:\n      checks:\n        - {name: rows, sql: \"SELECT count(*) FROM t\", expect: \"> 0\"}\n",
    );
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        ("good.yaml", &good),
        ("bad.yaml", &bad),
        ("scheduled.yaml", &scheduled),
    ]);
    // The scratch cluster runs as postgres and reads the archive through wal-fetch.
    std::fs::set_permissions(f.tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut children = Stopped(vec![inserter(port)]);
    let log = f.tmp.path().join("daemon.log");
    children.0.push(daemon(&f, &log));
    let logged = || std::fs::read_to_string(&log).unwrap_or_default();
    let catalog = f.data().join("catalog.db");
    for policy in [GOOD, BAD, SCHEDULED] {
        wait_until("the first WAL segment archived", 180, &logged, || {
            !archived_of(&f, policy).is_empty()
        });
        // A base backup certainly taken while the archive streams (the
        // scheduled drill may hold the policy's lock for a moment).
        wait_until("a base backup taken by hand", 180, &logged, || {
            f.cmd()
                .args(["backup", policy])
                .output()
                .unwrap()
                .status
                .success()
        });
        wait_until("a recoverable window recorded", 180, &logged, || {
            sqlite(
                &catalog,
                &format!(
                    "SELECT count(*) FROM pitr_archives WHERE policy = '{policy}' \
                     AND window_start IS NOT NULL AND window_end > window_start"
                ),
            )
            .trim()
                == "1"
        });
    }
    let drills = f.data().join("drills");
    // The daemon's scheduled drill (due at once: its last slot passed with
    // no drill) through the same path.
    let drilled = || {
        let checks = sqlite(&catalog, "SELECT policy, verdict, checks FROM drills");
        format!("{}\ndrills:\n{checks}", logged())
    };
    wait_until("the scheduled drill passed", 180, &drilled, || {
        sqlite(
            &catalog,
            &format!(
                "SELECT count(*) FROM drills WHERE policy = '{SCHEDULED}' AND verdict = 'passed'"
            ),
        )
        .trim()
            != "0"
    });

    let out = f
        .cmd()
        .args(["drill", GOOD, "--output", "json"])
        .output()
        .unwrap();
    let outcome: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON ({e}): {}\ndaemon log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            logged()
        )
    });
    assert!(out.status.success(), "the drill passes: {outcome}");
    assert_eq!(outcome["passed"], true, "{outcome}");
    eprintln!("good drill: {outcome}");
    let recovery = check(&outcome, "recovery")["detail"].as_str().unwrap();
    let base = outcome["backup_id"].as_str().unwrap();
    assert!(
        recovery.contains(&format!("from base backup {base}"))
            && recovery.contains("recovery stopping"),
        "the verdict names the base backup and where recovery stopped: {recovery}"
    );
    assert_eq!(check(&outcome, "rows")["passed"], true, "{outcome}");
    assert_eq!(check(&outcome, "promoted")["passed"], true, "{outcome}");
    let scratch = drills.join(outcome["scratch"].as_str().unwrap());
    assert!(!scratch.exists(), "scratch {} removed", scratch.display());
    assert_eq!(processes_under(&scratch), Vec::<String>::new());

    let out = f
        .cmd()
        .args(["drill", BAD, "--output", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "a failed check fails the drill");
    let outcome: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(outcome["passed"], false, "{outcome}");
    assert_eq!(check(&outcome, "recovery")["passed"], true, "{outcome}");
    assert_eq!(check(&outcome, "impossible")["passed"], false, "{outcome}");
    let scratch = drills.join(outcome["scratch"].as_str().unwrap());
    assert!(!scratch.exists(), "scratch {} removed", scratch.display());
    assert_eq!(processes_under(&scratch), Vec::<String>::new());
    let verdicts = sqlite(
        &catalog,
        &format!("SELECT policy || ':' || verdict FROM drills WHERE policy = '{BAD}'"),
    );
    assert!(
        verdicts.contains(&format!("{BAD}:failed")),
        "the failed drill is recorded: {verdicts}"
    );
}

#[test]
fn validation_accepts_a_pitr_drill_and_rejects_target_and_completeness_with_file_line() {
    let url = "postgres://postgres@db.internal:5432/orders";
    let ok = pitr_policy(
        "pitr-ok",
        url,
        "  drill:\n    verify:\n      checks:\n        - {name: rows, sql: \"SELECT 1\", expect: \"= 1\"}\n",
    );
    let f = Fixture::new(&[("storage.yaml", STORAGE), ("ok.yaml", &ok)]);
    let dir = f.repo().join("policies");
    f.cmd().arg("validate").arg(&dir).assert().code(0);
    let bad = pitr_policy(
        "pitr-bad",
        url,
        "  drill:\n    target: {type: postgres, url: \"postgres://drill@scratch.internal:5432/postgres\"}\n    verify:\n      completeness: exact\n",
    );
    std::fs::write(dir.join("bad.yaml"), &bad).unwrap();
    let out = f.cmd().arg("validate").arg(&dir).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    let line_of = |needle: &str| bad.lines().position(|l| l.contains(needle)).unwrap() + 1;
    for (needle, says) in [
        ("target:", "takes no `target`"),
        ("completeness:", "completeness checks do not apply"),
    ] {
        let at = format!("bad.yaml:{}:", line_of(needle));
        assert!(
            text.lines().any(|l| l.contains(&at) && l.contains(says)),
            "{at}: {says} missing in:\n{text}"
        );
    }
}
