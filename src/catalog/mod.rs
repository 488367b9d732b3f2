//! IO: the catalog: backups (a cache of the manifests in storage), runs,
//! policy revisions, the audit log, deploys, drills, alert state and the
//! notice outbox. It records what it is told and answers queries; it decides
//! nothing. Two backends behind one code path (sqlx's `Any` driver, `$N`
//! placeholders in every query): an embedded SQLite file (the default) or a
//! PostgreSQL database (`location.rs`). Timestamps are stored as RFC 3339
//! text in both (`ts`, `get_ts`), as SQLite catalogs always stored them.

use std::path::Path;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, ConnectOptions, Executor, Row};

use crate::observed::{BackupRecord, Trigger};
use crate::storage::{Manifest, PinMarker};

mod alerts;
mod audit;
mod backups;
mod copy;
mod deploys;
mod drills;
mod jobs;
mod leases;
mod location;
#[cfg(test)]
mod replica_tests;
#[cfg(test)]
mod tests;

pub use drills::{CheckResult, DrillRow};

pub use crate::model::RevisionRecord;
pub use alerts::{NewNotification, QueuedNotification, outbox_rows};
pub use copy::CopyReport;
pub use deploys::DeployRecord;
pub use jobs::JobRow;
pub use leases::LeaseRow;
pub use location::{Backend, Location, is_postgres_url, redact_text};

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot open catalog {url}: {source}")]
    Open {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot migrate catalog {url}: {source}; was it written by a newer safepoint?")]
    Migrate {
        url: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error("catalog query `{what}` failed: {source}")]
    Query {
        what: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("catalog holds an invalid value in {what}: {value}")]
    Corrupt { what: &'static str, value: String },
    #[error("catalog {location}: {reason}")]
    Location { location: String, reason: String },
}

impl CatalogError {
    pub fn kind(&self) -> &'static str {
        match self {
            CatalogError::Open { .. } => "open",
            CatalogError::Migrate { .. } => "migrate",
            CatalogError::Query { .. } => "query",
            CatalogError::Corrupt { .. } => "corrupt",
            CatalogError::Location { .. } => "location",
        }
    }
}

fn q(what: &'static str) -> impl FnOnce(sqlx::Error) -> CatalogError {
    move |source| CatalogError::Query { what, source }
}

/// A timestamp as the catalog stores it (the text SQLite catalogs have
/// always held: RFC 3339, `+00:00`, as many fraction digits as needed).
fn ts(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false)
}

fn parse_ts(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.f%#z"] {
        if let Ok(t) = DateTime::parse_from_str(text, format) {
            return Some(t.with_timezone(&Utc));
        }
    }
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc())
}

/// A nullable timestamp column.
fn get_ots(row: &AnyRow, column: &'static str) -> Result<Option<DateTime<Utc>>, CatalogError> {
    let text: Option<String> = row.try_get(column).map_err(q(column))?;
    text.map(|t| {
        parse_ts(&t).ok_or(CatalogError::Corrupt {
            what: column,
            value: t,
        })
    })
    .transpose()
}

/// A timestamp column that is never NULL.
fn get_ts(row: &AnyRow, column: &'static str) -> Result<DateTime<Utc>, CatalogError> {
    get_ots(row, column)?.ok_or(CatalogError::Corrupt {
        what: column,
        value: "NULL".into(),
    })
}

/// A backup row with what `list` shows besides the planner's view.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackupRow {
    pub record: BackupRecord,
    pub checked_at: Option<DateTime<Utc>>,
    pub problem: Option<String>,
    pub manifest: Manifest,
    /// The pin as recorded (the reason is also `record.pinned`).
    pub pin: Option<PinMarker>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunRow {
    pub id: i64,
    pub policy: String,
    pub backup_id: String,
    pub storage: String,
    pub trigger: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub outcome: String,
    pub error: Option<String>,
}

/// A run about to start.
#[derive(Debug, Clone)]
pub struct NewRun<'a> {
    pub policy: &'a str,
    pub backup_id: &'a str,
    pub storage: &'a str,
    pub trigger: Trigger,
    pub release: Option<&'a str>,
    pub requested_by: Option<&'a str>,
    pub started_at: DateTime<Utc>,
}

#[derive(Clone)]
pub struct Catalog {
    pool: AnyPool,
    backend: Backend,
    /// Where the catalog is, redacted (for messages).
    shown: String,
    /// Newest audit (seq, hash) this process knows, kept outside the
    /// database so that removing the newest entries is detectable
    /// (`<catalog>.audit-head` beside a SQLite file).
    audit_head: Option<std::path::PathBuf>,
    /// Rung when this process queues a notification (catalog/alerts.rs).
    outbox_bell: std::sync::Arc<tokio::sync::Notify>,
}

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// Connects once to `url` and closes again (30 s at most).
async fn probe(url: &str) -> Result<(), sqlx::Error> {
    use sqlx::Connection;
    let wait = std::time::Duration::from_secs(30);
    match tokio::time::timeout(wait, sqlx::AnyConnection::connect(url)).await {
        Ok(conn) => conn?.close().await,
        Err(_) => Err(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the server did not answer within 30 s",
        ))),
    }
}

impl Catalog {
    /// Opens (creating if needed) and migrates a SQLite catalog file.
    pub async fn open_sqlite(path: &Path) -> Result<Catalog, CatalogError> {
        Self::open(&Location::Sqlite(path.to_path_buf())).await
    }

    /// Opens and migrates the catalog at `location` (a SQLite file is
    /// created if needed; a PostgreSQL database must exist).
    pub async fn open(location: &Location) -> Result<Catalog, CatalogError> {
        sqlx::any::install_default_drivers();
        let shown = location.to_string();
        let open_err = |source| CatalogError::Open {
            url: shown.clone(),
            source,
        };
        let (pool, audit_head) = match location {
            Location::Sqlite(path) => {
                // Two processes opening a catalog at once (daemon and CLI)
                // must not both switch it to WAL or run the migrations:
                // serialise the opening with a file lock (held for ms).
                let lock = sqlite_open_lock(path)
                    .await
                    .map_err(|e| open_err(sqlx::Error::Io(e)))?;
                let pool = connect_sqlite(path).await.map_err(open_err)?;
                let migrated = SQLITE_MIGRATOR.run(&pool).await;
                drop(lock);
                migrated.map_err(|source| CatalogError::Migrate {
                    url: shown.clone(),
                    source,
                })?;
                (pool, Some(path.with_extension("audit-head")))
            }
            Location::Postgres(pg) => {
                // One direct connection first: the pool retries a refused or
                // failing connection until its timeout and then says only
                // "pool timed out"; this says why, at once.
                probe(&location.connect_url()).await.map_err(open_err)?;
                let pool = AnyPoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(std::time::Duration::from_secs(30))
                    .connect(&location.connect_url())
                    .await
                    .map_err(open_err)?;
                // sqlx's PostgreSQL migrator holds an advisory lock: several
                // processes may open the same catalog at once.
                POSTGRES_MIGRATOR
                    .run(&pool)
                    .await
                    .map_err(|source| CatalogError::Migrate {
                        url: shown.clone(),
                        source,
                    })?;
                (pool, pg.audit_head.clone())
            }
        };
        Ok(Catalog {
            pool,
            backend: location.backend(),
            shown,
            audit_head,
            outbox_bell: Default::default(),
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Where the catalog is, without any password.
    pub fn location(&self) -> &str {
        &self.shown
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// True when the catalog answers a trivial query.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    // ---- revisions -------------------------------------------------------

    pub async fn record_revision(&self, r: &RevisionRecord) -> Result<(), CatalogError> {
        sqlx::query(
            "INSERT INTO revisions (commit_id, branch, author, summary, attempted_at, valid, diagnostics)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&r.commit)
        .bind(&r.branch)
        .bind(&r.author)
        .bind(&r.summary)
        .bind(ts(r.attempted_at))
        .bind(i64::from(r.valid))
        .bind(serde_json::to_string(&r.diagnostics).unwrap_or_else(|_| "[]".into()))
        .execute(&self.pool)
        .await
        .map_err(q("insert revision"))?;
        Ok(())
    }

    async fn revision_where(
        &self,
        only_valid: bool,
    ) -> Result<Option<RevisionRecord>, CatalogError> {
        let sql = if only_valid {
            "SELECT * FROM revisions WHERE valid = 1 ORDER BY id DESC LIMIT 1"
        } else {
            "SELECT * FROM revisions ORDER BY id DESC LIMIT 1"
        };
        let row = sqlx::query(sql)
            .fetch_optional(&self.pool)
            .await
            .map_err(q("select revision"))?;
        row.map(|row| {
            let diagnostics: String = row.get("diagnostics");
            Ok(RevisionRecord {
                commit: row.get("commit_id"),
                branch: row.get("branch"),
                author: row.get("author"),
                summary: row.get("summary"),
                attempted_at: get_ts(&row, "attempted_at")?,
                valid: row.get::<i64, _>("valid") != 0,
                diagnostics: serde_json::from_str(&diagnostics).unwrap_or_default(),
            })
        })
        .transpose()
    }

    pub async fn last_attempted(&self) -> Result<Option<RevisionRecord>, CatalogError> {
        self.revision_where(false).await
    }

    pub async fn last_applied(&self) -> Result<Option<RevisionRecord>, CatalogError> {
        self.revision_where(true).await
    }

    // ---- events ----------------------------------------------------------

    /// Appends to the audit log as the daemon itself.
    pub async fn event(
        &self,
        at: DateTime<Utc>,
        kind: crate::model::AuditKind,
        policy: Option<&str>,
        message: &str,
    ) -> Result<(), CatalogError> {
        self.audit(at, kind, policy, "safepoint", message).await
    }
}

async fn sqlite_open_lock(path: &Path) -> std::io::Result<std::fs::File> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let lock_path = path.with_extension("migrate.lock");
    tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
        let file = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)?;
        file.lock()?;
        Ok(file)
    })
    .await
    .map_err(std::io::Error::other)?
}

/// A pool on the SQLite file: WAL, a 30 s busy timeout, foreign keys. One
/// connection is opened first: the pool would retry its error for 30 s and
/// report only a timeout.
async fn connect_sqlite(path: &Path) -> Result<AnyPool, sqlx::Error> {
    let url = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .to_url_lossy();
    let probe = async {
        use sqlx::Connection as _;
        let mut conn = sqlx::AnyConnection::connect(url.as_str()).await?;
        conn.execute("PRAGMA journal_mode = WAL").await?;
        conn.close().await
    };
    if let Err(e) = probe.await {
        let text = e.to_string();
        return Err(
            if ["disk I/O error", "disk is full", "readonly", "read-only"]
                .iter()
                .any(|t| text.contains(t))
            {
                sqlx::Error::Io(std::io::Error::other(format!(
                    "{text}: is the disk of {} full or read-only? free space there and retry",
                    path.parent().unwrap_or(path).display()
                )))
            } else {
                e
            },
        );
    }
    AnyPoolOptions::new()
        .max_connections(4)
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute("PRAGMA busy_timeout = 30000").await?;
                conn.execute("PRAGMA journal_mode = WAL").await?;
                conn.execute("PRAGMA foreign_keys = ON").await?;
                Ok(())
            })
        })
        .connect(url.as_str())
        .await
}
