//! The production mail paths end to end: STARTTLS (the default, required),
//! implicit TLS, AUTH with `--smtp-password-file`, a permanent 5xx dropped
//! after one attempt, reminders, and a suspended policy that does not alert
//! on its missed RPO. The server is aiosmtpd (tests/fixtures/smtp_tls_sink.py)
//! with a self-signed certificate made by `openssl` for this test and trusted
//! through `--smtp-ca-file`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::common::{Fixture, STORAGE, sqlite, sqlite_policy};

fn python() -> PathBuf {
    let venv =
        std::env::var("SAFEPOINT_CI_VENV").unwrap_or_else(|_| "/opt/safepoint-ci/venv".into());
    let path = PathBuf::from(venv).join("bin/python");
    assert!(
        path.exists(),
        "{} not found: run .ci/setup (it creates the venv with aiosmtpd) or set SAFEPOINT_CI_VENV",
        path.display()
    );
    path
}

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is needed for the TLS mail tests: apt-get install openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test CA and a server certificate for 127.0.0.1 signed by it, in `dir`:
/// (cert.pem, key.pem, ca.pem). (webpki refuses a CA certificate used as the
/// server's own, so the server's certificate is a leaf.)
fn certificate(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=safepoint test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
        dir,
    );
    openssl(
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "key.pem",
            "-out",
            "leaf.csr",
        ],
        dir,
    );
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
            "-out",
            "cert.pem",
        ],
        dir,
    );
    (
        dir.join("cert.pem"),
        dir.join("key.pem"),
        dir.join("ca.pem"),
    )
}

pub struct TlsSink {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
    pub ca: PathBuf,
}

impl TlsSink {
    /// `mode`: starttls | tls | plain; `extra`: --auth USER:PASS, --reject CODE.
    pub fn start(root: &Path, mode: &str, extra: &[&str]) -> TlsSink {
        let dir = root.join("mail");
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key, ca) = certificate(root);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smtp_tls_sink.py");
        let mut child = Command::new(python())
            .arg(script)
            .arg(&dir)
            .args(["--mode", mode, "--cert"])
            .arg(&cert)
            .arg("--key")
            .arg(&key)
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the smtp sink starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("sink printed {line:?}"));
        TlsSink {
            child,
            port,
            dir,
            ca,
        }
    }

    pub fn mails(&self) -> Vec<String> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    }

    pub fn log(&self, name: &str) -> Vec<String> {
        std::fs::read_to_string(self.dir.join(name))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for TlsSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const NOTIFIER: &str = "apiVersion: safepoint/v1\nkind: Notifier\nmetadata:\n  name: oncall\nspec:\n  email:\n    to: [ops@example.com]\n";

/// A sqlite policy whose database is missing: every cycle fails its backup
/// (one problem: backup-failed) and alerts `oncall`.
fn failing() -> Fixture {
    let policy = sqlite_policy("app", "app.db").replace("  rpo: 2h\n", "")
        + "  alerts: {notifiers: [oncall]}\n";
    Fixture::new(&[
        ("storage.yaml", STORAGE),
        ("notifier.yaml", NOTIFIER),
        ("app.yaml", &policy),
    ])
}

/// `daemon --once` against the sink, no `--smtp-tls` unless in `extra`.
fn once(f: &Fixture, sink: &TlsSink, extra: &[&str]) -> String {
    let out = f
        .cmd()
        .args([
            "daemon",
            "--once",
            "--smtp-host",
            "127.0.0.1",
            "--smtp-port",
        ])
        .arg(sink.port.to_string())
        .args(["--smtp-from", "safepoint@example.com", "--smtp-ca-file"])
        .arg(&sink.ca)
        .args(extra)
        .env_remove("SAFEPOINT_SMTP_PASSWORD")
        .env("SAFEPOINT_LOG", "info")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "daemon --once failed: {log}");
    log
}

fn outbox(f: &Fixture) -> String {
    sqlite(
        &f.data().join("catalog.db"),
        "select state, kind, attempts from outbox order by id",
    )
}

#[test]
fn starttls_is_the_default_and_delivers_over_tls_with_auth_from_a_password_file() {
    let f = failing();
    let sink = TlsSink::start(f.tmp.path(), "starttls", &["--auth", "alerts:s3cret-pw"]);
    let pw = f.tmp.path().join("smtp-password");
    std::fs::write(&pw, "s3cret-pw\n").unwrap();
    let log = once(
        &f,
        &sink,
        &[
            "--smtp-username",
            "alerts",
            "--smtp-password-file",
            pw.to_str().unwrap(),
        ],
    );
    assert!(
        !log.contains("s3cret-pw"),
        "the password is never logged: {log}"
    );
    let mails = sink.mails();
    assert_eq!(mails.len(), 1, "{mails:#?} {log}");
    assert!(mails[0].contains("X-TLS: True"), "{}", mails[0]);
    assert!(
        mails[0].contains("FIRING backup-failed: policy app"),
        "{}",
        mails[0]
    );
    assert_eq!(
        sink.log("auth.log").len(),
        1,
        "one AUTH with the file's password"
    );
    assert_eq!(outbox(&f).trim(), "sent|FIRING|1");
}

#[test]
fn a_wrong_smtp_password_is_not_delivered_and_the_mail_stays_queued() {
    let f = failing();
    let sink = TlsSink::start(f.tmp.path(), "starttls", &["--auth", "alerts:right-pw"]);
    let pw = f.tmp.path().join("smtp-password");
    std::fs::write(&pw, "wrong-pw\n").unwrap();
    once(
        &f,
        &sink,
        &[
            "--smtp-username",
            "alerts",
            "--smtp-password-file",
            pw.to_str().unwrap(),
        ],
    );
    assert!(sink.mails().is_empty());
    assert!(sink.log("auth.log").is_empty());
    assert!(
        outbox(&f).starts_with("pending|FIRING|1") || outbox(&f).starts_with("failed|FIRING|1"),
        "{}",
        outbox(&f)
    );
}

#[test]
fn starttls_required_refuses_a_server_without_starttls() {
    let f = failing();
    let sink = TlsSink::start(f.tmp.path(), "plain", &[]);
    once(&f, &sink, &[]);
    assert!(
        sink.mails().is_empty(),
        "nothing in plaintext under the starttls default"
    );
    assert!(
        sink.log("rcpt.log").is_empty(),
        "no envelope was sent in plaintext"
    );
    assert!(outbox(&f).starts_with("pending|FIRING|1"), "{}", outbox(&f));
}

#[test]
fn implicit_tls_delivers() {
    let f = failing();
    let sink = TlsSink::start(f.tmp.path(), "tls", &[]);
    once(&f, &sink, &["--smtp-tls", "tls"]);
    let mails = sink.mails();
    assert_eq!(mails.len(), 1, "{mails:#?}");
    assert!(mails[0].contains("X-TLS: True"));
    assert_eq!(outbox(&f).trim(), "sent|FIRING|1");
}

#[test]
fn an_untrusted_certificate_is_refused() {
    let f = failing();
    let sink = TlsSink::start(f.tmp.path(), "starttls", &[]);
    // Without --smtp-ca-file the self-signed certificate is not trusted.
    let out = f
        .cmd()
        .args([
            "daemon",
            "--once",
            "--smtp-host",
            "127.0.0.1",
            "--smtp-port",
        ])
        .arg(sink.port.to_string())
        .args(["--smtp-from", "safepoint@example.com"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(sink.mails().is_empty());
    assert!(outbox(&f).starts_with("pending|FIRING|1"), "{}", outbox(&f));
}

#[test]
fn a_permanent_5xx_is_dropped_after_one_attempt_not_retried() {
    let f = failing();
    let sink = TlsSink::start(f.tmp.path(), "starttls", &["--reject", "550"]);
    once(&f, &sink, &[]);
    assert_eq!(sink.log("rcpt.log").len(), 1);
    let first = outbox(&f);
    assert_eq!(
        first.trim(),
        "failed|FIRING|1",
        "dropped, not queued for retry"
    );
    let last_error = sqlite(
        &f.data().join("catalog.db"),
        "select last_error from outbox",
    );
    assert!(last_error.contains("550"), "{last_error}");
    // Restarts do not pick it up again.
    once(&f, &sink, &[]);
    once(&f, &sink, &[]);
    assert_eq!(sink.log("rcpt.log").len(), 1, "never retried");
    assert_eq!(outbox(&f), first);
}

#[test]
fn a_persisting_problem_is_reminded_once_the_reminder_interval_has_passed() {
    let f = failing();
    let sink = TlsSink::start(f.tmp.path(), "starttls", &[]);
    once(&f, &sink, &["--alert-reminder", "3600"]);
    once(&f, &sink, &["--alert-reminder", "3600"]);
    assert_eq!(sink.mails().len(), 1, "no reminder within the interval");
    // The alert was notified two hours ago (as the catalog records it).
    sqlite(
        &f.data().join("catalog.db"),
        "update alerts set notified_at = '2000' || substr(notified_at, 5)",
    );
    once(&f, &sink, &["--alert-reminder", "3600"]);
    let mails = sink.mails();
    assert_eq!(mails.len(), 2, "{mails:#?}");
    assert!(
        mails[1].contains("REMINDER backup-failed: policy app"),
        "{}",
        mails[1]
    );
    // `0` turns reminders off.
    sqlite(
        &f.data().join("catalog.db"),
        "update alerts set notified_at = '2000' || substr(notified_at, 5)",
    );
    once(&f, &sink, &["--alert-reminder", "0"]);
    assert_eq!(sink.mails().len(), 2);
}

#[test]
fn a_suspended_policy_missing_its_rpo_does_not_alert() {
    // Two policies with an RPO whose sources are missing: the active one
    // alerts, the suspended one (no backups at all, RPO missed) does not.
    let policy = |name: &str, suspend: bool| {
        format!(
            "apiVersion: safepoint/v1\nkind: BackupPolicy\nmetadata:\n  name: {name}\nspec:\n  source: {{type: directory, path: missing-{name}}}\n  storage: local\n  schedule: {{cron: \"0 3 * * *\"}}\n  rpo: 1h\n  suspend: {suspend}\n  retention: {{keepLast: 2}}\n  alerts: {{notifiers: [oncall]}}\n"
        )
    };
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        ("notifier.yaml", NOTIFIER),
        ("active.yaml", &policy("active", false)),
        ("paused.yaml", &policy("paused", true)),
    ]);
    let sink = TlsSink::start(f.tmp.path(), "starttls", &[]);
    once(&f, &sink, &[]);
    once(&f, &sink, &[]);
    let mails = sink.mails();
    assert!(
        mails
            .iter()
            .any(|m| m.contains("rpo-missed: policy active")),
        "{mails:#?}"
    );
    assert!(
        !mails.iter().any(|m| m.contains("policy paused")),
        "a suspended policy alerted: {mails:#?}"
    );
    let st = f.json(&["status"]);
    let paused = st["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "paused")
        .cloned()
        .unwrap();
    assert_eq!(paused["reason"], "suspended", "{paused}");
}

/// A TCP server on loopback that accepts connections and never sends a
/// byte (a hung relay, a firewall that accepts and drops): the SMTP client
/// waits for a greeting that never comes.
fn silent_server() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    port
}

fn silent_smtp_args(port: u16) -> Vec<String> {
    [
        "--smtp-host",
        "127.0.0.1",
        "--smtp-port",
        &port.to_string(),
        "--smtp-tls",
        "none",
        "--smtp-from",
        "safepoint@example.com",
        "--smtp-timeout",
        "2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn smtp_timeout_bounds_a_delivery_to_a_server_that_never_answers() {
    let f = failing();
    let port = silent_server();
    // A hang guard, not a speed assertion: far above the 2 s timeout (a
    // cycle, one bounded attempt after it and one at shutdown), far below
    // "never" (assert_cmd kills the process then, and the test fails).
    let out = f
        .cmd()
        .args(["daemon", "--once"])
        .args(silent_smtp_args(port))
        .env("SAFEPOINT_LOG", "info")
        .timeout(std::time::Duration::from_secs(120))
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "daemon --once failed: {log}");
    assert!(
        log.contains("did not complete the delivery within 2 s"),
        "the timeout is named: {log}"
    );
    assert!(
        outbox(&f).starts_with("pending|FIRING|"),
        "the notice stays queued for a retry: {}",
        outbox(&f)
    );
}

#[test]
fn notify_test_smtp_timeout_reports_a_server_that_never_answers() {
    let f = failing();
    let port = silent_server();
    let out = f
        .cmd()
        .args(["notify", "test", "oncall"])
        .args(silent_smtp_args(port))
        .timeout(std::time::Duration::from_secs(60))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAILED email") && stdout.contains("within 2 s"),
        "{stdout}"
    );
}
