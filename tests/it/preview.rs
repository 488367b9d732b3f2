//! `safepoint preview` against a real Git repository (main + branches) and
//! a running daemon: the preview of a branch lists exactly the deletions and
//! new backups the daemon performs once the branch is merged, an
//! unacknowledged retention cut is refused at preview and at apply, and the
//! pull-request examples in docs/ci/ run against the daemon.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Fixture, STORAGE, git};

const TOKEN: &str = "preview-token-0123456789";

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A directory policy with a yearly schedule: after its first backup the
/// daemon takes none on its own during the test, so every action it
/// performs comes from a policy change.
fn policy(name: &str, dir: &str, keep_last: u32, annotations: &str) -> String {
    format!(
        "apiVersion: safepoint/v1\nkind: BackupPolicy\nmetadata:\n  name: {name}\n  annotations: {{{annotations}}}\nspec:\n  source: {{type: directory, path: {dir}}}\n  storage: local\n  schedule: {{cron: \"0 3 1 1 *\"}}\n  retention: {{keepLast: {keep_last}}}\n"
    )
}

fn start_daemon(f: &Fixture) -> (Daemon, SocketAddr) {
    std::fs::write(f.work().join("tokens"), format!("ci {TOKEN}\n")).unwrap();
    let log = f.tmp.path().join("daemon.log");
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("safepoint"))
        .current_dir(f.work())
        .args(f.global_args())
        .args(["--log-format", "json", "daemon", "--listen", "127.0.0.1:0"])
        .args(["--api-tokens-file", "tokens"])
        .env("SAFEPOINT_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let daemon = Daemon(child);
    let addr = wait_for("the daemon's listener", || {
        let text = std::fs::read_to_string(&log).ok()?;
        text.lines().find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            v["fields"]["addr"].as_str()?.parse().ok()
        })
    });
    (daemon, addr)
}

fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Commits `files` on a new branch `name` forked from main; main stays checked out.
fn branch(f: &Fixture, name: &str, files: &[(&str, &str)]) {
    git(&f.repo(), &["checkout", "-q", "-b", name, "main"]);
    f.commit(files, &format!("change on {name}"));
    git(&f.repo(), &["checkout", "-q", "main"]);
}

fn merge(f: &Fixture, name: &str) {
    git(
        &f.repo(),
        &[
            "merge",
            "-q",
            "--no-ff",
            "-m",
            &format!("merge {name}"),
            name,
        ],
    );
}

/// `safepoint preview --ref R --output json`, in-process or through the daemon.
fn preview(f: &Fixture, git_ref: &str, server: Option<SocketAddr>) -> (i32, serde_json::Value) {
    let mut cmd = f.cmd();
    if let Some(addr) = server {
        cmd.args(["--server", &format!("http://{addr}")])
            .env("SAFEPOINT_TOKEN", TOKEN);
    }
    let out = cmd
        .args(["preview", "--ref", git_ref, "--output", "json"])
        .output()
        .unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "preview gave no JSON ({e}): {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), json)
}

fn ids(list: &serde_json::Value, key: &str) -> BTreeSet<String> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|d| d[key].as_str().unwrap().to_string())
        .collect()
}

/// The ids of a preview's deletions (grouped by policy).
fn deletion_ids(groups: &serde_json::Value) -> BTreeSet<String> {
    groups
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| ids(&g["backups"], "backup_id"))
        .collect()
}

fn backup_ids(f: &Fixture, policy: &str) -> BTreeSet<String> {
    f.backups(policy)
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect()
}

/// A repository with `orders` (5 backups, keepLast 5) in force and a daemon
/// that has applied it.
fn setup() -> (Fixture, Daemon, SocketAddr, BTreeSet<String>) {
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        ("orders.yaml", &policy("orders", "d", 5, "")),
    ]);
    for dir in ["d", "e"] {
        std::fs::create_dir_all(f.work().join(dir)).unwrap();
        std::fs::write(f.work().join(dir).join("data"), dir).unwrap();
    }
    for _ in 0..5 {
        f.cmd().args(["backup", "orders"]).assert().success();
    }
    let before = backup_ids(&f, "orders");
    assert_eq!(before.len(), 5);
    let (daemon, addr) = start_daemon(&f);
    // The daemon has a revision in force once a preview is answered.
    // Until the first cycle has published one, the daemon answers 503.
    wait_for("a revision in force", || {
        let out = f
            .cmd()
            .args(["--server", &format!("http://{addr}")])
            .env("SAFEPOINT_TOKEN", TOKEN)
            .args(["preview", "--ref", "main", "--output", "json"])
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        report["preview"].is_object().then_some(())
    });
    (f, daemon, addr, before)
}

#[test]
fn the_preview_of_a_branch_is_what_the_daemon_does_after_the_merge() {
    let (f, _daemon, addr, before) = setup();
    // A retention cut (5 -> 2) and a new policy, not acknowledged.
    let cut = [
        ("orders.yaml", policy("orders", "d", 2, "")),
        ("files.yaml", policy("files", "e", 3, "")),
    ];
    let cut: Vec<(&str, &str)> = cut.iter().map(|(n, t)| (*n, t.as_str())).collect();
    branch(&f, "cut", &cut);

    let (code, report) = preview(&f, "cut", Some(addr));
    assert_eq!(code, 1, "an unacknowledged cut is refused: {report:#}");
    assert_eq!(report["refused"], true);
    let deleted = deletion_ids(&report["preview"]["deletions"]);
    let mut by_age: Vec<(chrono::DateTime<chrono::FixedOffset>, String)> = f
        .backups("orders")
        .iter()
        .map(|b| {
            let at = chrono::DateTime::parse_from_rfc3339(b["started_at"].as_str().unwrap());
            (at.unwrap(), b["id"].as_str().unwrap().to_string())
        })
        .collect();
    by_age.sort();
    let oldest: BTreeSet<String> = by_age.into_iter().take(3).map(|(_, id)| id).collect();
    assert_eq!(deleted, oldest, "the three oldest go");
    assert!(
        report["refusals"][0]
            .as_str()
            .unwrap()
            .contains("safepoint.io/allow-deletions\"]: \"3\""),
        "{report:#}"
    );
    let md = report["markdown"].as_str().unwrap();
    assert!(
        md.contains("**REFUSED**") && md.contains("keepLast"),
        "{md}"
    );
    // In-process (the catalog, no daemon API) gives the same answer.
    let (code, local) = preview(&f, "cut", None);
    assert_eq!(code, 1);
    assert_eq!(deletion_ids(&local["preview"]["deletions"]), deleted);

    // Merged anyway: the daemon refuses to apply it; nothing is deleted or taken.
    merge(&f, "cut");
    let status = wait_for("the daemon to refuse the revision", || {
        let s = f.json(&["status"]);
        let refused = s["diagnostics"]
            .as_array()?
            .iter()
            .any(|d| d.as_str().unwrap_or("").contains("deletion guard"));
        refused.then_some(s)
    });
    assert_eq!(status["ready"], false, "{status:#}");
    assert!(
        status["reason"]
            .as_str()
            .unwrap()
            .contains("deletion guard")
    );
    assert_eq!(backup_ids(&f, "orders"), before);
    assert!(f.backups("files").is_empty());

    // The acknowledgement, reviewed in the repository.
    let acked = policy("orders", "d", 2, "safepoint.io/allow-deletions: \"3\"");
    branch(&f, "ack", &[("orders.yaml", &acked)]);
    let (code, report) = preview(&f, "ack", Some(addr));
    assert_eq!(code, 0, "{report:#}");
    let planned_deletions = deletion_ids(&report["preview"]["deletions"]);
    assert_eq!(planned_deletions, deleted);
    let planned_backups: Vec<(String, String)> = report["preview"]["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["policy"].as_str().unwrap().to_string(),
                b["reason"]["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        planned_backups,
        [("files".to_string(), "first-backup".to_string())]
    );

    merge(&f, "ack");
    wait_for("the daemon to apply the acknowledged revision", || {
        (backup_ids(&f, "orders").len() == 2 && f.backups("files").len() == 1).then_some(())
    });
    // What the daemon recorded is what the preview listed.
    let remaining = backup_ids(&f, "orders");
    let gone: BTreeSet<String> = before.difference(&remaining).cloned().collect();
    assert_eq!(gone, planned_deletions);
    let audit = f.cmd().args(["audit", "export"]).output().unwrap();
    let pruned: BTreeSet<String> = String::from_utf8_lossy(&audit.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["kind"] == "backup-pruned")
        .filter_map(|e| {
            let msg = e["message"].as_str()?.to_string();
            before.iter().find(|id| msg.contains(id.as_str())).cloned()
        })
        .collect();
    assert_eq!(pruned, planned_deletions, "audit log vs preview");
    let taken = f.backups("files");
    assert_eq!(taken[0]["trigger"], "schedule");
    let status = f.json(&["status"]);
    assert_eq!(status["ready"], true, "{status:#}");
}

fn venv_python() -> PathBuf {
    let venv =
        std::env::var("SAFEPOINT_CI_VENV").unwrap_or_else(|_| "/opt/safepoint-ci/venv".into());
    Path::new(&venv).join("bin/python")
}

/// The shell of a docs/ci/ example, per the YAML: the `run` of a named
/// GitHub Actions step, or the `script` lines of a GitLab job.
fn ci_script(file: &str, select: &str) -> String {
    const READ: &str = r#"
import json, sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
kind, name = sys.argv[2].split(":", 1)
if kind == "step":
    steps = [s for job in doc["jobs"].values() for s in job["steps"]]
    print(next(s["run"] for s in steps if s.get("name") == name))
else:
    print("\n".join(doc[name]["script"]))
"#;
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs/ci")
        .join(file);
    let out = std::process::Command::new(venv_python())
        .args(["-c", READ])
        .arg(path)
        .arg(select)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A CI runner: a fresh clone of the repository at `git_ref`, no data dir.
fn runner(f: &Fixture, git_ref: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    git(
        dir.path(),
        &["clone", "-q", f.repo().to_str().unwrap(), "."],
    );
    git(dir.path(), &["checkout", "-q", git_ref]);
    dir
}

fn sh(dir: &Path, script: &str, env: &[(&str, String)]) -> Output {
    let bin_dir = assert_cmd::cargo::cargo_bin("safepoint")
        .parent()
        .unwrap()
        .to_path_buf();
    let mut cmd = std::process::Command::new("sh");
    cmd.args(["-ec", script])
        .current_dir(dir)
        .env(
            "PATH",
            format!(
                "{}:{}:{}",
                dir.join("bin").display(),
                bin_dir.display(),
                std::env::var("PATH").unwrap()
            ),
        )
        .env("SAFEPOINT_TOKEN", TOKEN)
        .env_remove("SAFEPOINT_DATA_DIR")
        .env_remove("SAFEPOINT_REPO");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// A loopback HTTP sink that records one request (GitLab's notes API).
fn sink() -> (SocketAddr, std::thread::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0_u8; 8192];
        loop {
            let n = s.read(&mut chunk).unwrap_or(0);
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            let complete = text.split_once("\r\n\r\n").is_some_and(|(head, body)| {
                head.lines()
                    .find_map(|l| {
                        l.to_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    })
                    .is_some_and(|len| body.len() >= len)
            });
            if n == 0 || complete {
                break;
            }
        }
        let _ = s
            .write_all(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}");
        String::from_utf8_lossy(&buf).into_owned()
    });
    (addr, handle)
}

#[test]
fn the_pull_request_examples_comment_the_preview_and_fail_on_an_unacknowledged_cut() {
    let (f, _daemon, addr, _) = setup();
    let cut = policy("orders", "d", 2, "");
    branch(&f, "cut", &[("orders.yaml", &cut)]);
    let acked = policy("orders", "d", 2, "safepoint.io/allow-deletions: \"3\"");
    branch(&f, "ack", &[("orders.yaml", &acked)]);
    let server = ("SAFEPOINT_SERVER", format!("http://{addr}"));

    // GitHub Actions, with `gh` replaced by a recorder of the comment.
    let gh = "github-pull-request.yml";
    let run = |git_ref: &str| {
        let dir = runner(&f, git_ref);
        std::fs::create_dir_all(dir.path().join("bin")).unwrap();
        let fake_gh = dir.path().join("bin/gh");
        std::fs::write(&fake_gh, "#!/bin/sh\nwhile [ $# -gt 0 ]; do [ \"$1\" = --body-file ] && cp \"$2\" comment.md; shift; done\n").unwrap();
        std::process::Command::new("chmod")
            .args(["+x"])
            .arg(&fake_gh)
            .status()
            .unwrap();
        let env = [server.clone(), ("PR_NUMBER", "7".to_string())];
        let steps: Vec<Output> = [
            "Validate",
            "Preview",
            "Comment on the pull request",
            "Fail on an unacknowledged destructive change",
        ]
        .iter()
        .map(|s| sh(dir.path(), &ci_script(gh, &format!("step:{s}")), &env))
        .collect();
        let comment = std::fs::read_to_string(dir.path().join("comment.md")).unwrap_or_default();
        assert!(
            !dir.path().join(".safepoint").exists(),
            "the runner kept no state"
        );
        (steps, comment)
    };
    let (steps, comment) = run("cut");
    for s in &steps[..3] {
        assert!(s.status.success(), "{}", String::from_utf8_lossy(&s.stderr));
    }
    assert!(
        !steps[3].status.success(),
        "the unacknowledged cut fails the job"
    );
    assert!(
        comment.contains("**REFUSED**") && comment.contains("allow-deletions"),
        "{comment}"
    );
    let (steps, comment) = run("ack");
    assert!(
        steps.iter().all(|s| s.status.success()),
        "{:?}",
        steps.last()
    );
    assert!(
        comment.contains("acknowledged") && comment.contains("Deletions: 3"),
        "{comment}"
    );

    // GitLab CI: the note goes to the (loopback) notes API.
    let dir = runner(&f, "cut");
    let (api, note) = sink();
    let env = [
        server,
        ("CI_API_V4_URL", format!("http://{api}/api/v4")),
        ("CI_PROJECT_ID", "12".into()),
        ("CI_MERGE_REQUEST_IID", "34".into()),
        ("GITLAB_NOTE_TOKEN", "note-token".into()),
    ];
    let job = sh(
        dir.path(),
        &ci_script("gitlab-merge-request.yml", "job:policy-preview"),
        &env,
    );
    assert_eq!(
        job.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&job.stderr)
    );
    let request = note.join().unwrap();
    assert!(
        request.starts_with("POST /api/v4/projects/12/merge_requests/34/notes"),
        "{request}"
    );
    assert!(request.contains("PRIVATE-TOKEN: note-token"), "{request}");
    assert!(request.contains("REFUSED"), "{request}");
}
