//! The HTTP API of a running daemon: bearer tokens, 401/404/413, deploys and
//! backups enqueued to the daemon loop, the signed Git push webhook, and the
//! exact shell steps of docs/ci/github-actions.yml run against it.

use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use hmac::{KeyInit, Mac};

use crate::common::{Fixture, STORAGE, dir_policy};
use crate::metrics::request;

pub(crate) const TOKEN: &str = "ci-token-0123456789abcdef";

pub(crate) struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn gate_policy(name: &str) -> String {
    format!(
        "apiVersion: safepoint/v1\nkind: BackupPolicy\nmetadata:\n  name: {name}\n  labels: {{team: payments}}\nspec:\n  source: {{type: directory, path: d}}\n  storage: local\n  deploy:\n    before: snapshot\n    onSuccess: baseline\n    onFailure: [pin-pre-deploy, alert]\n  retention: {{keepLast: 3}}\n"
    )
}

/// Starts the daemon with API tokens and a webhook secret; returns its address.
pub(crate) fn daemon(f: &Fixture, repo: &str, extra: &[&str]) -> (Daemon, SocketAddr) {
    std::fs::write(f.work().join("tokens"), format!("ci {TOKEN}\n")).unwrap();
    std::fs::write(f.work().join("hook-secret"), "hook-secret-value\n").unwrap();
    let log = f.tmp.path().join("daemon.log");
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("safepoint"));
    if f.permissions_file().exists() {
        cmd.arg("--permissions").arg(f.permissions_file());
    }
    let child = cmd
        .current_dir(f.work())
        .args(["--repo", repo, "--data-dir"])
        .arg(f.data())
        .args(["--log-format", "json", "daemon", "--listen", "127.0.0.1:0"])
        .args([
            "--api-tokens-file",
            "tokens",
            "--webhook-secret-file",
            "hook-secret",
        ])
        .args(extra)
        .env("SAFEPOINT_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let daemon = Daemon(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    let addr = loop {
        let found = std::fs::read_to_string(&log).ok().and_then(|text| {
            text.lines().find_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                v["fields"]["addr"].as_str()?.parse().ok()
            })
        });
        if let Some(a) = found {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "no listener: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    (daemon, addr)
}

pub(crate) fn post(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, serde_json::Value) {
    let auth = token.map_or(String::new(), |t| format!("\r\nAuthorization: Bearer {t}"));
    let head = format!("POST {path} HTTP/1.1\r\nContent-Type: application/json{auth}");
    let (code, text) = request(addr, &head, body.as_bytes());
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (
        code,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

#[test]
fn mutating_calls_need_a_token_and_answer_401_404_413_correctly() {
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        ("orders.yaml", &gate_policy("orders")),
    ]);
    std::fs::create_dir_all(f.work().join("d")).unwrap();
    let repo = f.repo().to_string_lossy().into_owned();
    let (_d, addr) = daemon(&f, &repo, &[]);
    let start = "/api/v1/deploys/v1.0.0/start";
    assert_eq!(post(addr, start, None, "{}").0, 401);
    assert_eq!(
        post(addr, start, Some("wrong-token-wrong-token"), "{}").0,
        401
    );
    assert_eq!(
        post(addr, "/api/v1/policies/orders/backup", None, "").0,
        401
    );
    assert!(
        f.backups("orders").is_empty(),
        "a refused call changes nothing"
    );

    let (code, report) = post(addr, start, Some(TOKEN), "{\"wait\": true}");
    assert_eq!(code, 200, "{report}");
    assert_eq!(report["ok"], true);
    let id = report["steps"][0]["backup_id"]
        .as_str()
        .unwrap()
        .to_string();
    let b = f
        .backups("orders")
        .into_iter()
        .find(|b| b["id"] == id.as_str())
        .unwrap();
    assert_eq!(b["trigger"], "pre-deploy");

    assert_eq!(
        post(addr, "/api/v1/policies/nope/backup", Some(TOKEN), "").0,
        404
    );
    assert_eq!(
        post(
            addr,
            "/api/v1/deploys/never/finish",
            Some(TOKEN),
            "{\"status\":\"success\"}"
        )
        .0,
        404
    );
    assert_eq!(
        post(addr, "/api/v1/deploys/v1.0.0/finish", Some(TOKEN), "{}").0,
        400
    );
    let big = format!("{{\"policies\": [\"{}\"]}}", "x".repeat(100 * 1024));
    assert_eq!(post(addr, start, Some(TOKEN), &big).0, 413);

    // Who did it is on record.
    let audit = f.cmd().args(["audit", "export"]).output().unwrap();
    assert!(String::from_utf8_lossy(&audit.stdout).contains("\"actor\":\"token:ci\""));
}

fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[test]
fn signed_push_webhook_triggers_a_fetch_and_unsigned_ones_are_refused() {
    let f = Fixture::new(&[("storage.yaml", STORAGE)]);
    std::fs::create_dir_all(f.work().join("d")).unwrap();
    let url = format!("file://{}", f.repo().display());
    // A remote repository fetched only every hour: only the webhook can be quick.
    let (_d, addr) = daemon(&f, &url, &["--fetch-interval", "3600"]);
    // The first fetch and cycle are done (a valid revision applied) before
    // the commit, so only the webhook can bring the commit in.
    let deadline = Instant::now() + Duration::from_secs(60);
    while request(addr, "GET /readyz HTTP/1.1", b"").0 != 200 {
        assert!(Instant::now() < deadline, "the daemon never became ready");
        std::thread::sleep(Duration::from_millis(25));
    }
    f.commit(&[("files.yaml", &dir_policy("files", "d"))], "add files");

    let body = br#"{"ref":"refs/heads/main"}"#;
    let head = |sig: &str| {
        format!(
            "POST /api/v1/hooks/git HTTP/1.1\r\nContent-Type: application/json\r\nX-Hub-Signature-256: {sig}"
        )
    };
    assert_eq!(
        request(addr, "POST /api/v1/hooks/git HTTP/1.1", body).0,
        401
    );
    assert_eq!(request(addr, &head(&sign(b"wrong", body)), body).0, 401);
    assert!(f.backups("files").is_empty());
    assert_eq!(
        request(addr, &head(&sign(b"hook-secret-value", body)), body).0,
        202
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while f.backups("files").is_empty() {
        assert!(
            Instant::now() < deadline,
            "the webhook did not trigger a fetch"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The `run: |` block of the step named `name` in a GitHub Actions file.
fn step_script(yaml: &str, name: &str) -> String {
    let lines: Vec<&str> = yaml.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.trim() == format!("- name: {name}"))
        .unwrap_or_else(|| panic!("no step {name}"));
    let run = (at..lines.len())
        .find(|i| lines[*i].trim() == "run: |")
        .unwrap();
    let indent = lines[run + 1].len() - lines[run + 1].trim_start().len();
    lines[run + 1..]
        .iter()
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() >= indent)
        .map(|l| l.trim())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_github_actions_example_gates_and_records_a_failed_deploy_against_a_real_daemon() {
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        ("orders.yaml", &gate_policy("orders")),
    ]);
    std::fs::create_dir_all(f.work().join("d")).unwrap();
    let repo = f.repo().to_string_lossy().into_owned();
    let (_d, addr) = daemon(&f, &repo, &[]);
    let yaml = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/ci/github-actions.yml"),
    )
    .unwrap();
    let bin_dir = assert_cmd::cargo::cargo_bin("safepoint")
        .parent()
        .unwrap()
        .to_path_buf();
    let runner = tempfile::tempdir().unwrap(); // a CI runner: no data dir, no catalog
    let run = |step: &str| {
        std::process::Command::new("sh")
            .args(["-ec", &step_script(&yaml, step)])
            .current_dir(runner.path())
            .env(
                "PATH",
                format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap()),
            )
            .env("SAFEPOINT_SERVER", format!("http://{addr}"))
            .env("SAFEPOINT_TOKEN", TOKEN)
            .env("RELEASE", "v2.0.0")
            .output()
            .unwrap()
    };
    let gate = run("Pre-deploy snapshot (gate)");
    assert!(
        gate.status.success(),
        "{}{}",
        String::from_utf8_lossy(&gate.stdout),
        String::from_utf8_lossy(&gate.stderr)
    );
    assert!(String::from_utf8_lossy(&gate.stdout).contains("--pre-deploy --to"));
    let failed = run("Record failure");
    assert!(
        failed.status.success(),
        "{}",
        String::from_utf8_lossy(&failed.stderr)
    );
    let pre = f
        .backups("orders")
        .into_iter()
        .find(|b| b["trigger"] == "pre-deploy")
        .unwrap();
    assert!(pre["pinned"].as_str().unwrap().contains("v2.0.0"));
    assert!(
        !runner.path().join(".safepoint").exists(),
        "the runner kept no state"
    );
}

#[test]
fn concurrent_gates_of_one_policy_for_different_releases_each_get_their_own_snapshot() {
    let policy = gate_policy("orders").replace("keepLast: 3", "keepLast: 20");
    let f = Fixture::new(&[("storage.yaml", STORAGE), ("orders.yaml", &policy)]);
    std::fs::create_dir_all(f.work().join("d")).unwrap();
    std::fs::write(f.work().join("d/data"), "orders").unwrap();
    let repo = f.repo().to_string_lossy().into_owned();
    let (_d, addr) = daemon(&f, &repo, &[]);
    // Sent at once, most of them queue behind the first and share a batch.
    let answers: Vec<(String, u16, serde_json::Value)> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..6)
            .map(|i| {
                s.spawn(move || {
                    let release = format!("r{i}");
                    let path = format!("/api/v1/deploys/{release}/start");
                    let (code, body) = post(addr, &path, Some(TOKEN), "{}");
                    (release, code, body)
                })
            })
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let backups = f.backups("orders");
    for (release, code, body) in &answers {
        assert_eq!(*code, 200, "{release}: {body}");
        let id = body["steps"][0]["backup_id"].as_str().unwrap();
        let b = backups.iter().find(|b| b["id"] == id).unwrap();
        assert_eq!(
            b["release"],
            release.as_str(),
            "the gate of {release} was answered with another release's snapshot"
        );
    }
    let pre: Vec<_> = backups
        .iter()
        .filter(|b| b["trigger"] == "pre-deploy")
        .collect();
    assert_eq!(pre.len(), 6, "one snapshot per release: {pre:?}");
}
