//! The real binary with a PostgreSQL catalog (`--catalog postgres://…` on
//! the local server, a uniquely named database dropped at the end), and
//! `catalog migrate` from a SQLite install.

use crate::common::{Fixture, STORAGE, dir_policy, sqlite_policy};
use crate::contract_server::{Daemon, wait_for};
use crate::dbs::{Cluster, PgDb, psql, psql_at};
use crate::metrics::request;

fn fixture() -> Fixture {
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        ("app.yaml", &sqlite_policy("app", "app.db")),
        ("files.yaml", &dir_policy("files", "files")),
    ]);
    f.make_sqlite("app.db");
    std::fs::create_dir_all(f.work().join("files")).unwrap();
    std::fs::write(f.work().join("files/a.txt"), "hello").unwrap();
    f
}

/// `args` with `--catalog URL` (password from a file: the server trusts
/// loopback, so any password passes, but the flag's path is exercised).
fn on_pg(f: &Fixture, db: &PgDb, args: &[&str]) -> assert_cmd::Command {
    let pw = f.tmp.path().join("catalog.pw");
    std::fs::write(&pw, "not-shown-anywhere\n").unwrap();
    let mut cmd = f.cmd();
    cmd.args(["--catalog", &db.url()])
        .arg("--catalog-password-file")
        .arg(&pw)
        .args(args);
    cmd
}

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON ({e}): {} / {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn the_daemon_list_status_audit_and_report_work_on_a_postgres_catalog() {
    let f = fixture();
    let db = PgDb::new("sp_catalog_e2e");
    let once = on_pg(&f, &db, &["daemon", "--once"])
        .env("SAFEPOINT_LOG", "info")
        .output()
        .unwrap();
    assert!(once.status.success());
    let daemon_log = String::from_utf8_lossy(&once.stderr).into_owned();
    let list = json(
        &on_pg(&f, &db, &["list", "--output", "json"])
            .output()
            .unwrap(),
    );
    let policies: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["backup"]["policy"].as_str().unwrap())
        .collect();
    assert_eq!(policies, ["app", "files"], "{list}\n{daemon_log}");
    assert!(
        !f.data().join("catalog.db").exists(),
        "no SQLite catalog was made"
    );
    assert_eq!(
        psql(
            &db.name,
            "SELECT count(*) FROM backups WHERE health = 'verified'"
        ),
        "2"
    );
    let status = json(
        &on_pg(&f, &db, &["status", "--output", "json"])
            .output()
            .unwrap(),
    );
    assert!(status.to_string().contains("\"app\""), "{status}");
    on_pg(&f, &db, &["audit", "verify"])
        .assert()
        .success()
        .stdout(predicates::str::contains("chain verified"));
    on_pg(&f, &db, &["report", "--since", "1d"])
        .assert()
        .success()
        .stdout(predicates::str::contains("app"));
    // A second run sees the first (nothing to do) and the chain goes on.
    on_pg(&f, &db, &["daemon", "--once"]).assert().success();
    assert_eq!(psql(&db.name, "SELECT count(*) FROM backups"), "2");
    on_pg(&f, &db, &["audit", "verify"]).assert().success();
}

#[test]
fn a_catalog_password_never_shows_in_errors() {
    let f = fixture();
    let out = f
        .cmd()
        .args([
            "--catalog",
            "postgres://sp:hunter2@127.0.0.1:1/nothing?password=hunter3",
            "list",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("hunter2") && !err.contains("hunter3"),
        "{err}"
    );
    assert!(
        err.contains("postgres://sp:***@127.0.0.1:1/nothing"),
        "{err}"
    );
    let out = f
        .cmd()
        .args(["--catalog", "x.db", "--catalog-password-file", "pw", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("only for a postgres"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn catalog_migrate_copies_a_sqlite_install_into_an_empty_postgres_database() {
    let f = fixture();
    f.cmd().args(["daemon", "--once"]).assert().success();
    f.cmd().args(["backup", "app"]).assert().success();
    let id = f.backups("app")[0]["id"].as_str().unwrap().to_string();
    f.cmd()
        .args(["pin", &id, "--reason", "legal hold"])
        .assert()
        .success();
    let before = json(&f.cmd().args(["list", "--output", "json"]).output().unwrap());
    let entries = |out: &std::process::Output| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let audit_before = entries(&f.cmd().args(["audit", "export"]).output().unwrap());

    let db = PgDb::new("sp_catalog_migrate");
    let out = f
        .cmd()
        .args(["catalog", "migrate", "--to", &db.url(), "--output", "json"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json(&out);
    let tables = report["tables"].as_array().unwrap();
    assert!(
        tables.iter().all(|t| t["source"] == t["target"]),
        "{report}"
    );
    let count = |name: &str| {
        tables.iter().find(|t| t["table"] == name).unwrap()["target"]
            .as_i64()
            .unwrap()
    };
    assert_eq!(count("backups"), 3, "{report}");
    assert_eq!(count("audit") as usize, audit_before.len(), "{report}");
    assert!(count("runs") >= 3 && count("revisions") >= 1, "{report}");

    let after = json(
        &on_pg(&f, &db, &["list", "--output", "json"])
            .output()
            .unwrap(),
    );
    assert_eq!(after, before, "same backups, health and pins");
    assert_eq!(
        psql(
            &db.name,
            &format!("SELECT pinned FROM backups WHERE id = '{id}'")
        ),
        "legal hold"
    );
    let audit_after = entries(&on_pg(&f, &db, &["audit", "export"]).output().unwrap());
    assert_eq!(audit_after, audit_before, "the chain is copied as it was");
    on_pg(&f, &db, &["audit", "verify"]).assert().success();
    // The PostgreSQL catalog carries on where SQLite stopped.
    on_pg(&f, &db, &["backup", "files"]).assert().success();
    on_pg(&f, &db, &["audit", "verify"]).assert().success();

    let again = f
        .cmd()
        .args(["catalog", "migrate", "--to", &db.url()])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("not empty"), "{err}");
}

fn readyz(d: &Daemon) -> (u16, String) {
    request(d.addr, "GET /readyz HTTP/1.1", b"")
}

#[test]
fn readyz_follows_the_catalog_and_the_daemon_survives_its_restart() {
    let f = fixture();
    let cluster = Cluster::start(None);
    psql_at(cluster.port, "postgres", "CREATE DATABASE catalog");
    let url = format!("postgres://postgres@127.0.0.1:{}/catalog", cluster.port);
    let mut d = Daemon::start(&f, &["--catalog", &url, "--fetch-interval", "1"]);
    wait_for("ready on the PostgreSQL catalog", || readyz(&d).0 == 200);

    cluster.kill();
    wait_for("not ready while the catalog is down", || {
        let (code, text) = readyz(&d);
        code == 503 && text.contains("catalog") && text.contains("unreachable")
    });
    // A new policy arrives while the catalog is down.
    f.commit(
        &[("late.yaml", &dir_policy("late", "files"))],
        "late policy",
    );
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(readyz(&d).0, 503);

    cluster.resume();
    wait_for("ready again after the restart", || readyz(&d).0 == 200);
    wait_for(
        "the new policy backed up into the restarted catalog",
        || {
            psql_at(
                cluster.port,
                "catalog",
                "SELECT count(*) FROM backups WHERE policy = 'late'",
            ) == "1"
        },
    );
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "the daemon is still running"
    );
    f.cmd()
        .args(["--catalog", &url, "audit", "verify"])
        .assert()
        .success();
}

/// A catalog server that refuses connections is named with the reason at
/// once (not "pool timed out" after the pool's 30 s of retries), exit 2.
#[test]
fn an_unreachable_catalog_says_why_at_once() {
    let f = fixture();
    let port = crate::dbs::free_port();
    let out = f
        .cmd()
        .args([
            "--catalog",
            &format!("postgres://postgres@127.0.0.1:{port}/catalog"),
        ])
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot open catalog") && err.contains("Connection refused"),
        "{err}"
    );
    assert!(!err.contains("pool timed out"), "{err}");
    // Each cause is said once.
    assert_eq!(err.matches("Connection refused").count(), 1, "{err}");
}
