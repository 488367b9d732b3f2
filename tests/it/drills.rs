//! Recovery drills on real SQLite, PostgreSQL and MariaDB databases and
//! directories: passing, corrupt artifact, incomplete data, wrong user check,
//! unreachable target; the scratch copy never survives.

use crate::common::{Fixture, STORAGE, sqlite};

fn drill_policy(target: &str, expect_events: &str) -> String {
    format!(
        r#"apiVersion: safepoint/v1
kind: BackupPolicy
metadata: {{name: app}}
spec:
  source: {{type: sqlite, path: app.db}}
  storage: local
  schedule: {{cron: "0 * * * *"}}
  retention: {{keepLast: 5}}
  drill:
    schedule: {{cron: "0 4 * * *"}}
    target: {{type: directory, path: {target}}}
    verify:
      completeness: exact
      checks:
        - {{name: users exist, sql: "select count(*) from users", expect: ">= 1"}}
        - {{name: events, sql: "select count(*) from events", expect: "{expect_events}"}}
    maxDuration: 10m
"#
    )
}

fn setup(target: &str, expect_events: &str) -> Fixture {
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        ("app.yaml", &drill_policy(target, expect_events)),
    ]);
    f.make_sqlite("app.db");
    f.cmd().args(["backup", "app"]).assert().success();
    f
}

fn drill(f: &Fixture) -> (i32, serde_json::Value) {
    let out = f
        .cmd()
        .args(["drill", "app", "--output", "json"])
        .output()
        .unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "no JSON: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), json)
}

fn check<'a>(outcome: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    outcome["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"].as_str().unwrap().starts_with(name))
        .unwrap_or_else(|| panic!("no check {name} in {outcome}"))
}

fn scratch_is_empty(f: &Fixture) -> bool {
    std::fs::read_dir(f.work().join("scratch"))
        .map(|d| d.count() == 0)
        .unwrap_or(true)
}

#[test]
fn passing_drill_runs_every_named_check_and_removes_its_scratch() {
    let f = setup("scratch", "= 500");
    let (code, outcome) = drill(&f);
    assert_eq!(code, 0, "{outcome}");
    assert_eq!(outcome["passed"], true);
    for name in [
        "checksum",
        "restore",
        "completeness (exact)",
        "users exist",
        "events",
        "recovery time",
    ] {
        assert_eq!(check(&outcome, name)["passed"], true, "{name}: {outcome}");
    }
    assert!(
        outcome["scratch"]
            .as_str()
            .unwrap()
            .starts_with("safepoint_drill_app_")
    );
    assert!(scratch_is_empty(&f), "scratch removed");
    let status = f.json(&["status"]);
    assert_eq!(status["policies"][0]["last_drill_verdict"], "passed");
    let audit = f.cmd().args(["audit", "export"]).output().unwrap();
    assert!(String::from_utf8_lossy(&audit.stdout).contains("drill-passed"));
}

#[test]
fn corrupted_artifact_fails_the_checksum_check() {
    let f = setup("scratch", "= 500");
    let id = f.backups("app")[0]["id"].as_str().unwrap().to_string();
    let artifact = f.store().join("app").join(&id).join("data.sqlite.zst");
    let mut bytes = std::fs::read(&artifact).unwrap();
    let n = bytes.len() / 2;
    bytes[n] ^= 0x55;
    std::fs::write(&artifact, bytes).unwrap();
    let out = f
        .cmd()
        .args(["drill", "app", "--backup", &id, "--output", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let outcome: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(check(&outcome, "checksum")["passed"], false);
    assert!(scratch_is_empty(&f));
    let status = f.json(&["status"]);
    assert!(
        status["policies"][0]["drift"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d == "drill-failed")
    );
}

#[test]
fn data_missing_since_the_counts_were_taken_fails_completeness() {
    let f = setup("scratch", "= 500");
    // The manifest says 600 events (counted in the snapshot); the dump has 500.
    sqlite(
        &f.data().join("catalog.db"),
        "UPDATE backups SET manifest = json_set(manifest, '$.counts.events', 600)",
    );
    let (code, outcome) = drill(&f);
    assert_eq!(code, 1);
    let c = check(&outcome, "completeness");
    assert_eq!(c["passed"], false);
    assert!(
        c["detail"]
            .as_str()
            .unwrap()
            .contains("events: 500 (expected 600)"),
        "{c}"
    );
}

#[test]
fn a_user_check_with_the_wrong_value_fails_and_shows_the_value() {
    let f = setup("scratch", ">= 501");
    let (code, outcome) = drill(&f);
    assert_eq!(code, 1);
    let c = check(&outcome, "events");
    assert_eq!(c["passed"], false);
    assert_eq!(c["detail"], "expected >= 501, got 500");
    assert!(scratch_is_empty(&f));
}

#[test]
fn an_unusable_drill_target_fails_cleanly() {
    let f = setup("blocker/scratch", "= 500");
    std::fs::write(f.work().join("blocker"), "a file, not a directory").unwrap();
    let (code, outcome) = drill(&f);
    assert_eq!(code, 1);
    let c = check(&outcome, "restore");
    assert_eq!(c["passed"], false);
    assert!(c["detail"].as_str().unwrap().contains("blocker"), "{c}");
}

#[test]
fn the_daemon_runs_due_drills_on_schedule() {
    let f = setup("scratch", "= 500");
    f.cmd().args(["daemon", "--once"]).assert().success();
    let status = f.json(&["status"]);
    assert_eq!(
        status["policies"][0]["last_drill_verdict"], "passed",
        "{status}"
    );
    assert!(scratch_is_empty(&f));
}

#[test]
fn postgres_drill_restores_into_a_scratch_database_that_never_survives() {
    use crate::dbs::{PgDb, psql};
    let src = PgDb::new("drillsrc");
    src.sql("create table orders(id serial primary key, total int); insert into orders(total) select g from generate_series(1, 250) g; create table empty_t(x int);");
    let policy = format!(
        r#"apiVersion: safepoint/v1
kind: BackupPolicy
metadata: {{name: pgapp}}
spec:
  source: {{type: postgres, url: "{}"}}
  storage: local
  retention: {{keepLast: 3}}
  drill:
    target: {{type: postgres, url: "postgres://postgres@127.0.0.1:5432/postgres"}}
    verify:
      completeness: exact
      checks:
        - {{name: orders restored, sql: "select count(*) from orders", expect: "= 250"}}
        - {{name: totals, sql: "select sum(total) from orders", expect: ">= 1"}}
    maxDuration: 5m
"#,
        src.url()
    );
    let f = Fixture::new(&[("storage.yaml", STORAGE), ("pgapp.yaml", &policy)]);
    f.cmd().args(["backup", "pgapp"]).assert().success();
    let out = f
        .cmd()
        .args(["drill", "pgapp", "--output", "json"])
        .output()
        .unwrap();
    let outcome: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "{} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(out.status.code(), Some(0), "{outcome}");
    for name in [
        "checksum",
        "restore",
        "completeness (exact)",
        "orders restored",
        "totals",
        "recovery time",
    ] {
        assert_eq!(check(&outcome, name)["passed"], true, "{name}: {outcome}");
    }
    let scratch = outcome["scratch"].as_str().unwrap();
    assert!(scratch.starts_with("safepoint_drill_pgapp_"));
    let left = psql(
        "postgres",
        &format!("select count(*) from pg_database where datname = '{scratch}'"),
    );
    assert_eq!(left, "0", "scratch database dropped");
}

#[test]
fn mariadb_drill_restores_into_a_scratch_database_that_never_survives() {
    use crate::dbs::{MyDb, mariadb};
    let src = MyDb::new("drillmysrc");
    src.sql("create table orders(id int auto_increment primary key, total int); insert into orders(total) select seq from seq_1_to_250; create table empty_t(x int);");
    let policy = format!(
        r#"apiVersion: safepoint/v1
kind: BackupPolicy
metadata: {{name: myapp}}
spec:
  source: {{type: mysql, url: "{}"}}
  storage: local
  retention: {{keepLast: 3}}
  drill:
    target: {{type: mysql, url: "mysql://root@127.0.0.1:3306/mysql"}}
    verify:
      completeness: exact
      checks:
        - {{name: orders restored, sql: "select count(*) from orders", expect: "= 250"}}
        - {{name: totals, sql: "select sum(total) from orders", expect: "= 31375"}}
    maxDuration: 5m
"#,
        src.url()
    );
    let f = Fixture::new(&[("storage.yaml", STORAGE), ("myapp.yaml", &policy)]);
    f.cmd().args(["backup", "myapp"]).assert().success();
    let out = f
        .cmd()
        .args(["drill", "myapp", "--output", "json"])
        .output()
        .unwrap();
    let outcome: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "{} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(out.status.code(), Some(0), "{outcome}");
    for name in [
        "checksum",
        "restore",
        "completeness (exact)",
        "orders restored",
        "totals",
        "recovery time",
    ] {
        assert_eq!(check(&outcome, name)["passed"], true, "{name}: {outcome}");
    }
    let scratch = outcome["scratch"].as_str().unwrap();
    assert!(scratch.starts_with("safepoint_drill_myapp_"), "{scratch}");
    let left = mariadb(None, &format!("SHOW DATABASES LIKE '{scratch}'"));
    assert_eq!(left, "", "scratch database dropped");
}
