//! End to end with the real binary against the loopback S3 server: backup,
//! list, restore, drift, client-side encryption and `catalog rebuild`.

use std::path::Path;
use std::process::Command as StdCommand;

use crate::common::{Fixture, STORAGE, dir_policy, sqlite, sqlite_policy};
use crate::s3_server::{ACCESS_KEY, S3Server, SECRET_KEY};

pub const KEY_ID_ENV: &str = "SP_TEST_S3_KEY_ID";
pub const SECRET_ENV: &str = "SP_TEST_S3_SECRET";

/// A `Storage` named `remote` on the test server; credentials come from the
/// environment (`run` sets it), recipients if given.
pub fn s3_doc(server: &S3Server, bucket: &str, recipients: &[&str]) -> String {
    let mut doc = format!(
        r#"apiVersion: safepoint/v1
kind: Storage
metadata:
  name: remote
spec:
  type: s3
  bucket: {bucket}
  prefix: backups/prod
  endpoint: {}
  credentials:
    accessKeyIdFrom: {{env: {KEY_ID_ENV}}}
    secretAccessKeyFrom: {{env: {SECRET_ENV}}}
"#,
        server.endpoint()
    );
    if !recipients.is_empty() {
        doc.push_str(&format!(
            "  encryption:\n    ageRecipients: [{}]\n",
            recipients.join(", ")
        ));
    }
    doc
}

fn remote_policy(name: &str, db: &str) -> String {
    sqlite_policy(name, db).replace("storage: local", "storage: remote")
}

/// Runs the binary with the S3 credentials in its environment.
fn run(f: &Fixture, args: &[&str]) -> std::process::Output {
    f.cmd()
        .env(KEY_ID_ENV, ACCESS_KEY)
        .env(SECRET_ENV, SECRET_KEY)
        .args(args)
        .output()
        .unwrap()
}

fn ok(f: &Fixture, args: &[&str]) -> String {
    let out = run(f, args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(f: &Fixture, args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.extend(["--output", "json"]);
    let out = run(f, &all);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?}: no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn list(f: &Fixture, extra: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["list"];
    args.extend(extra);
    json(f, &args).as_array().cloned().unwrap_or_default()
}

fn fixture(files: &[(&str, String)]) -> Fixture {
    let refs: Vec<(&str, &str)> = files.iter().map(|(a, b)| (*a, b.as_str())).collect();
    Fixture::new(&refs)
}

#[test]
fn s3_backup_lists_restores_and_reports_drift() {
    let server = S3Server::start();
    server.create_bucket("e2e");
    let f = fixture(&[
        ("storage.yaml", s3_doc(&server, "e2e", &[])),
        ("app.yaml", remote_policy("app", "app.db")),
    ]);
    let db = f.make_sqlite("app.db");
    let out = ok(&f, &["backup", "app"]);
    assert!(out.starts_with("ok backup app/"), "{out}");

    let backups = list(&f, &[]);
    assert_eq!(backups.len(), 1);
    assert_eq!(backups[0]["backup"]["health"], "verified");
    let id = backups[0]["backup"]["id"].as_str().unwrap().to_string();
    let key = format!("backups/prod/app/{id}/data.sqlite.zst");
    assert!(server.object_path("e2e", &key).exists());
    assert!(
        server
            .object_path("e2e", &format!("backups/prod/app/{id}/manifest.json"))
            .exists()
    );

    ok(
        &f,
        &[
            "restore",
            "--policy",
            "app",
            "--latest",
            "--to",
            "restored.db",
        ],
    );
    assert_eq!(
        sqlite(&db, ".dump"),
        sqlite(&f.work().join("restored.db"), ".dump")
    );

    // Altered out of band (same size): the content check finds it.
    let object = server.object_path("e2e", &key);
    let mut bytes = std::fs::read(&object).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&object, &bytes).unwrap();
    let backups = list(&f, &["--verify-interval", "0"]);
    assert_eq!(backups[0]["backup"]["health"], "corrupt", "{backups:?}");
    let refused = run(&f, &["restore", &id, "--to", "again.db"]);
    assert_eq!(refused.status.code(), Some(2));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains(&format!("backup {id} failed its checksum check")),
        "refused for the checksum: {err}"
    );
    assert!(!f.work().join("again.db").exists(), "nothing written");

    // Deleted out of band: missing.
    std::fs::remove_file(&object).unwrap();
    let backups = list(&f, &[]);
    assert_eq!(backups[0]["backup"]["health"], "missing", "{backups:?}");
}

/// `age-keygen -o FILE`; returns the public key.
pub fn age_keygen(path: &Path) -> String {
    let out = StdCommand::new("age-keygen")
        .arg("-o")
        .arg(path)
        .output()
        .expect("age-keygen runs (Debian package `age`)");
    assert!(out.status.success());
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .expect("public key line")
        .to_string()
}

#[test]
fn encrypted_s3_backup_restores_only_with_the_right_identity() {
    let server = S3Server::start();
    server.create_bucket("sealed");
    let keys = tempfile::tempdir().unwrap();
    let (key, other) = (keys.path().join("key.txt"), keys.path().join("other.txt"));
    let recipient = age_keygen(&key);
    age_keygen(&other);
    let f = fixture(&[
        ("storage.yaml", s3_doc(&server, "sealed", &[&recipient])),
        ("app.yaml", remote_policy("app", "app.db")),
    ]);
    let db = f.make_sqlite("app.db");
    sqlite(
        &db,
        "create table secrets(v text); insert into secrets values ('plaintext-marker-4242');",
    );
    ok(&f, &["backup", "app"]);
    let backup = &list(&f, &[])[0]["backup"];
    let id = backup["id"].as_str().unwrap().to_string();
    let rows = json(&f, &["list"]);
    let manifest_file =
        server.object_path("sealed", &format!("backups/prod/app/{id}/manifest.json"));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(manifest_file).unwrap()).unwrap();
    assert_eq!(manifest["artifact"]["encryption"], "age", "{rows}");
    assert_eq!(manifest["artifact"]["file"], "data.sqlite.zst.age");

    let stored = std::fs::read(server.object_path(
        "sealed",
        &format!("backups/prod/app/{id}/data.sqlite.zst.age"),
    ))
    .unwrap();
    assert!(stored.starts_with(b"age-encryption.org/v1\n"));
    assert!(
        !stored.windows(4).any(|w| w == [0x28, 0xb5, 0x2f, 0xfd]),
        "no zstd frame visible"
    );
    assert!(!stored.windows(21).any(|w| w == b"plaintext-marker-4242"));

    let missing = run(&f, &["restore", &id, "--to", "r1.db"]);
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        err.contains("encrypted with age; pass the identity with --age-identity-file"),
        "{err}"
    );

    let wrong = run(
        &f,
        &[
            "--age-identity-file",
            other.to_str().unwrap(),
            "restore",
            &id,
            "--to",
            "r2.db",
        ],
    );
    assert!(!wrong.status.success());
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(err.contains("no identity in it matches"), "{err}");
    assert!(!f.work().join("r2.db").exists());

    let right = f
        .cmd()
        .env(KEY_ID_ENV, ACCESS_KEY)
        .env(SECRET_ENV, SECRET_KEY)
        .env("SAFEPOINT_AGE_IDENTITY_FILE", &key)
        .args(["restore", &id, "--to", "r3.db"])
        .output()
        .unwrap();
    assert!(
        right.status.success(),
        "{}",
        String::from_utf8_lossy(&right.stderr)
    );
    assert_eq!(
        sqlite(&db, ".dump"),
        sqlite(&f.work().join("r3.db"), ".dump")
    );
}

#[test]
fn catalog_rebuild_recovers_every_storage_and_changes_no_decision() {
    let server = S3Server::start();
    server.create_bucket("rebuild");
    let f = fixture(&[
        ("storage.yaml", s3_doc(&server, "rebuild", &[])),
        ("local.yaml", STORAGE.to_string()),
        (
            "app.yaml",
            remote_policy("app", "app.db").replace("keepLast: 3", "keepLast: 1"),
        ),
        ("files.yaml", dir_policy("files", "d")),
    ]);
    f.make_sqlite("app.db");
    std::fs::create_dir_all(f.work().join("d")).unwrap();
    std::fs::write(f.work().join("d/a.txt"), "a").unwrap();
    ok(&f, &["backup", "app"]);
    ok(&f, &["backup", "app"]);
    ok(&f, &["backup", "files"]);
    let ids = |f: &Fixture| {
        let mut v: Vec<String> = list(f, &[])
            .iter()
            .map(|b| b["backup"]["id"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    let before_ids = ids(&f);
    assert_eq!(before_ids.len(), 3);
    let before = json(&f, &["plan"]);

    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(f.data().join(format!("catalog.db{suffix}")));
    }
    let report = json(&f, &["catalog", "rebuild"]);
    let imported: u64 = report
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["imported"].as_u64().unwrap())
        .sum();
    assert_eq!(imported, 3, "{report}");

    assert_eq!(ids(&f), before_ids);
    let after = json(&f, &["plan"]);
    assert_eq!(after["actions"], before["actions"], "{before}\n{after}");
    // Running it again finds everything known.
    let again = json(&f, &["catalog", "rebuild"]);
    assert!(
        again.as_array().unwrap().iter().all(|r| r["imported"] == 0),
        "{again}"
    );
}

#[test]
fn s3_backup_into_a_missing_bucket_or_with_a_wrong_key_says_what_to_fix() {
    let server = S3Server::start();
    let f = fixture(&[
        ("storage.yaml", s3_doc(&server, "never-created", &[])),
        ("app.yaml", remote_policy("app", "app.db")),
    ]);
    f.make_sqlite("app.db");
    let out = run(&f, &["backup", "app"]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "bucket never-created does not exist on {}; create it",
            server.endpoint()
        )),
        "{text}"
    );

    server.create_bucket("never-created");
    let wrong = f
        .cmd()
        .env(KEY_ID_ENV, ACCESS_KEY)
        .env(SECRET_ENV, "wrong-secret")
        .args(["backup", "app"])
        .output()
        .unwrap();
    assert!(!wrong.status.success());
    let text = String::from_utf8_lossy(&wrong.stdout);
    assert!(
        text.contains("refused the credentials for bucket never-created"),
        "{text}"
    );
    assert!(!text.contains("wrong-secret"), "{text}");
    eprintln!("{text}");
}

#[test]
fn drill_of_an_encrypted_s3_backup_decrypts_with_the_daemon_identity() {
    let server = S3Server::start();
    server.create_bucket("drills");
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("key.txt");
    let recipient = age_keygen(&key);
    let policy = r#"apiVersion: safepoint/v1
kind: BackupPolicy
metadata: {name: app}
spec:
  source: {type: sqlite, path: app.db}
  storage: remote
  retention: {keepLast: 5}
  drill:
    target: {type: directory, path: scratch}
    verify:
      completeness: exact
      checks:
        - {name: users exist, sql: "select count(*) from users", expect: ">= 1"}
"#;
    let f = fixture(&[
        ("storage.yaml", s3_doc(&server, "drills", &[&recipient])),
        ("app.yaml", policy.to_string()),
    ]);
    f.make_sqlite("app.db");
    ok(&f, &["backup", "app"]);

    let without = run(&f, &["drill", "app", "--output", "json"]);
    assert_eq!(without.status.code(), Some(1));
    let text = String::from_utf8_lossy(&without.stdout);
    assert!(text.contains("--age-identity-file"), "{text}");

    let with = run(
        &f,
        &[
            "--age-identity-file",
            key.to_str().unwrap(),
            "drill",
            "app",
            "--output",
            "json",
        ],
    );
    let text = String::from_utf8_lossy(&with.stdout);
    assert_eq!(with.status.code(), Some(0), "{text}");
    let outcome: serde_json::Value = serde_json::from_slice(&with.stdout).unwrap();
    assert_eq!(outcome["passed"], true, "{outcome}");
}

/// `prune` exits 1 when a deletion fails (here the bucket refuses deletes,
/// as a bucket policy without `s3:DeleteObject` would), names the backup and
/// the storage's answer, and keeps every backup visible; once deletes are
/// allowed again the same prune succeeds.
#[test]
fn prune_exits_1_when_a_deletion_fails_and_keeps_the_backup_visible() {
    let server = S3Server::start();
    server.create_bucket("e2e");
    let f = fixture(&[
        ("storage.yaml", s3_doc(&server, "e2e", &[])),
        ("app.yaml", remote_policy("app", "app.db")),
    ]);
    f.make_sqlite("app.db");
    for _ in 0..4 {
        ok(&f, &["backup", "app"]);
    }
    assert_eq!(list(&f, &[]).len(), 4);

    server.deny_deletes(true);
    let out = run(&f, &["prune"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed deletion exits 1: {text}"
    );
    assert!(
        text.contains("AccessDenied") || text.contains("403"),
        "{text}"
    );
    let left = list(&f, &[]);
    assert_eq!(
        left.len(),
        4,
        "nothing disappears from the catalog: {left:?}"
    );
    assert!(
        left.iter().all(|b| b["backup"]["health"] == "verified"),
        "no backup is half-deleted: {left:?}"
    );

    server.deny_deletes(false);
    ok(&f, &["prune"]);
    assert_eq!(list(&f, &[]).len(), 3, "keepLast: 3");
}
