//! MySQL/MariaDB sources against the real MariaDB: a round trip comparing
//! every table's content (types, auto-increment, view, index, trigger,
//! routine), restores refused or forced, and faults (unreachable, wrong
//! password) that leave a failed run and the previous backups untouched.

use crate::common::{Fixture, STORAGE};
use crate::dbs::{
    MyDb, assert_failed_cleanly, backup_dirs, db_policy, doc_block, free_port, mariadb,
    run_doc_block, with_password_env,
};

pub fn populate(db: &MyDb) {
    db.sql(
        "CREATE TABLE users (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(100) NOT NULL,
                             profile JSON, avatar BLOB, created TIMESTAMP(3) NOT NULL,
                             local DATETIME, KEY users_name (name)) CHARACTER SET utf8mb4;
         CREATE TABLE events (id BIGINT AUTO_INCREMENT PRIMARY KEY, user_id INT, kind VARCHAR(20),
                              amount DECIMAL(12,2), FOREIGN KEY (user_id) REFERENCES users(id));
         CREATE TABLE audit (n INT);
         CREATE VIEW user_events AS SELECT u.name, e.kind FROM users u JOIN events e ON e.user_id = u.id;
         CREATE TRIGGER events_audit AFTER INSERT ON events FOR EACH ROW INSERT INTO audit VALUES (NEW.id);
         CREATE PROCEDURE add_event(IN u INT) INSERT INTO events (user_id, kind) VALUES (u, 'proc');
         SET time_zone = '+01:00';
         INSERT INTO users (name, profile, avatar, created, local) VALUES
           ('ädä ✓ 日本', '{\"email\": \"a@example.com\", \"tags\": [1, 2]}', 0x00FF10, '2026-11-25 10:00:00.123', '2026-11-25 10:00:00'),
           ('bob', NULL, NULL, '2026-11-24 00:00:00', NULL);
         INSERT INTO events (user_id, kind, amount)
           WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 300)
           SELECT 1 + n % 2, CONCAT('k', n), n * 1.5 FROM g;",
    );
}

/// Per table row count and checksum of all rows in a stable order.
fn checksums(db: &str) -> String {
    let tables = mariadb(
        Some(db),
        "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE() \
         AND table_type = 'BASE TABLE' ORDER BY 1",
    );
    tables
        .lines()
        .map(|t| {
            let cols = mariadb(
                Some(db),
                &format!(
                    "SELECT GROUP_CONCAT(CONCAT('COALESCE(HEX(`', column_name, '`), \"~\")') ORDER BY ordinal_position SEPARATOR ',') \
                     FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = '{t}'"
                ),
            );
            let sum = mariadb(
                Some(db),
                &format!(
                    "SET SESSION group_concat_max_len = 1 << 30; \
                     SELECT CONCAT(COUNT(*), ':', MD5(GROUP_CONCAT(CONCAT_WS('|', {cols}) ORDER BY CONCAT_WS('|', {cols})))) FROM `{t}`"
                ),
            );
            format!("{t}={sum}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn fixture(policy: &str) -> Fixture {
    Fixture::new(&[("storage.yaml", STORAGE), ("db.yaml", policy)])
}

#[test]
fn mariadb_backup_restores_every_table_routine_and_trigger() {
    let src = MyDb::new("sp_my_src");
    populate(&src);
    let f = fixture(&db_policy("shop", "mysql", &src.url(), ""));
    f.cmd().args(["backup", "shop"]).assert().success();
    let b = &f.backups("shop")[0];
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            f.store()
                .join("shop")
                .join(b["id"].as_str().unwrap())
                .join("manifest.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(m["counts"]["users"], 2, "{m}");
    assert_eq!(m["counts"]["events"], 300, "{m}");
    assert_eq!(m["counts"]["audit"], 300, "{m}");
    assert!(
        m["tools"]["server"].as_str().unwrap().contains("MariaDB"),
        "{m}"
    );
    assert_eq!(m["artifact"]["file"], "data.sql.zst");

    let dst = MyDb::reserved("sp_my_dst");
    f.cmd()
        .args([
            "restore",
            "--policy",
            "shop",
            "--latest",
            "--to",
            &dst.url(),
        ])
        .assert()
        .success();
    assert_eq!(checksums(&src.name), checksums(&dst.name));
    assert_eq!(dst.sql("SELECT COUNT(*) FROM user_events"), "300");
    let next_id = |db: &MyDb| {
        db.sql("SELECT AUTO_INCREMENT FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = 'events'")
    };
    assert_eq!(next_id(&src), next_id(&dst), "auto-increment continues");
    dst.sql("CALL add_event(2)");
    assert_eq!(
        dst.sql("SELECT COUNT(*) FROM events"),
        "301",
        "routine restored"
    );
    assert_eq!(
        dst.sql("SELECT COUNT(*) FROM audit"),
        "301",
        "trigger restored"
    );

    let out = f
        .cmd()
        .args([
            "restore",
            "--policy",
            "shop",
            "--latest",
            "--to",
            &dst.url(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    f.cmd()
        .args([
            "restore",
            "--policy",
            "shop",
            "--latest",
            "--force",
            "--to",
            &dst.url(),
        ])
        .assert()
        .success();
    assert_eq!(dst.sql("SELECT COUNT(*) FROM events"), "300");
}

#[test]
fn mariadb_unreachable_or_wrong_password_fails_cleanly_without_leaking_it() {
    let src = MyDb::new("sp_my_fault");
    src.sql("CREATE TABLE t (x INT); INSERT INTO t VALUES (1)");
    let user = src.name.replace("sp_my_fault", "spu");
    mariadb(
        None,
        &format!(
            "CREATE USER '{user}'@'%' IDENTIFIED BY 'good-pw-55aa'; \
             CREATE USER '{user}'@'localhost' IDENTIFIED BY 'good-pw-55aa'; \
             GRANT ALL ON {db}.* TO '{user}'@'%'; GRANT ALL ON {db}.* TO '{user}'@'localhost'",
            db = src.name
        ),
    );
    let url = format!("mysql://{user}@127.0.0.1:3306/{}", src.name);
    let f = fixture(&with_password_env(
        &db_policy("shop", "mysql", &url, ""),
        "SP_TEST_MY_PW",
    ));
    f.cmd()
        .env("SP_TEST_MY_PW", "good-pw-55aa")
        .args(["backup", "shop"])
        .assert()
        .success();
    let before = backup_dirs(&f, "shop");

    let out = f
        .cmd()
        .env("SP_TEST_MY_PW", "bad-pw-66bb")
        .args(["backup", "shop"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let error = assert_failed_cleanly(&f, "shop", &before, "access denied", Some("bad-pw-66bb"));
    assert!(!error.contains("attempt"), "not retried: {error}");

    let closed = format!("mysql://root@127.0.0.1:{}/{}", free_port(), src.name);
    f.commit(
        &[("db.yaml", &db_policy("shop", "mysql", &closed, ""))],
        "move db",
    );
    let out = f.cmd().args(["backup", "shop"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let error = assert_failed_cleanly(&f, "shop", &before, "refused", None);
    assert!(error.contains("attempt 3 of 3"), "retried: {error}");
    mariadb(
        None,
        &format!("DROP USER '{user}'@'%'; DROP USER '{user}'@'localhost'"),
    );
}

#[test]
fn documented_mariadb_pipeline_restores_without_safepoint() {
    let src = MyDb::new("sp_my_doc");
    populate(&src);
    let f = fixture(&db_policy("shop", "mysql", &src.url(), ""));
    f.cmd().args(["backup", "shop"]).assert().success();
    let dir = f
        .store()
        .join("shop")
        .join(f.backups("shop")[0]["id"].as_str().unwrap());
    let dst = MyDb::reserved("sp_my_doc_dst");
    let script = doc_block("## MySQL")
        .replace("db.internal", "127.0.0.1")
        .replace("shop_restored", &dst.name);
    run_doc_block(&dir, &script);
    assert_eq!(checksums(&src.name), checksums(&dst.name));
}
