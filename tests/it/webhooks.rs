//! Webhook notifiers end to end against a real HTTP sink on loopback (an
//! axum server in the test): signed notices across restarts and an outage,
//! a permanent 4xx dropped with its reason, `format: slack`, delivery woken
//! by the enqueue (not the poll), and `safepoint notify test`.

use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use chrono::Utc;
use safepoint::notify::payload;

use crate::common::{Fixture, STORAGE, sqlite, sqlite_policy};
use crate::metrics::request;

pub const SECRET: &str = "hook-signing-secret-0123";
pub const TOKEN: &str = "ci-token-0123456789abcdef";

/// One request the sink received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub signature: Option<String>,
    pub delivery: Option<String>,
    pub body: Vec<u8>,
    pub answered: u16,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    /// The signature verifies with `SECRET` now.
    pub fn signed(&self) -> bool {
        self.signature
            .as_deref()
            .is_some_and(|h| payload::verify(SECRET.as_bytes(), h, &self.body, Utc::now()).is_ok())
    }
}

#[derive(Default)]
struct SinkState {
    received: Mutex<Vec<Received>>,
    arrived: Condvar,
    /// What `/hook` answers (`/gone` always answers 410).
    answer: AtomicU16,
}

/// An HTTP endpoint recording every POST.
pub struct HookSink {
    pub addr: SocketAddr,
    state: Arc<SinkState>,
    _runtime: tokio::runtime::Runtime,
}

async fn receive(
    State(st): State<Arc<SinkState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let answered = if uri.path() == "/gone" {
        410
    } else {
        st.answer.load(Ordering::SeqCst)
    };
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    st.received.lock().unwrap().push(Received {
        path: uri.path().to_string(),
        signature: header(payload::SIGNATURE_HEADER),
        delivery: header(payload::DELIVERY_HEADER),
        body: body.to_vec(),
        answered,
    });
    st.arrived.notify_all();
    StatusCode::from_u16(answered).unwrap()
}

impl HookSink {
    pub fn start() -> HookSink {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let state = Arc::new(SinkState::default());
        state.answer.store(200, Ordering::SeqCst);
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .fallback(axum::routing::post(receive))
            .with_state(state.clone());
        runtime.spawn(async move { axum::serve(listener, app).await });
        HookSink {
            addr,
            state,
            _runtime: runtime,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// What `/hook` answers from now on.
    pub fn answer(&self, status: u16) {
        self.state.answer.store(status, Ordering::SeqCst);
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Waits (at most a minute, then fails) until `done` holds.
    pub fn wait_for(&self, what: &str, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut got = self.state.received.lock().unwrap();
        while !done(&got) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "the sink never saw {what}: {got:#?}");
            got = self.state.arrived.wait_timeout(got, left).unwrap().0;
        }
        got.clone()
    }
}

pub fn webhook_notifier(name: &str, url: &str, format: &str) -> String {
    format!(
        "apiVersion: safepoint/v1\nkind: Notifier\nmetadata:\n  name: {name}\nspec:\n  webhook:\n    url: {url}\n    secretFrom: {{env: SP_HOOK_SECRET}}\n    format: {format}\n"
    )
}

fn run_once(f: &Fixture) {
    let out = f
        .cmd()
        .args(["daemon", "--once"])
        .env("SP_HOOK_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "daemon --once failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn delivered(r: &[Received]) -> Vec<serde_json::Value> {
    r.iter()
        .filter(|r| r.path == "/hook" && r.answered == 200)
        .map(Received::json)
        .collect()
}

#[test]
fn signed_notices_survive_an_outage_and_restarts_without_duplicates_and_a_410_is_dropped() {
    let sink = HookSink::start();
    let policy = sqlite_policy("app", "app.db").replace("  rpo: 2h\n", "")
        + "  alerts: {notifiers: [chat, gone]}\n";
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        (
            "chat.yaml",
            &webhook_notifier("chat", &sink.url("/hook"), "json"),
        ),
        (
            "gone.yaml",
            &webhook_notifier("gone", &sink.url("/gone"), "json"),
        ),
        ("app.yaml", &policy),
    ]);
    let catalog = f.data().join("catalog.db");

    // 1. The source is missing (backup-failed) while the endpoint answers 503.
    sink.answer(503);
    run_once(&f);
    let got = sink.received();
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(delivered(&got).is_empty());
    assert_eq!(
        sqlite(
            &catalog,
            "select notifier, state, last_error like '%answered 410%' from outbox where channel = 'webhook' order by notifier"
        )
        .trim(),
        "chat|pending|0\ngone|failed|1",
        "the 503 is retried, the 410 dropped with its reason"
    );

    // 2. Restart with the endpoint up: the queued notice arrives, signed.
    sink.answer(200);
    run_once(&f);
    let got = sink.received();
    let sent = delivered(&got);
    assert_eq!(sent.len(), 1, "{got:#?}");
    let last = got.last().unwrap();
    assert!(last.signed(), "bad signature: {last:?}");
    let n = &sent[0];
    assert_eq!(n["version"], 1);
    assert_eq!(n["kind"], "firing");
    assert_eq!(n["policy"], "app");
    assert_eq!(n["reason"], "backup-failed");
    assert!(n["detail"].as_str().unwrap().contains("app.db"), "{n}");
    assert!(
        n["next_step"]
            .as_str()
            .unwrap()
            .contains("safepoint backup app"),
        "{n}"
    );
    assert_eq!(last.delivery.as_deref(), n["id"].as_str());
    assert_eq!(
        got.iter().filter(|r| r.path == "/gone").count(),
        1,
        "a dropped notice is not retried"
    );

    // 3. Still failing, restarted again: nothing new.
    run_once(&f);
    assert_eq!(sink.received().len(), got.len());

    // 4. Fixed: the next cycle sends "resolved" with the new backup's id.
    f.make_sqlite("app.db");
    f.cmd().args(["backup", "app"]).assert().success();
    run_once(&f);
    let got = sink.received();
    let sent = delivered(&got);
    assert_eq!(sent.len(), 2, "{got:#?}");
    assert_eq!(sent[1]["kind"], "resolved");
    let id = f.backups("app")[0]["id"].as_str().unwrap().to_string();
    assert_eq!(sent[1]["backups"][0], id.as_str());
    assert!(
        got.iter()
            .filter(|r| r.answered == 200)
            .all(Received::signed)
    );
    assert_ne!(sent[0]["id"], sent[1]["id"]);
    run_once(&f);
    assert_eq!(sink.received().len(), got.len(), "healthy: silence");
}

/// A running daemon with API tokens; killed on drop.
pub struct Daemon(Child, pub SocketAddr);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `daemon --listen 127.0.0.1:0` and waits for its address.
pub fn daemon(f: &Fixture, extra: &[&str]) -> Daemon {
    std::fs::write(f.work().join("tokens"), format!("ci {TOKEN}\n")).unwrap();
    let log = f.tmp.path().join("daemon.log");
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("safepoint"))
        .current_dir(f.work())
        .args(f.global_args())
        .args(["--log-format", "json", "daemon", "--listen", "127.0.0.1:0"])
        .args(["--api-tokens-file", "tokens"])
        .args(extra)
        .env("SAFEPOINT_LOG", "info")
        .env("SP_HOOK_SECRET", SECRET)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // Owned (killed and waited for on drop) before anything can fail.
    let mut d = Daemon(child, SocketAddr::from(([127, 0, 0, 1], 0)));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let found = text.lines().find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            v["fields"]["addr"].as_str()?.parse().ok()
        });
        if let Some(addr) = found {
            d.1 = addr;
            return d;
        }
        assert!(Instant::now() < deadline, "no listener: {text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// POSTs to the daemon's API with the token; returns (status, JSON body).
pub fn post(addr: SocketAddr, path: &str, body: &str) -> (u16, serde_json::Value) {
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

pub fn deploy_policy(name: &str, notifiers: &str) -> String {
    format!(
        "apiVersion: safepoint/v1\nkind: BackupPolicy\nmetadata:\n  name: {name}\nspec:\n  source: {{type: directory, path: {name}-data}}\n  storage: local\n  rpo: 6h\n  schedule: {{cron: \"0 3 * * *\", timezone: UTC}}\n  deploy:\n    before: snapshot\n    onSuccess: baseline\n    onFailure: [pin-pre-deploy, alert]\n  retention: {{keepLast: 20}}\n  alerts: {{notifiers: [{notifiers}]}}\n"
    )
}

/// Starts and fails deploy `release` through the API; returns the
/// pre-deploy snapshot's id.
pub fn failed_deploy(addr: SocketAddr, release: &str) -> String {
    let (code, start) = post(
        addr,
        &format!("/api/v1/deploys/{release}/start"),
        "{\"wait\": true}",
    );
    assert_eq!(code, 200, "{start}");
    let (code, finish) = post(
        addr,
        &format!("/api/v1/deploys/{release}/finish"),
        "{\"status\": \"failure\", \"wait\": true}",
    );
    // 200 when every failure step (pin, alert) worked, 422 when one did not.
    assert!(code == 200 || code == 422, "{code} {finish}");
    start["steps"][0]["backup_id"].as_str().unwrap().to_string()
}

#[test]
fn a_failed_deploy_reaches_a_slack_webhook_at_once_though_the_outbox_poll_is_an_hour() {
    let sink = HookSink::start();
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        (
            "chat.yaml",
            &webhook_notifier("chat", &sink.url("/hook"), "slack"),
        ),
        ("orders.yaml", &deploy_policy("orders", "chat")),
    ]);
    std::fs::create_dir_all(f.work().join("orders-data")).unwrap();
    std::fs::write(f.work().join("orders-data/a.txt"), "orders").unwrap();
    // Only the bell rung by the enqueue can deliver within the wait below.
    let d = daemon(&f, &["--outbox-poll", "3600"]);
    let snapshot = failed_deploy(d.1, "v1.4.0");
    let got = sink.wait_for("the deploy-failed notice", |r| {
        r.iter()
            .any(|r| String::from_utf8_lossy(&r.body).contains("deploy-failed"))
    });
    let r = got
        .iter()
        .find(|r| String::from_utf8_lossy(&r.body).contains("deploy-failed"))
        .unwrap();
    assert!(r.signed(), "{r:?}");
    let text = r.json()["text"].as_str().unwrap().to_string();
    assert!(
        text.starts_with("*[safepoint] deploy-failed: policy orders*"),
        "{text}"
    );
    assert!(
        text.contains(
            "safepoint restore --policy orders --release v1.4.0 --pre-deploy --to &lt;TARGET&gt;"
        ),
        "{text}"
    );
    assert!(
        text.contains(&snapshot),
        "names the snapshot {snapshot}: {text}"
    );
}

#[test]
fn notify_test_reports_what_each_endpoint_answered() {
    let sink = HookSink::start();
    let mail = "apiVersion: safepoint/v1\nkind: Notifier\nmetadata:\n  name: mail\nspec:\n  email: {to: [ops@example.com]}\n";
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        (
            "chat.yaml",
            &webhook_notifier("chat", &sink.url("/hook"), "json"),
        ),
        (
            "gone.yaml",
            &webhook_notifier("gone", &sink.url("/gone"), "json"),
        ),
        ("mail.yaml", mail),
    ]);
    let smtp = crate::alerts::Sink::start(&f.tmp.path().join("mail"));
    let run = |args: &[&str]| {
        let out = f
            .cmd()
            .args(["notify", "test"])
            .args(args)
            .env("SP_HOOK_SECRET", SECRET)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code(), text)
    };
    let (code, text) = run(&["chat"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains(&format!(
            "ok webhook http://{}/…: endpoint answered 200",
            sink.addr
        )),
        "{text}"
    );
    let r = sink.received().pop().unwrap();
    assert!(r.signed());
    assert_eq!(r.json()["kind"], "test");

    let (code, text) = run(&["gone"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("FAILED webhook") && text.contains("410"),
        "{text}"
    );

    let port = smtp.port.to_string();
    let smtp_args = [
        "--smtp-host",
        "127.0.0.1",
        "--smtp-tls",
        "none",
        "--smtp-port",
        &port,
    ];
    let (code, text) = run(&[&["mail", "--smtp-from", "sp@example.com"][..], &smtp_args].concat());
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("ok email ops@example.com"), "{text}");
    assert_eq!(smtp.mails().len(), 1);
    assert!(smtp.mails()[0].contains("Subject: [safepoint] TEST notice via notifier mail"));

    let (code, text) = run(&["nope"]);
    assert_eq!(code, Some(4), "{text}");
    assert!(text.contains("no Notifier `nope`"), "{text}");
}

#[test]
fn notices_queued_during_an_outage_go_out_with_the_first_one_accepted_after_it() {
    let sink = HookSink::start();
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        (
            "chat.yaml",
            &webhook_notifier("chat", &sink.url("/hook"), "json"),
        ),
        ("orders.yaml", &deploy_policy("orders", "chat")),
    ]);
    std::fs::create_dir_all(f.work().join("orders-data")).unwrap();
    std::fs::write(f.work().join("orders-data/a.txt"), "orders").unwrap();
    let d = daemon(&f, &["--outbox-poll", "3600"]);
    let names = |r: &Received, release: &str| {
        r.answered == 200 && String::from_utf8_lossy(&r.body).contains(release)
    };
    // Outage: the first notice fails and waits in backoff (30 s or more).
    sink.answer(503);
    failed_deploy(d.1, "v1.0.0");
    sink.wait_for("the first attempt", |r| r.iter().any(|r| r.answered == 503));
    // The endpoint is back; the next notice is accepted, and the one waiting
    // in backoff goes out with it instead of at its retry time.
    sink.answer(200);
    failed_deploy(d.1, "v2.0.0");
    sink.wait_for("the second notice", |r| {
        r.iter().any(|r| names(r, "v2.0.0"))
    });
    let deadline = Instant::now() + Duration::from_secs(15);
    while !sink.received().iter().any(|r| names(r, "v1.0.0")) {
        assert!(
            Instant::now() < deadline,
            "the notice queued during the outage still waits for its backoff: {:#?}",
            sink.received()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
