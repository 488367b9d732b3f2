//! Fuzzing the HTTP API of a real daemon (the harness of `fuzz.rs`): the
//! JSON bodies of every mutating endpoint (deploy start and finish, backup
//! and drill requests, previews) and the body of the Git push webhook,
//! signed correctly for each mutated input so that what lies behind the
//! signature check sees it. One daemon serves every target (SQLite catalog
//! in a temp dir, a gated directory policy, a drilled SQLite policy, a token
//! file, a webhook secret); requests are plain HTTP/1.1 over loopback, each
//! bounded by a client timeout.
//!
//! Contract per input: an answer — a 2xx, or a 4xx with the JSON error body
//! docs/openapi.yaml documents (413 may be plain text; 422 carries the
//! report) — never another 5xx than 503, never a 504 unless the body asked
//! for a shorter wait than the client's, never a dropped connection or a
//! hang; and after every target the daemon still answers `/healthz` and
//! `/readyz`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use hmac::{KeyInit, Mac};

use crate::api::{Daemon, TOKEN, daemon, gate_policy};
use crate::common::{Fixture, STORAGE};
use crate::contract_server::DRILLED;
use crate::fuzz::{fuzz_target, replay_corpus, selected};

/// Inputs per HTTP target in the test suite (fixed seed): the six targets
/// together stay well under a minute in a debug build.
const SUITE_CASES: u32 = 200;
/// Inputs per batch when run for a set time (benches/fuzz/run.sh).
const BATCH: u32 = 200;
/// No answer within this is a hang (a contract violation).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);
const HOOK_SECRET: &[u8] = b"hook-secret-value";
/// The release started before the targets run, so `finish` has one to end.
const RELEASE: &str = "fuzz-r1";

/// One endpoint: where mutated bodies go and the valid bodies they start from.
struct ApiTarget {
    name: &'static str,
    path: String,
    seeds: Vec<&'static str>,
    /// The webhook: signed with the secret instead of a bearer token.
    signed: bool,
}

fn api_targets() -> Vec<ApiTarget> {
    let bearer = |name, path: &str, seeds| ApiTarget {
        name,
        path: path.to_string(),
        seeds,
        signed: false,
    };
    vec![
        bearer(
            "api-deploy-start",
            &format!("/api/v1/deploys/{RELEASE}/start"),
            vec![
                "",
                "{}",
                r#"{"wait": true}"#,
                r#"{"policies": ["orders"], "selector": {"team": "payments"}, "wait": true, "timeoutSeconds": 900}"#,
                r#"{"selector": {"team": "payments"}, "wait": false}"#,
            ],
        ),
        bearer(
            "api-deploy-finish",
            &format!("/api/v1/deploys/{RELEASE}/finish"),
            vec![
                r#"{"status": "success"}"#,
                r#"{"status": "failure", "policies": ["orders"], "timeoutSeconds": 900}"#,
                r#"{"status": "success", "selector": {"team": "payments"}, "wait": false}"#,
            ],
        ),
        bearer(
            "api-backup",
            "/api/v1/policies/orders/backup",
            vec![
                "",
                "{}",
                r#"{"wait": true, "timeoutSeconds": 900}"#,
                r#"{"wait": false}"#,
            ],
        ),
        bearer(
            "api-drill",
            "/api/v1/policies/app/drill",
            vec![
                "{}",
                r#"{"backup": null, "wait": true, "timeoutSeconds": 900}"#,
                r#"{"wait": false}"#,
            ],
        ),
        bearer("api-preview", "/api/v1/previews", vec![]),
        ApiTarget {
            name: "webhook-push",
            path: "/api/v1/hooks/git".into(),
            seeds: vec![PUSH_EVENT, r#"{"ref":"refs/heads/main"}"#, PING_EVENT],
            signed: true,
        },
    ]
}

/// A GitHub `push` event as GitHub sends it (trimmed of avatar URLs).
const PUSH_EVENT: &str = r#"{"ref":"refs/heads/main","before":"6113728f27ae82c7b1a177c8d03f9e96e0adf246","after":"76ae82a5a7d2a2e1ed5cbc9ab1b8fb2d5d4a5b3c","repository":{"id":123456789,"name":"backup-policies","full_name":"acme/backup-policies","private":true,"owner":{"name":"acme","login":"acme"},"html_url":"https://github.com/acme/backup-policies","default_branch":"main","master_branch":"main"},"pusher":{"name":"alice","email":"alice@example.com"},"sender":{"login":"alice","id":1,"type":"User"},"created":false,"deleted":false,"forced":false,"base_ref":null,"compare":"https://github.com/acme/backup-policies/compare/6113728f27ae...76ae82a5a7d2","commits":[{"id":"76ae82a5a7d2a2e1ed5cbc9ab1b8fb2d5d4a5b3c","tree_id":"f9d2a07e9488b91af2641b26b9407fe22a451433","distinct":true,"message":"orders: keep 14 daily backups\n\nRetention reviewed by the DBA team.","timestamp":"2026-11-29T10:15:00+01:00","url":"https://github.com/acme/backup-policies/commit/76ae82a5a7d2","author":{"name":"Alice","email":"alice@example.com","username":"alice"},"committer":{"name":"GitHub","email":"noreply@github.com","username":"web-flow"},"added":[],"removed":[],"modified":["policies/orders.yaml"]}],"head_commit":{"id":"76ae82a5a7d2a2e1ed5cbc9ab1b8fb2d5d4a5b3c","message":"orders: keep 14 daily backups","timestamp":"2026-11-29T10:15:00+01:00","added":[],"removed":[],"modified":["policies/orders.yaml"]}}"#;

/// GitHub's first delivery to a new hook.
const PING_EVENT: &str = r#"{"zen":"Keep it logically awesome.","hook_id":42,"hook":{"type":"Repository","id":42,"active":true,"events":["push"],"config":{"content_type":"json","insecure_ssl":"0","url":"https://backups.example.com/api/v1/hooks/git"}},"repository":{"id":123456789,"full_name":"acme/backup-policies"},"sender":{"login":"alice","id":1}}"#;

/// Preview requests as `safepoint preview --server` sends them: the
/// revision in force, and one that cuts retention and adds a policy.
fn preview_seeds() -> Vec<Vec<u8>> {
    let file = |path: &str, text: &str| serde_json::json!({"path": path, "text": text});
    let same = serde_json::json!({
        "ref": "main",
        "commit": "0123456789abcdef0123456789abcdef01234567",
        "files": [
            file("policies/storage.yaml", STORAGE),
            file("policies/orders.yaml", &gate_policy("orders")),
            file("policies/app.yaml", DRILLED),
        ],
    });
    let changed = serde_json::json!({
        "ref": "cut",
        "commit": null,
        "files": [
            file("policies/storage.yaml", STORAGE),
            file("policies/orders.yaml", &gate_policy("orders").replace("keepLast: 3", "keepLast: 1")),
            file("policies/extra.yaml", &crate::common::dir_policy("extra", "d")),
        ],
    });
    [same, changed]
        .iter()
        .map(|v| serde_json::to_vec_pretty(v).unwrap())
        .collect()
}

/// The daemon every target talks to.
struct Server {
    _daemon: Daemon,
    _fixture: Fixture,
    addr: SocketAddr,
}

impl Server {
    fn start() -> Server {
        let f = Fixture::new(&[
            ("storage.yaml", STORAGE),
            ("orders.yaml", &gate_policy("orders")),
            ("app.yaml", DRILLED),
        ]);
        std::fs::create_dir_all(f.work().join("d")).unwrap();
        std::fs::write(f.work().join("d/orders.csv"), "id,total\n1,9.50\n").unwrap();
        f.make_sqlite("app.db");
        let repo = f.repo().to_string_lossy().into_owned();
        let (d, addr) = daemon(&f, &repo, &[]);
        let server = Server {
            _daemon: d,
            _fixture: f,
            addr,
        };
        server.wait_ready();
        // A backup to drill and a started release to finish.
        let (code, body) = server
            .send("/api/v1/policies/app/backup", b"{}", false)
            .unwrap();
        assert_eq!(code, 200, "{body}");
        let start = format!("/api/v1/deploys/{RELEASE}/start");
        let (code, body) = server.send(&start, b"{}", false).unwrap();
        assert_eq!(code, 200, "{body}");
        server
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = exchange(self.addr, "GET /readyz HTTP/1.1", b"");
            if matches!(ready, Ok((200, _))) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the daemon is not ready: {ready:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// (status, body) of a POST of `body` to `path`, with the bearer token
    /// or, `signed`, the webhook's signature headers.
    fn send(&self, path: &str, body: &[u8], signed: bool) -> Result<(u16, String), String> {
        let auth = if signed {
            format!(
                "X-GitHub-Event: push\r\nX-GitHub-Delivery: 72d3162e-cc78-11e3-81ab-4c9367dc0958\r\nX-Hub-Signature-256: {}",
                sign(HOOK_SECRET, body)
            )
        } else {
            format!("Authorization: Bearer {TOKEN}")
        };
        let head = format!("POST {path} HTTP/1.1\r\nContent-Type: application/json\r\n{auth}");
        exchange(self.addr, &head, body)
    }

    /// The target's contract for one input (module docs).
    /// Returns the status answered.
    fn check(&self, target: &ApiTarget, input: &[u8]) -> Result<u16, String> {
        let (code, body) = self.send(&target.path, input, target.signed)?;
        let json: Option<serde_json::Value> = serde_json::from_str(&body).ok();
        let error_body = json.as_ref().is_some_and(|j| j["error"].is_string());
        let asked_shorter_wait = serde_json::from_slice::<serde_json::Value>(input)
            .ok()
            .and_then(|v| v["timeoutSeconds"].as_u64())
            .is_some_and(|t| t < CLIENT_TIMEOUT.as_secs());
        let kept = match code {
            200..=299 => json.is_some(),
            401 if target.signed => false,
            413 => true,
            422 => json.is_some(),
            400..=499 | 503 => error_body,
            504 => error_body && asked_shorter_wait,
            _ => false,
        };
        if kept {
            Ok(code)
        } else {
            Err(format!("answered {code} with {body:?}"))
        }
    }

    /// The process is alive and ready after a target.
    fn assert_healthy(&self, after: &str) {
        let health = exchange(self.addr, "GET /healthz HTTP/1.1", b"");
        assert!(
            matches!(health, Ok((200, _))),
            "after {after}: /healthz {health:?}"
        );
        self.wait_ready();
    }
}

fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// One HTTP/1.1 request over a fresh connection: (status, body), or why no
/// answer came within `CLIENT_TIMEOUT`.
fn exchange(addr: SocketAddr, head: &str, body: &[u8]) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect_timeout(&addr, CLIENT_TIMEOUT)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    s.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    let request = format!(
        "{head}\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    // The server may answer (413) and close before reading the whole body.
    let _ = s
        .write_all(request.as_bytes())
        .and_then(|()| s.write_all(body));
    let started = Instant::now();
    let mut out = Vec::new();
    if let Err(e) = s.read_to_end(&mut out) {
        return Err(format!(
            "no complete answer after {:?}: {e} (read {} bytes)",
            started.elapsed(),
            out.len()
        ));
    }
    let text = String::from_utf8_lossy(&out);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP answer: {text:?}"))?;
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status line: {head:?}"))?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((code, body))
}

/// The payload of a chunked body.
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// The seeds are what the endpoints accept: mutations start from the valid
/// path (and the webhook seeds, signed, are accepted).
fn seeds_of(target: &ApiTarget) -> Vec<Vec<u8>> {
    if target.name == "api-preview" {
        return preview_seeds();
    }
    target.seeds.iter().map(|s| s.as_bytes().to_vec()).collect()
}

/// Every API target over `SUITE_CASES` mutated bodies (and its saved
/// corpus) against one daemon, which stays healthy; with
/// `SAFEPOINT_FUZZ_SECONDS` (benches/fuzz/run.sh), each for that long.
#[test]
fn fuzz_targets_answer_every_mutated_api_body_and_webhook_payload() {
    let targets: Vec<ApiTarget> = api_targets()
        .into_iter()
        .filter(|t| selected(t.name))
        .collect();
    if targets.is_empty() {
        return;
    }
    let server = Server::start();
    for target in &targets {
        let seeds = seeds_of(target);
        for seed in &seeds {
            let (code, body) = server.send(&target.path, seed, target.signed).unwrap();
            assert!(
                (200..300).contains(&code),
                "{}: the seed {:?} is refused: {code} {body}",
                target.name,
                String::from_utf8_lossy(seed)
            );
        }
        let answers = std::cell::RefCell::new(std::collections::BTreeMap::<u16, u64>::new());
        let check = |input: &[u8]| {
            let code = server.check(target, input)?;
            *answers.borrow_mut().entry(code).or_default() += 1;
            Ok(())
        };
        replay_corpus(target.name, &check);
        fuzz_target(target.name, &|| seeds.clone(), &check, SUITE_CASES, BATCH);
        server.assert_healthy(target.name);
        let answers = answers.into_inner();
        println!("fuzz {} answers (status: inputs): {answers:?}", target.name);
        // Mutations reach both the accepting path and the refusals; every
        // signed webhook body passes the signature check (the body is only
        // authenticated: any signed push wakes a fetch).
        let accepted = answers.keys().any(|c| (200..300).contains(c));
        let reached = if target.signed {
            answers.keys().all(|c| (200..300).contains(c))
        } else {
            accepted && answers.contains_key(&400)
        };
        assert!(reached, "{}: answers {answers:?}", target.name);
    }
}

/// The regression of the 500 the `api-drill` target found: a drill whose
/// policy's lock is held (here by this test process, as a backup or drill
/// running elsewhere holds it) waits for the lock, then runs, instead of
/// failing with "a backup or drill of app is running".
#[test]
fn a_drill_waits_for_the_policy_lock_instead_of_failing() {
    let f = Fixture::new(&[("storage.yaml", STORAGE), ("app.yaml", DRILLED)]);
    f.make_sqlite("app.db");
    f.cmd().args(["backup", "app"]).assert().success();
    let lock = std::fs::File::options()
        .write(true)
        .open(f.data().join("locks/app.lock"))
        .unwrap();
    lock.lock().unwrap();
    let mut drill = std::process::Command::new(assert_cmd::cargo::cargo_bin("safepoint"))
        .current_dir(f.work())
        .env("SAFEPOINT_LOG", "warn")
        .args(f.global_args())
        .args(["drill", "app", "--output", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // While the lock is held the drill does not end (it used to fail at
    // once); a slow start only makes this check weaker, never wrong.
    let held_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < held_until {
        if let Some(status) = drill.try_wait().unwrap() {
            let out = drill.wait_with_output().unwrap();
            panic!(
                "the drill ended ({status}) while the lock was held: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(lock);
    let out = drill.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("passed"), "{stdout}");
}
