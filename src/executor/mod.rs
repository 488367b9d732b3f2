//! IO: produce a source's backup stream and restore one. Executors write the
//! raw source bytes into the writer they are given (the artifact pipeline
//! compresses, hashes and stores them) and report tool versions and counts
//! for the manifest. They decide nothing.

pub mod directory;
pub mod sqlite;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::policy::Source;
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
        }
    }

    /// A missing or unreadable source needs a human; a busy database may pass.
    pub fn is_transient(&self) -> bool {
        matches!(self, ExecError::Database { .. } | ExecError::Write(_))
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
    match source {
        Source::Sqlite { path } => sqlite::backup(&ctx.resolve(path), ctx, out).await,
        Source::Directory { path, exclude } => {
            directory::backup(ctx.resolve(path), exclude.clone(), out).await
        }
        other => Err(ExecError::Unsupported {
            kind: other.kind().to_string(),
            target: "a backup".to_string(),
            hint: "this build supports sqlite and directory sources",
        }),
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
            RestoreTarget::Url(u) => f.write_str(u),
        }
    }
}

/// Restores the decompressed source bytes of a `source_kind` backup.
pub async fn restore(
    source_kind: &str,
    input: Box<dyn Read + Send>,
    target: &RestoreTarget,
    force: bool,
) -> Result<Produced, ExecError> {
    match (source_kind, target) {
        ("sqlite", RestoreTarget::Path(p)) => sqlite::restore(input, p.clone(), force).await,
        ("directory", RestoreTarget::Path(p)) => directory::restore(input, p.clone(), force).await,
        (kind, target) => Err(ExecError::Unsupported {
            kind: kind.to_string(),
            target: target.to_string(),
            hint: "sqlite and directory backups restore into a path (--to ./restored)",
        }),
    }
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ExecError> + Send + 'static,
) -> Result<T, ExecError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ExecError::Join(e.to_string()))?
}
