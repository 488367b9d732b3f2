//! The status page in a real browser: headless Chromium driven over
//! WebDriver (chromedriver on loopback, fantoccini), asserting on the
//! rendered DOM of `/`, a policy page and a backup page. Needs the Debian
//! packages `chromium` and `chromium-driver` (.ci/setup installs them).
//! With SAFEPOINT_SCREENSHOT=PATH it also saves a PNG of `/` there (how
//! docs/status-page.png is made).

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{ClientBuilder, Locator};

use crate::common::{Fixture, STORAGE, git, sqlite, sqlite_policy};
use crate::metrics::request;
use crate::webhooks::{HookSink, daemon, deploy_policy, webhook_notifier};

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// chromedriver on a free loopback port; fails loudly when not installed.
fn chromedriver() -> (Driver, u16) {
    for tool in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        assert!(
            Path::new(tool).exists(),
            "{tool} not found: run .ci/setup (it installs the Debian packages chromium and chromium-driver)"
        );
    }
    let port = crate::dbs::free_port();
    let child = Command::new("/usr/bin/chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Driver(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver does not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    (driver, port)
}

/// Moves `column` of the rows matching `filter` `hours` into the past.
fn backdate(db: &Path, table: &str, column: &str, filter: &str, hours: f64) {
    sqlite(
        db,
        &format!(
            "update {table} set {column} = strftime('%Y-%m-%dT%H:%M:%fZ', {column}, '-{} minutes') where {filter}",
            (hours * 60.0).round() as i64
        ),
    );
}

fn status(addr: SocketAddr) -> serde_json::Value {
    let (_, text) = request(addr, "GET /api/v1/status HTTP/1.1", b"");
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or(serde_json::Value::Null)
}

/// A month of history: scheduled and manual backups, a successful deploy
/// last week, a failed one two hours ago, a failing policy, a release tag
/// and a rejected commit.
fn history(f: &Fixture) {
    let db = f.data().join("catalog.db");
    for p in ["orders", "payments"] {
        std::fs::create_dir_all(f.work().join(format!("{p}-data"))).unwrap();
        std::fs::write(f.work().join(format!("{p}-data/rows.csv")), p.repeat(500)).unwrap();
    }
    for (i, hours) in [600.0, 430.0, 260.0, 90.0].iter().enumerate() {
        for p in ["orders", "payments"] {
            f.cmd().args(["backup", p]).assert().success();
        }
        let when = if i % 2 == 0 { "schedule" } else { "manual" };
        sqlite(
            &db,
            &format!(
                "update backups set trigger = '{when}' where trigger = 'manual' and started_at > strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-1 hour')"
            ),
        );
        backdate(
            &db,
            "backups",
            "started_at",
            "started_at > strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-1 hour')",
            *hours,
        );
        backdate(
            &db,
            "backups",
            "finished_at",
            "finished_at > strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-1 hour')",
            *hours,
        );
    }
    for (release, status, hours) in [("v1.3.0", "success", 150.0), ("v1.4.0", "failure", 2.0)] {
        f.cmd()
            .args(["deploy", "start", "--release", release])
            .assert()
            .success();
        f.cmd()
            .args(["deploy", "finish", "--release", release, "--status", status])
            .output()
            .unwrap();
        let recent = "> strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-1 hour')";
        backdate(&db, "deploys", "at", &format!("at {recent}"), hours);
        backdate(
            &db,
            "backups",
            "started_at",
            &format!("started_at {recent}"),
            hours,
        );
        backdate(
            &db,
            "backups",
            "finished_at",
            &format!("finished_at {recent}"),
            hours,
        );
    }
    git(&f.repo(), &["tag", "v1.4.0"]);
    f.commit(
        &[(
            "billing.yaml",
            &sqlite_policy("billing", "billing.db").replace("schedule:", "schedul:"),
        )],
        "add billing (typo)",
    );
}

#[test]
fn the_status_page_renders_policies_a_stalled_reason_and_deploy_marks_in_chromium() {
    let sink = HookSink::start();
    let orders = deploy_policy("orders", "chat").replace(
        "  rpo: 6h\n",
        "  rpo: 6h\n  releases: {tagPattern: \"v*\"}\n",
    );
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        (
            "chat.yaml",
            &webhook_notifier("chat", &sink.url("/hook"), "json"),
        ),
        ("orders.yaml", &orders),
        ("payments.yaml", &deploy_policy("payments", "chat")),
        (
            "analytics.yaml",
            &(sqlite_policy("analytics", "analytics.db") + "  alerts: {notifiers: [chat]}\n"),
        ),
    ]);
    history(&f);
    let d = daemon(&f, &[]);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let st = status(d.1);
        let stalled = st["diagnostics"].as_array().is_some_and(|a| !a.is_empty());
        let analytics_failed = st["policies"].as_array().is_some_and(|ps| {
            ps.iter()
                .any(|p| p["name"] == "analytics" && !p["drift"].as_array().unwrap().is_empty())
        });
        if stalled && analytics_failed {
            break;
        }
        assert!(Instant::now() < deadline, "the daemon never reported: {st}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_driver, port) = chromedriver();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,1500"]
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let c = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a chromium session");
        let base = format!("http://{}", d.1);
        c.goto(&format!("{base}/")).await.unwrap();

        let rows = c.find_all(Locator::Css("tr.policy")).await.unwrap();
        let mut names = Vec::new();
        for r in &rows {
            names.push(r.attr("data-policy").await.unwrap().unwrap_or_default());
        }
        names.sort();
        assert_eq!(names, ["analytics", "orders", "payments"]);
        let analytics = c
            .find(Locator::Css("tr.policy[data-policy='analytics'] .state"))
            .await
            .unwrap();
        assert_eq!(analytics.text().await.unwrap(), "Drift");

        let stalled = c.find(Locator::Css("#stalled li.diagnostic")).await.unwrap();
        let reason = stalled.text().await.unwrap();
        assert!(reason.contains("billing.yaml:"), "file:line in {reason}");

        let failed = c
            .find_all(Locator::Css(
                "svg.timeline g.mark[data-kind='deploy-finish'][data-status='failure']",
            ))
            .await
            .unwrap();
        assert_eq!(failed.len(), 2, "v1.4.0 failed for orders and payments");
        let ok = c
            .find_all(Locator::Css(
                "svg.timeline g.mark[data-kind='deploy-finish'][data-status='success']",
            ))
            .await
            .unwrap();
        assert_eq!(ok.len(), 2, "v1.3.0 succeeded for both");
        let backups = c
            .find_all(Locator::Css("svg.timeline circle[data-kind='backup']"))
            .await
            .unwrap();
        assert!(backups.len() >= 12, "{} backup marks", backups.len());

        if let Ok(path) = std::env::var("SAFEPOINT_SCREENSHOT") {
            std::fs::write(&path, c.screenshot().await.unwrap()).unwrap();
        }

        // Policy page, then one of its backups with the restore command.
        c.find(Locator::Css("tr.policy[data-policy='orders'] a"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let title = c.find(Locator::Css("main h2")).await.unwrap();
        assert_eq!(title.text().await.unwrap(), "Policy orders");
        c.find(Locator::Css("#backups a")).await.unwrap().click().await.unwrap();
        let restore = c.find(Locator::Css("pre.restore")).await.unwrap();
        let cmd = restore.text().await.unwrap();
        assert!(
            cmd.starts_with("safepoint restore 20") && cmd.ends_with("--to <TARGET>"),
            "{cmd}"
        );
        c.close().await.unwrap();
    });
}
