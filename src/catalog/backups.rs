//! IO: the backups (a cache of the manifests in storage, with health and
//! pins) and the run history.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{BackupRow, Catalog, CatalogError, NewRun, RunRow, get_ots, get_ts, q, ts};
use crate::observed::{BackupRecord, FailedRun, Health, Trigger};
use crate::storage::{Manifest, PIN_FORMAT, PinMarker};

impl Catalog {
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
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
             ON CONFLICT (id) DO UPDATE SET deleted_at = NULL, manifest = excluded.manifest",
        )
        .bind(&m.id)
        .bind(&m.policy)
        .bind(&m.storage)
        .bind(m.trigger.as_str())
        .bind(&m.release)
        .bind(&m.commit)
        .bind(ts(m.started_at))
        .bind(ts(m.finished_at))
        .bind(m.artifact.size as i64)
        .bind(&m.artifact.checksum)
        .bind(health.as_str())
        .bind(checked_at.map(ts))
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
        sqlx::query("UPDATE backups SET health = $1, problem = $2, checked_at = $3 WHERE id = $4")
            .bind(health.as_str())
            .bind(problem)
            .bind(ts(at))
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(q("update health"))?;
        Ok(())
    }

    /// Pins (`Some`) or unpins (`None`) a backup; false when it is unknown.
    pub async fn set_pin(&self, id: &str, pin: Option<&PinMarker>) -> Result<bool, CatalogError> {
        let done = sqlx::query(
            "UPDATE backups SET pinned = $1, pinned_by = $2, pinned_at = $3, pin_release = $4
             WHERE id = $5 AND deleted_at IS NULL",
        )
        .bind(pin.map(|p| &p.reason))
        .bind(pin.map(|p| &p.pinned_by))
        .bind(pin.map(|p| ts(p.pinned_at)))
        .bind(pin.and_then(|p| p.release.as_ref()))
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(q("update pin"))?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn mark_deleted(&self, id: &str, at: DateTime<Utc>) -> Result<(), CatalogError> {
        sqlx::query("UPDATE backups SET deleted_at = $1 WHERE id = $2")
            .bind(ts(at))
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(q("mark deleted"))?;
        Ok(())
    }

    /// Undoes `mark_deleted`: a deletion that failed leaves the backup tracked.
    pub async fn unmark_deleted(&self, id: &str) -> Result<(), CatalogError> {
        sqlx::query("UPDATE backups SET deleted_at = NULL WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(q("unmark deleted"))?;
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
        rows.iter().map(backup_row).collect()
    }

    pub async fn backup(&self, id: &str) -> Result<Option<BackupRow>, CatalogError> {
        let row = sqlx::query("SELECT * FROM backups WHERE id = $1 AND deleted_at IS NULL")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(q("select backup"))?;
        row.as_ref().map(backup_row).transpose()
    }

    // ---- runs ------------------------------------------------------------

    pub async fn start_run(&self, r: &NewRun<'_>) -> Result<i64, CatalogError> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO runs (policy, backup_id, storage, trigger, release, requested_by, started_at, outcome)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'running') RETURNING id",
        )
        .bind(r.policy)
        .bind(r.backup_id)
        .bind(r.storage)
        .bind(r.trigger.as_str())
        .bind(r.release)
        .bind(r.requested_by)
        .bind(ts(r.started_at))
        .fetch_one(&self.pool)
        .await
        .map_err(q("insert run"))?;
        Ok(id)
    }

    pub async fn finish_run(
        &self,
        id: i64,
        outcome: crate::model::RunOutcome,
        error: Option<(&str, &str)>,
        at: DateTime<Utc>,
    ) -> Result<(), CatalogError> {
        sqlx::query(
            "UPDATE runs SET outcome = $1, error_kind = $2, error = $3, finished_at = $4 WHERE id = $5",
        )
        .bind(outcome.as_str())
        .bind(error.map(|e| e.0))
        .bind(error.map(|e| e.1))
        .bind(ts(at))
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
        rows.iter().map(run_row).collect()
    }

    pub async fn recent_runs(&self, limit: i64) -> Result<Vec<RunRow>, CatalogError> {
        let rows = sqlx::query("SELECT * FROM runs ORDER BY id DESC LIMIT $1")
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(q("select runs"))?;
        rows.iter().map(run_row).collect()
    }

    /// Per policy: the failures since its last successful run.
    pub async fn failures(&self) -> Result<BTreeMap<String, FailedRun>, CatalogError> {
        let rows = sqlx::query(
            "SELECT policy, COUNT(*) AS n, MAX(finished_at) AS at,
                    (SELECT error FROM runs r2 WHERE r2.policy = r.policy AND r2.outcome IN ('failed','interrupted')
                     ORDER BY r2.id DESC LIMIT 1) AS error,
                    (SELECT outcome FROM runs r3 WHERE r3.policy = r.policy AND r3.outcome IN ('failed','interrupted')
                     ORDER BY r3.id DESC LIMIT 1) AS last_outcome
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
            let at = get_ots(&row, "at")?;
            let n: i64 = row.get("n");
            out.insert(
                row.get("policy"),
                FailedRun {
                    at: at.unwrap_or_default(),
                    error: row.get::<Option<String>, _>("error").unwrap_or_default(),
                    consecutive: n.max(1) as u32,
                    interrupted: row.get::<Option<String>, _>("last_outcome").as_deref()
                        == Some("interrupted"),
                },
            );
        }
        Ok(out)
    }
}

fn backup_row(row: &AnyRow) -> Result<BackupRow, CatalogError> {
    let trigger: String = row.get("trigger");
    let health: String = row.get("health");
    let manifest: String = row.get("manifest");
    let size: i64 = row.get("size");
    let pin = pin_of(row)?;
    let record = BackupRecord {
        id: row.get("id"),
        policy: row.get("policy"),
        storage: row.get("storage"),
        trigger: Trigger::parse(&trigger).ok_or(CatalogError::Corrupt {
            what: "backups.trigger",
            value: trigger,
        })?,
        release: row.get("release"),
        started_at: get_ts(row, "started_at")?,
        finished_at: get_ts(row, "finished_at")?,
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
        checked_at: get_ots(row, "checked_at")?,
        problem: row.get("problem"),
        manifest: serde_json::from_str(&manifest).map_err(|e| CatalogError::Corrupt {
            what: "backups.manifest",
            value: e.to_string(),
        })?,
    })
}

/// The pin of a backup row. Pins set before pin markers existed have no
/// author or time: `unknown` and the backup's finish time stand in.
fn pin_of(row: &AnyRow) -> Result<Option<PinMarker>, CatalogError> {
    let Some(reason) = row.get::<Option<String>, _>("pinned") else {
        return Ok(None);
    };
    Ok(Some(PinMarker {
        format: PIN_FORMAT,
        policy: row.get("policy"),
        id: row.get("id"),
        reason,
        pinned_by: row
            .get::<Option<String>, _>("pinned_by")
            .unwrap_or_else(|| "unknown".into()),
        pinned_at: match get_ots(row, "pinned_at")? {
            Some(at) => at,
            None => get_ts(row, "finished_at")?,
        },
        release: row.get("pin_release"),
    }))
}

fn run_row(row: &AnyRow) -> Result<RunRow, CatalogError> {
    Ok(RunRow {
        id: row.get("id"),
        policy: row.get("policy"),
        backup_id: row.get("backup_id"),
        storage: row.get("storage"),
        trigger: row.get("trigger"),
        started_at: get_ts(row, "started_at")?,
        finished_at: get_ots(row, "finished_at")?,
        outcome: row.get("outcome"),
        error: row.get("error"),
    })
}
