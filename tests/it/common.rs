//! Test fixture: a temp dir holding a real Git repository of policies, a work
//! directory (the daemon's cwd, where relative source/storage paths resolve)
//! and helpers to run the real `safepoint` binary.

use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;

use assert_cmd::Command;
use tempfile::TempDir;

pub struct Fixture {
    pub tmp: TempDir,
}

pub const STORAGE: &str = r#"apiVersion: safepoint/v1
kind: Storage
metadata:
  name: local
spec:
  type: local
  path: store
"#;

/// An operator permissions file that allows everything policies can ask
/// for (`command` sources included); the daemon's own files stay protected.
pub const PERMISSIVE: &str = r#"apiVersion: safepoint/v1
kind: Permissions
grants:
  - name: everything
    sourceKinds: [postgres, mysql, sqlite, directory, command]
    sourceRoots: [/]
    scratchRoots: [/]
    hosts: ["*"]
    secrets:
      env: ["*"]
      files: ["/**"]
"#;

pub fn sqlite_policy(name: &str, path: &str) -> String {
    format!(
        r#"apiVersion: safepoint/v1
kind: BackupPolicy
metadata:
  name: {name}
spec:
  source:
    type: sqlite
    path: {path}
  storage: local
  schedule: {{cron: "0 * * * *", timezone: UTC}}
  rpo: 2h
  retention:
    keepLast: 3
"#
    )
}

pub fn dir_policy(name: &str, path: &str) -> String {
    format!(
        r#"apiVersion: safepoint/v1
kind: BackupPolicy
metadata:
  name: {name}
spec:
  source:
    type: directory
    path: {path}
  storage: local
  schedule: {{cron: "0 3 * * *", timezone: Europe/Berlin}}
  retention:
    keepLast: 2
"#
    )
}

pub fn git(dir: &Path, args: &[&str]) {
    let out = StdCommand::new("git")
        .args([
            "-c",
            "user.name=Test",
            "-c",
            "user.email=test@example.com",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn sqlite(db: &Path, sql: &str) -> String {
    let out = StdCommand::new("sqlite3")
        .arg(db)
        .arg(sql)
        .output()
        .expect("sqlite3 runs");
    assert!(
        out.status.success(),
        "sqlite3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Fixture {
    /// A repository whose `main` holds the given policy files, and a work dir.
    pub fn new(files: &[(&str, &str)]) -> Fixture {
        let tmp = tempfile::tempdir().expect("tempdir");
        let f = Fixture { tmp };
        std::fs::create_dir_all(f.repo().join("policies")).unwrap();
        std::fs::create_dir_all(f.work()).unwrap();
        git(&f.repo(), &["init", "-q", "-b", "main"]);
        f.commit(files, "initial policies");
        f
    }

    pub fn repo(&self) -> PathBuf {
        self.tmp.path().join("repo")
    }

    pub fn work(&self) -> PathBuf {
        self.tmp.path().join("work")
    }

    pub fn data(&self) -> PathBuf {
        self.work().join("data")
    }

    pub fn store(&self) -> PathBuf {
        self.work().join("store")
    }

    /// Where `permit` writes the operator's permissions file.
    pub fn permissions_file(&self) -> PathBuf {
        self.tmp.path().join("permissions.yaml")
    }

    /// Every later command of this fixture (`cmd`, `spawn`) runs with
    /// `--permissions` = this text, e.g. `PERMISSIVE` for `command` sources.
    pub fn permit(&self, permissions: &str) -> &Self {
        std::fs::write(self.permissions_file(), permissions).unwrap();
        self
    }

    /// Writes `policies/<name>` files and commits them on `main`.
    pub fn commit(&self, files: &[(&str, &str)], message: &str) {
        for (name, text) in files {
            std::fs::write(self.repo().join("policies").join(name), text).unwrap();
        }
        git(&self.repo(), &["add", "-A"]);
        git(
            &self.repo(),
            &["commit", "-q", "--allow-empty", "-m", message],
        );
    }

    /// An example SQLite database with two tables at `work/<name>`.
    pub fn make_sqlite(&self, name: &str) -> PathBuf {
        let db = self.work().join(name);
        sqlite(
            &db,
            "create table users(id integer primary key, name text, payload blob, at text);
             create table events(id integer primary key, user_id integer, kind text);
             create index events_user on events(user_id);
             create view user_events as select u.name, e.kind from users u join events e on e.user_id = u.id;
             insert into users(name, payload, at) values ('ädä ✓', x'00ff10', '2026-11-25T10:00:00+01:00'), ('bob', NULL, '2026-11-24T00:00:00Z');
             insert into events(user_id, kind) select 1, 'k' || value from generate_series(1, 500);",
        );
        db
    }

    /// `--repo REPO --data-dir DATA`, for a binary started by another
    /// program (strace, a shell).
    pub fn global_args(&self) -> Vec<std::ffi::OsString> {
        vec![
            "--repo".into(),
            self.repo().into(),
            "--data-dir".into(),
            self.data().into(),
        ]
    }

    pub fn cmd(&self) -> Command {
        let mut cmd = self.cmd_without_repo();
        cmd.arg("--repo").arg(self.repo());
        cmd
    }

    pub fn cmd_without_repo(&self) -> Command {
        let mut cmd = Command::cargo_bin("safepoint").expect("binary built");
        cmd.current_dir(self.work())
            .env_remove("SAFEPOINT_DATA_DIR")
            .env_remove("SAFEPOINT_REPO")
            .env_remove("SAFEPOINT_PERMISSIONS")
            .env("SAFEPOINT_LOG", "warn")
            .arg("--data-dir")
            .arg(self.data());
        if self.permissions_file().exists() {
            cmd.arg("--permissions").arg(self.permissions_file());
        }
        cmd
    }

    /// Runs a command with `--output json` and parses stdout.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self
            .cmd()
            .args(args)
            .args(["--output", "json"])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{args:?} gave no JSON ({e}): stdout {} stderr {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// Backup ids of a policy per `safepoint list`.
    pub fn backups(&self, policy: &str) -> Vec<serde_json::Value> {
        self.json(&["list", "--policy", policy])
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|item| item["backup"].clone())
            .collect()
    }
}

#[allow(dead_code)] // for large-data tests; the interruption tests hold a FIFO instead
/// Fills `dir` with `mib` MiB of incompressible files (xorshift), so a
/// backup of it takes long enough to be interrupted.
pub fn incompressible_dir(dir: &Path, mib: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let mut seed = 0x1234_5678_9abc_def0u64;
    for i in 0..mib.div_ceil(8) {
        let chunk: Vec<u8> = (0..(8 << 20) / 8)
            .flat_map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed.to_le_bytes()
            })
            .collect();
        std::fs::write(dir.join(format!("part-{i}")), chunk).unwrap();
    }
}

/// Spawns the real binary with the fixture's repo and data dir.
pub fn spawn(f: &Fixture, args: &[&str]) -> std::process::Child {
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("safepoint"));
    if f.permissions_file().exists() {
        cmd.arg("--permissions").arg(f.permissions_file());
    }
    cmd.current_dir(f.work())
        .args(f.global_args())
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

#[allow(dead_code)] // polling it races the backup's end; prefer a FIFO-held command
/// True once some backup directory of `policy` has a non-empty artifact.
pub fn artifact_growing(f: &Fixture, policy: &str, file: &str) -> bool {
    std::fs::read_dir(f.store().join(policy))
        .ok()
        .and_then(|mut d| d.next())
        .and_then(|e| std::fs::metadata(e.ok()?.path().join(file)).ok())
        .is_some_and(|m| m.len() > 0)
}
