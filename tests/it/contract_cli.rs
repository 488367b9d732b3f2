//! The documented CLI contract, end to end: what README.md's command table
//! promises (exit codes, `--output json`, flags) checked against the real
//! binary on real catalogs built by real backups and prunes. docs/contract.md
//! maps each promise to the test here that keeps it.

use std::path::Path;

use crate::common::{Fixture, PERMISSIVE, STORAGE, dir_policy, git, sqlite, sqlite_policy};

/// Exit code, stdout and stderr of one run.
pub fn run(cmd: &mut assert_cmd::Command) -> (Option<i32>, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs with `--output json`, asserts the exit code, parses stdout.
pub fn json_exit(f: &Fixture, args: &[&str], code: i32) -> serde_json::Value {
    let (got, out, err) = run(f.cmd().args(args).args(["--output", "json"]));
    assert_eq!(got, Some(code), "{args:?}: stdout {out} stderr {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {out}"))
}

fn files_fixture(name: &str) -> Fixture {
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        (&format!("{name}.yaml"), &dir_policy(name, "d")),
    ]);
    std::fs::create_dir_all(f.work().join("d")).unwrap();
    std::fs::write(f.work().join("d/data"), "one").unwrap();
    f
}

fn catalog(f: &Fixture) -> std::path::PathBuf {
    f.data().join("catalog.db")
}

fn ids(f: &Fixture, policy: &str) -> Vec<String> {
    f.backups(policy)
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect()
}

fn report(f: &Fixture, since: &str) -> serde_json::Value {
    let (code, out, err) = run(f
        .cmd()
        .args(["report", "--since", since, "--format", "json"]));
    assert_eq!(code, Some(0), "report exits 0: {err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["format"], 1);
    r["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["policy"] == "files")
        .cloned()
        .unwrap_or_else(|| panic!("no files row: {r}"))
}

#[test]
fn report_since_counts_real_backups_prunes_and_filters_by_its_window() {
    let f = files_fixture("files");
    for _ in 0..3 {
        f.cmd().args(["backup", "files"]).assert().success();
    }
    f.cmd().arg("prune").assert().success();
    assert_eq!(ids(&f, "files").len(), 2, "keepLast: 2");

    let p = report(&f, "1d");
    assert_eq!(p["backups_taken"], 3, "{p}");
    assert_eq!(p["backups_failed"], 0, "{p}");
    assert_eq!(p["kept"], 2, "{p}");
    assert_eq!(p["pruned"], 1, "{p}");
    assert_eq!(p["retention_honoured"], true, "{p}");
    assert_eq!(p["unhealthy"], 0, "{p}");
    let (code, md, _) = run(f.cmd().args(["report", "--since", "1d"]));
    assert_eq!(code, Some(0));
    assert!(md.contains("| files | - | - | 3 | 0 | 2 |"), "{md}");

    // Move the first run and the deletion ten years back: a one-day window
    // no longer sees them (the deleted backup counts as neither kept nor
    // pruned), a 1100-week window still does.
    let db = catalog(&f);
    sqlite(
        &db,
        "update runs set started_at = '2016' || substr(started_at, 5) where id = (select min(id) from runs);
         update backups set started_at = '2016' || substr(started_at, 5), deleted_at = '2016' || substr(deleted_at, 5) where deleted_at is not null;",
    );
    let p = report(&f, "1d");
    assert_eq!(
        (&p["backups_taken"], &p["kept"], &p["pruned"]),
        (&2.into(), &2.into(), &0.into()),
        "{p}"
    );
    let p = report(&f, "1100w");
    assert_eq!(
        (&p["backups_taken"], &p["kept"], &p["pruned"]),
        (&3.into(), &2.into(), &1.into()),
        "{p}"
    );
}

#[test]
fn prune_orphans_deletes_the_backup_directories_of_a_policy_removed_from_git() {
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        ("files.yaml", &dir_policy("files", "d")),
        ("gone.yaml", &dir_policy("gone", "d")),
    ]);
    std::fs::create_dir_all(f.work().join("d")).unwrap();
    std::fs::write(f.work().join("d/data"), "x").unwrap();
    f.cmd().args(["backup", "files"]).assert().success();
    f.cmd().args(["backup", "gone"]).assert().success();
    let gone = ids(&f, "gone").pop().unwrap();
    let kept = ids(&f, "files").pop().unwrap();
    std::fs::remove_file(f.repo().join("policies/gone.yaml")).unwrap();
    // Orphaning a policy's history is a reviewed, acknowledged change.
    let acknowledged = STORAGE.replacen(
        "metadata:\n",
        "metadata:\n  annotations: {safepoint.io/allow-orphans: gone}\n",
        1,
    );
    f.commit(&[("storage.yaml", &acknowledged)], "drop the gone policy");

    f.cmd().arg("prune").assert().success();
    assert!(
        f.store().join("gone").join(&gone).is_dir(),
        "prune without --orphans keeps an orphan's backups"
    );
    let dry = json_exit(&f, &["prune", "--orphans", "--dry-run"], 0);
    assert!(dry.to_string().contains(&gone), "{dry}");
    assert!(
        f.store().join("gone").join(&gone).is_dir(),
        "a dry run deletes nothing"
    );

    let done = json_exit(&f, &["prune", "--orphans"], 0);
    let outcomes = done.as_array().unwrap();
    assert_eq!(outcomes.len(), 1, "{done}");
    assert_eq!(outcomes[0]["policy"], "gone");
    assert_eq!(outcomes[0]["backup_id"], gone.as_str());
    assert_eq!(outcomes[0]["ok"], true);
    assert!(
        !f.store().join("gone").join(&gone).exists(),
        "the directory is deleted"
    );
    assert!(
        f.store()
            .join("files")
            .join(&kept)
            .join("manifest.json")
            .is_file()
    );
    assert!(ids(&f, "gone").is_empty());
    assert_eq!(ids(&f, "files"), vec![kept]);
}

#[test]
fn pin_with_a_reason_shows_in_list_and_unpin_releases_it_both_in_json() {
    let f = files_fixture("files");
    f.cmd().args(["backup", "files"]).assert().success();
    let id = ids(&f, "files").pop().unwrap();
    let pinned = json_exit(&f, &["pin", &id, "--reason", "legal hold 42"], 0);
    assert_eq!(pinned["backup"], id.as_str());
    assert_eq!(pinned["pinned"], "legal hold 42");
    let list = f.json(&["list", "--policy", "files"]);
    assert_eq!(list[0]["backup"]["pinned"], "legal hold 42", "{list}");
    assert!(
        list[0]["why"].as_str().unwrap().contains("legal hold 42"),
        "{list}"
    );
    let (_, table, _) = run(f.cmd().args(["list"]));
    assert!(table.contains("legal hold 42"), "{table}");

    let unpinned = json_exit(&f, &["unpin", &id], 0);
    assert_eq!(unpinned["pinned"], serde_json::Value::Null);
    assert_eq!(f.backups("files")[0]["pinned"], serde_json::Value::Null);
}

#[test]
fn unknown_ids_exit_4_for_pin_unpin_drill_and_deploy_finish() {
    let f = files_fixture("files");
    for args in [
        &["pin", "no-such-backup"][..],
        &["unpin", "no-such-backup"],
        &["drill", "no-such-policy"],
        &["drill", "files"], // a policy without `drill:`
        &[
            "deploy",
            "finish",
            "--release",
            "never",
            "--status",
            "success",
        ],
        &["deploy", "start", "--release", "r1", "--policy", "nope"],
    ] {
        let (code, _, err) = run(f.cmd().args(args));
        assert_eq!(code, Some(4), "{args:?}: {err}");
        assert!(!err.is_empty(), "{args:?} says why");
    }
}

#[test]
fn restore_exits_1_and_names_the_table_when_row_counts_differ() {
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        ("app.yaml", &sqlite_policy("app", "app.db")),
    ]);
    f.make_sqlite("app.db");
    f.cmd().args(["backup", "app"]).assert().success();
    let id = ids(&f, "app").pop().unwrap();
    // The backup's manifest (as the catalog holds it) says 99 users; the
    // artifact restores 2.
    sqlite(
        &catalog(&f),
        "update backups set manifest = json_set(manifest, '$.counts.users', 99)",
    );
    let to = f.work().join("restored.db");
    let out = json_exit(&f, &["restore", &id, "--to", to.to_str().unwrap()], 1);
    assert_eq!(out["backup"], id.as_str());
    assert_eq!(out["counts"]["users"], 2, "{out}");
    let mismatches = out["countMismatches"].to_string();
    assert!(mismatches.contains("users"), "{out}");
    assert!(!mismatches.contains("events"), "{out}");
    let (code, table, _) = run(f.cmd().args(["restore", &id, "--force", "--to"]).arg(&to));
    assert_eq!(code, Some(1));
    assert!(
        table.contains("warning:") && table.contains("users"),
        "{table}"
    );
}

#[test]
fn restore_on_a_directory_needs_force_and_then_writes_the_backup_over_it() {
    let f = files_fixture("files");
    f.cmd().args(["backup", "files"]).assert().success();
    let id = ids(&f, "files").pop().unwrap();
    let to = f.work().join("out");
    let first = json_exit(&f, &["restore", &id, "--to", to.to_str().unwrap()], 0);
    assert_eq!(first["backup"], id.as_str());
    assert_eq!(first["counts"]["files"], 1, "{first}");
    assert_eq!(std::fs::read_to_string(to.join("data")).unwrap(), "one");

    std::fs::write(to.join("data"), "edited").unwrap();
    std::fs::write(to.join("local-only"), "mine").unwrap();
    let (code, _, err) = run(f.cmd().args(["restore", &id, "--to"]).arg(&to));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--force"), "{err}");
    assert_eq!(
        std::fs::read_to_string(to.join("data")).unwrap(),
        "edited",
        "refused: untouched"
    );

    f.cmd()
        .args(["restore", &id, "--force", "--to"])
        .arg(&to)
        .assert()
        .success();
    assert_eq!(std::fs::read_to_string(to.join("data")).unwrap(), "one");
    // Documented: files the backup does not hold are left in place.
    assert_eq!(
        std::fs::read_to_string(to.join("local-only")).unwrap(),
        "mine"
    );
}

#[test]
fn catalog_rebuild_exits_1_when_a_storage_cannot_be_read() {
    let broken = "apiVersion: safepoint/v1\nkind: Storage\nmetadata:\n  name: broken\nspec:\n  type: local\n  path: not-a-dir\n";
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        ("broken.yaml", broken),
        ("files.yaml", &dir_policy("files", "d")),
    ]);
    std::fs::create_dir_all(f.work().join("d")).unwrap();
    std::fs::write(f.work().join("d/data"), "x").unwrap();
    std::fs::write(
        f.work().join("not-a-dir"),
        "a file where a directory should be",
    )
    .unwrap();
    f.cmd().args(["backup", "files"]).assert().success();
    let id = ids(&f, "files").pop().unwrap();
    std::fs::remove_file(catalog(&f)).unwrap();

    let out = json_exit(&f, &["catalog", "rebuild"], 1);
    let row = |name: &str| {
        out.as_array()
            .unwrap()
            .iter()
            .find(|r| r["storage"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name}: {out}"))
    };
    assert_eq!(row("local")["imported"], 1, "{out}");
    assert!(row("local")["problems"].as_array().unwrap().is_empty());
    let problems = row("broken")["problems"].to_string();
    assert!(problems.contains("not-a-dir"), "{problems}");
    assert_eq!(
        ids(&f, "files"),
        vec![id],
        "the readable storage was imported"
    );
}

#[test]
fn deploy_finish_exits_1_when_a_step_fails_and_says_which() {
    let policy = "apiVersion: safepoint/v1\nkind: BackupPolicy\nmetadata:\n  name: orders\nspec:\n  source: {type: directory, path: d}\n  storage: local\n  deploy:\n    before: snapshot\n    onSuccess: baseline\n  retention: {keepLast: 5}\n";
    let f = Fixture::new(&[("storage.yaml", STORAGE), ("orders.yaml", policy)]);
    std::fs::create_dir_all(f.work().join("d")).unwrap();
    std::fs::write(f.work().join("d/data"), "v1").unwrap();
    f.cmd()
        .args(["deploy", "start", "--release", "r1"])
        .assert()
        .success();
    std::fs::remove_dir_all(f.work().join("d")).unwrap();
    let out = json_exit(
        &f,
        &["deploy", "finish", "--release", "r1", "--status", "success"],
        1,
    );
    assert_eq!(out["release"], "r1");
    assert_eq!(out["ok"], false, "{out}");
    let step = &out["steps"][0];
    assert_eq!(
        (&step["policy"], &step["ok"]),
        (&"orders".into(), &false.into()),
        "{out}"
    );
    assert!(!step["detail"].as_str().unwrap().is_empty());
}

#[test]
fn restore_release_without_pre_deploy_restores_the_baseline_and_with_it_the_snapshot() {
    let policy = "apiVersion: safepoint/v1\nkind: BackupPolicy\nmetadata:\n  name: orders\nspec:\n  source: {type: directory, path: d}\n  storage: local\n  deploy:\n    before: snapshot\n    onSuccess: baseline\n  retention: {keepLast: 5}\n";
    let f = Fixture::new(&[("storage.yaml", STORAGE), ("orders.yaml", policy)]);
    std::fs::create_dir_all(f.work().join("d")).unwrap();
    std::fs::write(f.work().join("d/data"), "before r1").unwrap();
    f.cmd()
        .args(["deploy", "start", "--release", "r1"])
        .assert()
        .success();
    std::fs::write(f.work().join("d/data"), "after r1").unwrap();
    let done = json_exit(
        &f,
        &["deploy", "finish", "--release", "r1", "--status", "success"],
        0,
    );
    assert_eq!(done["ok"], true, "{done}");
    let restore = |extra: &[&str], to: &str| {
        f.cmd()
            .args([
                "restore",
                "--policy",
                "orders",
                "--release",
                "r1",
                "--to",
                to,
            ])
            .args(extra)
            .assert()
            .success();
        std::fs::read_to_string(f.work().join(to).join("data")).unwrap()
    };
    assert_eq!(restore(&[], "baseline"), "after r1");
    assert_eq!(restore(&["--pre-deploy"], "snapshot"), "before r1");
}

#[test]
fn deploy_start_timeout_exits_1_and_leaves_no_snapshot_to_deploy_on() {
    let policy = "apiVersion: safepoint/v1\nkind: BackupPolicy\nmetadata:\n  name: slow\nspec:\n  source:\n    type: command\n    backupCommand: 'cat gate.fifo'\n    restoreCommand: 'cat > /dev/null'\n  storage: local\n  deploy: {before: snapshot}\n  retention: {keepLast: 5}\n";
    let f = Fixture::new(&[("storage.yaml", STORAGE), ("slow.yaml", policy)]);
    f.permit(PERMISSIVE);
    let fifo = f.work().join("gate.fifo");
    mkfifo(&fifo);
    // Nobody ever writes the FIFO: the snapshot cannot finish.
    let (code, out, err) =
        run(f
            .cmd()
            .args(["deploy", "start", "--release", "r1", "--timeout", "2s"]));
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains("timed out") && err.contains("must not proceed"),
        "{err}"
    );
    let verified: Vec<_> = f
        .backups("slow")
        .into_iter()
        .filter(|b| b["health"] == "verified")
        .collect();
    assert!(verified.is_empty(), "{verified:?}");
    let (code, _, _) = run(f.cmd().args([
        "restore",
        "--policy",
        "slow",
        "--release",
        "r1",
        "--pre-deploy",
        "--to",
        "x",
    ]));
    assert_eq!(code, Some(2), "there is no snapshot of r1 to restore");
}

pub fn mkfifo(path: &Path) {
    let ok = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo (coreutils) runs");
    assert!(ok.success());
}

#[test]
fn validate_backup_and_audit_verify_print_json() {
    let f = files_fixture("files");
    let dir = f.repo().join("policies");
    let v = json_exit(&f, &["validate", dir.to_str().unwrap()], 0);
    assert_eq!(
        (&v["valid"], &v["policies"], &v["storages"]),
        (&true.into(), &1.into(), &1.into()),
        "{v}"
    );
    std::fs::write(dir.join("bad.yaml"), "apiVersion: safepoint/v1\nkind: BackupPolicy\nmetadata: {name: bad}\nspec: {storage: nowhere}\n").unwrap();
    let v = json_exit(&f, &["validate", dir.to_str().unwrap()], 1);
    assert_eq!(v["valid"], false);
    assert!(v["problems"].to_string().contains("bad.yaml"), "{v}");
    std::fs::remove_file(dir.join("bad.yaml")).unwrap();

    let b = json_exit(&f, &["backup", "files"], 0);
    assert_eq!(b[0]["policy"], "files", "{b}");
    assert_eq!(b[0]["action"], "backup");
    assert_eq!(b[0]["trigger"], "manual");
    assert_eq!(b[0]["ok"], true);
    assert_eq!(
        ids(&f, "files"),
        vec![b[0]["backup_id"].as_str().unwrap().to_string()]
    );

    let a = json_exit(&f, &["audit", "verify"], 0);
    assert_eq!(a["ok"], true, "{a}");
    assert!(a["entries"].as_u64().unwrap() >= 2, "{a}");
}

#[test]
fn branch_path_and_catalog_select_what_they_name() {
    let f = Fixture::new(&[("storage.yaml", STORAGE)]);
    std::fs::create_dir_all(f.work().join("d")).unwrap();
    std::fs::write(f.work().join("d/data"), "x").unwrap();
    let repo = f.repo();
    git(&repo, &["checkout", "-q", "-b", "ops"]);
    std::fs::create_dir_all(repo.join("backup/policies")).unwrap();
    std::fs::write(repo.join("backup/policies/storage.yaml"), STORAGE).unwrap();
    std::fs::write(
        repo.join("backup/policies/files.yaml"),
        dir_policy("elsewhere", "d"),
    )
    .unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "ops policies"]);
    git(&repo, &["checkout", "-q", "main"]);
    let cat = f.tmp.path().join("elsewhere.db");

    // main/policies does not hold the policy.
    let (code, _, _) = run(f.cmd().args(["backup", "elsewhere"]));
    assert_ne!(code, Some(0));
    f.cmd()
        .args(["--branch", "ops", "--path", "backup/policies", "--catalog"])
        .arg(&cat)
        .args(["backup", "elsewhere"])
        .assert()
        .success();
    assert!(cat.is_file(), "the catalog is where --catalog says");
    let listed = f
        .cmd()
        .args(["--branch", "ops", "--path", "backup/policies", "--catalog"])
        .arg(&cat)
        .args(["list", "--output", "json"])
        .output()
        .unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed[0]["backup"]["policy"], "elsewhere", "{listed}");
}

#[test]
fn a_backup_found_in_storage_but_not_in_the_catalog_is_imported_as_untracked_artifact() {
    let f = files_fixture("files");
    let other = f.tmp.path().join("other.db");
    f.cmd()
        .arg("--catalog")
        .arg(&other)
        .args(["backup", "files"])
        .assert()
        .success();
    f.cmd().args(["daemon", "--once"]).assert().success();
    assert_eq!(f.backups("files").len(), 1);
    let (_, audit, _) = run(f.cmd().args(["audit", "export"]));
    let line = audit
        .lines()
        .find(|l| l.contains("\"kind\":\"untracked-artifact\""))
        .unwrap_or_else(|| panic!("no untracked-artifact entry: {audit}"));
    assert!(line.contains("imported untracked backup files/"), "{line}");
}

/// A MariaDB user with a password, dropped on drop.
struct MyUser(String);

impl Drop for MyUser {
    fn drop(&mut self) {
        let _ = std::process::Command::new("mariadb")
            .args(["--protocol=TCP", "-h", "127.0.0.1", "-u", "root", "-e"])
            .arg(format!("DROP USER IF EXISTS '{}'@'%'", self.0))
            .status();
    }
}

#[test]
fn restore_to_password_from_file_and_env_reaches_a_password_protected_target() {
    use crate::dbs::{MyDb, db_policy, mariadb, unique};
    let src = MyDb::new("sp_pwsrc");
    src.sql("CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1), (2), (3);");
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        ("my.yaml", &db_policy("my", "mysql", &src.url(), "")),
    ]);
    f.cmd().args(["backup", "my"]).assert().success();
    let id = ids(&f, "my").pop().unwrap();

    let user = MyUser(unique("sp_pwuser"));
    let target = MyDb::reserved("sp_pwdst");
    mariadb(
        None,
        &format!(
            "CREATE USER '{u}'@'%' IDENTIFIED BY 'Pw-from-file-42'; GRANT ALL ON `{db}`.* TO '{u}'@'%';",
            u = user.0,
            db = target.name
        ),
    );
    let url = format!("mysql://{}@127.0.0.1:3306/{}", user.0, target.name);
    let pw = f.tmp.path().join("target-password");
    std::fs::write(&pw, "Pw-from-file-42\n").unwrap();

    // Without the password the server refuses.
    let (code, _, err) = run(f
        .cmd()
        .env_remove("MYSQL_PWD")
        .args(["restore", &id, "--to", &url]));
    assert_eq!(code, Some(2), "{err}");
    // An unset variable is named.
    let (code, _, err) = run(f.cmd().env_remove("SP_NO_SUCH_PW").args([
        "restore",
        &id,
        "--to",
        &url,
        "--to-password-from",
        "env:SP_NO_SUCH_PW",
    ]));
    assert_eq!(code, Some(2));
    assert!(err.contains("SP_NO_SUCH_PW"), "{err}");

    let (code, out, err) = run(f.cmd().env_remove("MYSQL_PWD").args([
        "restore",
        &id,
        "--to",
        &url,
        "--to-password-from",
        &format!("file:{}", pw.display()),
    ]));
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(!out.contains("Pw-from-file") && !err.contains("Pw-from-file"));
    assert_eq!(target.sql("SELECT COUNT(*) FROM t"), "3");

    let (code, out, err) = run(f
        .cmd()
        .env_remove("MYSQL_PWD")
        .env("SP_TARGET_PW", "Pw-from-file-42")
        .args([
            "restore",
            &id,
            "--force",
            "--to",
            &url,
            "--to-password-from",
            "env:SP_TARGET_PW",
        ]));
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(target.sql("SELECT COUNT(*) FROM t"), "3");
}

#[test]
fn drill_overdue_drift_appears_when_no_drill_passed_within_the_schedule_and_clears_after_one() {
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        ("app.yaml", crate::contract_server::DRILLED),
    ]);
    f.make_sqlite("app.db");
    std::fs::create_dir_all(f.work().join("scratch")).unwrap();
    f.cmd().args(["backup", "app"]).assert().success();
    let drift = |f: &Fixture| f.json(&["status"])["policies"][0]["drift"].to_string();
    assert!(
        !drift(&f).contains("drill-overdue"),
        "a fresh backup is not overdue"
    );
    // The only backup is from ten years ago and was never drilled (the
    // schedule is daily).
    sqlite(
        &catalog(&f),
        "update backups set started_at = '2016' || substr(started_at, 5), finished_at = '2016' || substr(finished_at, 5)",
    );
    assert!(drift(&f).contains("drill-overdue"), "{}", drift(&f));
    let out = json_exit(&f, &["drill", "app"], 0);
    assert_eq!(out["passed"], true, "{out}");
    assert!(!drift(&f).contains("drill-overdue"), "{}", drift(&f));
}
