//! IO: drill records.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;

use super::{Catalog, CatalogError, q};
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
        let done = sqlx::query(
            "INSERT INTO drills (policy, backup_id, target, scratch, started_at, verdict, requested_by)
             VALUES (?, ?, ?, ?, ?, 'running', ?)",
        )
        .bind(policy)
        .bind(backup_id)
        .bind(target)
        .bind(scratch)
        .bind(at)
        .bind(requested_by)
        .execute(&self.pool)
        .await
        .map_err(q("insert drill"))?;
        Ok(done.last_insert_rowid())
    }

    pub async fn finish_drill(
        &self,
        id: i64,
        passed: bool,
        restore_seconds: Option<f64>,
        checks: &[CheckResult],
        at: DateTime<Utc>,
    ) -> Result<(), CatalogError> {
        sqlx::query("UPDATE drills SET verdict = ?, restore_seconds = ?, checks = ?, finished_at = ? WHERE id = ?")
            .bind(if passed { "passed" } else { "failed" })
            .bind(restore_seconds)
            .bind(serde_json::to_string(checks).unwrap_or_else(|_| "[]".into()))
            .bind(at)
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
                sqlx::query("SELECT * FROM drills WHERE policy = ? ORDER BY id DESC LIMIT ?")
                    .bind(p)
                    .bind(limit)
            }
            None => sqlx::query("SELECT * FROM drills ORDER BY id DESC LIMIT ?").bind(limit),
        }
        .fetch_all(&self.pool)
        .await
        .map_err(q("select drills"))?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let checks: String = r.get("checks");
                DrillRow {
                    id: r.get("id"),
                    policy: r.get("policy"),
                    backup_id: r.get("backup_id"),
                    target: r.get("target"),
                    scratch: r.get("scratch"),
                    started_at: r.get("started_at"),
                    finished_at: r.get("finished_at"),
                    verdict: r.get("verdict"),
                    restore_seconds: r.get("restore_seconds"),
                    checks: serde_json::from_str(&checks).unwrap_or_default(),
                }
            })
            .collect())
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
                    SUM(CASE WHEN verdict = 'running' THEN 1 ELSE 0 END) AS running
             FROM drills d GROUP BY policy",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(q("select drill history"))?;
        let mut out = BTreeMap::new();
        for r in rows {
            let verdict: Option<String> = r.get("last_verdict");
            let running: i64 = r.get("running");
            let parse = |column: &str| -> Option<DateTime<Utc>> {
                r.try_get::<Option<DateTime<Utc>>, _>(column)
                    .ok()
                    .flatten()
                    .or_else(|| {
                        let text: Option<String> = r.try_get(column).ok().flatten();
                        text.and_then(|s| {
                            DateTime::parse_from_rfc3339(&s)
                                .ok()
                                .map(|d| d.with_timezone(&Utc))
                        })
                    })
            };
            out.insert(
                r.get("policy"),
                DrillHistory {
                    last_attempt: parse("last_attempt"),
                    last_passed: parse("last_passed"),
                    last_passed_verdict: verdict.map(|v| v == "passed"),
                    running: running > 0,
                },
            );
        }
        Ok(out)
    }
}
