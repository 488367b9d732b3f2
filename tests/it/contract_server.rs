//! The documented daemon contract, end to end: `--server` for backup, drill,
//! status, plan and list with `--token-file`; `"wait": false` answered 202;
//! the drill endpoints; `/readyz` 503 without a valid revision; SIGTERM and SIGINT with a grace period that lets a
//! running backup finish. "Backup still running" states are held by a
//! `command` source reading a FIFO nobody has written yet, released by the
//! test: no sleeps decide anything.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Fixture, PERMISSIVE, STORAGE, sqlite};
use crate::contract_cli::{mkfifo, run};
use crate::metrics::request;

const TOKEN: &str = "contract-token-0123456789";

pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
    pub addr: SocketAddr,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `cond` (an observable event: a log line, a catalog row, an open
/// FIFO) until it holds; fails after a minute.
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The address a daemon logging JSON to `log` listens on, once it says so.
pub fn listen_addr(what: &str, log: &std::path::Path) -> SocketAddr {
    let mut addr = None;
    wait_for(what, || {
        addr = std::fs::read_to_string(log).ok().and_then(|text| {
            text.lines().find_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                v["fields"]["addr"].as_str()?.parse().ok()
            })
        });
        addr.is_some()
    });
    addr.expect("waited for")
}

impl Daemon {
    /// The daemon with an API tokens file, JSON logs, listening on a free port.
    pub fn start(f: &Fixture, extra: &[&str]) -> Daemon {
        std::fs::write(f.work().join("tokens"), format!("ci {TOKEN}\n")).unwrap();
        let log = f.tmp.path().join("daemon.log");
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("safepoint"));
        if f.permissions_file().exists() {
            cmd.arg("--permissions").arg(f.permissions_file());
        }
        let child = cmd
            .current_dir(f.work())
            .args(f.global_args())
            .args(["--log-format", "json", "daemon", "--listen", "127.0.0.1:0"])
            .args(["--api-tokens-file", "tokens"])
            .args(extra)
            .env("SAFEPOINT_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let addr = listen_addr("the daemon's listener", &log);
        Daemon { child, log, addr }
    }

    pub fn log_has(&self, needle: &str) -> bool {
        std::fs::read_to_string(&self.log).is_ok_and(|t| t.contains(needle))
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sends `signal` and waits for the exit.
    fn signal_and_wait(&mut self, signal: &str) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(
            std::process::Command::new("kill")
                .args([&format!("-{signal}"), &pid])
                .status()
                .unwrap()
                .success()
        );
        let mut status = None;
        wait_for("the daemon to exit", || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        status.unwrap()
    }
}

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let (code, text) = request(addr, &format!("GET {path} HTTP/1.1"), b"");
    (
        code,
        text.split_once("\r\n\r\n")
            .map_or(String::new(), |(_, b)| b.to_string()),
    )
}

fn post(addr: SocketAddr, path: &str, body: &str) -> (u16, serde_json::Value) {
    let head = format!(
        "POST {path} HTTP/1.1\r\nContent-Type: application/json\r\nAuthorization: Bearer {TOKEN}"
    );
    let (code, text) = request(addr, &head, body.as_bytes());
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (
        code,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

/// A CI runner: `--server` and `--token-file`, no data dir, no repository.
fn remote(
    d: &Daemon,
    runner: &Path,
    token_file: &Path,
    args: &[&str],
) -> (Option<i32>, String, String) {
    let mut cmd = assert_cmd::Command::cargo_bin("safepoint").unwrap();
    cmd.current_dir(runner)
        .env_remove("SAFEPOINT_TOKEN")
        .env_remove("SAFEPOINT_DATA_DIR")
        .env_remove("SAFEPOINT_REPO")
        .args(["--server", &d.url(), "--token-file"])
        .arg(token_file)
        .args(args);
    run(&mut cmd)
}

pub const DRILLED: &str = r#"apiVersion: safepoint/v1
kind: BackupPolicy
metadata: {name: app}
spec:
  source: {type: sqlite, path: app.db}
  storage: local
  schedule: {cron: "0 4 * * *"}
  retention: {keepLast: 5}
  drill:
    schedule: {cron: "0 4 * * *"}
    target: {type: directory, path: scratch}
    verify:
      completeness: exact
      checks:
        - {name: users exist, sql: "select count(*) from users", expect: ">= 1"}
    maxDuration: 10m
"#;

#[test]
fn server_runs_backup_drill_status_plan_and_list_with_a_token_file() {
    let f = Fixture::new(&[("storage.yaml", STORAGE), ("app.yaml", DRILLED)]);
    // `command` sources are opt-in (the operator's permissions file).
    f.permit(PERMISSIVE);
    f.make_sqlite("app.db");
    std::fs::create_dir_all(f.work().join("scratch")).unwrap();
    let d = Daemon::start(&f, &[]);
    let runner = tempfile::tempdir().unwrap();
    let token = runner.path().join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    wait_for("the first backup", || f.backups("app").len() == 1);

    let (code, out, err) = remote(
        &d,
        runner.path(),
        &token,
        &["backup", "app", "--output", "json"],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    let backups = f.backups("app");
    assert_eq!(backups.len(), 2, "{backups:?}");
    assert!(
        backups.iter().any(|b| b["trigger"] == "manual"),
        "{backups:?}"
    );

    let (code, out, err) = remote(
        &d,
        runner.path(),
        &token,
        &["drill", "app", "--output", "json"],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("passed"), "{out}");

    let (code, out, _) = remote(&d, runner.path(), &token, &["status", "--output", "json"]);
    assert_eq!(code, Some(0), "all Ready: {out}");
    let st: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(st["policies"][0]["name"], "app");

    let (code, out, _) = remote(&d, runner.path(), &token, &["plan", "--output", "json"]);
    assert_eq!(code, Some(0), "nothing to do: {out}");

    let (code, out, _) = remote(
        &d,
        runner.path(),
        &token,
        &["list", "--policy", "app", "--output", "json"],
    );
    assert_eq!(code, Some(0));
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 2, "{rows}");
    let (_, out, _) = remote(
        &d,
        runner.path(),
        &token,
        &["list", "--policy", "other", "--output", "json"],
    );
    assert_eq!(out.trim(), "[]", "--policy filters: {out}");

    // The drill endpoints: the list, and 404 for a policy without a drill.
    let (code, drills) = get(d.addr, "/api/v1/drills");
    assert_eq!(code, 200);
    assert!(drills.contains("\"app\""), "{drills}");
    assert_eq!(post(d.addr, "/api/v1/policies/nope/drill", "{}").0, 404);

    // A wrong token file: refused, exit 2, nothing taken.
    let bad = runner.path().join("bad");
    std::fs::write(&bad, "wrong-token-wrong-token\n").unwrap();
    let (code, _, err) = remote(&d, runner.path(), &bad, &["backup", "app"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("401"), "{err}");
    assert_eq!(f.backups("app").len(), 2);
    assert!(
        !runner.path().join(".safepoint").exists(),
        "the runner kept no state"
    );
}

#[test]
fn wait_false_is_answered_202_before_the_backup_finishes() {
    let policy = "apiVersion: safepoint/v1\nkind: BackupPolicy\nmetadata:\n  name: slow\nspec:\n  source:\n    type: command\n    backupCommand: 'cat gate.fifo'\n    restoreCommand: 'cat > /dev/null'\n  storage: local\n  retention: {keepLast: 5}\n";
    let f = Fixture::new(&[("storage.yaml", STORAGE), ("slow.yaml", policy)]);
    // `command` sources are opt-in (the operator's permissions file).
    f.permit(PERMISSIVE);
    let fifo = f.work().join("gate.fifo");
    mkfifo(&fifo);
    // No schedule: nothing runs until asked.
    let d = Daemon::start(&f, &[]);
    let (code, body) = post(d.addr, "/api/v1/policies/slow/backup", "{\"wait\": false}");
    assert_eq!(code, 202, "{body}");
    assert_eq!(body["accepted"], true);
    // The backup is still blocked on the FIFO: answered before it finished.
    let mut writer = open_writer(&fifo);
    assert!(f.backups("slow").is_empty());
    writer.write_all(b"payload").unwrap();
    drop(writer);
    wait_for("the accepted backup", || {
        f.backups("slow").iter().any(|b| b["health"] == "verified")
    });
}

/// Opens the FIFO for writing once its reader (the backup command) has it
/// open: the observable sign that the backup is running. The returned file
/// blocks on write like any pipe; dropping it ends the command's input.
pub fn open_writer(fifo: &Path) -> std::fs::File {
    let mut probe = None;
    wait_for("the backup command to open its FIFO", || {
        // Without a reader a non-blocking open fails (ENXIO).
        probe = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(fifo)
            .ok();
        probe.is_some()
    });
    // A reader is there, so a blocking open returns at once; the probe is
    // closed only after, so the reader never sees end of input in between.
    let file = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
    drop(probe);
    file
}

#[test]
fn readyz_is_503_while_no_valid_revision_is_applied() {
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        (
            "bad.yaml",
            "apiVersion: safepoint/v1\nkind: BackupPolicy\nmetadata: {name: bad}\nspec: {storage: nowhere}\n",
        ),
    ]);
    // `command` sources are opt-in (the operator's permissions file).
    f.permit(PERMISSIVE);
    let d = Daemon::start(&f, &[]);
    wait_for("the rejected revision", || d.log_has("bad.yaml"));
    let (code, body) = get(d.addr, "/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("not ready"), "{body}");
    assert_eq!(get(d.addr, "/healthz").0, 200, "alive, just not ready");
}

/// A daemon whose first backup is held open on a FIFO gets `signal`; the
/// test then lets the backup finish inside the grace period.
fn signal_lets_the_running_backup_finish(signal: &str) {
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        ("held.yaml", &held_policy("held")),
    ]);
    // `command` sources are opt-in (the operator's permissions file).
    f.permit(PERMISSIVE);
    let fifo = f.work().join("gate.fifo");
    mkfifo(&fifo);
    let mut d = Daemon::start(&f, &["--shutdown-grace", "120"]);
    let mut writer = open_writer(&fifo);
    let running = sqlite(
        &f.data().join("catalog.db"),
        "select count(*) from runs where outcome = 'running'",
    );
    assert_eq!(running.trim(), "1", "the backup is running");

    let pid = d.child.id().to_string();
    std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid])
        .status()
        .unwrap();
    wait_for("the shutdown to be acknowledged", || {
        d.log_has("shutdown requested")
    });
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "still waiting for the backup"
    );
    writer
        .write_all(b"finished inside the grace period")
        .unwrap();
    drop(writer);
    let mut status = None;
    wait_for("the daemon to exit", || {
        status = d.child.try_wait().unwrap();
        status.is_some()
    });
    assert!(status.unwrap().success(), "{signal} exits 0: {status:?}");
    let backups = f.backups("held");
    assert_eq!(backups.len(), 1, "{backups:?}");
    assert_eq!(backups[0]["health"], "verified");
    let out = sqlite(&f.data().join("catalog.db"), "select outcome from runs");
    assert_eq!(out.trim(), "succeeded");
}

#[test]
fn sigterm_with_a_grace_period_lets_a_running_backup_finish() {
    signal_lets_the_running_backup_finish("TERM");
}

#[test]
fn sigint_with_a_grace_period_lets_a_running_backup_finish() {
    signal_lets_the_running_backup_finish("INT");
}

#[test]
fn sigterm_without_grace_cancels_the_held_backup_and_records_it_interrupted() {
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        ("held.yaml", &held_policy("held")),
    ]);
    // `command` sources are opt-in (the operator's permissions file).
    f.permit(PERMISSIVE);
    let fifo = f.work().join("gate.fifo");
    mkfifo(&fifo);
    let mut d = Daemon::start(&f, &["--shutdown-grace", "0"]);
    let _writer = open_writer(&fifo);
    let status = d.signal_and_wait("TERM");
    assert!(status.success(), "{status:?}");
    assert!(f.backups("held").is_empty());
    let outcome = sqlite(&f.data().join("catalog.db"), "select outcome from runs");
    assert_ne!(outcome.trim(), "succeeded");
    assert_ne!(
        outcome.trim(),
        "running",
        "the run is closed, not left running"
    );
    let dirs = std::fs::read_dir(f.store().join("held")).map_or(0, |d| d.count());
    assert_eq!(dirs, 0, "nothing half-written left in storage");
}

/// A `command` source held open on `gate.fifo` in the work dir, hourly.
pub fn held_policy(name: &str) -> String {
    format!(
        "apiVersion: safepoint/v1\nkind: BackupPolicy\nmetadata:\n  name: {name}\nspec:\n  source:\n    type: command\n    backupCommand: 'cat gate.fifo'\n    restoreCommand: 'cat > /dev/null'\n  storage: local\n  schedule: {{cron: \"0 * * * *\"}}\n  retention: {{keepLast: 5}}\n"
    )
}

#[test]
fn concurrency_2_runs_two_held_backups_at_once() {
    let held = |name: &str| held_policy(name).replace("gate.fifo", &format!("{name}.fifo"));
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        ("a.yaml", &held("a")),
        ("b.yaml", &held("b")),
    ]);
    // `command` sources are opt-in (the operator's permissions file).
    f.permit(PERMISSIVE);
    let (fa, fb) = (f.work().join("a.fifo"), f.work().join("b.fifo"));
    mkfifo(&fa);
    mkfifo(&fb);
    let _d = Daemon::start(&f, &["--concurrency", "2"]);
    // Both commands hold their FIFO open at the same time: two backups run
    // at once (with one slot the second could not start before the first,
    // which cannot finish, ends).
    let mut wa = open_writer(&fa);
    let mut wb = open_writer(&fb);
    let running = sqlite(
        &f.data().join("catalog.db"),
        "select count(*) from runs where outcome = 'running'",
    );
    assert_eq!(running.trim(), "2");
    wa.write_all(b"a").unwrap();
    wb.write_all(b"b").unwrap();
    drop((wa, wb));
    wait_for("both backups", || {
        f.backups("a").len() == 1 && f.backups("b").len() == 1
    });
}
