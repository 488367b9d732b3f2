//! docs/restore.md's commands, extracted from the document (`doc_block`) and
//! run with the standard tools: a drift in the document fails here.

use crate::common::{Fixture, STORAGE, dir_policy, sqlite, sqlite_policy};
use crate::dbs::{doc_block, run_doc_block};

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
    let script = doc_block("## SQLite");
    assert!(script.contains("PRAGMA integrity_check"), "{script}");
    // The integrity check must say `ok`, not just run.
    run_doc_block(
        &app,
        &script.replace(
            "'PRAGMA integrity_check'",
            "'PRAGMA integrity_check' | grep -qx ok",
        ),
    );
    assert_eq!(
        sqlite(&db, ".dump"),
        sqlite(&app.join("restored.db"), ".dump")
    );

    let files = f
        .store()
        .join("files")
        .join(f.backups("files")[0]["id"].as_str().unwrap());
    run_doc_block(&files, &doc_block("## Directory"));
    assert_eq!(
        std::fs::read_to_string(files.join("restored/sub/file.txt")).unwrap(),
        "restorable by hand\n"
    );
}

#[test]
fn documented_command_source_procedure_feeds_the_artifact_to_the_restore_program() {
    let policy = "apiVersion: safepoint/v1\nkind: BackupPolicy\nmetadata:\n  name: cmd\nspec:\n  source:\n    type: command\n    backupCommand: 'printf \"exactly these bytes\"'\n    restoreCommand: 'cat > /dev/null'\n  storage: local\n  retention: {keepLast: 2}\n";
    let f = Fixture::new(&[("storage.yaml", STORAGE), ("cmd.yaml", policy)]);
    f.permit(crate::common::PERMISSIVE);
    f.cmd().args(["backup", "cmd"]).assert().success();
    let dir = f
        .store()
        .join("cmd")
        .join(f.backups("cmd")[0]["id"].as_str().unwrap());
    let script = doc_block("## Command sources");
    assert!(script.contains("your-restore-command"), "{script}");
    run_doc_block(
        &dir,
        &script.replace("your-restore-command", "cat > fed.bin"),
    );
    assert_eq!(
        std::fs::read(dir.join("fed.bin")).unwrap(),
        b"exactly these bytes"
    );
}
