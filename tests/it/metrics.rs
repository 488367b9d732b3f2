//! Metrics and the HTTP API of a running daemon, scraped over loopback:
//! names, labels and values after a successful and a failed backup and a
//! failed recovery drill, the
//! scrape linted by `promtool check metrics`, the revision metrics after a
//! bad commit, readiness and the body size limit.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Fixture, STORAGE, sqlite_policy};

/// A policy whose drill (due every minute) fails its user check.
const DRILLED: &str = r#"apiVersion: safepoint/v1
kind: BackupPolicy
metadata: {name: drilled}
spec:
  source: {type: sqlite, path: drilled.db}
  storage: local
  schedule: {cron: "0 * * * *"}
  retention: {keepLast: 5}
  drill:
    schedule: {cron: "* * * * *"}
    target: {type: directory, path: scratch}
    verify:
      checks:
        - {name: no users, sql: "select count(*) from users", expect: "= 0"}
"#;

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// (status code, headers + body) of a raw HTTP/1.1 request.
pub fn request(addr: SocketAddr, head: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "{head}\r\nHost: {addr}\r\nConnection: close\r\n").unwrap();
    if !body.is_empty() {
        write!(s, "Content-Length: {}\r\n", body.len()).unwrap();
    }
    s.write_all(b"\r\n").unwrap();
    let _ = s.write_all(body);
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let code = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, out)
}

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    request(addr, &format!("GET {path} HTTP/1.1"), b"")
}

fn body(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// The value of the sample whose line starts with `series` (name{labels}).
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
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

#[test]
fn a_running_daemon_exposes_backup_outcomes_drift_and_revision_metrics_over_http() {
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        ("app.yaml", &sqlite_policy("app", "app.db")),
        ("broken.yaml", &sqlite_policy("broken", "missing.db")),
        ("drilled.yaml", DRILLED),
    ]);
    f.make_sqlite("app.db");
    f.make_sqlite("drilled.db");
    // Backed up before the daemon starts, so its first cycle runs the drill.
    f.cmd().args(["backup", "drilled"]).assert().success();
    let log = f.tmp.path().join("daemon.log");
    let started = chrono::Utc::now().timestamp() as f64;
    let _daemon = Daemon(
        std::process::Command::new(assert_cmd::cargo::cargo_bin("safepoint"))
            .current_dir(f.work())
            .args(f.global_args())
            .args(["--log-format", "json", "daemon", "--listen", "127.0.0.1:0"])
            .env("SAFEPOINT_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let addr: SocketAddr = wait_for("the http listener", || {
        std::fs::read_to_string(&log).ok()?.lines().find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            v["fields"]["addr"].as_str()?.parse().ok()
        })
    });
    assert_eq!(get(addr, "/healthz").0, 200);

    let scrape = wait_for("the backups and the drill in the metrics", || {
        let (code, text) = get(addr, "/metrics");
        let text = body(&text).to_string();
        (code == 200
            && text.contains("safepoint_backups_total{policy=\"broken\"")
            && text.contains("safepoint_drift{policy=\"broken\",kind=\"backup-failed\"} 1")
            && text.contains("safepoint_drift{policy=\"drilled\",kind=\"drill-failed\"} 1"))
        .then_some(text)
    });
    let series = |s: &str| sample(&scrape, s);
    assert_eq!(
        series(r#"safepoint_backups_total{policy="app",trigger="schedule",outcome="succeeded"}"#),
        Some(1.0),
        "{scrape}"
    );
    assert_eq!(
        series(r#"safepoint_backups_total{policy="broken",trigger="schedule",outcome="failed"}"#),
        Some(1.0),
        "{scrape}"
    );
    assert_eq!(
        series(r#"safepoint_drift{policy="app",kind="backup-failed"}"#),
        Some(0.0)
    );
    assert_eq!(
        series(r#"safepoint_drift{policy="app",kind="rpo-missed"}"#),
        Some(0.0)
    );
    assert_eq!(
        series(r#"safepoint_drift{policy="broken",kind="rpo-missed"}"#),
        Some(1.0)
    );
    let last = series(r#"safepoint_backup_last_success_timestamp_seconds{policy="app"}"#)
        .expect("last success of app");
    assert!(
        last >= started - 1.0 && last <= started + 120.0,
        "{last} vs {started}"
    );
    assert!(
        series(r#"safepoint_backup_last_success_timestamp_seconds{policy="broken"}"#).is_none()
    );
    assert!(series(r#"safepoint_backup_size_bytes{policy="app"}"#).unwrap() > 0.0);
    assert_eq!(
        series(r#"safepoint_policy_rpo_seconds{policy="app"}"#),
        Some(7200.0)
    );
    assert_eq!(
        series(r#"safepoint_policy_ready{policy="broken"}"#),
        Some(0.0)
    );
    assert_eq!(
        series(r#"safepoint_backup_duration_seconds_count{policy="app"}"#),
        Some(1.0)
    );
    assert!(series("safepoint_reconcile_duration_seconds_count").unwrap() >= 1.0);
    assert_eq!(series("safepoint_policy_revision_valid"), Some(1.0));
    assert!(series(r#"safepoint_drills_total{policy="drilled",outcome="failed"}"#).unwrap() >= 1.0);
    assert!(series(r#"safepoint_drill_restore_seconds_count{policy="drilled"}"#).unwrap() >= 1.0);
    assert_eq!(
        series(r#"safepoint_drift{policy="app",kind="drill-failed"}"#),
        Some(0.0)
    );
    assert!(
        series(r#"safepoint_drill_last_success_timestamp_seconds{policy="drilled"}"#).is_none(),
        "no drill passed"
    );
    assert!(
        scrape.contains(&format!(
            "safepoint_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{scrape}"
    );
    assert!(!scrape.contains("missing.db"), "no error texts as labels");

    // The scrape passes Prometheus' own linter.
    let mut lint = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .output_with_stdin(scrape.as_bytes());
    assert!(lint.0, "promtool check metrics: {}", lint.1.split_off(0));

    // OpenMetrics on request, with its content type and # EOF.
    let (code, om) = request(
        addr,
        "GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text; version=1.0.0",
        b"",
    );
    assert_eq!(code, 200);
    assert!(
        om.to_lowercase()
            .contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{om}"
    );
    assert!(body(&om).trim_end().ends_with("# EOF"));

    // The API from the last cycle, ready.
    let (code, status) = get(addr, "/api/v1/status");
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(body(&status)).unwrap();
    assert_eq!(status["policies"].as_array().unwrap().len(), 3);
    let (code, backups) = get(addr, "/api/v1/backups");
    assert_eq!(code, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(body(&backups))
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        2,
        "app and drilled"
    );
    assert_eq!(get(addr, "/api/v1/plan").0, 200);
    assert_eq!(get(addr, "/readyz").0, 200);
    assert_eq!(get(addr, "/nope").0, 404);
    let big = vec![b'x'; 100 * 1024];
    assert_eq!(request(addr, "POST /api/v1/status HTTP/1.1", &big).0, 413);

    // A bad commit: revision metrics say so, the last valid one stays applied.
    f.commit(
        &[(
            "typo.yaml",
            &sqlite_policy("typo", "x.db").replace("schedule:", "schedul:"),
        )],
        "typo",
    );
    let scrape = wait_for("the rejected revision in the metrics", || {
        let text = body(&get(addr, "/metrics").1).to_string();
        (sample(&text, "safepoint_policy_revision_valid") == Some(0.0)).then_some(text)
    });
    let info = scrape
        .lines()
        .find(|l| l.starts_with("safepoint_policy_revision_info{"))
        .unwrap();
    let applied = info
        .split("applied=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let attempted = info
        .split("attempted=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    assert_ne!(applied, attempted, "{info}");
    assert_eq!(attempted.len(), 40);
}

trait OutputWithStdin {
    fn output_with_stdin(&mut self, input: &[u8]) -> (bool, String);
}

impl OutputWithStdin for std::process::Command {
    fn output_with_stdin(&mut self, input: &[u8]) -> (bool, String) {
        let mut child = self
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("promtool runs (apt-get install prometheus; see .ci/run)");
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }
}
