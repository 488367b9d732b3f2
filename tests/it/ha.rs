//! Several replicas (real processes, each with its own data directory) on
//! one PostgreSQL catalog and one shared storage: leases spread the
//! policies, a `kill -9`ed holder is taken over (its interrupted run closed,
//! its partial data removed, the backup retaken), and a deploy gate called
//! through any replica is answered by the holders.

use std::path::PathBuf;
use std::process::{Child, Stdio};

use crate::alerts::Sink;
use crate::common::{Fixture, PERMISSIVE, STORAGE, sqlite_policy};
use crate::contract_server::{listen_addr, wait_for};
use crate::dbs::{Cluster, PgDb, psql, psql_at};
use crate::webhooks::{TOKEN, deploy_policy, post};

const GATED: [&str; 4] = ["p0", "p1", "p2", "p3"];

/// A daily cron slot 12 hours away: no slot falls due while a test runs
/// (a test crossing 03:00 UTC took a second, legitimate, scheduled backup).
fn far_slot() -> String {
    let hours = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 3600;
    format!("0 {} * * *", (hours + 12) % 24)
}

/// A policy whose backup blocks until `release` exists (announcing itself
/// in `started`): the test decides when it ends.
fn slow_policy(started: &std::path::Path, release: &std::path::Path) -> String {
    slow_policy_with(started, release, "")
}

fn slow_policy_with(started: &std::path::Path, release: &std::path::Path, extra: &str) -> String {
    format!(
        "apiVersion: safepoint/v1\nkind: BackupPolicy\nmetadata:\n  name: slow\nspec:\n{extra}  source:\n    type: command\n    backupCommand: 'touch {s}; while [ ! -e {r} ]; do sleep 0.05; done; echo data'\n    restoreCommand: 'cat > /dev/null'\n  storage: local\n  schedule: {{cron: \"{cron}\", timezone: UTC}}\n  retention: {{keepLast: 5}}\n",
        s = started.display(),
        r = release.display(),
        cron = far_slot()
    )
}

struct Replica {
    name: String,
    child: Child,
    log: PathBuf,
    addr: std::net::SocketAddr,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(f: &Fixture, catalog: &str, name: &str) -> Replica {
    start_with(f, catalog, name, &[])
}

fn start_with(f: &Fixture, catalog: &str, name: &str, extra: &[&str]) -> Replica {
    let log = f.tmp.path().join(format!("{name}.log"));
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("safepoint"))
        .current_dir(f.work())
        .arg("--permissions")
        .arg(f.permissions_file())
        .arg("--repo")
        .arg(f.repo())
        .arg("--data-dir")
        .arg(f.work().join(format!("data-{name}")))
        .args(["--catalog", catalog])
        .args(["--log-format", "json", "daemon", "--listen", "127.0.0.1:0"])
        .args(["--api-tokens-file", "tokens", "--lease-ttl", "3"])
        .args(["--replica-id", name])
        .args(extra)
        .env("SAFEPOINT_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let addr = listen_addr(&format!("{name}'s listener"), &log);
    Replica {
        name: name.to_string(),
        child,
        log,
        addr,
    }
}

/// Live leases per holder.
fn loads(db: &PgDb) -> Vec<(String, usize)> {
    psql(
        &db.name,
        "SELECT holder || ' ' || count(*) FROM leases
         WHERE expires_at > (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT
         GROUP BY holder ORDER BY holder",
    )
    .lines()
    .filter_map(|l| {
        let (h, n) = l.split_once(' ')?;
        Some((h.to_string(), n.parse().ok()?))
    })
    .collect()
}

fn holder(db: &PgDb, lease: &str) -> String {
    psql(
        &db.name,
        &format!("SELECT holder FROM leases WHERE name = '{lease}'"),
    )
}

/// `wait_for`, telling what the replicas logged and hold when it times out.
fn wait(what: &str, replicas: &[Replica], db: &PgDb, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !cond() {
        if std::time::Instant::now() > deadline {
            let logs: Vec<String> = replicas
                .iter()
                .map(|r| {
                    let text = std::fs::read_to_string(&r.log).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(40).collect();
                    format!(
                        "--- {}:\n{}",
                        r.name,
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    )
                })
                .collect();
            panic!(
                "timed out waiting for {what}\nleases:\n{}\nruns:\n{}\n{}",
                psql(
                    &db.name,
                    "SELECT name, holder, epoch, expires_at FROM leases"
                ),
                psql(&db.name, "SELECT policy, outcome, error FROM runs"),
                logs.join("\n")
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn count(db: &PgDb, sql: &str) -> usize {
    psql(&db.name, sql).trim().parse().unwrap_or(usize::MAX)
}

#[test]
fn three_replicas_spread_the_policies_take_over_a_killed_holder_and_answer_gates_anywhere() {
    let started = tempfile::NamedTempFile::new().unwrap().into_temp_path();
    std::fs::remove_file(&started).unwrap();
    let release = started.with_extension("release");
    let mut files = vec![
        ("storage.yaml".to_string(), STORAGE.to_string()),
        ("slow.yaml".to_string(), slow_policy(&started, &release)),
    ];
    for p in GATED {
        files.push((
            format!("{p}.yaml"),
            deploy_policy(p, "").replace("0 3 * * *", &far_slot()),
        ));
    }
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let f = Fixture::new(&refs);
    f.permit(PERMISSIVE);
    for p in GATED {
        std::fs::create_dir_all(f.work().join(format!("{p}-data"))).unwrap();
        std::fs::write(f.work().join(format!("{p}-data/a.txt")), p).unwrap();
    }
    std::fs::write(f.work().join("tokens"), format!("ci {TOKEN}\n")).unwrap();
    let db = PgDb::new("sp_ha");
    let mut replicas: Vec<Replica> = ["r1", "r2", "r3"]
        .iter()
        .map(|n| start(&f, &db.url(), n))
        .collect();

    // Every gated policy gets its first backup exactly once; `slow` starts.
    wait_for("a first backup of every gated policy", || {
        count(
            &db,
            "SELECT count(DISTINCT policy) FROM backups WHERE health = 'verified' AND policy <> 'slow'",
        ) == GATED.len()
    });
    wait_for("the slow backup to start", || started.exists());

    // kill -9 the replica running it: another takes the policy over, closes
    // the interrupted run, removes the partial data and retakes the backup.
    let victim = holder(&db, "slow");
    let at = replicas.iter().position(|r| r.name == victim).unwrap();
    let mut killed = replicas.remove(at);
    killed.child.kill().unwrap();
    killed.child.wait().unwrap();
    std::fs::write(&release, "go").unwrap();
    wait(
        "the slow backup retaken by another replica",
        &replicas,
        &db,
        || {
            count(
                &db,
                "SELECT count(*) FROM backups WHERE policy = 'slow' AND health = 'verified'",
            ) == 1
        },
    );
    assert_ne!(holder(&db, "slow"), victim);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM runs WHERE policy = 'slow' AND outcome = 'interrupted'"
        ),
        1,
        "{}",
        psql(&db.name, "SELECT policy, outcome, error FROM runs")
    );
    let stored: Vec<String> = std::fs::read_dir(f.store().join("slow"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.') && !n.starts_with('_'))
        .collect();
    assert_eq!(
        stored.len(),
        1,
        "no partial backup stays visible: {stored:?}"
    );

    // The two survivors share the leases evenly (6 names: 3 each).
    wait(
        "the leases spread over the survivors",
        &replicas,
        &db,
        || {
            let l = loads(&db);
            l.len() == 2
                && l.iter().all(|(h, n)| *n <= 3 && *h != victim)
                && l.iter().map(|(_, n)| n).sum::<usize>() == GATED.len() + 2
        },
    );

    // A deploy gate through either survivor: its policies' holders take the
    // snapshots, the caller's replica answers with all of them.
    let via = &replicas[0];
    let (code, body) = post(via.addr, "/api/v1/deploys/v1/start", "{\"wait\": true}");
    assert_eq!(code, 200, "{body}");
    let steps = body["steps"].as_array().unwrap();
    assert_eq!(steps.len(), GATED.len(), "{body}");
    assert!(steps.iter().all(|s| s["ok"] == true), "{body}");
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM backups WHERE trigger = 'pre-deploy' AND release = 'v1' AND health = 'verified'"
        ),
        GATED.len()
    );
    let log = std::fs::read_to_string(&via.log).unwrap();
    assert!(
        log.contains("handed to the replicas holding"),
        "some policies are held by the other replica: {}",
        via.name
    );

    // No scheduled slot was backed up twice; the audit chain is one chain.
    for p in GATED {
        assert_eq!(
            count(
                &db,
                &format!(
                    "SELECT count(*) FROM backups WHERE policy = '{p}' AND trigger = 'schedule'"
                )
            ),
            1,
            "{p}"
        );
    }
    let out = f
        .cmd()
        .args(["--catalog", &db.url(), "audit", "verify"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn replica_flags_need_a_postgres_catalog() {
    let f = Fixture::new(&[("storage.yaml", STORAGE)]);
    let out = f
        .cmd()
        .args(["daemon", "--once", "--replica-id", "r1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--replica-id needs a shared PostgreSQL catalog"),
        "{err}"
    );
    let db = PgDb::new("sp_ha_flags");
    let out = f
        .cmd()
        .args([
            "--catalog",
            &db.url(),
            "daemon",
            "--once",
            "--lease-ttl",
            "1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--lease-ttl must be at least 3 seconds"),
        "{err}"
    );
}

/// Whether any complete backup (a manifest) of `policy` is in the store.
fn manifests(f: &Fixture, policy: &str) -> usize {
    let Ok(dirs) = std::fs::read_dir(f.store().join(policy)) else {
        return 0;
    };
    dirs.filter(|d| {
        d.as_ref()
            .is_ok_and(|d| d.path().join("manifest.json").exists())
    })
    .count()
}

#[test]
fn a_replica_cut_off_from_the_catalog_cancels_its_backup_which_never_becomes_visible() {
    let started = tempfile::NamedTempFile::new().unwrap().into_temp_path();
    std::fs::remove_file(&started).unwrap();
    let release = started.with_extension("release");
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        ("slow.yaml", &slow_policy(&started, &release)),
    ]);
    f.permit(PERMISSIVE);
    std::fs::write(f.work().join("tokens"), format!("ci {TOKEN}\n")).unwrap();
    let cluster = Cluster::start(None);
    psql_at(cluster.port, "postgres", "CREATE DATABASE catalog");
    let url = format!("postgres://postgres@127.0.0.1:{}/catalog", cluster.port);
    let r1 = start(&f, &url, "r1");
    wait_for("the slow backup to start", || started.exists());

    // The catalog goes away: the lease cannot be renewed, so the backup is
    // cancelled before the lease could pass to another replica, and even
    // when its source finishes afterwards nothing becomes visible.
    cluster.kill();
    wait_for(
        "the backup's source process stopped for the lost lease",
        || {
            !std::process::Command::new("pgrep")
                .args(["-f", &release.display().to_string()])
                .status()
                .unwrap()
                .success()
        },
    );
    std::fs::write(&release, "go").unwrap();
    std::thread::sleep(std::time::Duration::from_secs(4));
    assert_eq!(
        manifests(&f, "slow"),
        0,
        "no backup of a lost lease is visible"
    );

    // The catalog is back: the replica takes the lease again, closes the
    // run it could not record, and takes the backup; nothing was lost.
    cluster.resume();
    wait_for("the backup retaken after the catalog came back", || {
        psql_at(
            cluster.port,
            "catalog",
            "SELECT count(*) FROM backups WHERE policy = 'slow' AND health = 'verified'",
        ) == "1"
    });
    assert_eq!(manifests(&f, "slow"), 1);
    let outcomes = psql_at(
        cluster.port,
        "catalog",
        "SELECT string_agg(outcome, ',' ORDER BY id) FROM runs WHERE policy = 'slow'",
    );
    assert_eq!(outcomes, "interrupted,succeeded");
    let log = std::fs::read_to_string(&r1.log).unwrap();
    assert!(log.contains("no longer holds the lease of slow"), "{log}");
    f.cmd()
        .args(["--catalog", &url, "audit", "verify"])
        .assert()
        .success();
}

#[test]
fn a_gate_through_another_replica_survives_the_death_of_the_holder_mid_snapshot() {
    let started = tempfile::NamedTempFile::new().unwrap().into_temp_path();
    std::fs::remove_file(&started).unwrap();
    let release = started.with_extension("release");
    let gated = slow_policy_with(&started, &release, "  deploy: {before: snapshot}\n");
    // The first scheduled backup must not block: it is let through, then
    // the gate's snapshot is held.
    let f = Fixture::new(&[("storage.yaml", STORAGE), ("slow.yaml", &gated)]);
    f.permit(PERMISSIVE);
    std::fs::write(f.work().join("tokens"), format!("ci {TOKEN}\n")).unwrap();
    std::fs::write(&release, "go").unwrap();
    let db = PgDb::new("sp_ha_gate");
    let mut replicas: Vec<Replica> = ["g1", "g2"]
        .iter()
        .map(|n| start(&f, &db.url(), n))
        .collect();
    wait_for("the first backup", || {
        count(
            &db,
            "SELECT count(*) FROM backups WHERE health = 'verified'",
        ) == 1
    });
    wait_for("both replicas live and the lease settled", || {
        loads(&db).len() == 2
    });
    std::fs::remove_file(&release).unwrap();
    std::fs::remove_file(&started).unwrap();
    let holder_name = holder(&db, "slow");
    let via = replicas.iter().position(|r| r.name != holder_name).unwrap();
    let addr = replicas[via].addr;
    let gate =
        std::thread::spawn(move || post(addr, "/api/v1/deploys/v9/start", "{\"wait\": true}"));
    wait_for("the gate's snapshot to start on the holder", || {
        started.exists()
    });
    let at = replicas.iter().position(|r| r.name == holder_name).unwrap();
    let mut dead = replicas.remove(at);
    dead.child.kill().unwrap();
    dead.child.wait().unwrap();
    std::fs::write(&release, "go").unwrap();
    let (code, body) = gate.join().unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["steps"][0]["ok"], true, "{body}");
    let id = body["steps"][0]["backup_id"].as_str().unwrap().to_string();
    assert_eq!(
        psql(
            &db.name,
            &format!("SELECT trigger || ' ' || health FROM backups WHERE id = '{id}'")
        ),
        "pre-deploy verified"
    );
    assert_eq!(holder(&db, "slow"), replicas[0].name);
    // The holder had started the snapshot; it was closed as interrupted.
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM runs WHERE outcome = 'interrupted'"
        ),
        1
    );
}

#[test]
fn three_replicas_send_one_mail_per_notice_and_reject_a_bad_commit_once() {
    let notifier = "apiVersion: safepoint/v1\nkind: Notifier\nmetadata:\n  name: oncall\nspec:\n  email:\n    to: [ops@example.com]\n";
    // A policy whose backups fail (its database file does not exist).
    let failing = sqlite_policy("app", "missing.db").replace("  rpo: 2h\n", "")
        + "  alerts: {notifiers: [oncall]}\n";
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        ("notifier.yaml", notifier),
        ("app.yaml", &failing),
    ]);
    f.permit(PERMISSIVE);
    std::fs::write(f.work().join("tokens"), format!("ci {TOKEN}\n")).unwrap();
    let sink = Sink::start(&f.tmp.path().join("mails"));
    let port = sink.port.to_string();
    let smtp = [
        "--smtp-host",
        "127.0.0.1",
        "--smtp-tls",
        "none",
        "--smtp-port",
        &port,
        "--smtp-from",
        "safepoint@example.com",
        "--outbox-poll",
        "1",
    ];
    let db = PgDb::new("sp_ha_mail");
    let replicas: Vec<Replica> = ["m1", "m2", "m3"]
        .iter()
        .map(|n| start_with(&f, &db.url(), n, &smtp))
        .collect();
    wait("the alert mail", &replicas, &db, || {
        !sink.mails().is_empty()
    });
    // Every replica sees the failure; rounds and cycles go on.
    std::thread::sleep(std::time::Duration::from_secs(4));
    let mails = sink.mails();
    assert_eq!(mails.len(), 1, "one mail per notice: {mails:?}");
    assert!(mails[0].contains("app"), "{}", mails[0]);

    // A bad commit: rejected once, one audit entry, whatever the replicas.
    f.commit(
        &[("broken.yaml", "apiVersion: safepoint/v1\nkind: Nonsense\n")],
        "broken",
    );
    wait_for("the bad commit rejected", || {
        count(&db, "SELECT count(*) FROM revisions WHERE valid = 0") >= 1
    });
    std::thread::sleep(std::time::Duration::from_secs(4));
    assert_eq!(
        count(&db, "SELECT count(*) FROM revisions WHERE valid = 0"),
        1
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM audit WHERE kind = 'revision-rejected'"
        ),
        1
    );
}
