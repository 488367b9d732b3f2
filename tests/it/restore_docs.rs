//! docs/restore.md's commands, run literally with the standard tools.

use std::process::Command;

use crate::common::{Fixture, STORAGE, dir_policy, sqlite, sqlite_policy};

fn sh(dir: &std::path::Path, script: &str) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "`{script}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn documented_zstd_and_tar_commands_restore_without_safepoint() {
    let policies = [
        ("storage.yaml", STORAGE.to_string()),
        ("app.yaml", sqlite_policy("app", "app.db")),
        ("files.yaml", dir_policy("files", "d")),
    ];
    let refs: Vec<(&str, &str)> = policies.iter().map(|(a, b)| (*a, b.as_str())).collect();
    let f = Fixture::new(&refs);
    let db = f.make_sqlite("app.db");
    std::fs::create_dir_all(f.work().join("d/sub")).unwrap();
    std::fs::write(f.work().join("d/sub/file.txt"), "restorable by hand\n").unwrap();
    f.cmd().args(["backup", "app"]).assert().success();
    f.cmd().args(["backup", "files"]).assert().success();

    let app = f
        .store()
        .join("app")
        .join(f.backups("app")[0]["id"].as_str().unwrap());
    sh(&app, "zstd -d < data.sqlite.zst > restored.db");
    sh(
        &app,
        "sqlite3 restored.db 'PRAGMA integrity_check' | grep -qx ok",
    );
    assert_eq!(
        sqlite(&db, ".dump"),
        sqlite(&app.join("restored.db"), ".dump")
    );

    let files = f
        .store()
        .join("files")
        .join(f.backups("files")[0]["id"].as_str().unwrap());
    sh(
        &files,
        "mkdir -p restored && zstd -d < data.tar.zst | tar -x -C restored",
    );
    assert_eq!(
        std::fs::read_to_string(files.join("restored/sub/file.txt")).unwrap(),
        "restorable by hand\n"
    );
}
