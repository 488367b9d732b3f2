//! docs/restore.md's decryption procedure, extracted from the document and
//! run with the standard `age` and `zstd` CLIs on an encrypted backup in
//! local storage.

use crate::common::{Fixture, STORAGE, sqlite, sqlite_policy};
use crate::dbs::{doc_block, run_doc_block};
use crate::s3_backup::age_keygen;

#[test]
fn documented_age_command_decrypts_an_encrypted_backup_without_safepoint() {
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("key.txt");
    let recipient = age_keygen(&key);
    let storage = format!("{STORAGE}  encryption:\n    ageRecipients: [{recipient}]\n");
    let policy = sqlite_policy("app", "app.db");
    let f = Fixture::new(&[("storage.yaml", &storage), ("app.yaml", &policy)]);
    let db = f.make_sqlite("app.db");
    f.cmd().args(["backup", "app"]).assert().success();

    let dir = f
        .store()
        .join("app")
        .join(f.backups("app")[0]["id"].as_str().unwrap());
    assert!(dir.join("data.sqlite.zst.age").exists());
    std::fs::copy(&key, dir.join("key.txt")).unwrap();
    let script = doc_block("## Encrypted backups");
    assert!(script.contains("age -d -i key.txt"), "{script}");
    run_doc_block(
        &dir,
        &script.replace(
            "'PRAGMA integrity_check'",
            "'PRAGMA integrity_check' | grep -qx ok",
        ),
    );
    assert_eq!(
        sqlite(&db, ".dump"),
        sqlite(&dir.join("restored.db"), ".dump")
    );
}
