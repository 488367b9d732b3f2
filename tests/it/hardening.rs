//! Hardening of the edges a new user meets first: a policy file that is not
//! UTF-8 (one diagnostic, the rest still checked; the daemon stalls on such
//! a commit and keeps the last valid revision), logs without colour codes
//! off a terminal, a closed stdout ending a command quietly.

use std::process::{Command, Stdio};

use crate::common::{Fixture, STORAGE, git, sqlite_policy};

/// `name: café` in Latin-1: 0xe9 is not UTF-8.
const LATIN1: &[u8] = b"apiVersion: safepoint/v1\nkind: Storage\nmetadata: {name: caf\xe9}\nspec: {type: local, path: x}\n";

#[test]
fn validate_reports_a_non_utf8_file_by_name_and_still_checks_the_others() {
    let f = Fixture::new(&[("storage.yaml", STORAGE)]);
    let dir = f.repo().join("policies");
    std::fs::write(dir.join("latin1.yaml"), LATIN1).unwrap();
    std::fs::write(
        dir.join("typo.yaml"),
        sqlite_policy("app", "app.db").replace("keepLast", "keepLsat"),
    )
    .unwrap();
    let out = f.cmd().arg("validate").arg(&dir).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("latin1.yaml:3:21"), "{text}");
    assert!(text.contains("not UTF-8"), "{text}");
    assert!(
        text.contains("typo.yaml:") && text.contains("keepLsat"),
        "the other files are still checked:\n{text}"
    );

    let json = f.json(&["validate", dir.to_str().unwrap()]);
    let files: Vec<&str> = json["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["file"].as_str())
        .collect();
    assert!(files.iter().any(|p| p.ends_with("latin1.yaml")), "{json}");
}

#[test]
fn daemon_stalls_on_a_commit_with_a_non_utf8_file_and_keeps_the_last_valid_revision() {
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        ("app.yaml", &sqlite_policy("app", "app.db")),
    ]);
    f.make_sqlite("app.db");
    f.cmd().args(["daemon", "--once"]).assert().success();
    assert_eq!(f.backups("app").len(), 1);
    let good = f.json(&["status"])["applied"].clone();

    std::fs::write(f.repo().join("policies/latin1.yaml"), LATIN1).unwrap();
    git(&f.repo(), &["add", "-A"]);
    git(&f.repo(), &["commit", "-q", "-m", "a latin-1 file"]);
    f.cmd().args(["daemon", "--once"]).assert().success();

    let out = f.cmd().arg("status").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Stalled"), "{text}");
    assert!(text.contains("policies/latin1.yaml:3"), "{text}");
    let status = f.json(&["status"]);
    assert_eq!(status["ready"], false, "{status}");
    assert_eq!(status["applied"], good, "the last valid revision stays");
    assert_ne!(status["applied"], status["attempted"], "{status}");
    // It stays in force: its policy still backs up.
    f.cmd().args(["backup", "app"]).assert().success();
    assert_eq!(f.backups("app").len(), 2);
}

/// Runs the binary with stderr to a pipe and returns what it logged.
fn stderr_through_pipe(f: &Fixture, env: &[(&str, &str)]) -> Vec<u8> {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("safepoint"));
    cmd.current_dir(f.work())
        .env_remove("NO_COLOR")
        .env("SAFEPOINT_LOG", "info")
        .args(f.global_args())
        .args(["daemon", "--once"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success());
    out.stderr
}

#[test]
fn logs_to_a_pipe_carry_no_colour_codes() {
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        ("app.yaml", &sqlite_policy("app", "app.db")),
    ]);
    f.make_sqlite("app.db");
    for env in [&[][..], &[("NO_COLOR", "1")][..]] {
        let logged = stderr_through_pipe(&f, env);
        let text = String::from_utf8_lossy(&logged);
        assert!(text.contains("INFO"), "something was logged: {text}");
        assert!(!logged.contains(&0x1b), "ESC in the log: {text:?}");
    }
}

/// Runs `args` with stdout into a pipe whose reader has gone (like
/// `| head -1` once head exited); returns the exit code and stderr.
fn with_closed_stdout(f: &Fixture, args: &[&str]) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(assert_cmd::cargo::cargo_bin("safepoint"))
        .current_dir(f.work())
        .env("SAFEPOINT_LOG", "warn")
        .env("RUST_BACKTRACE", "1")
        .args(f.global_args())
        .args(args)
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_closed_stdout_ends_every_output_quietly() {
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        ("app.yaml", &sqlite_policy("app", "app.db")),
    ]);
    f.make_sqlite("app.db");
    f.cmd().args(["daemon", "--once"]).assert().success();
    let dir = f.repo().join("policies");
    let dir = dir.to_str().unwrap();
    for args in [
        &["list", "--output", "json"][..],
        &["list"][..],
        &["plan", "--output", "json"][..],
        &["plan"][..],
        &["status", "--output", "json"][..],
        &["status"][..],
        &["validate", dir][..],
        &["validate", dir, "--output", "json"][..],
        &["report"][..],
        &["audit", "export"][..],
        &["audit", "verify"][..],
        &["backup", "app"][..],
        &["prune", "--dry-run"][..],
    ] {
        let (code, stderr) = with_closed_stdout(&f, args);
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.to_lowercase().contains("broken pipe"),
            "{args:?}: {stderr}"
        );
    }
}
