//! A database connection lost mid-dump is retried: the dump's own backend is
//! terminated from another session (`pg_terminate_backend`, MariaDB `KILL`)
//! while it streams a table; the run's next attempt succeeds and the backup
//! holds every row. Synchronised on what the server shows (pg_stat_activity,
//! the process list) and on the dump process itself, never on sleeps.

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::common::{Fixture, STORAGE};
use crate::dbs::{MyDb, PgDb, db_policy, mariadb, psql, runs};

/// pid of a process named `name` whose parent is `parent`, if one runs.
pub fn child_named(parent: u32, name: &str) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok())
        .find_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let (comm, rest) = stat.split_once(") ")?;
            let ppid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
            (comm.ends_with(&format!("({name}")) && ppid == parent).then_some(pid)
        })
}

pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

/// Starts `safepoint backup <policy>` with warnings logged to `log`.
/// `backup POLICY --output json` in the background: its log in `log`,
/// its JSON outcomes in `log` with the extension `json`.
pub fn start_backup(f: &Fixture, policy: &str, log: &Path) -> Child {
    Command::new(assert_cmd::cargo::cargo_bin("safepoint"))
        .current_dir(f.work())
        .env("SAFEPOINT_LOG", "warn")
        .args(f.global_args())
        .args(["backup", policy, "--output", "json"])
        .stdout(std::fs::File::create(log.with_extension("json")).unwrap())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// Polls `probe` until it yields a value; fails if the backup ends first or
/// a minute passes.
pub fn wait_for<T>(child: &mut Child, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} never happened");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backup ended before {what}"
        );
        std::thread::yield_now();
    }
}

/// The run succeeded on a later attempt, the first one's loss is logged and
/// the stored backup has every row.
fn assert_retried_and_complete(f: &Fixture, policy: &str, mut child: Child, log: &Path) {
    let status = child.wait().unwrap();
    let logged = std::fs::read_to_string(log).unwrap();
    assert_eq!(status.code(), Some(0), "{logged}");
    assert!(logged.contains("transient failure"), "{logged}");
    // The retry is visible in the outcome (and so in the daemon's
    // safepoint_backup_retries_total), not only in the log.
    let outcomes: serde_json::Value =
        serde_json::from_slice(&std::fs::read(log.with_extension("json")).unwrap()).unwrap();
    let retries = outcomes[0]["retries"].as_u64().unwrap_or(0);
    assert!(retries >= 1, "{outcomes}");
    assert!(
        outcomes[0]["detail"]
            .as_str()
            .unwrap()
            .contains("retried attempt"),
        "{outcomes}"
    );
    let runs = runs(f, policy);
    assert_eq!(runs.last().unwrap().0, "succeeded", "{runs:?}");
    let list = f.json(&["list", "--policy", policy]);
    let items = list.as_array().unwrap();
    assert_eq!(items.len(), 1, "one complete backup: {list}");
    assert_eq!(items[0]["backup"]["health"], "verified", "{list}");
}

#[test]
fn postgres_backend_terminated_mid_copy_is_retried_and_the_backup_succeeds() {
    let db = PgDb::new("sp_pg_term");
    db.sql(
        "CREATE TABLE big AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS txt \
         FROM generate_series(1, 400000) g",
    );
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        ("db.yaml", &db_policy("victim", "postgres", &db.url(), "")),
    ]);
    let log = f.tmp.path().join("backup.log");
    let mut child = start_backup(&f, "victim", &log);

    // pg_dump's backend streams `COPY public.big`: freeze pg_dump (its
    // backend stays), terminate that backend, let pg_dump read the loss.
    let copying = format!(
        "SELECT pid FROM pg_stat_activity WHERE datname = '{}' AND query LIKE 'COPY public.big%'",
        db.name
    );
    let backend = wait_for(&mut child, "COPY on the server", || {
        let pid = psql("postgres", &copying);
        (!pid.is_empty()).then_some(pid)
    });
    let parent = child.id();
    let dump = wait_for(&mut child, "pg_dump running", || {
        child_named(parent, "pg_dump")
    });
    signal(dump, "-STOP");
    let terminated = psql(
        "postgres",
        &format!("SELECT pg_terminate_backend({backend})"),
    );
    signal(dump, "-CONT");
    assert_eq!(terminated, "t", "the COPY backend was terminated");

    assert_retried_and_complete(&f, "victim", child, &log);
    let id = f.backups("victim")[0]["id"].as_str().unwrap().to_string();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(f.store().join("victim").join(id).join("manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["counts"]["public.big"], 400000, "{manifest}");
}

#[test]
fn mariadb_dump_connection_killed_mid_table_is_retried_and_the_backup_succeeds() {
    let db = MyDb::new("sp_my_kill");
    db.sql(
        "SET SESSION max_recursive_iterations = 1000000;
         CREATE TABLE big (id INT PRIMARY KEY, txt VARCHAR(80));
         INSERT INTO big
           WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 400000)
           SELECT n, CONCAT(MD5(n), MD5(n * 7)) FROM g;",
    );
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        ("db.yaml", &db_policy("victim", "mysql", &db.url(), "")),
    ]);
    let log = f.tmp.path().join("backup.log");
    let mut child = start_backup(&f, "victim", &log);

    // mariadb-dump's connection reads `big` (`SELECT ... FROM big`, not our count):
    // freeze the dump, kill its connection, let it read the loss.
    let reading = format!(
        "SELECT id FROM information_schema.processlist WHERE db = '{}' \
         AND info LIKE 'SELECT %FROM `big`%' AND info NOT LIKE '%COUNT(*)%'",
        db.name
    );
    let connection = wait_for(&mut child, "the table read on the server", || {
        let id = mariadb(None, &reading);
        (!id.is_empty()).then_some(id)
    });
    let parent = child.id();
    let dump = wait_for(&mut child, "mariadb-dump running", || {
        child_named(parent, "mariadb-dump")
    });
    signal(dump, "-STOP");
    mariadb(None, &format!("KILL CONNECTION {connection}"));
    signal(dump, "-CONT");

    assert_retried_and_complete(&f, "victim", child, &log);
    let id = f.backups("victim")[0]["id"].as_str().unwrap().to_string();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(f.store().join("victim").join(id).join("manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["counts"]["big"], 400000, "{manifest}");
}
