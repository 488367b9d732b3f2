//! IO: produce a source's backup stream and restore one. Executors write the
//! raw source bytes into the writer they are given (the artifact pipeline
//! compresses, hashes and stores them) and report tool versions and counts
//! for the manifest. They decide nothing.

pub(crate) mod classify;
pub mod command;
pub mod directory;
pub mod guard;
pub mod mysql;
pub mod pg_archive;
pub mod pg_restore;
pub(crate) mod pgtools;
pub mod pitr_base;
pub mod pitr_point;
pub mod pitr_wal;
pub mod postgres;
pub(crate) mod process;
pub mod secret;
pub mod spool;
pub(crate) mod sql;
pub mod sqlite;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::policy::{SecretRef, Source};
use crate::storage::pipeline::Cancel;

/// What an executor learned while producing a backup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Produced {
    pub tools: BTreeMap<String, String>,
    pub counts: BTreeMap<String, u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(
        "source {path} does not exist; check the policy's source.path (relative paths are resolved against {base})"
    )]
    SourceMissing { path: PathBuf, base: PathBuf },
    #[error("cannot read source {path}: {source}; check its permissions")]
    SourceUnreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} failed on {path}: {message}")]
    Database {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("writing the backup stream failed: {0}")]
    Write(#[source] std::io::Error),
    #[error("backup cancelled (shutdown or timeout)")]
    Cancelled,
    #[error("restore target {0} is not empty; pass --force to overwrite it")]
    TargetNotEmpty(PathBuf),
    #[error("cannot restore into {path}: {source}")]
    Target {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("restored artifact failed its check: {0}")]
    RestoredInvalid(String),
    #[error("restoring a {kind} backup into {target} is not supported: {hint}")]
    Unsupported {
        kind: String,
        target: String,
        hint: &'static str,
    },
    #[error("executor task failed: {0}")]
    Join(String),
    #[error("cannot connect to {target}: {message}")]
    Connect {
        target: String,
        message: String,
        transient: bool,
    },
    #[error("{what} failed on {target}: {message}")]
    Query {
        what: &'static str,
        target: String,
        message: String,
        transient: bool,
    },
    #[error("{tool} failed ({status}) on {target}: {stderr}")]
    Tool {
        tool: String,
        target: String,
        status: String,
        stderr: String,
        transient: bool,
    },
    #[error(
        "{tool} was not found (not installed, not on PATH, or not in the policy's source.binDir); install the client tools (see docs/restore.md)"
    )]
    ToolMissing { tool: String },
    #[error("{tool} is `{client}`, older than the server {target} (PostgreSQL {server}); {hint}")]
    ToolTooOld {
        tool: String,
        client: String,
        server: String,
        target: String,
        hint: String,
    },
    #[error("restore target {target} is not empty ({tables} tables); pass --force to replace it")]
    DatabaseNotEmpty { target: String, tables: u64 },
    #[error("restore target {0} names no database; write it like postgres://user@host:5432/dbname")]
    NoDatabase(String),
    #[error(transparent)]
    Secret(#[from] secret::SecretError),
    #[error(
        "refusing to read {path}: it is or holds the daemon's {what} ({protected}); policies may never read the daemon's own files"
    )]
    Forbidden {
        path: PathBuf,
        what: String,
        protected: PathBuf,
    },
}

impl ExecError {
    /// Bounded label for metrics and the catalog.
    pub fn kind(&self) -> &'static str {
        match self {
            ExecError::SourceMissing { .. } => "source-missing",
            ExecError::SourceUnreadable { .. } => "source-unreadable",
            ExecError::Database { .. } => "database",
            ExecError::Write(_) => "write",
            ExecError::Cancelled => "cancelled",
            ExecError::TargetNotEmpty(_) => "target-not-empty",
            ExecError::Target { .. } => "target",
            ExecError::RestoredInvalid(_) => "restored-invalid",
            ExecError::Unsupported { .. } => "unsupported",
            ExecError::Join(_) => "internal",
            ExecError::Connect { .. } => "connect",
            ExecError::Query { .. } => "query",
            ExecError::Tool { .. } => "tool-failed",
            ExecError::ToolMissing { .. } => "tool-missing",
            ExecError::ToolTooOld { .. } => "tool-too-old",
            ExecError::DatabaseNotEmpty { .. } => "target-not-empty",
            ExecError::NoDatabase(_) => "target",
            ExecError::Secret(e) => e.kind(),
            ExecError::Forbidden { .. } => "forbidden-path",
        }
    }

    /// Whether retrying may help: an unreachable or restarting server, a
    /// lock timeout, a busy SQLite file. A missing source, a bad password, a
    /// full disk or a tool that is too old need a human.
    pub fn is_transient(&self) -> bool {
        match self {
            ExecError::Database { .. } => true,
            ExecError::Write(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::StorageFull
                    | std::io::ErrorKind::PermissionDenied
                    | std::io::ErrorKind::ReadOnlyFilesystem
                    | std::io::ErrorKind::QuotaExceeded
                    | std::io::ErrorKind::FileTooLarge
            ),
            ExecError::Connect { transient, .. }
            | ExecError::Query { transient, .. }
            | ExecError::Tool { transient, .. } => *transient,
            _ => false,
        }
    }

    pub(crate) fn from_write(e: std::io::Error) -> ExecError {
        if crate::storage::pipeline::is_cancelled(&e) {
            ExecError::Cancelled
        } else {
            ExecError::Write(e)
        }
    }
}

/// Paths and flags executors need besides the source itself.
#[derive(Debug, Clone)]
pub struct ExecContext {
    /// Relative source paths are resolved against this directory.
    pub base: PathBuf,
    /// Scratch space for consistent copies (same filesystem as the data dir).
    pub tmp_dir: PathBuf,
    pub cancel: Cancel,
    /// The daemon's own files, refused whatever the policy says.
    pub guard: std::sync::Arc<guard::PathGuard>,
}

impl ExecContext {
    pub fn resolve(&self, path: &Path) -> PathBuf {
        self.base.join(path)
    }
}

/// The artifact's file name inside the backup directory.
pub fn artifact_file(source: &Source) -> &'static str {
    match source {
        Source::Sqlite { .. } => "data.sqlite.zst",
        Source::Directory { .. } => "data.tar.zst",
        Source::Postgres { pitr: Some(_), .. } => pitr_base::ARTIFACT,
        Source::Postgres { .. } => "data.dump.zst",
        Source::Mysql { .. } => "data.sql.zst",
        Source::Command { .. } => "data.bin.zst",
    }
}

/// Writes the backup of `source` into `out` and returns `out` with what was
/// learned. Blocking work runs on tokio's blocking pool.
pub async fn backup<W: Write + Send + 'static>(
    source: &Source,
    ctx: &ExecContext,
    out: W,
) -> Result<(W, Produced), ExecError> {
    let secret_file = |s: &Option<SecretRef>| match s {
        Some(SecretRef::File(f)) => ctx.guard.check_file(&ctx.resolve(f)),
        _ => Ok(()),
    };
    match source {
        Source::Sqlite { path } => {
            ctx.guard.check_file(&ctx.resolve(path))?;
            sqlite::backup(&ctx.resolve(path), ctx, out).await
        }
        Source::Directory { path, exclude } => {
            ctx.guard.check_tree(&ctx.resolve(path))?;
            let guard = ctx.guard.clone();
            directory::backup(ctx.resolve(path), exclude.clone(), guard, out).await
        }
        Source::Postgres {
            url,
            password_from,
            bin_dir,
            pitr,
        } => {
            secret_file(password_from)?;
            let (pw, bin) = (password_from.as_ref(), bin_dir.as_deref());
            match pitr {
                Some(_) => pitr_base::backup(url, pw, bin, ctx, out).await,
                None => postgres::backup(url, pw, bin, ctx, out).await,
            }
        }
        Source::Mysql { url, password_from } => {
            secret_file(password_from)?;
            mysql::backup(url, password_from.as_ref(), ctx, out).await
        }
        Source::Command { backup, .. } => command::backup(backup, ctx, out).await,
    }
}

/// Where a restore goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreTarget {
    Path(PathBuf),
    Url(String),
}

impl RestoreTarget {
    pub fn parse(s: &str) -> RestoreTarget {
        if s.contains("://") {
            RestoreTarget::Url(s.to_string())
        } else {
            RestoreTarget::Path(PathBuf::from(s))
        }
    }
}

impl std::fmt::Display for RestoreTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestoreTarget::Path(p) => write!(f, "{}", p.display()),
            RestoreTarget::Url(u) => f.write_str(&secret::scrub_url_passwords(u)),
        }
    }
}

/// How a restore runs besides the stream and the target.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Replace a target that exists and is not empty.
    pub force: bool,
    /// Password of a database target (else the URL's, else PGPASSWORD/MYSQL_PWD).
    pub password_from: Option<SecretRef>,
    /// `restore.command` of a `command` source (from the applied policy).
    pub command: Option<String>,
    /// Scratch space for a parallel PostgreSQL restore (`spool`); the
    /// restore pipeline fills it from the manifest when the caller did not.
    pub spool: Option<spool::Spool>,
    /// Count a restored database's rows by reading every table back
    /// (`count(*)`), even where the restored stream already told them
    /// (drills, `restore --recount`).
    pub recount: bool,
    /// `restore --jobs`: parallel `pg_restore` jobs (1: stream in one
    /// transaction); `None` decides from the cores and the backup.
    pub jobs: Option<usize>,
}

/// Restores the decompressed source bytes of a `source_kind` backup.
pub async fn restore(
    source_kind: &str,
    input: Box<dyn Read + Send>,
    target: &RestoreTarget,
    opts: &RestoreOptions,
) -> Result<Produced, ExecError> {
    let force = opts.force;
    let pw = opts.password_from.as_ref();
    match (source_kind, target) {
        ("sqlite", RestoreTarget::Path(p)) => sqlite::restore(input, p.clone(), force).await,
        ("directory", RestoreTarget::Path(p)) => directory::restore(input, p.clone(), force).await,
        ("postgres", RestoreTarget::Path(p)) => pitr_base::restore(input, p.clone(), force).await,
        ("postgres", RestoreTarget::Url(u)) if is_scheme(u, &["postgres", "postgresql"]) => {
            pg_restore::restore(input, u, opts).await
        }
        ("mysql", RestoreTarget::Url(u)) if is_scheme(u, &["mysql", "mariadb"]) => {
            mysql::restore(input, u, pw, force).await
        }
        ("command", target) => match &opts.command {
            Some(cmd) => {
                let to = match target {
                    RestoreTarget::Path(p) => p.display().to_string(),
                    RestoreTarget::Url(u) => u.clone(),
                };
                command::restore(input, cmd, &to).await
            }
            None => Err(ExecError::Unsupported {
                kind: "command".into(),
                target: target.to_string(),
                hint: "the policy has no restoreCommand; pipe `zstd -d < data.bin.zst` into your restore tool (docs/restore.md)",
            }),
        },
        (kind, target) => Err(ExecError::Unsupported {
            kind: kind.to_string(),
            target: secret::scrub_url_passwords(&target.to_string()),
            hint: "sqlite and directory backups restore into a path (--to ./restored), postgres into postgres://... (a PITR base backup into a directory), mysql into mysql://...",
        }),
    }
}

fn is_scheme(url: &str, schemes: &[&str]) -> bool {
    url.split_once("://")
        .is_some_and(|(s, _)| schemes.contains(&s))
}

/// Runs `fut` until it ends or `cancel` is set (checked every 50 ms): async
/// database steps must not outlive a timeout or shutdown.
pub(crate) async fn until_cancelled<T>(
    cancel: &Cancel,
    fut: impl std::future::Future<Output = Result<T, ExecError>>,
) -> Result<T, ExecError> {
    tokio::select! {
        r = fut => r,
        _ = async {
            while !cancel.is_cancelled() {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        } => Err(ExecError::Cancelled),
    }
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ExecError> + Send + 'static,
) -> Result<T, ExecError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ExecError::Join(e.to_string()))?
}
