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
use super::{ExecError, pgtools};
use crate::policy::SecretRef;

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

    /// Creates the slot unless it exists (blocking; run on the blocking pool).
    pub fn create_slot(&self) -> Result<(), ExecError> {
        let mut tool = self.tool()?;
        tool.cmd.args(["--create-slot", "--if-not-exists"]);
        process::output(tool).map(|_| ())
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

    /// Redacts the password from a line the tool printed.
    pub fn redact(&self, line: &str) -> String {
        match postgres::Server::new(self.url, self.password_from) {
            Ok(server) => server.redactor.redact(line),
            Err(_) => line.to_string(),
        }
    }
}
