//! IO: the WAL stream of a PITR policy. `pg_receivewal` on a physical
//! replication slot (created if missing) writes segments into a spool
//! directory, `--synchronous` so every write is flushed (and confirmed to the
//! slot) at once, `--no-loop` so a lost connection ends it and the
//! supervisor (`engine::pitr`) restarts it with backoff. The slot keeps the
//! server's WAL while nothing streams: a restart resumes where the archive
//! stopped, with no gap. Password through PGPASSWORD, never in argv.

use std::path::Path;
use std::process::Stdio;

use super::postgres;
use super::process::{self, Tool};
use super::sql;
use super::{ExecError, pgtools};
use crate::policy::SecretRef;

/// Where the server's WAL and the stream are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The server's flushed WAL end (`pg_current_wal_flush_lsn`).
    pub server: u64,
    /// What `pg_receivewal` confirmed on disk in the spool (the slot's
    /// `restart_lsn`; `--synchronous` confirms every write).
    pub received: Option<u64>,
    pub segment_size: u64,
}

/// How `pg_receivewal` is run for one policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream<'a> {
    pub url: &'a str,
    pub password_from: Option<&'a SecretRef>,
    pub bin_dir: Option<&'a Path>,
    pub slot: &'a str,
}

impl Stream<'_> {
    fn tool(&self) -> Result<Tool, ExecError> {
        let server = postgres::Server::new(self.url, self.password_from)?;
        // The newest client streams from every older server.
        let root = Path::new(pgtools::LAYOUT_ROOT);
        let program = pgtools::program_for(root, self.bin_dir, "pg_receivewal", 0);
        let mut tool = postgres::tool(&server, &program.to_string_lossy());
        tool.cmd.arg(format!("--slot={}", self.slot));
        Ok(tool)
    }

    /// Creates the slot unless it exists, reserving WAL at once. (`pg_receivewal
    /// --create-slot` does not reserve: until its first stream confirmed a
    /// position, a checkpoint could remove the segments it still needed, and
    /// every restart then asked for a removed segment.)
    pub async fn create_slot(&self) -> Result<(), ExecError> {
        let server = postgres::Server::new(self.url, self.password_from)?;
        let mut conn = server.connect(&server.opts).await?;
        let created = sqlx::query(
            "SELECT pg_create_physical_replication_slot($1, true) \
             WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
        )
        .bind(self.slot)
        .execute(&mut conn)
        .await;
        sql::close(conn).await;
        match created {
            // Another archiver created it meanwhile: it exists, as wanted.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42710") => Ok(()),
            other => other
                .map(drop)
                .map_err(server.query_err("create the replication slot")),
        }
    }

    /// Drops the slot (`pg_receivewal --drop-slot`); a slot that does not
    /// exist is no error (blocking; run on the blocking pool).
    pub fn drop_slot(&self) -> Result<(), ExecError> {
        let mut tool = self.tool()?;
        tool.cmd.arg("--drop-slot");
        match process::output(tool) {
            Err(ExecError::Tool { stderr, .. }) if stderr.contains("does not exist") => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Starts streaming into `spool` (killed when the handle is dropped).
    pub fn spawn(&self, spool: &Path) -> Result<tokio::process::Child, ExecError> {
        let tool = self.tool()?;
        let mut cmd = tokio::process::Command::from(tool.cmd);
        cmd.arg("--directory")
            .arg(spool)
            .args(["--synchronous", "--no-loop", "--status-interval=1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        cmd.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ExecError::ToolMissing {
                tool: tool.name.clone(),
            },
            _ => ExecError::Tool {
                tool: tool.name.clone(),
                target: tool.target.clone(),
                status: "could not start".into(),
                stderr: e.to_string(),
                transient: false,
            },
        })
    }

    /// Where the server and this stream are (a plain connection to the
    /// URL's database, not a replication one).
    pub async fn position(&self) -> Result<Position, ExecError> {
        let server = postgres::Server::new(self.url, self.password_from)?;
        let mut conn = server.connect(&server.opts).await?;
        let read: Result<(String, Option<String>, String), ExecError> = sqlx::query_as(
            "SELECT pg_current_wal_flush_lsn()::text, \
             (SELECT restart_lsn::text FROM pg_replication_slots WHERE slot_name = $1), \
             (SELECT setting FROM pg_settings WHERE name = 'wal_segment_size')",
        )
        .bind(self.slot)
        .fetch_one(&mut conn)
        .await
        .map_err(server.query_err("read the server's WAL position"));
        sql::close(conn).await;
        let (flushed, received, size) = read?;
        let bad = || ExecError::Query {
            what: "read the server's WAL position",
            target: server.target().to_string(),
            message: format!("unexpected answer `{flushed}`, `{size}`"),
            transient: false,
        };
        let lsn = |t: &str| super::pitr_base::parse_lsn(t).ok_or_else(bad);
        Ok(Position {
            server: lsn(&flushed)?,
            received: received.as_deref().map(lsn).transpose()?,
            segment_size: size.parse().map_err(|_| bad())?,
        })
    }

    /// Redacts the password from a line the tool printed.
    pub fn redact(&self, line: &str) -> String {
        match postgres::Server::new(self.url, self.password_from) {
            Ok(server) => server.redactor.redact(line),
            Err(_) => line.to_string(),
        }
    }
}
