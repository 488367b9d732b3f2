//! The recoverable window of a PITR policy (status, drift) and WAL
//! retention (prune, slot drop on `prune --orphans`). Throwaway clusters.

use std::path::PathBuf;

use crate::common::{Fixture, STORAGE};
use crate::dbs::{Cluster, db_policy, psql_at};
use crate::pitr::{Stopped, archived_of, daemon, wait_until};

fn pitr_policy(name: &str, port: u16) -> String {
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    db_policy(name, "postgres", &url, "").replacen(
        "\n  storage: local",
        "\n    pitr: {walFlushInterval: 1s}\n  storage: local",
        1,
    )
}

/// A throwaway cluster (with `extra` server options) holding table `t`, and
/// a fixture whose one policy `policy` archives it.
fn archived_cluster(policy: &str, extra: &str) -> (Cluster, Fixture) {
    let cluster = Cluster::start_with(None, extra);
    psql_at(
        cluster.port,
        "postgres",
        "CREATE TABLE t (id bigserial PRIMARY KEY)",
    );
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        ("p.yaml", &pitr_policy(policy, cluster.port)),
    ]);
    (cluster, f)
}

/// Complete segments archived for `policy`, oldest first.
fn complete(f: &Fixture, policy: &str) -> Vec<String> {
    let mut names: Vec<String> = archived_of(f, policy)
        .into_iter()
        .filter(|n| !n.contains(".partial") && !n.contains(".history"))
        .collect();
    names.sort();
    names
}

/// Writes a row and completes the WAL segment, `n` times.
fn switch_segments(port: u16, n: usize) {
    for _ in 0..n {
        psql_at(
            port,
            "postgres",
            "INSERT INTO t DEFAULT VALUES; SELECT pg_switch_wal()",
        );
    }
}

/// `safepoint status --output json` (exit 0 or 1) and its exit code.
fn status(f: &Fixture) -> (serde_json::Value, i32) {
    let out = f
        .cmd()
        .args(["status", "--output", "json"])
        .output()
        .unwrap();
    let code = out.status.code().unwrap();
    assert!(code <= 1, "{}", String::from_utf8_lossy(&out.stderr));
    (serde_json::from_slice(&out.stdout).unwrap(), code)
}

fn started(f: &Fixture, policy: &str, log: PathBuf) -> (Stopped, impl Fn() -> String + use<>) {
    let mut children = Stopped(Vec::new());
    children.0.push(daemon(f, &log));
    let logged = move || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until("the first WAL segment archived", 180, &logged, || {
        !archived_of(f, policy).is_empty()
    });
    wait_until("the daemon's first base backup", 180, &logged, || {
        !f.backups(policy).is_empty()
    });
    (children, logged)
}

/// The daemon's `/metrics` (its address from its log).
fn scrape(log: &str) -> String {
    let addr: std::net::SocketAddr = log
        .lines()
        .find_map(|l| l.split("addr=").nth(1))
        .expect("the daemon logs its address")
        .trim()
        .parse()
        .unwrap();
    crate::metrics::request(addr, "GET /metrics HTTP/1.1", b"").1
}

/// Whether a sample of `name` with every one of `labels` has a value `value` accepts.
fn has_sample(scrape: &str, name: &str, labels: &[&str], value: impl Fn(f64) -> bool) -> bool {
    scrape.lines().any(|l| {
        l.starts_with(&format!("{name}{{"))
            && labels.iter().all(|x| l.contains(x))
            && l.rsplit(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .is_some_and(&value)
    })
}

#[test]
fn status_shows_the_window_and_a_deleted_wal_segment_is_drift() {
    const POLICY: &str = "pitr-window";
    let (cluster, f) = archived_cluster(POLICY, "");
    let port = cluster.port;
    let (_children, logged) = started(&f, POLICY, f.tmp.path().join("daemon.log"));
    // Counted from the newest one: WAL retention may remove segments
    // archived before the first base backup meanwhile.
    let newest = complete(&f, POLICY).last().cloned().unwrap_or_default();
    switch_segments(port, 3);
    wait_until("three more segments archived", 60, &logged, || {
        complete(&f, POLICY).iter().filter(|n| **n > newest).count() >= 3
    });
    let window = |st: &serde_json::Value| st["policies"][0]["pitr"].clone();
    wait_until("the window in status", 60, &logged, || {
        let (st, _) = status(&f);
        !window(&st)["window_start"].is_null() && !window(&st)["window_end"].is_null()
    });
    let (st, code) = status(&f);
    let w = window(&st);
    assert_eq!(code, 0, "{st}");
    assert_eq!(w["gaps"], serde_json::json!([]), "{st}");
    assert!(
        w["window_start"].as_str() < w["window_end"].as_str(),
        "{st}"
    );
    assert!(w["lag_seconds"].as_i64().unwrap() <= w["allowed_lag_seconds"].as_i64().unwrap());

    let policy_label = format!("policy=\"{POLICY}\"");
    wait_until("the window in the metrics", 60, &logged, || {
        let m = scrape(&logged());
        let at = |n: &str| has_sample(&m, n, &[&policy_label], |v| v > 1.7e9);
        let lag = |n: &str| has_sample(&m, n, &[&policy_label], |v| v >= 0.0);
        at("safepoint_pitr_window_start_timestamp_seconds")
            && at("safepoint_pitr_window_end_timestamp_seconds")
            && lag("safepoint_pitr_wal_lag_seconds")
            && lag("safepoint_pitr_wal_lag_bytes")
    });

    // The segment before the newest complete one: after the base backup's start.
    let segments = complete(&f, POLICY);
    let victim = segments[segments.len() - 2].clone();
    std::fs::remove_file(f.store().join("_wal").join(POLICY).join(&victim)).unwrap();
    let segment = victim.split('~').next().unwrap().to_string();
    let shown = || format!("{}\n{}", status(&f).0, logged());
    wait_until("the gap as drift", 60, &shown, || {
        let (st, _) = status(&f);
        st["policies"][0]["drift"]
            .as_array()
            .unwrap()
            .contains(&"wal-archive-gap".into())
    });
    wait_until("the gap in the drift metric", 60, &logged, || {
        let m = scrape(&logged());
        has_sample(
            &m,
            "safepoint_drift",
            &[&policy_label, "kind=\"wal-archive-gap\""],
            |v| v == 1.0,
        )
    });
    let (st, _) = status(&f);
    assert_eq!(window(&st)["gaps"], serde_json::json!([segment]), "{st}");
    assert_eq!(st["policies"][0]["ready"], false, "{st}");
    assert!(
        window(&st)["window_start"].is_null(),
        "no base backup can cross the gap: {st}"
    );
    assert!(
        st["policies"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("wal-archive-gap"),
        "{st}"
    );
}

#[test]
fn prune_deletes_the_wal_only_the_deleted_base_backup_needed_and_drops_the_slot_with_orphans() {
    const POLICY: &str = "pitr-prune";
    let (cluster, f) = archived_cluster(POLICY, "");
    let port = cluster.port;
    let (children, logged) = started(&f, POLICY, f.tmp.path().join("daemon.log"));
    let first = f.backups(POLICY)[0]["id"].as_str().unwrap().to_string();
    switch_segments(port, 2);
    f.cmd().args(["backup", POLICY]).assert().success();
    let second = f
        .backups(POLICY)
        .into_iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .find(|b| *b != first)
        .unwrap();
    switch_segments(port, 1);
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(f.store().join(POLICY).join(&second).join("manifest.json")).unwrap(),
    )
    .unwrap();
    let start_wal = manifest["tools"]["pitr.startWal"]
        .as_str()
        .unwrap()
        .to_string();
    wait_until("the second base backup's WAL archived", 60, &logged, || {
        complete(&f, POLICY)
            .iter()
            .any(|n| n.as_str() > start_wal.as_str())
    });
    drop(children);
    let older = |f: &Fixture| {
        complete(f, POLICY)
            .into_iter()
            .filter(|n| n.as_str() < start_wal.as_str())
            .count()
    };
    assert!(
        older(&f) > 0,
        "WAL from before the second base backup is archived"
    );

    let keep_one = pitr_policy(POLICY, port)
        .replacen("keepLast: 5", "keepLast: 1", 1)
        .replacen(
            &format!("  name: {POLICY}\n"),
            &format!("  name: {POLICY}\n  annotations: {{safepoint.io/allow-deletions: \"1\"}}\n"),
            1,
        );
    f.commit(&[("p.yaml", &keep_one)], "keep one base backup");
    let out = f.cmd().args(["prune", "--dry-run"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("would delete {POLICY}/{first}")),
        "{text}"
    );
    assert!(
        text.contains(&format!("WAL object(s) of {POLICY}"))
            && text.contains(&format!(
                "before {start_wal}, the first segment of base backup {second}"
            )),
        "{text}"
    );
    assert!(older(&f) > 0, "a dry run deletes nothing");
    f.cmd().arg("prune").assert().success();
    assert_eq!(
        older(&f),
        0,
        "the WAL only the deleted base backup needed is gone"
    );
    assert!(
        complete(&f, POLICY)
            .iter()
            .any(|n| n.starts_with(&start_wal)),
        "the kept base backup's WAL stays"
    );

    // The policy leaves Git: its slot goes only with its backups (--orphans).
    std::fs::remove_file(f.repo().join("policies/p.yaml")).unwrap();
    let acknowledged = STORAGE.replacen(
        "metadata:\n",
        &format!("metadata:\n  annotations: {{safepoint.io/allow-orphans: {POLICY}}}\n"),
        1,
    );
    f.commit(&[("storage.yaml", &acknowledged)], "drop the PITR policy");
    let slots = || {
        psql_at(
            port,
            "postgres",
            "SELECT count(*) FROM pg_replication_slots",
        )
    };
    f.cmd().arg("prune").assert().success();
    assert_eq!(slots(), "1", "prune without --orphans keeps the slot");
    let out = f
        .cmd()
        .args(["prune", "--orphans", "--dry-run"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("would drop slot safepoint_pitr_prune of removed policy pitr-prune"),
        "{text}"
    );
    assert_eq!(slots(), "1", "a dry run drops nothing");
    let out = f.cmd().args(["prune", "--orphans"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("dropped slot safepoint_pitr_prune"), "{text}");
    assert_eq!(slots(), "0");
    assert!(
        archived_of(&f, POLICY).is_empty(),
        "its WAL archive is deleted"
    );
}

#[test]
fn wal_before_the_oldest_base_backup_is_listed_by_dry_runs_and_pruned_without_a_base_backup_pruned()
{
    const POLICY: &str = "pitr-leading";
    let (cluster, f) = archived_cluster(POLICY, "");
    let port = cluster.port;
    let (children, logged) = started(&f, POLICY, f.tmp.path().join("daemon.log"));
    switch_segments(port, 2);
    f.cmd().args(["backup", POLICY]).assert().success();
    let ids = || -> Vec<String> {
        f.backups(POLICY)
            .into_iter()
            .map(|b| b["id"].as_str().unwrap().to_string())
            .collect()
    };
    let kept = ids().into_iter().max().unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(f.store().join(POLICY).join(&kept).join("manifest.json")).unwrap(),
    )
    .unwrap();
    let start_wal = manifest["tools"]["pitr.startWal"]
        .as_str()
        .unwrap()
        .to_string();
    switch_segments(port, 1);
    wait_until("the kept base backup's WAL archived", 60, &logged, || {
        complete(&f, POLICY)
            .iter()
            .any(|n| n.as_str() > start_wal.as_str())
    });
    drop(children);
    // The older base backups vanish without a prune (as if taken by
    // another tool): the WAL before the kept one is now WAL archived
    // before the first base backup.
    for id in ids().into_iter().filter(|id| *id != kept) {
        std::fs::remove_dir_all(f.store().join(POLICY).join(&id)).unwrap();
        crate::common::sqlite(
            &f.data().join("catalog.db"),
            &format!("DELETE FROM backups WHERE id = '{id}'"),
        );
    }
    let older = |f: &Fixture| {
        complete(f, POLICY)
            .into_iter()
            .filter(|n| n.as_str() < start_wal.as_str())
            .collect::<Vec<_>>()
    };
    let before = older(&f);
    assert!(!before.is_empty(), "WAL from before the kept base backup");

    let dry = f.json(&["prune", "--dry-run"]);
    let wal: Vec<&serde_json::Value> = dry
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["action"] == "delete-wal" && i["policy"] == POLICY)
        .collect();
    assert_eq!(wal.len(), 1, "{dry}");
    let listed: Vec<String> = wal[0]["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap().to_string())
        .collect();
    for segment in &before {
        assert!(listed.contains(segment), "{segment} listed: {dry}");
    }
    assert!(
        listed.iter().all(|o| o.as_str() < start_wal.as_str()),
        "only WAL before {start_wal}: {dry}"
    );
    let out = f.cmd().args(["plan", "--output", "json"]).output().unwrap();
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["wal"][0]["objects"], wal[0]["objects"], "{plan}");
    // Pending WAL deletions are pending actions: exit 1.
    assert_eq!(out.status.code(), Some(1), "{plan}");
    assert_eq!(older(&f), before, "dry runs delete nothing");

    f.cmd().arg("prune").assert().success();
    assert_eq!(older(&f), Vec::<String>::new(), "the leading WAL is gone");
    assert!(
        complete(&f, POLICY)
            .iter()
            .any(|n| n.starts_with(&start_wal)),
        "the kept base backup's WAL stays"
    );
}

/// A segment name's position (`TTTTTTTTXXXXXXXXYYYYYYYY`, 16 MB segments).
fn segment_index(name: &str) -> u64 {
    let log = u64::from_str_radix(&name[8..16], 16).unwrap();
    let seg = u64::from_str_radix(&name[16..24], 16).unwrap();
    log * 256 + seg
}

#[test]
fn a_daemon_down_for_a_while_catches_up_from_its_slot_without_a_gap() {
    const POLICY: &str = "pitr-down";
    // Small WAL limits: without the slot, the checkpoints below would
    // recycle the segments written while the daemon is down.
    let (cluster, f) = archived_cluster(POLICY, "-c max_wal_size=32MB -c min_wal_size=32MB");
    let port = cluster.port;
    let log = f.tmp.path().join("daemon.log");
    let (mut children, logged) = started(&f, POLICY, log.clone());
    let before = complete(&f, POLICY).last().cloned().unwrap_or_default();

    // Down: SIGTERM, and wait until it exited.
    let mut down = children.0.pop().unwrap();
    std::process::Command::new("kill")
        .args(["-TERM", &down.id().to_string()])
        .status()
        .unwrap();
    down.wait().unwrap();
    // Meanwhile the server writes and completes six segments, checkpoints.
    switch_segments(port, 6);
    psql_at(port, "postgres", "CHECKPOINT");
    let last = psql_at(
        port,
        "postgres",
        "INSERT INTO t DEFAULT VALUES; SELECT pg_walfile_name(pg_current_wal_insert_lsn()); SELECT pg_switch_wal()",
    );
    let last = last.lines().next().unwrap().to_string();
    assert!(
        last.as_str() > &before[..24.min(before.len())],
        "{last} after {before}"
    );

    // Up again: the slot kept every segment; the archive catches up.
    children.0.push(daemon(&f, &log));
    wait_until("the archive caught up", 180, &logged, || {
        complete(&f, POLICY).iter().any(|n| n.starts_with(&last))
    });
    let indexes: Vec<u64> = complete(&f, POLICY)
        .iter()
        .map(|n| segment_index(n))
        .collect();
    let (first, end) = (indexes[0], segment_index(&last));
    let missing: Vec<u64> = (first..=end).filter(|i| !indexes.contains(i)).collect();
    assert!(
        missing.is_empty(),
        "segments missing from the archive: {missing:?}"
    );
    let shown = || format!("{}\n{}", status(&f).0, logged());
    wait_until("a window without gaps in status", 60, &shown, || {
        let (st, _) = status(&f);
        let pitr = &st["policies"][0]["pitr"];
        pitr["gaps"] == serde_json::json!([])
            && pitr["window_end"].as_str() > pitr["window_start"].as_str()
            && !st["policies"][0]["drift"]
                .as_array()
                .unwrap()
                .contains(&"wal-archive-gap".into())
    });
}
