//! Round trips through the CLI: backup, list, restore, row for row and byte for byte.

use std::path::Path;

use crate::common::{Fixture, STORAGE, dir_policy, sqlite, sqlite_policy};

fn dump(db: &Path) -> String {
    sqlite(db, ".dump")
}

#[test]
fn sqlite_backup_restores_row_for_row() {
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        ("app.yaml", &sqlite_policy("app", "app.db")),
    ]);
    let db = f.make_sqlite("app.db");
    f.cmd().args(["backup", "app"]).assert().success();

    let backups = f.backups("app");
    assert_eq!(backups.len(), 1, "{backups:?}");
    let b = &backups[0];
    assert_eq!(b["trigger"], "manual");
    assert_eq!(b["health"], "verified");
    let id = b["id"].as_str().unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(f.store().join("app").join(id).join("manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["counts"]["events"], 500);
    assert_eq!(manifest["counts"]["users"], 2);
    assert_eq!(manifest["status"], "complete");
    assert!(
        manifest["artifact"]["checksum"]
            .as_str()
            .unwrap()
            .starts_with("blake3:")
    );

    let target = f.work().join("restored.db");
    f.cmd()
        .args(["restore", id, "--to"])
        .arg(&target)
        .assert()
        .success();
    assert_eq!(dump(&db), dump(&target));

    // A second restore onto the now non-empty target needs --force.
    let out = f
        .cmd()
        .args(["restore", "--policy", "app", "--latest", "--to"])
        .arg(&target)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    f.cmd()
        .args(["restore", "--policy", "app", "--latest", "--force", "--to"])
        .arg(&target)
        .assert()
        .success();
}

fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn directory_backup_restores_byte_for_byte() {
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        ("files.yaml", &dir_policy("files", "src-dir")),
    ]);
    let src = f.work().join("src-dir");
    std::fs::create_dir_all(src.join("a/b")).unwrap();
    std::fs::write(src.join("top.txt"), "hello\n").unwrap();
    std::fs::write(
        src.join("a/b/data.bin"),
        (0..100_000u32)
            .flat_map(|i| i.to_le_bytes())
            .collect::<Vec<_>>(),
    )
    .unwrap();
    std::fs::write(src.join("a/ünï ✓.txt"), "unicode name").unwrap();

    f.cmd().args(["backup", "files"]).assert().success();
    let id = f.backups("files")[0]["id"].as_str().unwrap().to_string();
    let target = f.work().join("restored");
    f.cmd()
        .args(["restore", &id, "--to"])
        .arg(&target)
        .assert()
        .success();
    assert_eq!(tree(&src), tree(&target));
}

#[test]
fn plan_reports_first_backups_then_nothing_to_do() {
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        ("app.yaml", &sqlite_policy("app", "app.db")),
    ]);
    f.make_sqlite("app.db");
    let out = f.cmd().arg("plan").output().unwrap();
    assert_eq!(out.status.code(), Some(1), "actions pending => exit 1");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("backup app"), "{text}");

    let plan = f.json(&["plan"]);
    assert_eq!(plan["actions"][0]["action"], "backup");
    assert_eq!(plan["actions"][0]["policy"], "app");

    f.cmd().args(["daemon", "--once"]).assert().success();
    f.cmd().arg("plan").assert().code(0);
    let status = f.json(&["status"]);
    assert_eq!(status["ready"], true);
    assert_eq!(status["policies"][0]["name"], "app");
    assert_eq!(status["policies"][0]["rpo_met"], true);
    assert!(status["policies"][0]["last_good"]["id"].is_string());
}

#[test]
fn prune_deletes_what_retention_no_longer_keeps_and_keeps_the_rest() {
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        ("files.yaml", &dir_policy("files", "d")),
    ]);
    std::fs::create_dir_all(f.work().join("d")).unwrap();
    std::fs::write(f.work().join("d/x"), "x").unwrap();
    for _ in 0..4 {
        f.cmd().args(["backup", "files"]).assert().success();
    }
    assert_eq!(f.backups("files").len(), 4);
    let out = f.cmd().args(["prune", "--dry-run"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("would delete"), "{text}");
    assert_eq!(f.backups("files").len(), 4, "dry run deletes nothing");

    f.cmd().arg("prune").assert().success();
    let left = f.backups("files");
    assert_eq!(left.len(), 2, "keepLast: 2 => {left:?}");
    let dirs = std::fs::read_dir(f.store().join("files")).unwrap().count();
    assert_eq!(dirs, 2, "deleted backups are gone from storage");
}
