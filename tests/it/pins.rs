//! Pins survive the loss of the catalog: they are recorded as `pin.json` next
//! to the backup in storage (local and S3), restored by `catalog rebuild` and
//! by every observation, and a backup whose pin state is unknown (marker
//! unreadable) is never pruned.

use std::path::PathBuf;
use std::process::Output;

use crate::common::{Fixture, STORAGE};
use crate::s3_backup::{KEY_ID_ENV, SECRET_ENV, s3_doc};
use crate::s3_server::{ACCESS_KEY, S3Server, SECRET_KEY};

/// `orders` on storage `storage`: pre-deploy snapshots, failure pins the
/// snapshot, and a retention that keeps only the newest backup.
fn policy(storage: &str) -> String {
    format!(
        r#"apiVersion: safepoint/v1
kind: BackupPolicy
metadata:
  name: orders
spec:
  source: {{type: sqlite, path: orders.db}}
  storage: {storage}
  deploy:
    before: snapshot
    onFailure: [pin-pre-deploy]
  retention: {{keepLast: 1}}
"#
    )
}

/// A fixture plus where pin markers land (local dir or the S3 server's files).
struct Setup {
    f: Fixture,
    /// `<policy>/<id>/pin.json` -> the file holding that marker.
    marker_root: PathBuf,
    _server: Option<S3Server>,
}

impl Setup {
    fn local() -> Setup {
        let f = Fixture::new(&[("storage.yaml", STORAGE), ("orders.yaml", &policy("local"))]);
        f.make_sqlite("orders.db");
        Setup {
            marker_root: f.store(),
            f,
            _server: None,
        }
    }

    fn s3() -> Setup {
        let server = S3Server::start();
        server.create_bucket("pins");
        let doc = s3_doc(&server, "pins", &[]);
        let f = Fixture::new(&[("storage.yaml", &doc), ("orders.yaml", &policy("remote"))]);
        f.make_sqlite("orders.db");
        Setup {
            marker_root: server.object_path("pins", "backups/prod"),
            f,
            _server: Some(server),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        self.f
            .cmd()
            .env(KEY_ID_ENV, ACCESS_KEY)
            .env(SECRET_ENV, SECRET_KEY)
            .args(args)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let out = self.run(&all);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{args:?}: no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// `list` items (`backup`, `pin`, `why`) by backup id.
    fn list(&self) -> Vec<serde_json::Value> {
        self.json(&["list"]).as_array().cloned().unwrap_or_default()
    }

    fn item(&self, id: &str) -> Option<serde_json::Value> {
        self.list().into_iter().find(|i| i["backup"]["id"] == id)
    }

    fn ids(&self) -> Vec<String> {
        self.list()
            .iter()
            .map(|i| i["backup"]["id"].as_str().unwrap().to_string())
            .collect()
    }

    fn newest_id(&self) -> String {
        self.ids()[0].clone()
    }

    fn marker(&self, id: &str) -> PathBuf {
        self.marker_root.join("orders").join(id).join("pin.json")
    }

    /// Loses the catalog (database, WAL and audit head), as in a disaster.
    fn lose_catalog(&self) {
        for suffix in ["db", "db-wal", "db-shm", "audit-head"] {
            let _ = std::fs::remove_file(self.f.data().join(format!("catalog.{suffix}")));
        }
        assert!(!self.f.data().join("catalog.db").exists());
    }

    fn audit(&self) -> String {
        self.ok(&["audit", "export"])
    }
}

/// Pins via a failed deploy and via `safepoint pin`, loses the catalog,
/// rebuilds it: the pinned backups survive cycles with `keepLast: 1`, with
/// who/why/release, and `unpin` works after the rebuild.
fn pins_survive_the_loss_of_the_catalog(s: &Setup) {
    s.ok(&["deploy", "start", "--release", "v1.4.0"]);
    let pre = s.newest_id();
    s.ok(&[
        "deploy",
        "finish",
        "--release",
        "v1.4.0",
        "--status",
        "failure",
    ]);
    s.ok(&["backup", "orders"]);
    let held = s.newest_id();
    let out = s.ok(&["pin", &held, "--reason", "legal hold"]);
    assert!(out.contains("legal hold"), "{out}");
    s.ok(&["backup", "orders"]);
    let plain = s.newest_id();
    s.ok(&["backup", "orders"]);
    let newest = s.newest_id();
    assert!(s.marker(&pre).exists() && s.marker(&held).exists());
    assert!(!s.marker(&plain).exists() && !s.marker(&newest).exists());

    s.lose_catalog();
    let report = s.json(&["catalog", "rebuild"]);
    let sum = |field: &str| -> u64 {
        report
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r[field].as_u64().unwrap())
            .sum()
    };
    assert_eq!(sum("imported"), 4, "{report}");
    assert_eq!(sum("pins_restored"), 2, "{report}");

    // Cycles with a retention that keeps only the newest backup.
    for _ in 0..2 {
        s.ok(&["daemon", "--once"]);
    }
    let mut ids = s.ids();
    ids.sort();
    let mut want = vec![pre.clone(), held.clone(), newest.clone()];
    want.sort();
    assert_eq!(ids, want, "the unpinned old backup is pruned, pins stay");
    let p = s.item(&pre).unwrap();
    assert_eq!(p["backup"]["pinned"], "failed deploy v1.4.0", "{p}");
    assert_eq!(p["pin"]["release"], "v1.4.0", "{p}");
    assert!(p["pin"]["pinnedBy"].as_str().unwrap().contains('@'), "{p}");
    assert!(
        p["why"]
            .as_str()
            .unwrap()
            .contains("pinned (failed deploy v1.4.0)")
    );
    let h = s.item(&held).unwrap();
    assert_eq!(h["backup"]["pinned"], "legal hold", "{h}");
    assert!(s.audit().contains("pin-restored"));

    // The catalog pin is the newest write: a lost marker is rewritten.
    std::fs::remove_file(s.marker(&held)).unwrap();
    s.ok(&["daemon", "--once"]);
    assert!(
        s.marker(&held).exists(),
        "marker rewritten from the catalog"
    );
    assert!(s.audit().contains("pin-marker-rewritten"));

    // `unpin` after the rebuild: marker and catalog pin go, retention applies.
    let out = s.ok(&["unpin", &held]);
    assert!(out.contains("unpinned"), "{out}");
    assert!(!s.marker(&held).exists());
    s.ok(&["daemon", "--once"]);
    assert!(s.item(&held).is_none(), "unpinned => pruned");
    assert!(s.item(&pre).is_some());
    assert_eq!(s.run(&["unpin", "no-such-backup"]).status.code(), Some(4));
}

#[test]
fn pins_survive_the_loss_of_the_catalog_on_local_storage() {
    pins_survive_the_loss_of_the_catalog(&Setup::local());
}

#[test]
fn pins_survive_the_loss_of_the_catalog_on_s3_storage() {
    pins_survive_the_loss_of_the_catalog(&Setup::s3());
}

#[test]
fn a_backup_whose_pin_marker_is_unreadable_is_never_pruned() {
    let s = Setup::local();
    s.ok(&["backup", "orders"]);
    let old = s.newest_id();
    s.ok(&["pin", &old, "--reason", "forensic copy"]);
    s.ok(&["backup", "orders"]);
    std::fs::write(s.marker(&old), b"{ not json").unwrap();
    s.lose_catalog();

    let out = s.run(&["catalog", "rebuild"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "an unreadable marker is a problem"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("pin marker"));

    for _ in 0..2 {
        s.ok(&["daemon", "--once"]);
    }
    let item = s.item(&old).expect("pin state unknown => kept");
    assert!(
        item["why"].as_str().unwrap().contains("pin state unknown"),
        "{item}"
    );
    let plan = s.ok(&["plan"]);
    assert!(plan.contains("pin state unknown"), "{plan}");

    // Pinning again rewrites the marker: the pin state is known again.
    s.ok(&["pin", &old, "--reason", "forensic copy"]);
    s.ok(&["daemon", "--once"]);
    let item = s.item(&old).unwrap();
    assert_eq!(item["backup"]["pinned"], "forensic copy");
    assert!(!item["why"].as_str().unwrap().contains("unknown"), "{item}");
}

/// Without `catalog rebuild`: the normal observation imports the backups and
/// restores their pins, and a deploy started before the loss still finishes
/// (its pre-deploy snapshot is found by manifest) and pins.
#[test]
fn observation_alone_restores_pins_and_a_deploy_started_before_the_loss_finishes() {
    let s = Setup::local();
    s.ok(&["backup", "orders"]);
    let held = s.newest_id();
    s.ok(&["pin", &held, "--reason", "legal hold"]);
    s.ok(&["deploy", "start", "--release", "v2.0.0"]);
    let pre = s.newest_id();
    s.ok(&["backup", "orders"]);
    s.lose_catalog();

    // `list` observes (imports, reconciles pins) without executing anything.
    assert_eq!(s.item(&held).unwrap()["backup"]["pinned"], "legal hold");
    assert!(s.audit().contains("pin-restored"));

    s.ok(&[
        "deploy",
        "finish",
        "--release",
        "v2.0.0",
        "--status",
        "failure",
    ]);
    assert!(s.marker(&pre).exists());
    s.ok(&["daemon", "--once"]);
    let p = s.item(&pre).expect("pinned pre-deploy snapshot kept");
    assert_eq!(p["backup"]["pinned"], "failed deploy v2.0.0", "{p}");
    assert!(s.item(&held).is_some());
}
