//! Bad input and faults: each gets a clear error and loses nothing.

use std::io::Write;

use crate::common::{Fixture, STORAGE, dir_policy, spawn, sqlite_policy};
use crate::contract_cli::mkfifo;
use crate::contract_server::{held_policy, open_writer, wait_for};
use crate::dbs::{assert_failed_cleanly, backup_dirs, runs};

#[test]
fn invalid_commit_is_never_applied_and_status_says_stalled_with_file_and_line() {
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        ("app.yaml", &sqlite_policy("app", "app.db")),
    ]);
    f.make_sqlite("app.db");
    f.cmd().args(["backup", "app"]).assert().success();

    f.commit(&[("app.yaml", "apiVersion: safepoint/v1\nkind: BackupPolicy\nmetadata: {name: app}\nspec:\n  storage: local\n  retention: {keepLast: 0}\n  bogus: 1\n")], "break it");
    let out = f.cmd().arg("status").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Stalled"), "{text}");
    assert!(text.contains("policies/app.yaml:"), "{text}");
    let status = f.json(&["status"]);
    assert_eq!(status["ready"], false);
    assert!(
        status["diagnostics"].as_array().unwrap().len() >= 2,
        "{status}"
    );
    assert_ne!(status["applied"], status["attempted"]);

    // The last valid revision stays in force: the policy still backs up.
    f.cmd().args(["backup", "app"]).assert().success();
    assert_eq!(f.backups("app").len(), 2);
}

#[test]
fn missing_source_fails_clearly_and_leaves_no_backup() {
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        ("app.yaml", &sqlite_policy("app", "nope.db")),
    ]);
    let out = f.cmd().args(["backup", "app"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("FAILED") && text.contains("nope.db") && text.contains("does not exist"),
        "{text}"
    );
    assert!(f.backups("app").is_empty());
    let leftovers = std::fs::read_dir(f.store().join("app"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(leftovers, 0, "partial data removed");
    let status = f.json(&["status"]);
    assert_eq!(status["policies"][0]["ready"], false);
    assert!(
        status["policies"][0]["drift"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d == "backup-failed")
    );
    // A Stalled policy makes `status` exit 1 (table and JSON alike), with the
    // repository itself Ready; once it backs up again, 0.
    assert_eq!(status["ready"], true);
    f.cmd().arg("status").assert().code(1);
    f.cmd()
        .args(["status", "--output", "json"])
        .assert()
        .code(1);
    f.make_sqlite("nope.db");
    f.cmd().args(["backup", "app"]).assert().success();
    f.cmd().arg("status").assert().success();
}

#[test]
fn unwritable_storage_fails_with_the_path_and_keeps_nothing_half_written() {
    let storage = STORAGE.replace("path: store", "path: blocker/store");
    let f = Fixture::new(&[
        ("storage.yaml", &storage),
        ("files.yaml", &dir_policy("files", "d")),
    ]);
    std::fs::create_dir_all(f.work().join("d")).unwrap();
    std::fs::write(
        f.work().join("blocker"),
        "a file where a directory should be",
    )
    .unwrap();
    let out = f.cmd().args(["backup", "files"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("storage local") && text.contains("blocker/store"),
        "{text}"
    );
    // Nothing half-written: the blocker is untouched, no backup directory,
    // no catalog entry.
    assert_eq!(
        std::fs::read_to_string(f.work().join("blocker")).unwrap(),
        "a file where a directory should be"
    );
    assert!(!f.work().join("blocker/store").exists());
    assert!(f.backups("files").is_empty());
}

#[test]
fn altered_or_deleted_artifacts_are_reported_as_drift_not_trusted() {
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        ("files.yaml", &dir_policy("files", "d")),
    ]);
    std::fs::create_dir_all(f.work().join("d")).unwrap();
    std::fs::write(f.work().join("d/x"), "some content worth keeping").unwrap();
    f.cmd().args(["backup", "files"]).assert().success();
    f.cmd().args(["backup", "files"]).assert().success();
    let ids: Vec<String> = f
        .backups("files")
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect();

    // Same size, one byte flipped: only a checksum catches it.
    let altered = f.store().join("files").join(&ids[0]).join("data.tar.zst");
    let mut bytes = std::fs::read(&altered).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&altered, bytes).unwrap();
    std::fs::remove_file(f.store().join("files").join(&ids[1]).join("data.tar.zst")).unwrap();

    let list = f.json(&["--verify-interval", "0", "list"]);
    let health = |id: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|i| i["backup"]["id"] == id)
            .unwrap()["backup"]["health"]
            .clone()
    };
    assert_eq!(health(&ids[0]), "corrupt");
    assert_eq!(health(&ids[1]), "missing");
    let status = f.json(&["status"]);
    let drift = status["policies"][0]["drift"].as_array().unwrap().clone();
    assert!(
        drift.iter().any(|d| d == "artifact-corrupt")
            && drift.iter().any(|d| d == "artifact-missing"),
        "{drift:?}"
    );

    // A corrupt backup is never restored.
    let out = f
        .cmd()
        .args(["restore", &ids[0], "--to"])
        .arg(f.work().join("r"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("checksum"));
}

#[test]
fn lost_catalog_is_rebuilt_from_the_manifests_in_storage() {
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        ("files.yaml", &dir_policy("files", "d")),
    ]);
    std::fs::create_dir_all(f.work().join("d")).unwrap();
    f.cmd().args(["backup", "files"]).assert().success();
    let before = f.backups("files");
    for name in ["catalog.db", "catalog.db-wal", "catalog.db-shm"] {
        let _ = std::fs::remove_file(f.data().join(name));
    }
    let after = f.backups("files");
    assert_eq!(before.len(), 1);
    assert_eq!(after.len(), 1);
    assert_eq!(before[0]["id"], after[0]["id"]);
    assert_eq!(before[0]["checksum"], after[0]["checksum"]);
}

#[test]
fn process_killed_mid_backup_leaves_no_manifest_and_the_run_is_recorded_interrupted() {
    // The backup's command reads a FIFO this test holds open: the backup
    // provably runs (and cannot finish) when the process is killed.
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        ("held.yaml", &held_policy("held")),
    ]);
    f.permit(crate::common::PERMISSIVE);
    let fifo = f.work().join("gate.fifo");
    mkfifo(&fifo);
    let mut child = spawn(&f, &["backup", "held"]);
    let mut writer = open_writer(&fifo);
    writer.write_all(&vec![7u8; 1 << 20]).unwrap();
    wait_for("the backup directory", || {
        std::fs::read_dir(f.store().join("held")).is_ok_and(|mut d| d.next().is_some())
    });
    child.kill().unwrap();
    child.wait().unwrap();
    drop(writer);
    let dir = std::fs::read_dir(f.store().join("held"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(
        !dir.join("manifest.json").exists(),
        "no manifest for a killed backup"
    );

    // The next observation closes the run and removes the leftover.
    assert!(
        f.backups("held").is_empty(),
        "a killed backup is never listed"
    );
    assert!(!dir.exists(), "leftover removed");
    let status = f.json(&["status"]);
    assert!(
        status["policies"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("interrupted"),
        "{status}"
    );
}

#[test]
fn validate_prints_every_problem_with_file_line_and_exit_codes() {
    let f = Fixture::new(&[("storage.yaml", STORAGE)]);
    let dir = f.repo().join("policies");
    f.cmd().arg("validate").arg(&dir).assert().code(0);
    std::fs::write(
        dir.join("bad.yaml"),
        "apiVersion: safepoint/v1\nkind: BackupPolicy\nmetadata: {name: bad}\nspec:\n  source: {type: postgres, url: \"postgres://u:secret@db/x\"}\n  storage: nowhere\n  schedule: {cron: \"61 * * * *\"}\n  rpo: 6 hours\n  retention: {keepLast: 0}\n  keepDialy: 3\n",
    )
    .unwrap();
    let out = f.cmd().arg("validate").arg(&dir).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "bad.yaml:5",
        "bad.yaml:6",
        "bad.yaml:7",
        "bad.yaml:8",
        "bad.yaml:9",
        "bad.yaml:10",
    ] {
        assert!(text.contains(needle), "missing {needle} in:\n{text}");
    }
    assert!(
        !text.contains("secret@"),
        "the secret is not echoed:\n{text}"
    );
    f.cmd()
        .arg("validate")
        .arg(f.work().join("no-such-dir"))
        .assert()
        .code(2);
}

#[test]
fn missing_directory_source_fails_at_once_with_the_path_and_leaves_no_backup() {
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        ("files.yaml", &dir_policy("files", "gone-dir")),
    ]);
    let out = f.cmd().args(["backup", "files"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("FAILED") && text.contains("gone-dir") && text.contains("does not exist"),
        "{text}"
    );
    let (outcome, kind, error) = runs(&f, "files").pop().unwrap();
    assert_eq!(
        (outcome.as_str(), kind.as_str()),
        ("failed", "source-missing")
    );
    assert!(!error.contains("attempt"), "not retried: {error}");
    assert!(f.backups("files").is_empty());
    assert_eq!(backup_dirs(&f, "files"), Vec::<std::path::PathBuf>::new());
}

#[test]
fn sqlite_source_locked_past_its_timeout_is_cancelled_and_recorded() {
    let policy = format!("{}  timeout: 2s\n", sqlite_policy("app", "app.db"));
    let f = Fixture::new(&[("storage.yaml", STORAGE), ("app.yaml", &policy)]);
    let db = f.make_sqlite("app.db");
    f.cmd().args(["backup", "app"]).assert().success();
    let before = backup_dirs(&f, "app");

    // Another connection holds an exclusive lock (rollback journal): no
    // reader gets in while it lasts.
    let mut holder = std::process::Command::new("sqlite3")
        .arg(&db)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = holder.stdin.take().unwrap();
    // Its busy timeout lets it wait for a probe below that reads meanwhile.
    writeln!(stdin, ".timeout 60000\nBEGIN EXCLUSIVE;").unwrap();
    stdin.flush().unwrap();
    wait_for("the exclusive lock", || {
        let probe = std::process::Command::new("sqlite3")
            .arg(&db)
            .arg("SELECT count(*) FROM users")
            .output()
            .unwrap();
        String::from_utf8_lossy(&probe.stderr).contains("locked")
    });

    let out = f.cmd().args(["backup", "app"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let error = assert_failed_cleanly(&f, "app", &before, "timeout", None);
    assert!(
        error.contains("spec.timeout"),
        "says what to change: {error}"
    );
    assert_eq!(runs(&f, "app").last().unwrap().1, "timeout");
    drop(stdin);
    let _ = holder.wait();
}
