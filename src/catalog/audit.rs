//! IO: appending to and reading the hash-chained audit log. Appends are
//! serialized (SQLite: an immediate transaction; PostgreSQL: the audit table
//! locked in EXCLUSIVE mode) so concurrent writers (daemon, CLI, replicas)
//! can never fork the chain; the newest (seq, hash) is mirrored to a head file.

use std::io::Write;

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{Backend, Catalog, CatalogError, get_ots, get_ts, q, ts};
use crate::audit::{self, Entry, GENESIS};
use crate::model::{AuditKind, RunOutcome};
use crate::observed::{Health, Trigger};
use crate::report::{HistoricBackup, HistoricRun};

impl Catalog {
    /// Appends one entry (message redacted) to the audit log.
    pub async fn audit(
        &self,
        at: DateTime<Utc>,
        kind: AuditKind,
        policy: Option<&str>,
        actor: &str,
        message: &str,
    ) -> Result<(), CatalogError> {
        let kind = kind.as_str();
        let message = audit::redact(message);
        // One writer at a time, whatever the process: SQLite takes the
        // write lock at BEGIN IMMEDIATE; PostgreSQL locks the table against
        // other appends (readers are not blocked) until the commit.
        let mut tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
        .map_err(q("begin audit append"))?;
        if self.backend == Backend::Postgres {
            sqlx::query("LOCK TABLE audit IN EXCLUSIVE MODE")
                .execute(&mut *tx)
                .await
                .map_err(q("lock audit log"))?;
        }
        let last = sqlx::query("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *tx)
            .await
            .map_err(q("read audit head"))?;
        let (seq, prev) = match last {
            Some(row) => (row.get::<i64, _>("seq") + 1, row.get::<String, _>("hash")),
            None => (1, GENESIS.to_string()),
        };
        let hash = audit::entry_hash(seq, at, kind, policy, actor, &message, &prev);
        sqlx::query(
            "INSERT INTO audit (seq, at, kind, policy, actor, message, prev_hash, hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(seq)
        .bind(ts(at))
        .bind(kind)
        .bind(policy)
        .bind(actor)
        .bind(&message)
        .bind(&prev)
        .bind(&hash)
        .execute(&mut *tx)
        .await
        .map_err(q("append audit entry"))?;
        tx.commit().await.map_err(q("commit audit append"))?;
        self.write_head(seq, &hash);
        Ok(())
    }

    /// Best effort: the head file only ever moves forward.
    pub(super) fn write_head(&self, seq: i64, hash: &str) {
        let Some(path) = &self.audit_head else {
            return;
        };
        if self.audit_head().is_some_and(|(s, _)| s >= seq) {
            return;
        }
        let tmp = path.with_extension("audit-head.tmp");
        let written = std::fs::File::create(&tmp)
            .and_then(|mut f| writeln!(f, "{seq} {hash}").and_then(|()| f.sync_all()))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), error = %e, "cannot update the audit head file");
        }
    }

    /// The newest (seq, hash) recorded in the head file, if any.
    pub fn audit_head(&self) -> Option<(i64, String)> {
        let text = std::fs::read_to_string(self.audit_head.as_ref()?).ok()?;
        let (seq, hash) = text.trim().split_once(' ')?;
        Some((seq.parse().ok()?, hash.to_string()))
    }

    /// Audit entries in chain order, optionally only those at or after `since`.
    /// The newest audit sequence number (0 when empty): a cheap marker
    /// that something was recorded (every backup, drill, deploy step and
    /// revision writes an entry).
    pub async fn audit_seq(&self) -> Result<i64, CatalogError> {
        let row = sqlx::query("SELECT COALESCE(MAX(seq), 0) AS seq FROM audit")
            .fetch_one(&self.pool)
            .await
            .map_err(q("select audit head"))?;
        Ok(row.get("seq"))
    }

    pub async fn audit_entries(
        &self,
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<Entry>, CatalogError> {
        let rows = match since {
            Some(since) => {
                sqlx::query("SELECT * FROM audit WHERE at >= $1 ORDER BY seq").bind(ts(since))
            }
            None => sqlx::query("SELECT * FROM audit ORDER BY seq"),
        }
        .fetch_all(&self.pool)
        .await
        .map_err(q("read audit log"))?;
        rows.iter()
            .map(|r| {
                Ok(Entry {
                    seq: r.get("seq"),
                    at: get_ts(r, "at")?,
                    kind: r.get("kind"),
                    policy: r.get("policy"),
                    actor: r.get("actor"),
                    message: r.get("message"),
                    prev_hash: r.get("prev_hash"),
                    hash: r.get("hash"),
                })
            })
            .collect()
    }
}

impl Catalog {
    /// Every backup ever recorded, deleted ones included (for reports).
    pub async fn backup_history(&self) -> Result<Vec<HistoricBackup>, CatalogError> {
        let rows = sqlx::query("SELECT * FROM backups ORDER BY policy, started_at")
            .fetch_all(&self.pool)
            .await
            .map_err(q("read backup history"))?;
        rows.into_iter()
            .map(|r| {
                let trigger: String = r.get("trigger");
                let health: String = r.get("health");
                Ok(HistoricBackup {
                    id: r.get("id"),
                    policy: r.get("policy"),
                    trigger: Trigger::parse(&trigger).ok_or(CatalogError::Corrupt {
                        what: "backups.trigger",
                        value: trigger,
                    })?,
                    release: r.get("release"),
                    started_at: get_ts(&r, "started_at")?,
                    finished_at: get_ts(&r, "finished_at")?,
                    health: match health.as_str() {
                        "missing" => Health::Missing,
                        "corrupt" => Health::Corrupt,
                        _ => Health::Verified,
                    },
                    pinned: r.get::<Option<String>, _>("pinned").is_some(),
                    deleted_at: get_ots(&r, "deleted_at")?,
                })
            })
            .collect()
    }

    /// Finished runs started at or after `since`.
    pub async fn runs_since(&self, since: DateTime<Utc>) -> Result<Vec<HistoricRun>, CatalogError> {
        let rows = sqlx::query("SELECT policy, started_at, outcome FROM runs WHERE started_at >= $1 AND outcome != 'running' ORDER BY id")
            .bind(ts(since))
            .fetch_all(&self.pool)
            .await
            .map_err(q("read runs"))?;
        rows.into_iter()
            .map(|r| {
                let outcome: String = r.get("outcome");
                Ok(HistoricRun {
                    policy: r.get("policy"),
                    started_at: get_ts(&r, "started_at")?,
                    outcome: RunOutcome::parse(&outcome).ok_or(CatalogError::Corrupt {
                        what: "runs.outcome",
                        value: outcome,
                    })?,
                })
            })
            .collect()
    }
}
