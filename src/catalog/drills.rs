//! IO: drill records.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;

use super::{Catalog, CatalogError, get_ots, get_ts, q, ts};
use crate::observed::DrillHistory;

pub use crate::model::CheckResult;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DrillRow {
    pub id: i64,
    pub policy: String,
    pub backup_id: String,
    pub target: String,
    pub scratch: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub verdict: String,
    pub restore_seconds: Option<f64>,
    pub checks: Vec<CheckResult>,
}

impl Catalog {
    pub async fn start_drill(
        &self,
        policy: &str,
        backup_id: &str,
        target: &str,
        scratch: &str,
        requested_by: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<i64, CatalogError> {
        sqlx::query_scalar(
            "INSERT INTO drills (policy, backup_id, target, scratch, started_at, verdict, requested_by)
             VALUES ($1, $2, $3, $4, $5, 'running', $6) RETURNING id",
        )
        .bind(policy)
        .bind(backup_id)
        .bind(target)
        .bind(scratch)
        .bind(ts(at))
        .bind(requested_by)
        .fetch_one(&self.pool)
        .await
        .map_err(q("insert drill"))
    }

    pub async fn finish_drill(
        &self,
        id: i64,
        passed: bool,
        restore_seconds: Option<f64>,
        checks: &[CheckResult],
        at: DateTime<Utc>,
    ) -> Result<(), CatalogError> {
        sqlx::query("UPDATE drills SET verdict = $1, restore_seconds = $2, checks = $3, finished_at = $4 WHERE id = $5")
            .bind(if passed { "passed" } else { "failed" })
            .bind(restore_seconds)
            .bind(serde_json::to_string(checks).unwrap_or_else(|_| "[]".into()))
            .bind(ts(at))
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(q("finish drill"))?;
        Ok(())
    }

    pub async fn drills(
        &self,
        policy: Option<&str>,
        limit: i64,
    ) -> Result<Vec<DrillRow>, CatalogError> {
        let rows = match policy {
            Some(p) => {
                sqlx::query("SELECT * FROM drills WHERE policy = $1 ORDER BY id DESC LIMIT $2")
                    .bind(p)
                    .bind(limit)
            }
            None => sqlx::query("SELECT * FROM drills ORDER BY id DESC LIMIT $1").bind(limit),
        }
        .fetch_all(&self.pool)
        .await
        .map_err(q("select drills"))?;
        rows.iter()
            .map(|r| {
                let checks: String = r.get("checks");
                Ok(DrillRow {
                    id: r.get("id"),
                    policy: r.get("policy"),
                    backup_id: r.get("backup_id"),
                    target: r.get("target"),
                    scratch: r.get("scratch"),
                    started_at: get_ts(r, "started_at")?,
                    finished_at: get_ots(r, "finished_at")?,
                    verdict: r.get("verdict"),
                    restore_seconds: r.get("restore_seconds"),
                    checks: serde_json::from_str(&checks).unwrap_or_default(),
                })
            })
            .collect()
    }

    /// Drills still marked running (their process may have died).
    pub async fn running_drills(&self) -> Result<Vec<DrillRow>, CatalogError> {
        Ok(self
            .drills(None, 10_000)
            .await?
            .into_iter()
            .filter(|d| d.verdict == "running")
            .collect())
    }

    /// Per policy: last attempt, last pass, last verdict.
    pub async fn drill_history(&self) -> Result<BTreeMap<String, DrillHistory>, CatalogError> {
        let rows = sqlx::query(
            "SELECT policy,
                    MAX(started_at) AS last_attempt,
                    MAX(CASE WHEN verdict = 'passed' THEN started_at END) AS last_passed,
                    (SELECT verdict FROM drills d2 WHERE d2.policy = d.policy AND d2.verdict != 'running'
                     ORDER BY d2.id DESC LIMIT 1) AS last_verdict,
                    CAST(SUM(CASE WHEN verdict = 'running' THEN 1 ELSE 0 END) AS BIGINT) AS running
             FROM drills d GROUP BY policy",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(q("select drill history"))?;
        let mut out = BTreeMap::new();
        for r in rows {
            let verdict: Option<String> = r.get("last_verdict");
            let running: i64 = r.get("running");
            out.insert(
                r.get("policy"),
                DrillHistory {
                    last_attempt: get_ots(&r, "last_attempt")?,
                    last_passed: get_ots(&r, "last_passed")?,
                    last_passed_verdict: verdict.map(|v| v == "passed"),
                    running: running > 0,
                },
            );
        }
        Ok(out)
    }
}
