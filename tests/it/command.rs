//! `command` sources: stdout is the backup, the restore command reads it on
//! stdin; a failing or hanging command fails the run cleanly.

use std::time::{Duration, Instant};

use crate::common::{Fixture, PERMISSIVE, STORAGE};
use crate::dbs::{assert_failed_cleanly, backup_dirs};

fn command_policy(name: &str, backup: &str, restore: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: safepoint/v1
kind: BackupPolicy
metadata:
  name: {name}
spec:
  source:
    type: command
    backupCommand: '{backup}'
    restoreCommand: '{restore}'
  storage: local
  schedule: {{cron: "0 * * * *", timezone: UTC}}
  retention:
    keepLast: 5
{extra}"#
    )
}

const TAR_IN: &str = r#"mkdir -p "$SAFEPOINT_RESTORE_TO" && tar -x -C "$SAFEPOINT_RESTORE_TO""#;

#[test]
fn command_backup_streams_stdout_and_restores_through_stdin() {
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        (
            "cmd.yaml",
            &command_policy("tarball", "tar -c -C files .", TAR_IN, ""),
        ),
    ]);
    f.permit(PERMISSIVE);
    std::fs::create_dir_all(f.work().join("files/sub")).unwrap();
    std::fs::write(f.work().join("files/sub/a.txt"), "through a pipe ✓\n").unwrap();
    f.cmd().args(["backup", "tarball"]).assert().success();
    let b = &f.backups("tarball")[0];
    assert!(
        f.store()
            .join("tarball")
            .join(b["id"].as_str().unwrap())
            .join("data.bin.zst")
            .exists()
    );
    let target = f.work().join("restored");
    f.cmd()
        .args(["restore", "--policy", "tarball", "--latest", "--to"])
        .arg(&target)
        .assert()
        .success();
    assert_eq!(
        std::fs::read_to_string(target.join("sub/a.txt")).unwrap(),
        "through a pipe ✓\n"
    );
}

#[test]
fn failing_command_records_its_stderr_with_url_passwords_redacted() {
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        (
            "cmd.yaml",
            &command_policy("flaky", "echo data", "cat > /dev/null", ""),
        ),
    ]);
    f.permit(PERMISSIVE);
    f.cmd().args(["backup", "flaky"]).assert().success();
    let before = backup_dirs(&f, "flaky");
    let failing =
        "echo partial; echo \"dump of postgres://app:$SP_CMD_SECRET@db/x failed\" >&2; exit 3";
    f.commit(
        &[(
            "cmd.yaml",
            &command_policy("flaky", failing, "cat > /dev/null", ""),
        )],
        "break it",
    );
    let out = f
        .cmd()
        .env("SP_CMD_SECRET", "hunter2-cmd")
        .args(["backup", "flaky"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let error = assert_failed_cleanly(&f, "flaky", &before, "exit status: 3", Some("hunter2-cmd"));
    assert!(error.contains("postgres://app:***@db/x failed"), "{error}");
}

#[test]
fn hanging_command_is_killed_at_its_timeout() {
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        (
            "cmd.yaml",
            &command_policy(
                "hang",
                "echo start; sleep 60; echo never",
                "cat",
                "  timeout: 1s\n",
            ),
        ),
    ]);
    f.permit(PERMISSIVE);
    let started = Instant::now();
    let out = f.cmd().args(["backup", "hang"]).output().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(out.status.code(), Some(1));
    assert_failed_cleanly(&f, "hang", &[], "timeout", None);
}
