//! Database helpers for the integration tests: uniquely named databases on
//! the local PostgreSQL (127.0.0.1:5432, trust) and MariaDB (127.0.0.1:3306,
//! root), dropped on drop; throwaway PostgreSQL clusters (initdb on a free
//! port, run as the postgres user) for faults the shared server must not see;
//! the catalog's run records; a small tmpfs for "storage full".

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::common::Fixture;

pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A name no other test (or test run) uses: `prefix_<pid>_<n>`.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst),
        nanos % 100_000
    )
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("command runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `psql` on the local server (or `port`), unaligned tuples only.
pub fn psql_at(port: u16, db: &str, sql: &str) -> String {
    run(Command::new("psql")
        .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"])
        .args(["-h", "127.0.0.1", "-U", "postgres", "-p", &port.to_string()])
        .args(["-d", db, "-c", sql]))
}

pub fn psql(db: &str, sql: &str) -> String {
    psql_at(5432, db, sql)
}

/// A database on the local PostgreSQL, dropped (with its sessions) on drop.
pub struct PgDb {
    pub name: String,
    pub port: u16,
}

impl PgDb {
    pub fn new(prefix: &str) -> PgDb {
        Self::on(5432, prefix)
    }

    pub fn on(port: u16, prefix: &str) -> PgDb {
        let name = unique(prefix);
        psql_at(port, "postgres", &format!("CREATE DATABASE {name}"));
        PgDb { name, port }
    }

    /// A name for a database that does not exist yet (dropped on drop if created).
    pub fn reserved(prefix: &str) -> PgDb {
        PgDb {
            name: unique(prefix),
            port: 5432,
        }
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{}", self.port, self.name)
    }

    pub fn sql(&self, sql: &str) -> String {
        psql_at(self.port, &self.name, sql)
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args(["-X", "-q", "-h", "127.0.0.1", "-U", "postgres"])
            .args(["-p", &self.port.to_string(), "-d", "postgres", "-c"])
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .stderr(Stdio::null())
            .status();
    }
}

/// Per table `md5` of all rows in a stable order: equal sums = equal content.
pub fn pg_checksums(port: u16, db: &str) -> String {
    let tables = psql_at(
        port,
        db,
        "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables \
         WHERE schemaname NOT IN ('pg_catalog','information_schema') ORDER BY 1",
    );
    tables
        .lines()
        .map(|t| {
            let sum = psql_at(
                port,
                db,
                &format!(
                    "SELECT count(*) || ':' || coalesce(md5(string_agg(x::text, ',' ORDER BY x::text)), '-') FROM {t} x"
                ),
            );
            format!("{t}={sum}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A free TCP port on loopback (nothing listens on it right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A throwaway PostgreSQL 15 cluster on a free port, owned by the postgres
/// user (initdb refuses root). `password`: scram auth with that superuser
/// password, else trust. Stopped and removed on drop.
pub struct Cluster {
    pub dir: PathBuf,
    pub port: u16,
    /// Extra server options (`-c name=value ...`), kept for `resume`.
    extra: String,
}

fn as_postgres(args: &[&str]) -> Command {
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", "postgres", "--"]).args(args);
    cmd
}

impl Cluster {
    pub fn start(password: Option<&str>) -> Cluster {
        Self::start_with(password, "")
    }

    /// Like `start`, with extra server options (`-c name=value ...`).
    pub fn start_with(password: Option<&str>, extra: &str) -> Cluster {
        // Under /tmp directly: the postgres user cannot enter root's tempdirs.
        let dir = PathBuf::from("/tmp").join(unique("safepoint-pg"));
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(uid("postgres")), Some(uid("postgres"))).unwrap();
        let data = dir.join("data");
        let mut init = vec![
            format!("{PG_BIN}/initdb"),
            "-D".into(),
            data.display().to_string(),
            "-U".into(),
            "postgres".into(),
            "--no-sync".into(),
        ];
        if let Some(pw) = password {
            let pwfile = dir.join("pw");
            std::fs::write(&pwfile, pw).unwrap();
            std::os::unix::fs::chown(&pwfile, Some(uid("postgres")), None).unwrap();
            init.extend([
                "-A".into(),
                "scram-sha-256".into(),
                format!("--pwfile={}", pwfile.display()),
            ]);
        } else {
            init.extend(["-A".into(), "trust".into()]);
        }
        let args: Vec<&str> = init.iter().map(String::as_str).collect();
        run(as_postgres(&args).stdout(Stdio::null()));
        let cluster = Cluster {
            dir,
            port: free_port(),
            extra: extra.to_string(),
        };
        cluster.resume();
        cluster
    }

    /// Starts the server (again, after `kill`) on the same port and data.
    pub fn resume(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c shared_buffers=32MB {}",
            self.port,
            self.dir.display(),
            self.extra
        );
        let log = self.dir.join("log").display().to_string();
        let data_s = self.dir.join("data").display().to_string();
        run(as_postgres(&[
            &format!("{PG_BIN}/pg_ctl"),
            "-D",
            &data_s,
            "-l",
            &log,
            "-w",
            "-o",
            &opts,
            "start",
        ])
        .stdout(Stdio::null()));
    }

    /// Stops the server at once (`-m immediate`), as a crash would.
    pub fn kill(&self) {
        let data = self.dir.join("data").display().to_string();
        let _ = as_postgres(&[
            &format!("{PG_BIN}/pg_ctl"),
            "-D",
            &data,
            "-m",
            "immediate",
            "stop",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn uid(user: &str) -> u32 {
    run(Command::new("id").args(["-u", user])).parse().unwrap()
}

/// `mariadb` as root on the local server.
pub fn mariadb(db: Option<&str>, sql: &str) -> String {
    let mut cmd = Command::new("mariadb");
    cmd.args([
        "--protocol=TCP",
        "-h",
        "127.0.0.1",
        "-P",
        "3306",
        "-u",
        "root",
    ])
    .args(["-N", "-B", "--default-character-set=utf8mb4"]);
    if let Some(db) = db {
        cmd.arg(db);
    }
    run(cmd.args(["-e", sql]))
}

/// A database on the local MariaDB, dropped on drop.
pub struct MyDb {
    pub name: String,
}

impl MyDb {
    pub fn new(prefix: &str) -> MyDb {
        let name = unique(prefix);
        mariadb(None, &format!("CREATE DATABASE {name}"));
        MyDb { name }
    }

    pub fn reserved(prefix: &str) -> MyDb {
        MyDb {
            name: unique(prefix),
        }
    }

    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:3306/{}", self.name)
    }

    pub fn sql(&self, sql: &str) -> String {
        mariadb(Some(&self.name), sql)
    }
}

impl Drop for MyDb {
    fn drop(&mut self) {
        let _ = Command::new("mariadb")
            .args(["--protocol=TCP", "-h", "127.0.0.1", "-u", "root", "-e"])
            .arg(format!("DROP DATABASE IF EXISTS {}", self.name))
            .stderr(Stdio::null())
            .status();
    }
}

/// A backup policy of a database source (`extra` is appended to `spec`).
pub fn db_policy(name: &str, kind: &str, url: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: safepoint/v1
kind: BackupPolicy
metadata:
  name: {name}
spec:
  source:
    type: {kind}
    url: {url}
  storage: local
  schedule: {{cron: "0 * * * *", timezone: UTC}}
  retention:
    keepLast: 5
{extra}"#
    )
}

/// The policy with `passwordFrom: {env: VAR}` added to its source.
pub fn with_password_env(policy: &str, var: &str) -> String {
    policy.replacen(
        "\n  storage: local",
        &format!("\n    passwordFrom: {{env: {var}}}\n  storage: local"),
        1,
    )
}

/// `(outcome, error_kind, error)` of every run of `policy`, oldest first.
pub fn runs(f: &Fixture, policy: &str) -> Vec<(String, String, String)> {
    let out = crate::common::sqlite(
        &f.data().join("catalog.db"),
        &format!(
            "SELECT outcome || char(31) || coalesce(error_kind,'') || char(31) || coalesce(replace(error, char(10), ' '),'') \
             FROM runs WHERE policy = '{policy}' ORDER BY id"
        ),
    );
    out.lines()
        .map(|l| {
            let mut p = l.split('\u{1f}').map(str::to_string);
            (
                p.next().unwrap_or_default(),
                p.next().unwrap_or_default(),
                p.next().unwrap_or_default(),
            )
        })
        .collect()
}

/// Backup directories of `policy` in storage (complete or not).
pub fn backup_dirs(f: &Fixture, policy: &str) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(f.store().join(policy))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    dirs.sort();
    dirs
}

/// Checks the invariants of a failed backup: the run is recorded failed with
/// `needle` in its error, no secret leaked, nothing new in storage and the
/// `before` backups are still listed and verified.
pub fn assert_failed_cleanly(
    f: &Fixture,
    policy: &str,
    before: &[PathBuf],
    needle: &str,
    secret: Option<&str>,
) -> String {
    let runs = runs(f, policy);
    let (outcome, _kind, error) = runs.last().expect("a run is recorded").clone();
    assert_eq!(outcome, "failed", "{runs:?}");
    assert!(
        error.to_lowercase().contains(&needle.to_lowercase()),
        "error lacks `{needle}`: {error}"
    );
    if let Some(s) = secret {
        assert!(!error.contains(s), "secret leaked: {error}");
    }
    assert_eq!(backup_dirs(f, policy), before, "partial data removed");
    let listed = f.backups(policy);
    assert_eq!(listed.len(), before.len(), "{listed:?}");
    let list = f.json(&["--verify-interval", "0", "list", "--policy", policy]);
    for item in list.as_array().unwrap() {
        assert_eq!(item["backup"]["health"], "verified", "{item}");
    }
    error
}

/// A tmpfs of `size` (e.g. `2m`) mounted at `dir`, unmounted on drop.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "the storage-full test mounts a tmpfs and needs root (CI runs as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The first ```sh block after the heading starting with `heading` in
/// docs/restore.md.
pub fn doc_block(heading: &str) -> String {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/restore.md")).unwrap();
    let start = doc
        .find(&format!("\n{heading}"))
        .unwrap_or_else(|| panic!("docs/restore.md has no `{heading}`"));
    let block = &doc[start..];
    let open = block.find("```sh\n").expect("a sh block") + 6;
    let close = block[open..].find("```").expect("closed block") + open;
    block[open..close].to_string()
}

/// Runs a documented shell block in `dir`; panics with its stderr on failure.
pub fn run_doc_block(dir: &Path, script: &str) {
    let out = Command::new("sh")
        .args(["-e", "-c", script])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "documented commands failed:\n{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
