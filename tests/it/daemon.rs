//! The daemon end to end: first backups, a commit picked up by the file
//! watcher, graceful SIGTERM; and a remote repository mirrored by URL.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use std::io::Write;

use crate::common::{Fixture, STORAGE, dir_policy, spawn, sqlite_policy};
use crate::contract_cli::mkfifo;
use crate::contract_server::{held_policy, open_writer};

fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Daemon(Child);

/// Sends SIGTERM and waits (at most 30 s) for the daemon to exit.
fn sigterm_and_wait(daemon: &mut Daemon) -> std::process::ExitStatus {
    let pid = daemon.0.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = daemon.0.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "daemon did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn daemon_takes_first_backups_picks_up_a_commit_and_exits_cleanly_on_sigterm() {
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        ("app.yaml", &sqlite_policy("app", "app.db")),
    ]);
    f.make_sqlite("app.db");
    std::fs::create_dir_all(f.work().join("d")).unwrap();
    std::fs::write(f.work().join("d/file"), "x").unwrap();
    let mut daemon = Daemon(
        std::process::Command::new(assert_cmd::cargo::cargo_bin("safepoint"))
            .current_dir(f.work())
            .args(f.global_args())
            .args(["daemon", "--listen", "127.0.0.1:0"])
            .env("SAFEPOINT_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(f.tmp.path().join("daemon.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_for("the first backup", Duration::from_secs(60), || {
        f.backups("app").len() == 1
    });

    f.commit(
        &[("files.yaml", &dir_policy("files", "d"))],
        "add files policy",
    );
    wait_for(
        "the new policy's first backup",
        Duration::from_secs(20),
        || f.backups("files").len() == 1,
    );
    assert_eq!(f.backups("app").len(), 1, "nothing due: no extra backup");

    let status = sigterm_and_wait(&mut daemon);
    assert!(status.success(), "SIGTERM exits 0, got {status:?}");
}

#[test]
fn remote_repository_is_cloned_into_the_data_dir_and_fetched() {
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        ("files.yaml", &dir_policy("files", "d")),
    ]);
    std::fs::create_dir_all(f.work().join("d")).unwrap();
    let url = format!("file://{}", f.repo().display());
    let run = |args: &[&str]| {
        let mut cmd = f.cmd_without_repo();
        cmd.args(["--repo", &url]).args(args);
        cmd
    };
    run(&["backup", "files"]).assert().success();
    assert!(
        f.data().join("repo.git").exists(),
        "mirror cloned into the data dir"
    );
    f.commit(&[("app.yaml", &sqlite_policy("app", "app.db"))], "add app");
    let out = run(&["plan"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("backup app"),
        "fetched the new commit: {text}"
    );
}

#[test]
fn sigterm_during_a_backup_cancels_it_cleanly_and_exits_zero() {
    // The backup's command reads a FIFO this test holds open: it provably
    // runs (and cannot finish) when SIGTERM arrives.
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        ("held.yaml", &held_policy("held")),
    ]);
    f.permit(crate::common::PERMISSIVE);
    let fifo = f.work().join("gate.fifo");
    mkfifo(&fifo);
    let mut daemon = Daemon(spawn(
        &f,
        &["daemon", "--shutdown-grace", "0", "--listen", "127.0.0.1:0"],
    ));
    let mut writer = open_writer(&fifo);
    writer.write_all(b"partial data").unwrap();
    let status = sigterm_and_wait(&mut daemon);
    drop(writer);
    assert!(status.success(), "SIGTERM exits 0, got {status:?}");
    // Cancelled, recorded failed, nothing half-written left visible.
    assert!(f.backups("held").is_empty());
    let dirs = std::fs::read_dir(f.store().join("held"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(dirs, 0, "partial data removed");
    let status = f.json(&["status"]);
    let reason = status["policies"][0]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(reason.contains("cancelled"), "{reason}");
}
