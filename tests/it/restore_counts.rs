//! A PostgreSQL restore says how many rows each table got without reading
//! the tables back: the rows are counted in the dump as it streams into
//! pg_restore. The counts must be the ones `count(*)` gives (inheritance
//! parents include their children, partitions are counted per leaf, large
//! objects and values holding newlines are not rows) and the ones the
//! backup recorded; `--recount` and drills read every table instead.

use crate::common::{Fixture, STORAGE};
use crate::dbs::{Cluster, PgDb, db_policy, psql_at};
use crate::postgres::populate;

/// Tables whose rows are easy to miscount from a stream.
fn awkward_source() -> PgDb {
    let src = PgDb::new("sp_cnt_src");
    populate(&src);
    src.sql(
        "CREATE TABLE notes (id int, body text, blob bytea);
         INSERT INTO notes VALUES
           (1, E'two\\nlines', E'\\\\x0a0a'), (2, E'tab\\there \\\\ backslash', NULL),
           (3, E'\\\\.', E'\\\\x5c2e0a'), (4, '', ''), (5, NULL, NULL);
         CREATE TABLE empty_one (id int);
         CREATE SCHEMA \"odd schema\";
         CREATE TABLE \"odd schema\".\"t.with dot\" (id int);
         INSERT INTO \"odd schema\".\"t.with dot\" SELECT generate_series(1, 42);
         CREATE TABLE animals (name text);
         CREATE TABLE dogs (bark text) INHERITS (animals);
         CREATE TABLE puppies (age int) INHERITS (dogs);
         INSERT INTO animals VALUES ('cat'), ('cow');
         INSERT INTO dogs VALUES ('rex', 'woof');
         INSERT INTO puppies VALUES ('bit', 'yip', 1), ('bob', 'yap', 2), ('bo', 'yop', 3);
         CREATE TABLE events (at date, what text) PARTITION BY RANGE (at);
         CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
         CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
         INSERT INTO events SELECT date '2025-06-01' + g, 'e' || g FROM generate_series(0, 299) g;
         CREATE MATERIALIZED VIEW big_notes AS SELECT * FROM notes;
         SELECT lo_from_bytea(0, E'\\\\x0a0a0a0a');
         CREATE FUNCTION no_op() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NULL; END$$;
         CREATE TRIGGER swallow BEFORE INSERT ON notes FOR EACH ROW EXECUTE FUNCTION no_op();",
    );
    src
}

fn restore(f: &Fixture, url: &str, extra: &[&str]) -> (serde_json::Value, String) {
    let out = f
        .cmd()
        .env("SAFEPOINT_LOG", "info")
        .args(["restore", "--policy", "orders", "--latest", "--to", url])
        .args(["--output", "json"])
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    (serde_json::from_slice(&out.stdout).unwrap(), stderr)
}

const SCANNED: &str = "counting the restored rows table by table";

#[test]
fn restored_rows_are_counted_from_the_stream_and_match_what_count_star_gives() {
    let src = awkward_source();
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        ("db.yaml", &db_policy("orders", "postgres", &src.url(), "")),
    ]);
    f.cmd().args(["backup", "orders"]).assert().success();

    // Into an existing empty database: streamed in one transaction.
    let streamed = PgDb::new("sp_cnt_stream");
    let (json, stderr) = restore(&f, &streamed.url(), &[]);
    assert!(!stderr.contains(SCANNED), "{stderr}");
    let counts = &json["counts"];
    assert_eq!(json["countMismatches"], serde_json::json!([]), "{json}");
    assert_eq!(counts["public.notes"], 5);
    assert_eq!(counts["public.empty_one"], 0);
    assert_eq!(counts["odd schema.t.with dot"], 42);
    assert_eq!(
        counts["public.animals"], 6,
        "a parent counts its descendants"
    );
    assert_eq!(counts["public.dogs"], 4);
    assert_eq!(counts["public.puppies"], 3);
    assert_eq!(counts["public.events_2025"], 214);
    assert_eq!(counts["public.events_2026"], 86);
    assert_eq!(counts["billing.invoices"], 500);
    for (table, n) in counts.as_object().unwrap() {
        let quoted = table
            .split_once('.')
            .map(|(s, t)| format!("\"{s}\".\"{t}\""))
            .unwrap();
        let actual = streamed.sql(&format!("SELECT count(*) FROM {quoted}"));
        assert_eq!(actual, n.to_string(), "{table}");
    }

    // `--recount` reads every table back, into a database safepoint
    // creates (parallel where it can): the same numbers.
    let recounted = PgDb::reserved("sp_cnt_recount");
    let (again, stderr) = restore(&f, &recounted.url(), &["--recount"]);
    assert!(stderr.contains(SCANNED), "{stderr}");
    assert_eq!(again["counts"], json["counts"]);

    // A created database restored in parallel counts from the spool's stream.
    let parallel = PgDb::reserved("sp_cnt_parallel");
    let (par, stderr) = restore(&f, &parallel.url(), &["--jobs", "2"]);
    assert!(!stderr.contains(SCANNED), "{stderr}");
    assert!(stderr.contains("pg_restore -j"), "{stderr}");
    assert_eq!(par["counts"], json["counts"]);
}

#[test]
fn a_table_the_dump_has_no_data_for_is_counted_on_the_server() {
    let src = PgDb::new("sp_cnt_tpl_src");
    populate(&src);
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        ("db.yaml", &db_policy("orders", "postgres", &src.url(), "")),
    ]);
    f.cmd().args(["backup", "orders"]).assert().success();
    // Every new database of this cluster starts with a table and rows
    // of its own (from template1): the dump knows nothing about them.
    let cluster = Cluster::start(None);
    psql_at(
        cluster.port,
        "template1",
        "CREATE TABLE local_extra AS SELECT generate_series(1, 7) AS id",
    );
    let url = format!("postgres://postgres@127.0.0.1:{}/restored", cluster.port);
    let (json, _) = restore(&f, &url, &[]);
    assert_eq!(json["counts"]["public.local_extra"], 7, "{json}");
    assert_eq!(json["counts"]["billing.invoices"], 500, "{json}");
}
