//! PostgreSQL sources against the real server: round trips that compare
//! every table's content, restores refused or forced, and the faults of
//! issue 9 (unreachable, wrong password, killed mid-dump, pg_dump failing,
//! timeout, storage full), each leaving a failed run, no manifest, no partial
//! data and the previous backups untouched.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{Fixture, STORAGE};
use crate::dbs::{
    Cluster, PgDb, assert_failed_cleanly, backup_dirs, db_policy, doc_block, free_port,
    pg_checksums, psql, run_doc_block, runs, with_password_env,
};

/// Several tables, schemas and types, a sequence, a view and indexes.
pub fn populate(db: &PgDb) {
    db.sql(
        "CREATE SCHEMA billing;
         CREATE TABLE users (id serial PRIMARY KEY, name text NOT NULL, profile jsonb,
                             raw json, avatar bytea, created timestamptz NOT NULL);
         CREATE INDEX users_name ON users (name);
         CREATE UNIQUE INDEX users_profile_email ON users ((profile->>'email'));
         CREATE TABLE billing.invoices (id bigserial PRIMARY KEY, user_id int REFERENCES users(id),
                                        amount numeric(12,2), due date, note text);
         CREATE SEQUENCE billing.invoice_numbers START 1000;
         CREATE VIEW billing.open_invoices AS SELECT i.*, u.name FROM billing.invoices i JOIN users u ON u.id = i.user_id;
         CREATE TABLE \"Mixed Case\" (\"Key\" text PRIMARY KEY, v int);
         INSERT INTO users (name, profile, raw, avatar, created) VALUES
           ('ädä ✓ 日本', '{\"email\":\"a@example.com\",\"tags\":[1,2]}', '{\"k\": \"v\"}', '\\x00ff10', '2026-11-25 10:00:00+01'),
           ('bob', '{\"email\":\"b@example.com\"}', NULL, NULL, '2026-11-24 00:00:00Z');
         INSERT INTO billing.invoices (user_id, amount, due, note)
           SELECT 1 + g % 2, g * 1.5, date '2026-01-01' + g, md5(g::text) FROM generate_series(1, 500) g;
         SELECT nextval('billing.invoice_numbers') FROM generate_series(1, 7);
         INSERT INTO \"Mixed Case\" VALUES ('a', 1), ('b''quote', 2);",
    );
}

fn fixture(policy: &str) -> Fixture {
    Fixture::new(&[("storage.yaml", STORAGE), ("db.yaml", policy)])
}

fn manifest(f: &Fixture, policy: &str) -> serde_json::Value {
    let id = f.backups(policy)[0]["id"].as_str().unwrap().to_string();
    serde_json::from_slice(
        &std::fs::read(f.store().join(policy).join(id).join("manifest.json")).unwrap(),
    )
    .unwrap()
}

#[test]
fn postgres_backup_restores_every_table_with_equal_content_and_counts() {
    let src = PgDb::new("sp_pg_src");
    populate(&src);
    let f = fixture(&db_policy("orders", "postgres", &src.url(), ""));
    f.cmd().args(["backup", "orders"]).assert().success();

    let m = manifest(&f, "orders");
    assert_eq!(m["counts"]["public.users"], 2, "{m}");
    assert_eq!(m["counts"]["billing.invoices"], 500, "{m}");
    assert_eq!(m["counts"]["public.Mixed Case"], 2, "{m}");
    assert!(
        m["tools"]["pg_dump"].as_str().unwrap().contains("15."),
        "{m}"
    );
    assert!(
        m["tools"]["postgres"].as_str().unwrap().starts_with("15"),
        "{m}"
    );
    assert_eq!(m["artifact"]["file"], "data.dump.zst");

    let dst = PgDb::reserved("sp_pg_dst");
    let out = f
        .cmd()
        .args([
            "restore",
            "--policy",
            "orders",
            "--latest",
            "--to",
            &dst.url(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("in "),
        "elapsed time printed"
    );
    assert_eq!(pg_checksums(5432, &src.name), pg_checksums(5432, &dst.name));
    assert_eq!(
        dst.sql("SELECT last_value FROM billing.invoice_numbers"),
        "1006"
    );
    assert_eq!(dst.sql("SELECT count(*) FROM billing.open_invoices"), "500");
    assert_eq!(
        dst.sql("SELECT count(*) FROM pg_indexes WHERE indexname IN ('users_name','users_profile_email')"),
        "2"
    );
    // Sequences owned by serial columns continue where the source stopped.
    dst.sql("INSERT INTO users (name, created) VALUES ('carol', now())");
    assert_eq!(dst.sql("SELECT max(id) FROM users"), "3");

    // A non-empty target is refused without --force, replaced with it.
    let out = f
        .cmd()
        .args([
            "restore",
            "--policy",
            "orders",
            "--latest",
            "--to",
            &dst.url(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not empty") && err.contains("--force"),
        "{err}"
    );
    f.cmd()
        .args([
            "restore",
            "--policy",
            "orders",
            "--latest",
            "--force",
            "--to",
            &dst.url(),
        ])
        .assert()
        .success();
    assert_eq!(dst.sql("SELECT count(*) FROM users"), "2");
}

#[test]
fn unreachable_database_is_retried_then_recorded_failed_with_the_tool_error() {
    let src = PgDb::new("sp_pg_unreach");
    src.sql("CREATE TABLE t (x int); INSERT INTO t VALUES (1)");
    let f = fixture(&db_policy("app", "postgres", &src.url(), ""));
    f.cmd().args(["backup", "app"]).assert().success();
    let before = backup_dirs(&f, "app");

    let closed = format!("postgres://postgres@127.0.0.1:{}/{}", free_port(), src.name);
    f.commit(
        &[("db.yaml", &db_policy("app", "postgres", &closed, ""))],
        "move db",
    );
    let out = f.cmd().args(["backup", "app"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let error = assert_failed_cleanly(&f, "app", &before, "connection refused", None);
    assert!(
        error.contains("attempt 3 of 3"),
        "transient: retried: {error}"
    );
}

#[test]
fn wrong_password_fails_at_once_without_leaking_either_password() {
    let cluster = Cluster::start(Some("right-pw-7f3a"));
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", cluster.port);
    let policy = with_password_env(
        &db_policy("auth", "postgres", &url, ""),
        "SP_TEST_DB_PASSWORD",
    );
    let f = fixture(&policy);
    f.cmd()
        .env("SP_TEST_DB_PASSWORD", "right-pw-7f3a")
        .args(["backup", "auth"])
        .assert()
        .success();
    let before = backup_dirs(&f, "auth");

    let out = f
        .cmd()
        .env("SP_TEST_DB_PASSWORD", "wrong-pw-91c2")
        .args(["backup", "auth"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !all.contains("wrong-pw-91c2") && !all.contains("right-pw-7f3a"),
        "{all}"
    );
    let error = assert_failed_cleanly(
        &f,
        "auth",
        &before,
        "password authentication failed",
        Some("wrong-pw-91c2"),
    );
    assert!(
        !error.contains("attempt"),
        "a bad password is not retried: {error}"
    );

    // An unset variable is named, its value never shown.
    let out = f
        .cmd()
        .env_remove("SP_TEST_DB_PASSWORD")
        .args(["backup", "auth"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("SP_TEST_DB_PASSWORD"));
}

#[test]
fn database_killed_mid_dump_fails_the_run_and_keeps_the_previous_backup() {
    let cluster = Cluster::start(None);
    let db = PgDb::on(cluster.port, "sp_pg_killed");
    db.sql(
        "CREATE TABLE big AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS txt \
         FROM generate_series(1, 200000) g",
    );
    let f = fixture(&db_policy("victim", "postgres", &db.url(), ""));
    f.cmd().args(["backup", "victim"]).assert().success();
    let before = backup_dirs(&f, "victim");

    // Hold the dump mid-way: a transaction keeps `big` locked, so pg_dump
    // (connected, its snapshot taken) waits for its lock on the table; then
    // the server crashes under it. No timing: the test waits until the
    // server itself reports pg_dump's backend waiting for that lock.
    let mut locker = Command::new("psql")
        .args(["-X", "-q", "-h", "127.0.0.1", "-U", "postgres"])
        .args(["-p", &cluster.port.to_string(), "-d", &db.name])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let stdin = locker.stdin.as_mut().unwrap();
        stdin
            .write_all(b"BEGIN;\nLOCK TABLE big IN ACCESS EXCLUSIVE MODE;\n")
            .unwrap();
        stdin.flush().unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while db.sql("SELECT count(*) FROM pg_locks WHERE relation = 'big'::regclass AND mode = 'AccessExclusiveLock' AND granted") != "1" {
        assert!(Instant::now() < deadline, "the lock was never taken");
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = f.tmp.path().join("backup.log");
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("safepoint"))
        .current_dir(f.work())
        .env("SAFEPOINT_LOG", "warn")
        .args(f.global_args())
        .args(["backup", "victim"])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while db.sql(
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LOCK TABLE%' AND wait_event_type = 'Lock'",
    ) != "1"
    {
        assert!(Instant::now() < deadline, "pg_dump never waited for the table lock");
        assert!(
            child.try_wait().unwrap().is_none(),
            "backup ended before pg_dump waited: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    cluster.kill();
    let _ = locker.wait();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1));
    // The first attempt lost its connection mid-dump; the retries found the
    // server gone. The run records the last error.
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("transient failure") && logged.to_lowercase().contains("connection"),
        "{logged}"
    );
    let error = assert_failed_cleanly(&f, "victim", &before, "connection refused", None);
    assert!(
        error.contains("attempt 3 of 3"),
        "connection loss is retried: {error}"
    );
    std::mem::forget(db); // its server is gone with the cluster
}

#[test]
fn pg_dump_exiting_non_zero_is_recorded_with_its_stderr() {
    let db = PgDb::new("sp_pg_dumpfail");
    let role = db.name.replace("sp_pg_dumpfail", "sp_role");
    db.sql(&format!(
        "CREATE TABLE t (x int); INSERT INTO t VALUES (1); CREATE SEQUENCE hidden_seq;
         CREATE ROLE {role} LOGIN; GRANT SELECT ON t TO {role};"
    ));
    let url = format!("postgres://{role}@127.0.0.1:5432/{}", db.name);
    let f = fixture(&db_policy("limited", "postgres", &db.url(), ""));
    f.cmd().args(["backup", "limited"]).assert().success();
    let before = backup_dirs(&f, "limited");

    f.commit(
        &[("db.yaml", &db_policy("limited", "postgres", &url, ""))],
        "least privilege",
    );
    let out = f.cmd().args(["backup", "limited"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let error = assert_failed_cleanly(&f, "limited", &before, "permission denied", None);
    assert!(error.contains("pg_dump failed"), "{error}");
    drop(db);
    psql("postgres", &format!("DROP ROLE IF EXISTS {role}"));
}

#[test]
fn backup_blocked_past_its_timeout_is_cancelled_and_recorded() {
    let db = PgDb::new("sp_pg_timeout");
    db.sql("CREATE TABLE locked (x int); INSERT INTO locked VALUES (1)");
    let f = fixture(&db_policy("slow", "postgres", &db.url(), "  timeout: 2s\n"));
    f.cmd().args(["backup", "slow"]).assert().success();
    let before = backup_dirs(&f, "slow");

    // Another session holds an exclusive lock: the snapshot's count waits.
    let mut holder = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            &db.name,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let stdin = holder.stdin.as_mut().unwrap();
        writeln!(
            stdin,
            "BEGIN; LOCK TABLE locked IN ACCESS EXCLUSIVE MODE; SELECT 1;"
        )
        .unwrap();
        stdin.flush().unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while psql(
        &db.name,
        "SELECT count(*) FROM pg_locks WHERE mode = 'AccessExclusiveLock' AND relation = 'locked'::regclass",
    ) != "1"
    {
        assert!(Instant::now() < deadline, "lock never taken");
        std::thread::yield_now();
    }
    let started = Instant::now();
    let out = f.cmd().args(["backup", "slow"]).output().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(out.status.code(), Some(1));
    assert_failed_cleanly(&f, "slow", &before, "timeout", None);
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(runs(&f, "slow").last().unwrap().1, "timeout");
}

#[test]
fn storage_filling_up_fails_the_backup_and_frees_its_partial_artifact() {
    let db = PgDb::new("sp_pg_full");
    db.sql("CREATE TABLE t (x int); INSERT INTO t VALUES (1)");
    let f = fixture(&db_policy("full", "postgres", &db.url(), ""));
    let _tmpfs = crate::dbs::Tmpfs::mount(&f.store(), "2m");
    f.cmd().args(["backup", "full"]).assert().success();
    let before = backup_dirs(&f, "full");

    // About 4 MB of random bytes: zstd cannot shrink them below 2 MB.
    db.sql(
        "CREATE TABLE noise AS SELECT decode(md5(random()::text) || md5(random()::text), 'hex') AS b \
         FROM generate_series(1, 130000)",
    );
    let out = f.cmd().args(["backup", "full"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let error = assert_failed_cleanly(&f, "full", &before, "no space left", None);
    assert!(
        !error.contains("attempt"),
        "a full disk is not retried: {error}"
    );
}

#[test]
fn documented_pg_restore_pipeline_restores_without_safepoint() {
    let src = PgDb::new("sp_pg_doc");
    populate(&src);
    let f = fixture(&db_policy("orders", "postgres", &src.url(), ""));
    f.cmd().args(["backup", "orders"]).assert().success();
    let dir = f
        .store()
        .join("orders")
        .join(f.backups("orders")[0]["id"].as_str().unwrap());
    let dst = PgDb::reserved("sp_pg_doc_dst");
    let script = doc_block("## PostgreSQL")
        .replace("db.internal", "127.0.0.1")
        .replace("orders_restored", &dst.name);
    run_doc_block(&dir, &script);
    assert_eq!(pg_checksums(5432, &src.name), pg_checksums(5432, &dst.name));
}
