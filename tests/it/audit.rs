//! The audit log in the real catalog: tampering done directly in the SQLite
//! file is caught and located; exports; no secret ever reaches the log.

use crate::common::{Fixture, STORAGE, dir_policy, sqlite};

fn history() -> Fixture {
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        ("files.yaml", &dir_policy("files", "d")),
    ]);
    std::fs::create_dir_all(f.work().join("d")).unwrap();
    std::fs::write(f.work().join("d/x"), "x").unwrap();
    for _ in 0..3 {
        f.cmd().args(["backup", "files"]).assert().success();
    }
    f.cmd().arg("prune").assert().success();
    f
}

fn verify(f: &Fixture) -> (i32, String) {
    let out = f.cmd().args(["audit", "verify"]).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn audit_records_decisions_with_their_actor_and_verifies() {
    let f = history();
    let (code, text) = verify(&f);
    assert_eq!(code, 0, "{text}");
    // An entry of ten years ago (moved there in the file) is outside
    // `--since 1d` and inside an unbounded export.
    let all = f.cmd().args(["audit", "export"]).output().unwrap();
    let all = String::from_utf8_lossy(&all.stdout).lines().count();
    sqlite(
        &f.data().join("catalog.db"),
        "UPDATE audit SET at = '2016' || substr(at, 5) WHERE seq = 1",
    );
    let old = f.cmd().args(["audit", "export"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&old.stdout).lines().count(), all);
    let export = f
        .cmd()
        .args(["audit", "export", "--since", "1d"])
        .output()
        .unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&export.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = lines.iter().map(|l| l["kind"].as_str().unwrap()).collect();
    assert_eq!(lines.len(), all - 1, "--since 1d leaves the old entry out");
    assert_eq!(lines[0]["seq"], 2, "{lines:?}");
    assert_ne!(
        kinds[0], "revision-applied",
        "the old entry was the first one"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "backup-succeeded").count(),
        3
    );
    assert!(kinds.contains(&"backup-pruned"), "{kinds:?}");
    let pruned = lines.iter().find(|l| l["kind"] == "backup-pruned").unwrap();
    assert!(
        pruned["message"].as_str().unwrap().contains("keepLast"),
        "{pruned}"
    );
    // Manual commands carry user@host.
    assert!(
        lines
            .iter()
            .all(|l| l["actor"].as_str().unwrap().contains('@')),
        "{lines:?}"
    );

    let csv = f
        .cmd()
        .args(["audit", "export", "--format", "csv"])
        .output()
        .unwrap();
    let csv = String::from_utf8_lossy(&csv.stdout);
    assert!(csv.starts_with("seq,at,kind,policy,actor,message,prev_hash,hash\n"));
    // Unbounded: every entry (the old one too) plus the header.
    assert_eq!(csv.lines().count(), all + 1);
}

#[test]
fn audit_verify_catches_edit_delete_insert_and_reorder_in_the_sqlite_file() {
    let db = |f: &Fixture| f.data().join("catalog.db");
    let cases = [
        (
            "edit",
            "UPDATE audit SET message = 'nothing happened' WHERE seq = 2",
        ),
        ("delete", "DELETE FROM audit WHERE seq = 3"),
        (
            "insert",
            "UPDATE audit SET seq = seq + 100 WHERE seq >= 3; UPDATE audit SET seq = seq - 99 WHERE seq >= 103; \
             INSERT INTO audit (seq, at, kind, policy, actor, message, prev_hash, hash) \
             SELECT 3, at, 'backup-pruned', policy, actor, 'forged', hash, hash FROM audit WHERE seq = 2",
        ),
        (
            "reorder",
            "UPDATE audit SET seq = -1 WHERE seq = 2; UPDATE audit SET seq = 2 WHERE seq = 3; UPDATE audit SET seq = 3 WHERE seq = -1",
        ),
        (
            "truncate the tail",
            "DELETE FROM audit WHERE seq = (SELECT MAX(seq) FROM audit)",
        ),
    ];
    for (what, sql) in cases {
        let f = history();
        assert_eq!(verify(&f).0, 0);
        sqlite(&db(&f), sql);
        let (code, text) = verify(&f);
        assert_eq!(code, 1, "{what} not detected: {text}");
        assert!(text.contains("TAMPERED at entry"), "{what}: {text}");
    }
}

#[test]
fn a_planted_secret_never_reaches_the_audit_log_or_the_report() {
    let f = history();
    // A commit with a password written inline: rejected, and its diagnostics
    // are recorded without the secret.
    f.commit(
        &[(
            "db.yaml",
            "apiVersion: safepoint/v1\nkind: BackupPolicy\nmetadata: {name: db}\nspec:\n  source: {type: postgres, url: \"postgres://app:PLANTED-s3cr3t@db.internal/app\"}\n  storage: local\n",
        )],
        "inline secret",
    );
    f.cmd().arg("status").assert().code(1);
    let export = f.cmd().args(["audit", "export"]).output().unwrap();
    let export = String::from_utf8_lossy(&export.stdout);
    assert!(export.contains("revision-rejected"), "{export}");
    let report = f
        .cmd()
        .args(["report", "--format", "json"])
        .output()
        .unwrap();
    let md = f.cmd().arg("report").output().unwrap();
    for text in [
        export.to_string(),
        String::from_utf8_lossy(&report.stdout).into(),
        String::from_utf8_lossy(&md.stdout).into(),
    ] {
        assert!(!text.contains("PLANTED-s3cr3t"), "secret leaked: {text}");
    }
    let raw = std::fs::read(f.data().join("catalog.db")).unwrap();
    let wal = std::fs::read(f.data().join("catalog.db-wal")).unwrap_or_default();
    for bytes in [raw, wal] {
        assert!(
            !bytes.windows(14).any(|w| w == b"PLANTED-s3cr3t"),
            "secret stored in the catalog"
        );
    }
}
