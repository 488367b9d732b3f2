//! Email alerts end to end: the real daemon (`daemon --once`, a new process
//! each time, so every step is also a restart) mails a real SMTP sink
//! (aiosmtpd on a loopback port, tests/fixtures/smtp_sink.py).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::common::{Fixture, STORAGE, sqlite, sqlite_policy};

/// The Python with aiosmtpd that .ci/setup installs.
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

/// A running SMTP sink writing each mail to `dir` as NNNN.eml.
pub struct Sink {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

impl Sink {
    pub fn start(dir: &Path) -> Sink {
        std::fs::create_dir_all(dir).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smtp_sink.py");
        let mut child = Command::new(python())
            .arg(script)
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
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
        Sink {
            child,
            port,
            dir: dir.to_path_buf(),
        }
    }

    /// The mails received so far, in order.
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
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn subject(mail: &str) -> &str {
    mail.lines()
        .find_map(|l| l.strip_prefix("Subject: "))
        .unwrap_or("")
}

const NOTIFIER: &str = r#"apiVersion: safepoint/v1
kind: Notifier
metadata:
  name: oncall
spec:
  email:
    to: [ops@example.com]
"#;

/// A sqlite policy without RPO (so a failure is one problem: backup-failed)
/// that alerts `oncall`.
fn alerting_policy() -> String {
    sqlite_policy("app", "app.db").replace("  rpo: 2h\n", "") + "  alerts: {notifiers: [oncall]}\n"
}

fn run_once(f: &Fixture, port: u16) -> std::process::Output {
    let out = f
        .cmd()
        .args([
            "daemon",
            "--once",
            "--smtp-host",
            "127.0.0.1",
            "--smtp-tls",
            "none",
        ])
        .args([
            "--smtp-port",
            &port.to_string(),
            "--smtp-from",
            "safepoint@example.com",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "daemon --once failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn one_mail_per_problem_none_while_it_persists_one_when_resolved_across_restarts_and_an_smtp_outage()
 {
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        ("notifier.yaml", NOTIFIER),
        ("app.yaml", &alerting_policy()),
    ]);
    let sink = Sink::start(&f.tmp.path().join("mail"));
    let catalog = f.data().join("catalog.db");

    // 1. The source is missing: the backup fails while SMTP is down. The
    //    daemon keeps working and keeps the mail queued.
    let out = run_once(&f, closed_port());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("queued for retry"), "{log}");
    assert_eq!(
        sqlite(&catalog, "select state, kind, reason from outbox").trim(),
        "pending|FIRING|backup-failed"
    );
    assert!(sink.mails().is_empty());

    // 2. Restart with SMTP up: the queued mail goes out, nothing is re-decided.
    run_once(&f, sink.port);
    let mails = sink.mails();
    assert_eq!(mails.len(), 1, "{mails:#?}");
    let m = &mails[0];
    assert_eq!(subject(m), "[safepoint] FIRING backup-failed: policy app");
    assert!(m.contains("X-Envelope-From: safepoint@example.com"), "{m}");
    assert!(m.contains("X-Envelope-To: ops@example.com"), "{m}");
    assert!(m.contains("Policy:     app"), "{m}");
    assert!(m.contains("Since:      "), "{m}");
    assert!(m.contains("Last good:  none"), "{m}");
    assert!(m.contains("app.db"), "says what failed: {m}");
    assert!(
        m.contains("`safepoint backup app`"),
        "says what to run: {m}"
    );

    // 3. The failure persists across another restart: no new mail.
    run_once(&f, sink.port);
    assert_eq!(sink.mails().len(), 1);

    // 4. Fixed: a manual backup succeeds, the next cycle sends "resolved".
    f.make_sqlite("app.db");
    f.cmd().args(["backup", "app"]).assert().success();
    run_once(&f, sink.port);
    let mails = sink.mails();
    assert_eq!(mails.len(), 2, "{mails:#?}");
    let m = &mails[1];
    assert_eq!(subject(m), "[safepoint] RESOLVED backup-failed: policy app");
    let id = f.backups("app")[0]["id"].as_str().unwrap().to_string();
    assert!(m.contains(&format!("Last good:  {id}")), "{m}");

    // 5. Healthy and restarted again: silence.
    run_once(&f, sink.port);
    assert_eq!(sink.mails().len(), 2);
    assert_eq!(
        sqlite(&catalog, "select count(*) from outbox where state = 'sent'").trim(),
        "2"
    );
}

#[test]
fn an_invalid_commit_mails_the_notifiers_of_the_revision_in_force() {
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        ("notifier.yaml", NOTIFIER),
        ("app.yaml", &alerting_policy()),
    ]);
    f.make_sqlite("app.db");
    let sink = Sink::start(&f.tmp.path().join("mail"));
    run_once(&f, sink.port);
    assert!(sink.mails().is_empty(), "healthy: no mail");
    f.commit(
        &[(
            "broken.yaml",
            &sqlite_policy("broken", "x.db").replace("schedule:", "schedul:"),
        )],
        "typo",
    );
    run_once(&f, sink.port);
    let mails = sink.mails();
    assert_eq!(mails.len(), 1, "{mails:#?}");
    assert_eq!(
        subject(&mails[0]),
        "[safepoint] FIRING policy-invalid: policy repository"
    );
    assert!(mails[0].contains("broken.yaml"), "{}", mails[0]);
    assert!(mails[0].contains("`safepoint validate`"), "{}", mails[0]);
}

#[test]
fn a_failed_deploy_mails_the_restore_command_to_the_policys_notifiers() {
    let policy = r#"apiVersion: safepoint/v1
kind: BackupPolicy
metadata:
  name: orders
spec:
  source: {type: sqlite, path: orders.db}
  storage: local
  deploy:
    before: snapshot
    onFailure: [alert]
  retention: {keepLast: 3}
  alerts: {notifiers: [oncall]}
"#;
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        ("notifier.yaml", NOTIFIER),
        ("orders.yaml", policy),
    ]);
    f.make_sqlite("orders.db");
    let sink = Sink::start(&f.tmp.path().join("mail"));
    f.cmd()
        .args(["deploy", "start", "--release", "v1.4.0"])
        .assert()
        .success();
    f.cmd()
        .args([
            "deploy",
            "finish",
            "--release",
            "v1.4.0",
            "--status",
            "failure",
        ])
        .assert()
        .success();
    // The CLI queued it; the daemon delivers it.
    run_once(&f, sink.port);
    let mails = sink.mails();
    assert_eq!(mails.len(), 1, "{mails:#?}");
    assert_eq!(
        subject(&mails[0]),
        "[safepoint] deploy-failed: policy orders"
    );
    assert!(
        mails[0].contains("safepoint restore --policy orders --release v1.4.0 --pre-deploy"),
        "{}",
        mails[0]
    );
    run_once(&f, sink.port);
    assert_eq!(sink.mails().len(), 1, "an event is mailed once");
}
