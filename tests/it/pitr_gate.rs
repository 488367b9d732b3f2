//! The deploy gate of a PITR policy: `deploy start` creates a restore point
//! (no snapshot) and answers once its WAL is archived; `restore
//! --before-deploy` recovers exactly to that point. Throwaway clusters.

use std::time::Instant;

use crate::common::{Fixture, STORAGE};
use crate::dbs::{Cluster, db_policy, psql_at};
use crate::pitr::{
    Restored, Stopped, archived_of, daemon, inserter, long_restore_parent, wait_until,
};

const POLICY: &str = "pitr-gate";

fn pitr_policy(port: u16) -> String {
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let deploy = "  deploy: {before: snapshot, onFailure: [pin-pre-deploy]}\n";
    db_policy(POLICY, "postgres", &url, deploy).replacen(
        "\n  storage: local",
        "\n    pitr: {walFlushInterval: 1s}\n  storage: local",
        1,
    )
}

/// The restore point's name in a gate step's detail (between backquotes).
fn point_of(detail: &str) -> String {
    detail
        .split('`')
        .nth(1)
        .unwrap_or_else(|| panic!("no restore point in {detail}"))
        .to_string()
}

#[test]
fn deploy_start_creates_a_restore_point_and_restore_before_deploy_lands_exactly_on_it() {
    let cluster = Cluster::start_with(None, "");
    let port = cluster.port;
    psql_at(
        port,
        "postgres",
        "CREATE TABLE t (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp()); \
         CREATE TABLE marks (what text NOT NULL)",
    );
    let f = Fixture::new(&[("storage.yaml", STORAGE), ("p.yaml", &pitr_policy(port))]);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(f.tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut children = Stopped(vec![inserter(port)]);
    let log = f.tmp.path().join("daemon.log");
    children.0.push(daemon(&f, &log));
    let logged = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until("the first WAL segment archived", 180, &logged, || {
        !archived_of(&f, POLICY).is_empty()
    });
    wait_until("the daemon's first base backup", 180, &logged, || {
        !f.backups(POLICY).is_empty()
    });
    std::thread::sleep(std::time::Duration::from_secs(1));

    psql_at(port, "postgres", "INSERT INTO marks VALUES ('before')");
    let before: u64 = psql_at(port, "postgres", "SELECT max(id) FROM t")
        .parse()
        .unwrap();
    let gate = Instant::now();
    let out = f
        .cmd()
        .args(["deploy", "start", "--release", "v1.4", "--policy", POLICY])
        .args(["--output", "json"])
        .output()
        .unwrap();
    let gate_secs = gate.elapsed().as_secs_f64();
    let after: u64 = psql_at(port, "postgres", "SELECT max(id) FROM t")
        .parse()
        .unwrap();
    psql_at(port, "postgres", "INSERT INTO marks VALUES ('after')");
    assert!(
        out.status.success(),
        "deploy start failed: {}{}\ndaemon log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        logged()
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let step = &report["steps"][0];
    assert_eq!(step["action"], "restore point", "{report}");
    assert!(step["backup_id"].is_null(), "no snapshot: {report}");
    let name = point_of(step["detail"].as_str().unwrap());
    assert!(name.starts_with("safepoint-v1.4-pitr-gate-"), "{name}");
    assert!(
        step["restore_command"]
            .as_str()
            .unwrap()
            .contains("--before-deploy v1.4"),
        "{report}"
    );
    assert!(f.backups(POLICY).len() == 1, "the gate took no backup");
    eprintln!("gate took {gate_secs:.2}s");

    // The same gate through the daemon's API: a restore point too.
    let text = logged();
    let addr: std::net::SocketAddr = text
        .lines()
        .find(|l| l.contains("http api listening"))
        .and_then(|l| l.split("addr=").nth(1))
        .and_then(|a| a.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no listen address in the daemon log:\n{text}"));
    let (code, api) = crate::webhooks::post(
        addr,
        "/api/v1/deploys/v1.3/start",
        &format!("{{\"wait\": true, \"policies\": [\"{POLICY}\"]}}"),
    );
    assert_eq!(code, 200, "{api}");
    assert_eq!(api["steps"][0]["action"], "restore point", "{api}");
    assert!(
        f.backups(POLICY).len() == 1,
        "the API gate took no backup either"
    );

    // The deploy failed: what restores to the restore point (the base
    // backup taken before it) is pinned; the command restores before it.
    let out = f
        .cmd()
        .args([
            "deploy",
            "finish",
            "--release",
            "v1.4",
            "--status",
            "failure",
        ])
        .args(["--policy", POLICY, "--output", "json"])
        .output()
        .unwrap();
    let finish: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let pin = &finish["steps"][0];
    assert_eq!(pin["ok"], true, "{finish}");
    assert_eq!(pin["backup_id"], f.backups(POLICY)[0]["id"], "{finish}");
    assert!(
        pin["restore_command"]
            .as_str()
            .unwrap()
            .contains("--before-deploy v1.4"),
        "{finish}"
    );

    // A --to-dir too long for the server's Unix socket: it serves on TCP.
    let parent = long_restore_parent();
    assert!(parent.join("data/.s.PGSQL.5432").as_os_str().len() > 107);
    let _restored = Restored(&parent);
    let out = f
        .cmd()
        .args([
            "restore",
            "--policy",
            POLICY,
            "--before-deploy",
            "v1.4",
            "--to-dir",
        ])
        .arg(parent.join("data"))
        .args(["--start", "--output", "json"])
        .output()
        .unwrap();
    let server_log =
        std::fs::read_to_string(parent.join("data/safepoint-restore.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "restore failed: {}\nserver log:\n{server_log}",
        String::from_utf8_lossy(&out.stderr),
    );
    let restored: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        restored["restorePoint"]["name"],
        name.as_str(),
        "{restored}"
    );
    assert!(
        server_log.contains(&format!("recovery stopping at restore point \"{name}\"")),
        "recovery stopped at the restore point:\n{server_log}"
    );
    let restored_port = restored["port"].as_u64().unwrap() as u16;
    assert_eq!(
        psql_at(
            restored_port,
            "postgres",
            "SELECT string_agg(what, ',') FROM marks"
        ),
        "before",
        "the mark inserted before the gate is there, the one after it is not"
    );
    // One session inserts: the restored rows are a prefix of the ids, every
    // row committed before the gate started, none committed after it answered.
    let rows = psql_at(
        restored_port,
        "postgres",
        "SELECT count(*) || ':' || min(id) || ':' || max(id) FROM t",
    );
    let parts: Vec<u64> = rows.split(':').map(|p| p.parse().unwrap()).collect();
    assert_eq!((parts[0], parts[1]), (parts[2], 1), "a prefix: {rows}");
    assert!(
        (before..=after).contains(&parts[2]),
        "restored up to id {} (before the gate {before}, after it {after})",
        parts[2]
    );
}

#[test]
fn a_gate_without_a_base_backup_fails_and_says_how_to_fix_it() {
    let cluster = Cluster::start_with(None, "");
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        ("p.yaml", &pitr_policy(cluster.port)),
    ]);
    let out = f
        .cmd()
        .args(["deploy", "start", "--release", "v2", "--policy", POLICY])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("no verified base backup") && text.contains("safepoint backup pitr-gate"),
        "{text}"
    );
    assert!(f.backups(POLICY).is_empty(), "the gate took no backup");

    let restore = |release: &str| {
        let out = f
            .cmd()
            .args(["restore", "--policy", POLICY, "--before-deploy", release])
            .arg("--to-dir")
            .arg(f.tmp.path().join("restored"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = restore("v9");
    assert!(
        err.contains("release v9 has no recorded `deploy start` for policy pitr-gate"),
        "{err}"
    );
    let err = restore("v2");
    assert!(err.contains("has no verified base backup yet"), "{err}");
}
