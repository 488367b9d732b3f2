//! The deploy gate runs in the daemon's requested lane: it never waits for
//! another policy's scheduled backup, and waits (saying so) only for a
//! running backup of its own policy. The scheduled backup is a `command`
//! source that announces itself on one FIFO and blocks reading another, so
//! the test decides exactly when it ends (no sleeps).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use crate::api::{TOKEN, daemon, gate_policy};
use crate::common::{Fixture, PERMISSIVE, STORAGE};

/// Longest the test waits for a step before failing (a guard, not a clock).
const STEP: Duration = Duration::from_secs(120);

/// A scheduled policy (first backup due at once) whose backup writes
/// `started` to `started.fifo`, then streams `release.fifo` until the test
/// writes it; it also gates deploys.
fn blocking_policy(name: &str) -> String {
    format!(
        r#"apiVersion: safepoint/v1
kind: BackupPolicy
metadata:
  name: {name}
spec:
  source:
    type: command
    backupCommand: 'echo started > started.fifo && cat release.fifo'
    restoreCommand: 'cat > /dev/null'
  storage: local
  schedule: {{cron: "0 * * * *", timezone: UTC}}
  deploy:
    before: snapshot
  retention:
    keepLast: 5
"#
    )
}

fn mkfifo(path: &Path) {
    let ok = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(ok.success(), "mkfifo {}", path.display());
}

/// Runs `f` on a thread; fails the test if it has not returned within `STEP`.
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(STEP)
        .unwrap_or_else(|_| panic!("{what}: nothing within {}s", STEP.as_secs()))
}

/// Blocks until a backup of the blocking policy has started.
fn backup_started(work: &Path) {
    let fifo = work.join("started.fifo");
    let text = within("a blocking backup to start", move || {
        std::fs::read_to_string(fifo).unwrap()
    });
    assert_eq!(text.trim(), "started");
}

/// Lets the running blocking backup finish (it streams these bytes).
fn release_backup(work: &Path) {
    let fifo = work.join("release.fifo");
    within("the blocking backup to take its data", move || {
        std::fs::write(fifo, "payload\n").unwrap()
    });
}

fn setup() -> (Fixture, PathBuf) {
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        ("slow.yaml", &blocking_policy("slow")),
        ("app.yaml", &gate_policy("app")),
    ]);
    // The blocking policy is a `command` source: opt-in by the operator.
    f.permit(PERMISSIVE);
    let work = f.work();
    std::fs::create_dir_all(work.join("d")).unwrap();
    std::fs::write(work.join("d/index.html"), "v0\n").unwrap();
    mkfifo(&work.join("started.fifo"));
    mkfifo(&work.join("release.fifo"));
    std::fs::write(work.join("token"), format!("{TOKEN}\n")).unwrap();
    (f, work)
}

fn gate(
    f: &Fixture,
    addr: std::net::SocketAddr,
    release: &str,
    policy: &str,
) -> std::process::Child {
    std::process::Command::new(assert_cmd::cargo::cargo_bin("safepoint"))
        .current_dir(f.work())
        .args([
            "--server",
            &format!("http://{addr}"),
            "--token-file",
            "token",
        ])
        .args(["deploy", "start", "--release", release, "--policy", policy])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn a_gate_returns_its_snapshot_while_another_policys_scheduled_backup_runs() {
    let (f, work) = setup();
    let repo = f.repo().to_string_lossy().into_owned();
    let (_daemon, addr) = daemon(&f, &repo, &["--concurrency", "1"]);
    backup_started(&work);

    let child = gate(&f, addr, "v1", "app");
    let out = within("the gate of app", move || child.wait_with_output().unwrap());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("safepoint restore --policy app --release v1 --pre-deploy"),
        "{stdout}"
    );
    let snapshot = f.backups("app");
    assert_eq!(snapshot.len(), 1, "{snapshot:?}");
    assert_eq!(snapshot[0]["trigger"], "pre-deploy");
    assert_eq!(snapshot[0]["health"], "verified");
    assert!(stdout.contains(snapshot[0]["id"].as_str().unwrap()));
    // The scheduled backup of slow cannot have ended: the test holds its data.
    assert!(
        f.backups("slow").is_empty(),
        "slow finished before its release"
    );
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("waiting for"),
        "the gate waited for another policy"
    );

    release_backup(&work);
}

#[test]
fn a_gate_of_a_policy_whose_backup_runs_says_so_and_queues_behind_it() {
    let (f, work) = setup();
    let repo = f.repo().to_string_lossy().into_owned();
    let (_daemon, addr) = daemon(&f, &repo, &[]);
    backup_started(&work);

    let mut child = gate(&f, addr, "v2", "slow");
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let next = |what: &str| {
        lines
            .recv_timeout(STEP)
            .unwrap_or_else(|_| panic!("no `{what}` line on the gate's stderr"))
    };
    let waiting = next("waiting for");
    assert!(
        waiting.starts_with("waiting for the running backup of slow started at "),
        "{waiting}"
    );
    assert!(waiting.contains("schedule backup"), "{waiting}");

    // The scheduled backup started before the gate: the gate takes its own.
    release_backup(&work);
    let ended = next("ended");
    assert!(
        ended.contains("the running backup of slow ended; taking the requested backup now"),
        "{ended}"
    );
    backup_started(&work);
    release_backup(&work);

    let out = within("the gate of slow", move || {
        child.wait_with_output().unwrap()
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("waited for the running backup of slow"),
        "{stdout}"
    );
    let backups = f.backups("slow");
    assert_eq!(backups.len(), 2, "{backups:?}");
    let pre = backups
        .iter()
        .find(|b| b["trigger"] == "pre-deploy")
        .expect("the gate's own snapshot");
    assert_eq!(pre["release"], "v2");
    assert!(stdout.contains(pre["id"].as_str().unwrap()), "{stdout}");
    assert!(backups.iter().any(|b| b["trigger"] == "schedule"));
}
