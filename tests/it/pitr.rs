//! Point-in-time recovery end to end on a throwaway cluster (initdb on a free
//! port, commit timestamps on): rows are inserted continuously, each in its
//! own transaction; the daemon creates the slot and streams WAL, a base
//! backup is taken, `pg_receivewal` is killed and comes back on the same
//! slot; `restore --to-time T --start` must then hold exactly the rows whose
//! transaction committed at or before T (a gap in the archive would fail the
//! recovery).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::common::{Fixture, STORAGE};
use crate::dbs::{Cluster, db_policy, psql_at, unique};
use crate::lost_connection::child_named;

const POLICY: &str = "pitr-orders";

/// Waits until `probe` holds (checked every 100 ms), at most `secs`.
pub fn wait_until(
    what: &str,
    secs: u64,
    log: &dyn Fn() -> String,
    mut probe: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !probe() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {secs}s; daemon log:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// WAL objects archived for `policy`.
pub fn archived_of(f: &Fixture, policy: &str) -> Vec<String> {
    std::fs::read_dir(f.store().join("_wal").join(policy))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// One row per transaction, every 20 ms, until killed.
pub fn inserter(port: u16) -> Child {
    Command::new("psql")
        .args([
            "-X",
            "-q",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-p",
            &port.to_string(),
        ])
        .args(["-d", "postgres", "-c"])
        .arg(
            "DO $$ BEGIN FOR i IN 1..1000000 LOOP \
             INSERT INTO t DEFAULT VALUES; COMMIT; PERFORM pg_sleep(0.02); END LOOP; END $$",
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// The daemon, with its log in `log`.
pub fn daemon(f: &Fixture, log: &Path) -> Child {
    std::fs::write(
        f.work().join("tokens"),
        format!("ci {}\n", crate::webhooks::TOKEN),
    )
    .unwrap();
    Command::new(assert_cmd::cargo::cargo_bin("safepoint"))
        .current_dir(f.work())
        .env("SAFEPOINT_LOG", "info")
        // Status, metrics and alerts follow every cycle: one at least every 2 s.
        .env("SAFEPOINT_FETCH_INTERVAL", "2")
        .args(f.global_args())
        .args([
            "daemon",
            "--listen",
            "127.0.0.1:0",
            "--api-tokens-file",
            "tokens",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// Children of the test, stopped with SIGTERM (the daemon stops its
/// `pg_receivewal`) and reaped on drop.
pub struct Stopped(pub Vec<Child>);

impl Drop for Stopped {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }
}

/// A restored server: stopped and removed on drop.
pub struct Restored<'a>(pub &'a Path);

impl Drop for Restored<'_> {
    fn drop(&mut self) {
        let data = self.0.join("data");
        let _ = Command::new("runuser")
            .args([
                "-u",
                "postgres",
                "--",
                "/usr/lib/postgresql/15/bin/pg_ctl",
                "-D",
            ])
            .arg(&data)
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(self.0);
    }
}

/// A new directory under /tmp owned by postgres: the parent of a restored
/// data directory (the restored server runs as its owner).
pub fn restore_parent() -> std::path::PathBuf {
    restore_parent_named("safepoint-pitr")
}

/// A parent directory whose `data/.s.PGSQL.<port>` is longer than a Unix
/// socket address holds: `restore --start` must then serve on TCP only.
pub fn long_restore_parent() -> std::path::PathBuf {
    restore_parent_named(&format!("safepoint-pitr-{}", "long".repeat(22)))
}

fn restore_parent_named(prefix: &str) -> std::path::PathBuf {
    let parent = Path::new("/tmp").join(unique(prefix));
    std::fs::create_dir_all(&parent).unwrap();
    let postgres_uid: u32 = String::from_utf8(
        Command::new("id")
            .args(["-u", "postgres"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap();
    std::os::unix::fs::chown(&parent, Some(postgres_uid), Some(postgres_uid)).unwrap();
    parent
}

#[test]
fn restore_to_a_time_holds_exactly_the_rows_committed_by_then_across_a_receiver_kill() {
    let cluster = Cluster::start_with(None, "-c track_commit_timestamp=on");
    let port = cluster.port;
    psql_at(
        port,
        "postgres",
        "CREATE TABLE t (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())",
    );
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let policy = db_policy(POLICY, "postgres", &url, "").replacen(
        "\n  storage: local",
        "\n    pitr: {walFlushInterval: 1s}\n  storage: local",
        1,
    );
    let f = Fixture::new(&[("storage.yaml", STORAGE), ("p.yaml", &policy)]);
    // The restored server runs as postgres and reads the archive through wal-fetch.
    std::fs::set_permissions(f.tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut children = Stopped(vec![inserter(port)]);
    let log = f.tmp.path().join("daemon.log");
    children.0.push(daemon(&f, &log));
    let daemon = children.0[1].id();
    let logged = || std::fs::read_to_string(&log).unwrap_or_default();

    wait_until("the first WAL segment archived", 180, &logged, || {
        !archived_of(&f, POLICY).is_empty()
    });
    wait_until("the daemon's first base backup", 180, &logged, || {
        !f.backups(POLICY).is_empty()
    });
    // A base backup certainly taken while the archive streams.
    f.cmd().args(["backup", POLICY]).assert().success();
    let slot = psql_at(
        port,
        "postgres",
        "SELECT slot_name FROM pg_replication_slots",
    );
    assert_eq!(slot, "safepoint_pitr_orders", "the slot was created");

    // Kill the receiver: the supervisor starts a new one on the same slot.
    let mut first = None;
    wait_until("pg_receivewal running", 180, &logged, || {
        first = child_named(daemon, "pg_receivewal");
        first.is_some()
    });
    let first = first.unwrap();
    assert!(
        Command::new("kill")
            .args(["-KILL", &first.to_string()])
            .status()
            .unwrap()
            .success()
    );
    std::thread::sleep(Duration::from_secs(1));
    wait_until("pg_receivewal restarted", 180, &logged, || {
        child_named(daemon, "pg_receivewal").is_some_and(|p| p != first)
    });
    std::thread::sleep(Duration::from_secs(2));
    let target = Utc::now();
    // Past the target: flushed at least once more (1 s interval).
    std::thread::sleep(Duration::from_secs(4));

    let parent = restore_parent();
    let _restored = Restored(&parent);
    let t = target.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let out = f
        .cmd()
        .args(["restore", "--policy", POLICY, "--to-time", &t, "--to-dir"])
        .arg(parent.join("data"))
        .args(["--start", "--output", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "restore failed: {}\nserver log:\n{}\ndaemon log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(parent.join("data/safepoint-restore.log")).unwrap_or_default(),
        logged()
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let restored_port = report["port"].as_u64().unwrap() as u16;

    let ids = "SELECT count(*) || ':' || string_agg(id::text, ',' ORDER BY id) FROM t";
    let expected = psql_at(
        port,
        "postgres",
        &format!("{ids} WHERE pg_xact_commit_timestamp(xmin) <= '{t}'"),
    );
    let got = psql_at(restored_port, "postgres", ids);
    assert_eq!(got, expected, "rows committed at or before {t}");
    let later = psql_at(
        port,
        "postgres",
        &format!("SELECT count(*) FROM t WHERE pg_xact_commit_timestamp(xmin) > '{t}'"),
    );
    assert_ne!(
        later, "0",
        "rows after the target exist in the source and not in the restore"
    );
    let rows: u64 = got.split(':').next().unwrap().parse().unwrap();
    assert!(
        rows > 100,
        "the restore holds the rows from before and after the kill: {rows}"
    );
}

#[test]
fn the_policy_example_of_docs_pitr_validates() {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/pitr.md"))
        .unwrap();
    let blocks = crate::docs_examples::fenced_blocks(&doc, "yaml");
    assert_eq!(blocks.len(), 1, "{blocks:?}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.yaml"), &blocks[0]).unwrap();
    std::fs::write(
        dir.path().join("storage.yaml"),
        STORAGE.replace("name: local", "name: primary"),
    )
    .unwrap();
    let out = assert_cmd::Command::cargo_bin("safepoint")
        .unwrap()
        .current_dir(dir.path())
        .arg("validate")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
