//! MariaDB faults of the fault matrix (docs/operations.md): the server
//! crashing mid-dump, a dump hanging past `spec.timeout`, `mariadb-dump`
//! exiting non-zero, the client tools missing. Faults the shared server must
//! not see run against a throwaway `mariadbd` (its own data directory and
//! free port, killed with SIGKILL as a crash would).

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Fixture, STORAGE};
use crate::dbs::{MyDb, assert_failed_cleanly, backup_dirs, db_policy, free_port, runs, unique};
use crate::lost_connection::{child_named, signal, start_backup, wait_for};

/// A throwaway MariaDB server (root without password over TCP), its data
/// under /tmp; killed and removed on drop.
pub struct MariaServer {
    dir: PathBuf,
    pub port: u16,
    server: Child,
}

impl MariaServer {
    pub fn start() -> MariaServer {
        let dir = PathBuf::from("/tmp").join(unique("safepoint-mariadb"));
        std::fs::create_dir_all(&dir).unwrap();
        let data = format!("--datadir={}", dir.join("data").display());
        let small_log = "--innodb-log-file-size=8M";
        let out = Command::new("mariadb-install-db")
            .args(["--no-defaults", &data, small_log, "--user=root"])
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let server = Command::new("mariadbd")
            .args(["--no-defaults", &data, small_log, "--user=root"])
            .arg(format!("--port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", dir.join("sock").display()))
            .arg(format!("--pid-file={}", dir.join("pid").display()))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("log")).unwrap())
            .spawn()
            .unwrap();
        let mut s = MariaServer { dir, port, server };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !s
            .client(None)
            .args(["-e", "SELECT 1"])
            .output()
            .unwrap()
            .status
            .success()
        {
            assert!(
                s.server.try_wait().unwrap().is_none() && Instant::now() < deadline,
                "mariadbd did not start: {}",
                std::fs::read_to_string(s.dir.join("log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    /// `mariadb` as root on this server (batch mode, no column names).
    pub fn client(&self, db: Option<&str>) -> Command {
        let mut cmd = Command::new("mariadb");
        cmd.args([
            "--protocol=TCP",
            "-h",
            "127.0.0.1",
            "-u",
            "root",
            "-N",
            "-B",
        ])
        .arg(format!("--port={}", self.port));
        cmd.args(db);
        cmd
    }

    pub fn sql(&self, db: Option<&str>, sql: &str) -> String {
        let out = self.client(db).args(["-e", sql]).output().unwrap();
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }

    pub fn url(&self, db: &str) -> String {
        format!("mysql://root@127.0.0.1:{}/{db}", self.port)
    }
}

impl Drop for MariaServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The state letter of /proc/PID/stat (`T`: stopped).
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

/// pids of running `mariadb-dump` processes talking to `port`.
fn dumps_of(port: u16) -> Vec<u32> {
    let needle = format!("--port={port}");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let is_dump = args.first()?.ends_with(b"mariadb-dump");
            (is_dump && args.contains(&needle.as_bytes())).then_some(pid)
        })
        .collect()
}

fn fixture(policy: &str) -> Fixture {
    Fixture::new(&[("storage.yaml", STORAGE), ("db.yaml", policy)])
}

#[test]
fn mariadb_server_killed_mid_dump_fails_after_three_attempts_and_keeps_the_previous_backup() {
    let mut server = MariaServer::start();
    server.sql(
        None,
        "CREATE DATABASE shop; USE shop;
         SET SESSION max_recursive_iterations = 1000000;
         CREATE TABLE big (id INT PRIMARY KEY, txt VARCHAR(80));
         INSERT INTO big
           WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 400000)
           SELECT n, CONCAT(MD5(n), MD5(n * 7)) FROM g;",
    );
    let f = fixture(&db_policy("shop", "mysql", &server.url("shop"), ""));
    f.cmd().args(["backup", "shop"]).assert().success();
    let before = backup_dirs(&f, "shop");

    // mariadb-dump reads `big`: freeze it, crash the server, let it go on.
    let log = f.tmp.path().join("backup.log");
    let mut child = start_backup(&f, "shop", &log);
    let reading = "SELECT id FROM information_schema.processlist WHERE db = 'shop' \
                   AND info LIKE 'SELECT %FROM `big`%' AND info NOT LIKE '%COUNT(*)%'";
    wait_for(&mut child, "the table read on the server", || {
        let id = server.sql(None, reading);
        (!id.is_empty()).then_some(id)
    });
    let parent = child.id();
    let dump = wait_for(&mut child, "mariadb-dump running", || {
        child_named(parent, "mariadb-dump")
    });
    signal(dump, "-STOP");
    wait_for(&mut child, "mariadb-dump stopped", || {
        (process_state(dump) == Some('T')).then_some(())
    });
    server.kill();
    signal(dump, "-CONT");

    let status = child.wait().unwrap();
    let logged = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(1), "{logged}");
    // The first attempt lost its connection mid-table, the retries found the
    // server gone; the run records the last error.
    assert!(
        logged.to_lowercase().contains("lost connection"),
        "the first attempt failed mid-dump: {logged}"
    );
    let error = assert_failed_cleanly(&f, "shop", &before, "refused", None);
    assert!(error.contains("attempt 3 of 3"), "retried: {error}");
}

#[test]
fn mariadb_dump_blocked_past_its_timeout_is_cancelled_and_its_process_killed() {
    let server = MariaServer::start();
    server.sql(
        None,
        "CREATE DATABASE shop; CREATE TABLE shop.t (x INT); INSERT INTO shop.t VALUES (1);",
    );
    let f = fixture(&db_policy(
        "slow",
        "mysql",
        &server.url("shop"),
        "  timeout: 5s\n",
    ));
    f.cmd().args(["backup", "slow"]).assert().success();
    let before = backup_dirs(&f, "slow");

    // Another session write-locks the routines table: the row counts and the
    // table data pass, mariadb-dump then waits on `SHOW FUNCTION STATUS`.
    let mut holder = server
        .client(None)
        .arg("--unbuffered")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = holder.stdin.take().unwrap();
    writeln!(stdin, "LOCK TABLES mysql.proc WRITE; SELECT 'locked';").unwrap();
    stdin.flush().unwrap();
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "locked");

    let log = f.tmp.path().join("backup.log");
    let mut child = start_backup(&f, "slow", &log);
    wait_for(&mut child, "mariadb-dump waiting on the routines", || {
        let waiting = server.sql(
            None,
            "SELECT COUNT(*) FROM information_schema.processlist \
             WHERE info LIKE 'SHOW FUNCTION STATUS%'",
        );
        (waiting == "1").then_some(())
    });
    let parent = child.id();
    assert!(
        child_named(parent, "mariadb-dump").is_some(),
        "the dump runs"
    );
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1));
    assert_failed_cleanly(&f, "slow", &before, "timeout", None);
    assert_eq!(runs(&f, "slow").last().unwrap().1, "timeout");
    assert_eq!(
        dumps_of(server.port),
        Vec::<u32>::new(),
        "mariadb-dump killed"
    );
    drop(stdin);
    let _ = holder.kill();
    let _ = holder.wait();
}

#[test]
fn mariadb_dump_exiting_non_zero_is_recorded_with_its_stderr() {
    let db = MyDb::new("sp_my_dumpfail");
    db.sql(
        "CREATE TABLE t (x INT); INSERT INTO t VALUES (1);
         CREATE TABLE gone (x INT); CREATE VIEW broken AS SELECT x FROM gone;",
    );
    let f = fixture(&db_policy("shop", "mysql", &db.url(), ""));
    f.cmd().args(["backup", "shop"]).assert().success();
    let before = backup_dirs(&f, "shop");

    // The view now names a table that is gone: the counts pass (base tables
    // only), mariadb-dump fails on the view.
    db.sql("DROP TABLE gone");
    let out = f.cmd().args(["backup", "shop"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let error = assert_failed_cleanly(&f, "shop", &before, "references invalid table", None);
    assert!(error.contains("mariadb-dump failed"), "{error}");
    assert!(!error.contains("attempt"), "not retried: {error}");
    assert_eq!(runs(&f, "shop").last().unwrap().1, "tool-failed");
}

#[test]
fn mariadb_client_missing_fails_at_once_naming_both_tool_names() {
    let db = MyDb::new("sp_my_noclient");
    db.sql("CREATE TABLE t (x INT); INSERT INTO t VALUES (1)");
    let f = fixture(&db_policy("shop", "mysql", &db.url(), ""));
    f.cmd().args(["backup", "shop"]).assert().success();
    let before = backup_dirs(&f, "shop");

    // A PATH without the MariaDB/MySQL client tools.
    let empty = f.tmp.path().join("empty-bin");
    std::fs::create_dir_all(&empty).unwrap();
    let out = f
        .cmd()
        .env("PATH", &empty)
        .args(["backup", "shop"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let error = assert_failed_cleanly(&f, "shop", &before, "not found", None);
    assert!(
        error.contains("mariadb-dump") && error.contains("mysqldump"),
        "{error}"
    );
    assert!(!error.contains("attempt"), "not retried: {error}");
    assert_eq!(runs(&f, "shop").last().unwrap().1, "tool-missing");
}
