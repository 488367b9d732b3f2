//! PostgreSQL restores into a database safepoint creates can run
//! `pg_restore -j` from a spooled copy of the dump under the data directory
//! (`--jobs N`, or by default when the rows are spread over tables and the
//! cores allow); the copy never outlives the restore, and a failed parallel
//! restore drops the database it created (nothing half-restored remains).
//! Into an existing empty database the restore streams in one transaction.

use crate::common::{Fixture, STORAGE};
use crate::dbs::{Cluster, PgDb, db_policy, pg_checksums, psql_at};
use crate::postgres::populate;

fn spool_files(f: &Fixture) -> Vec<std::path::PathBuf> {
    match std::fs::read_dir(f.data().join("tmp")) {
        Ok(dir) => dir.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

fn backed_up_source() -> (PgDb, Fixture) {
    let src = PgDb::new("sp_par_src");
    populate(&src);
    // Rows spread over tables (no table holds half of them): worth -j.
    src.sql(
        "CREATE TABLE spread_a AS SELECT g AS id FROM generate_series(1, 500) g;
         CREATE TABLE spread_b AS SELECT g AS id FROM generate_series(1, 500) g;",
    );
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        ("db.yaml", &db_policy("orders", "postgres", &src.url(), "")),
    ]);
    f.cmd().args(["backup", "orders"]).assert().success();
    (src, f)
}

/// `restore --policy orders --latest --to URL --jobs 2` with info logs: the
/// output and its stderr.
fn restore_latest(f: &Fixture, url: &str) -> (std::process::Output, String) {
    let out = f
        .cmd()
        .env("SAFEPOINT_LOG", "info")
        .args(["restore", "--policy", "orders", "--latest", "--to", url])
        .args(["--jobs", "2"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stderr)
}

#[test]
fn a_multi_table_restore_into_a_new_database_runs_in_parallel_and_leaves_no_spool() {
    let (src, f) = backed_up_source();
    let dst = PgDb::reserved("sp_par_dst");
    let (out, stderr) = restore_latest(&f, &dst.url());
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("pg_restore -j"), "{stderr}");
    assert_eq!(pg_checksums(5432, &src.name), pg_checksums(5432, &dst.name));
    assert_eq!(dst.sql("SELECT count(*) FROM billing.open_invoices"), "500");
    assert!(spool_files(&f).is_empty(), "{:?}", spool_files(&f));

    // An existing empty database (perhaps made by a DBA with its own
    // settings) is never dropped: the restore streams in one transaction.
    let empty = PgDb::new("sp_par_empty");
    let (out, stderr) = restore_latest(&f, &empty.url());
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("in one transaction"), "{stderr}");
    assert_eq!(
        pg_checksums(5432, &src.name),
        pg_checksums(5432, &empty.name)
    );
}

#[test]
fn a_failed_parallel_restore_drops_the_database_it_created_and_its_spool() {
    let (_src, f) = backed_up_source();
    // Every new database of this cluster starts with a `users` table (from
    // template1), so the dump's CREATE TABLE users fails mid-restore.
    let cluster = Cluster::start(None);
    psql_at(cluster.port, "template1", "CREATE TABLE users (id int)");
    let url = format!("postgres://postgres@127.0.0.1:{}/restored", cluster.port);
    let (out, stderr) = restore_latest(&f, &url);
    assert!(!out.status.success());
    assert!(
        stderr.contains("pg_restore") && stderr.contains("already exists"),
        "{stderr}"
    );
    let exists = psql_at(
        cluster.port,
        "postgres",
        "SELECT count(*) FROM pg_database WHERE datname = 'restored'",
    );
    assert_eq!(exists, "0", "the half-restored database was dropped");
    assert!(spool_files(&f).is_empty(), "{:?}", spool_files(&f));
}
