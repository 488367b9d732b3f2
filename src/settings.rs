//! Startup wiring: the daemon's settings (flags and `SAFEPOINT_*` env vars,
//! see `cli`), resolved into absolute paths once.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;

use crate::git::RepoConfig;
use crate::plan::PlanOptions;
use crate::policy::Permissions;

#[derive(Debug, Clone)]
pub struct Settings {
    /// Catalog, mirror of remote repositories, locks and scratch space.
    pub data_dir: PathBuf,
    pub repo: RepoConfig,
    /// Where the catalog is (a SQLite file or a PostgreSQL database).
    pub catalog: crate::catalog::Location,
    /// The catalog's local file, protected from policies: the SQLite file,
    /// or for a PostgreSQL catalog its password file (else the unused
    /// default `<data-dir>/catalog.db`).
    pub catalog_path: PathBuf,
    /// Relative paths in policies (sources, local storage) resolve against this.
    pub base_dir: PathBuf,
    /// How often a remote repository is fetched (local ones are watched too).
    pub fetch_interval: Duration,
    /// Backups running at once across all policies.
    pub concurrency: usize,
    /// How often each stored artifact is re-read and its checksum verified.
    pub verify_interval: TimeDelta,
    /// On SIGTERM, how long running backups may take to finish before they
    /// are cancelled (and cleanly recorded as failed).
    pub shutdown_grace: Duration,
    pub plan: PlanOptions,
    /// age identity (key file) that decrypts encrypted artifacts for
    /// restores and drills; never in Git.
    pub age_identity_file: Option<PathBuf>,
    /// What policies may use (the operator's `--permissions` file or the
    /// single-team default), with the daemon's own paths protected.
    pub permissions: Arc<Permissions>,
}

impl Settings {
    pub fn tmp_dir(&self) -> PathBuf {
        self.data_dir.join("tmp")
    }
    pub fn locks_dir(&self) -> PathBuf {
        self.data_dir.join("locks")
    }
}
