//! IO: the catalog (SQLite by default): backups (a cache of the manifests in
//! storage), runs, policy revisions and events. It records what it is told
//! and answers queries; it decides nothing.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{Row, SqlitePool};

use crate::observed::{BackupRecord, FailedRun, Health, Trigger};
use crate::storage::{Manifest, PIN_FORMAT, PinMarker};

mod alerts;
mod audit;
mod deploys;
mod drills;

pub use drills::{CheckResult, DrillRow};

pub use crate::model::RevisionRecord;
pub use alerts::{NewNotification, QueuedNotification, outbox_rows};
pub use deploys::DeployRecord;

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
}

impl CatalogError {
    pub fn kind(&self) -> &'static str {
        match self {
            CatalogError::Open { .. } => "open",
            CatalogError::Migrate { .. } => "migrate",
            CatalogError::Query { .. } => "query",
            CatalogError::Corrupt { .. } => "corrupt",
        }
    }
}

fn q(what: &'static str) -> impl FnOnce(sqlx::Error) -> CatalogError {
    move |source| CatalogError::Query { what, source }
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
    pool: SqlitePool,
    /// Newest audit (seq, hash), kept outside the database so that removing
    /// the newest entries is detectable (`<catalog>.audit-head`).
    audit_head: std::path::PathBuf,
    /// Rung when this process queues a notification (catalog/alerts.rs).
    outbox_bell: std::sync::Arc<tokio::sync::Notify>,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

impl Catalog {
    /// Opens (creating if needed) and migrates a SQLite catalog file.
    pub async fn open_sqlite(path: &Path) -> Result<Catalog, CatalogError> {
        let url = format!("sqlite://{}", path.display());
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| CatalogError::Open {
                url: url.clone(),
                source: sqlx::Error::Io(e),
            })?;
        }
        // Two processes opening a catalog at once (daemon and CLI) must not
        // both switch it to WAL or run the migrations: serialise the opening
        // with a file lock (held for milliseconds).
        let lock_path = path.with_extension("migrate.lock");
        let lock = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
            let file = std::fs::File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)?;
            file.lock()?;
            Ok(file)
        })
        .await
        .map_err(|e| CatalogError::Open {
            url: url.clone(),
            source: sqlx::Error::Io(std::io::Error::other(e)),
        })?
        .map_err(|e| CatalogError::Open {
            url: url.clone(),
            source: sqlx::Error::Io(e),
        })?;
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(|source| CatalogError::Open {
                url: url.clone(),
                source,
            })?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(std::time::Duration::from_secs(30))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|source| CatalogError::Open {
                url: url.clone(),
                source,
            })?;
        let migrated = MIGRATOR.run(&pool).await;
        drop(lock);
        migrated.map_err(|source| CatalogError::Migrate { url, source })?;
        Ok(Catalog {
            pool,
            audit_head: path.with_extension("audit-head"),
            outbox_bell: Default::default(),
        })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    // ---- revisions -------------------------------------------------------

    pub async fn record_revision(&self, r: &RevisionRecord) -> Result<(), CatalogError> {
        sqlx::query(
            "INSERT INTO revisions (commit_id, branch, author, summary, attempted_at, valid, diagnostics)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&r.commit)
        .bind(&r.branch)
        .bind(&r.author)
        .bind(&r.summary)
        .bind(r.attempted_at)
        .bind(r.valid)
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
                attempted_at: row.get("attempted_at"),
                valid: row.get("valid"),
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

    // ---- backups ---------------------------------------------------------

    /// Inserts a backup from its manifest, or refreshes it if known.
    pub async fn upsert_backup(
        &self,
        m: &Manifest,
        health: Health,
        checked_at: Option<DateTime<Utc>>,
    ) -> Result<(), CatalogError> {
        sqlx::query(
            "INSERT INTO backups (id, policy, storage, trigger, release, commit_id, started_at, finished_at,
                                  size, checksum, health, checked_at, manifest)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (id) DO UPDATE SET deleted_at = NULL, manifest = excluded.manifest",
        )
        .bind(&m.id)
        .bind(&m.policy)
        .bind(&m.storage)
        .bind(m.trigger.as_str())
        .bind(&m.release)
        .bind(&m.commit)
        .bind(m.started_at)
        .bind(m.finished_at)
        .bind(m.artifact.size as i64)
        .bind(&m.artifact.checksum)
        .bind(health.as_str())
        .bind(checked_at)
        .bind(serde_json::to_string(m).unwrap_or_default())
        .execute(&self.pool)
        .await
        .map_err(q("upsert backup"))?;
        Ok(())
    }

    pub async fn set_health(
        &self,
        id: &str,
        health: Health,
        problem: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<(), CatalogError> {
        sqlx::query("UPDATE backups SET health = ?, problem = ?, checked_at = ? WHERE id = ?")
            .bind(health.as_str())
            .bind(problem)
            .bind(at)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(q("update health"))?;
        Ok(())
    }

    /// Pins (`Some`) or unpins (`None`) a backup; false when it is unknown.
    pub async fn set_pin(&self, id: &str, pin: Option<&PinMarker>) -> Result<bool, CatalogError> {
        let done = sqlx::query(
            "UPDATE backups SET pinned = ?, pinned_by = ?, pinned_at = ?, pin_release = ?
             WHERE id = ? AND deleted_at IS NULL",
        )
        .bind(pin.map(|p| &p.reason))
        .bind(pin.map(|p| &p.pinned_by))
        .bind(pin.map(|p| p.pinned_at))
        .bind(pin.and_then(|p| p.release.as_ref()))
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(q("update pin"))?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn mark_deleted(&self, id: &str, at: DateTime<Utc>) -> Result<(), CatalogError> {
        sqlx::query("UPDATE backups SET deleted_at = ? WHERE id = ?")
            .bind(at)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(q("mark deleted"))?;
        Ok(())
    }

    /// Every backup not deleted, grouped by policy, newest first.
    pub async fn backups(&self) -> Result<Vec<BackupRow>, CatalogError> {
        let rows = sqlx::query(
            "SELECT * FROM backups WHERE deleted_at IS NULL ORDER BY policy, started_at DESC, id DESC",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(q("select backups"))?;
        rows.into_iter().map(backup_row).collect()
    }

    pub async fn backup(&self, id: &str) -> Result<Option<BackupRow>, CatalogError> {
        let row = sqlx::query("SELECT * FROM backups WHERE id = ? AND deleted_at IS NULL")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(q("select backup"))?;
        row.map(backup_row).transpose()
    }

    // ---- runs ------------------------------------------------------------

    pub async fn start_run(&self, r: &NewRun<'_>) -> Result<i64, CatalogError> {
        let done = sqlx::query(
            "INSERT INTO runs (policy, backup_id, storage, trigger, release, requested_by, started_at, outcome)
             VALUES (?, ?, ?, ?, ?, ?, ?, 'running')",
        )
        .bind(r.policy)
        .bind(r.backup_id)
        .bind(r.storage)
        .bind(r.trigger.as_str())
        .bind(r.release)
        .bind(r.requested_by)
        .bind(r.started_at)
        .execute(&self.pool)
        .await
        .map_err(q("insert run"))?;
        Ok(done.last_insert_rowid())
    }

    pub async fn finish_run(
        &self,
        id: i64,
        outcome: crate::model::RunOutcome,
        error: Option<(&str, &str)>,
        at: DateTime<Utc>,
    ) -> Result<(), CatalogError> {
        sqlx::query(
            "UPDATE runs SET outcome = ?, error_kind = ?, error = ?, finished_at = ? WHERE id = ?",
        )
        .bind(outcome.as_str())
        .bind(error.map(|e| e.0))
        .bind(error.map(|e| e.1))
        .bind(at)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(q("finish run"))?;
        Ok(())
    }

    /// Runs recorded as `running`.
    pub async fn running_runs(&self) -> Result<Vec<RunRow>, CatalogError> {
        let rows = sqlx::query("SELECT * FROM runs WHERE outcome = 'running' ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .map_err(q("select running runs"))?;
        Ok(rows.into_iter().map(run_row).collect())
    }

    pub async fn recent_runs(&self, limit: i64) -> Result<Vec<RunRow>, CatalogError> {
        let rows = sqlx::query("SELECT * FROM runs ORDER BY id DESC LIMIT ?")
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(q("select runs"))?;
        Ok(rows.into_iter().map(run_row).collect())
    }

    /// Per policy: the failures since its last successful run.
    pub async fn failures(&self) -> Result<BTreeMap<String, FailedRun>, CatalogError> {
        let rows = sqlx::query(
            "SELECT policy, COUNT(*) AS n, MAX(finished_at) AS at,
                    (SELECT error FROM runs r2 WHERE r2.policy = r.policy AND r2.outcome IN ('failed','interrupted')
                     ORDER BY r2.id DESC LIMIT 1) AS error
             FROM runs r
             WHERE outcome IN ('failed', 'interrupted')
               AND id > COALESCE((SELECT MAX(id) FROM runs s WHERE s.policy = r.policy AND s.outcome = 'succeeded'), 0)
             GROUP BY policy",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(q("select failures"))?;
        let mut out = BTreeMap::new();
        for row in rows {
            let at: Option<DateTime<Utc>> = row.get("at");
            let n: i64 = row.get("n");
            out.insert(
                row.get("policy"),
                FailedRun {
                    at: at.unwrap_or_default(),
                    error: row.get::<Option<String>, _>("error").unwrap_or_default(),
                    consecutive: n.max(1) as u32,
                },
            );
        }
        Ok(out)
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

fn backup_row(row: sqlx::sqlite::SqliteRow) -> Result<BackupRow, CatalogError> {
    let trigger: String = row.get("trigger");
    let health: String = row.get("health");
    let manifest: String = row.get("manifest");
    let size: i64 = row.get("size");
    let pin = pin_of(&row);
    let record = BackupRecord {
        id: row.get("id"),
        policy: row.get("policy"),
        storage: row.get("storage"),
        trigger: Trigger::parse(&trigger).ok_or(CatalogError::Corrupt {
            what: "backups.trigger",
            value: trigger,
        })?,
        release: row.get("release"),
        started_at: row.get("started_at"),
        finished_at: row.get("finished_at"),
        size: size.max(0) as u64,
        checksum: row.get("checksum"),
        health: match health.as_str() {
            "verified" => Health::Verified,
            "missing" => Health::Missing,
            "corrupt" => Health::Corrupt,
            _ => {
                return Err(CatalogError::Corrupt {
                    what: "backups.health",
                    value: health,
                });
            }
        },
        pinned: row.get("pinned"),
        pin_unknown: None,
    };
    Ok(BackupRow {
        pin,
        record,
        checked_at: row.get("checked_at"),
        problem: row.get("problem"),
        manifest: serde_json::from_str(&manifest).map_err(|e| CatalogError::Corrupt {
            what: "backups.manifest",
            value: e.to_string(),
        })?,
    })
}

/// The pin of a backup row. Pins set before pin markers existed have no
/// author or time: `unknown` and the backup's finish time stand in.
fn pin_of(row: &sqlx::sqlite::SqliteRow) -> Option<PinMarker> {
    let reason: String = row.get::<Option<String>, _>("pinned")?;
    Some(PinMarker {
        format: PIN_FORMAT,
        policy: row.get("policy"),
        id: row.get("id"),
        reason,
        pinned_by: row
            .get::<Option<String>, _>("pinned_by")
            .unwrap_or_else(|| "unknown".into()),
        pinned_at: row
            .get::<Option<DateTime<Utc>>, _>("pinned_at")
            .unwrap_or_else(|| row.get("finished_at")),
        release: row.get("pin_release"),
    })
}

fn run_row(row: sqlx::sqlite::SqliteRow) -> RunRow {
    RunRow {
        id: row.get("id"),
        policy: row.get("policy"),
        backup_id: row.get("backup_id"),
        storage: row.get("storage"),
        trigger: row.get("trigger"),
        started_at: row.get("started_at"),
        finished_at: row.get("finished_at"),
        outcome: row.get("outcome"),
        error: row.get("error"),
    }
}
