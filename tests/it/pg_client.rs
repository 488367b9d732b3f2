//! Which pg_dump runs: the policy's `source.binDir` against the real
//! server; a client older than the server or missing fails the run at once
//! (not retried) and says which versions and what to do.

use std::os::unix::fs::PermissionsExt;

use crate::common::{Fixture, STORAGE};
use crate::dbs::{PG_BIN, PgDb, db_policy, runs};

fn with_bin_dir(policy: &str, dir: &str) -> String {
    policy.replacen(
        "\n  storage: local",
        &format!("\n    binDir: {dir}\n  storage: local"),
        1,
    )
}

fn fixture(db: &PgDb, bin_dir: &str) -> Fixture {
    let policy = with_bin_dir(&db_policy("app", "postgres", &db.url(), ""), bin_dir);
    Fixture::new(&[("storage.yaml", STORAGE), ("db.yaml", &policy)])
}

#[test]
fn an_explicit_bin_dir_runs_that_pg_dump() {
    let db = PgDb::new("sp_pg_bindir");
    db.sql("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 10) g");
    let f = fixture(&db, PG_BIN);
    f.cmd().args(["backup", "app"]).assert().success();
    let id = f.backups("app")[0]["id"].as_str().unwrap().to_string();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(f.store().join("app").join(id).join("manifest.json")).unwrap(),
    )
    .unwrap();
    let version = String::from_utf8(
        std::process::Command::new(format!("{PG_BIN}/pg_dump"))
            .arg("--version")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(manifest["tools"]["pg_dump"], version.trim(), "{manifest}");
    assert_eq!(manifest["counts"]["public.t"], 10, "{manifest}");
}

#[test]
fn a_pg_dump_older_than_the_server_fails_at_once_naming_both_versions() {
    let db = PgDb::new("sp_pg_old");
    let f = fixture(&db, "old-client");
    let dir = f.work().join("old-client");
    std::fs::create_dir_all(&dir).unwrap();
    let fake = dir.join("pg_dump");
    std::fs::write(&fake, "#!/bin/sh\necho 'pg_dump (PostgreSQL) 9.6.24'\n").unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();

    let out = f.cmd().args(["backup", "app"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let (outcome, kind, error) = runs(&f, "app").pop().unwrap();
    assert_eq!(
        (outcome.as_str(), kind.as_str()),
        ("failed", "tool-too-old")
    );
    let server = db.sql("SHOW server_version");
    for needle in [
        "9.6.24",
        server.as_str(),
        "source.binDir",
        "postgresql-client-",
    ] {
        assert!(error.contains(needle), "`{needle}` missing: {error}");
    }
    assert!(!error.contains("attempt"), "not retried: {error}");
}

#[test]
fn a_bin_dir_without_pg_dump_fails_at_once_naming_the_path() {
    let db = PgDb::new("sp_pg_nobin");
    let f = fixture(&db, "/nonexistent/pg/bin");
    let out = f.cmd().args(["backup", "app"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let (outcome, kind, error) = runs(&f, "app").pop().unwrap();
    assert_eq!(
        (outcome.as_str(), kind.as_str()),
        ("failed", "tool-missing")
    );
    assert!(error.contains("/nonexistent/pg/bin/pg_dump"), "{error}");
    assert!(!error.contains("attempt"), "not retried: {error}");
}

/// Every connection safepoint opens to a database server sets TCP_NODELAY
/// (vendor/README.md): without it each TLS handshake waits for delayed
/// ACKs, about 90 ms a connection. Traced at the system call: the backup
/// opens its own connections (snapshot and counts) besides pg_dump's.
#[test]
fn database_connections_set_tcp_nodelay() {
    let db = PgDb::new("sp_pg_nodelay");
    db.sql("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 10) g");
    let f = fixture(&db, PG_BIN);
    let trace = f.work().join("setsockopt.trace");
    let status = std::process::Command::new("strace")
        .args(["-f", "-qq", "--trace=setsockopt", "-o"])
        .arg(&trace)
        .arg("--")
        .arg(assert_cmd::cargo::cargo_bin("safepoint"))
        .current_dir(f.work())
        .args(f.global_args())
        .args(["backup", "app"])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("strace runs (apt-get install strace)");
    assert!(status.success());
    let calls = std::fs::read_to_string(&trace).unwrap();
    // pg_dump's libpq sets TCP_NODELAY too, with SO_KEEPALIVE on the same
    // socket; safepoint's own connections set TCP_NODELAY alone.
    let nodelay = calls
        .lines()
        .filter(|l| l.contains("TCP_NODELAY, [1]"))
        .count();
    let libpq = calls.lines().filter(|l| l.contains("SO_KEEPALIVE")).count();
    assert!(
        nodelay > libpq,
        "safepoint's connections set TCP_NODELAY:\n{calls}"
    );
}
