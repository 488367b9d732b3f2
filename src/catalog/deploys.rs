//! IO: deploy events and release-tag bookkeeping.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;

use super::{Catalog, CatalogError, q};

/// One recorded deploy step for one policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeployRecord {
    pub release: String,
    pub policy: String,
    pub phase: String,
    pub status: String,
    pub backup_id: Option<String>,
    pub caller: String,
    pub detail: String,
    pub at: DateTime<Utc>,
}

impl Catalog {
    pub async fn record_deploy(&self, d: &DeployRecord) -> Result<(), CatalogError> {
        sqlx::query(
            "INSERT INTO deploys (release, policy, phase, status, backup_id, caller, detail, at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&d.release)
        .bind(&d.policy)
        .bind(&d.phase)
        .bind(&d.status)
        .bind(&d.backup_id)
        .bind(&d.caller)
        .bind(&d.detail)
        .bind(d.at)
        .execute(&self.pool)
        .await
        .map_err(q("insert deploy"))?;
        Ok(())
    }

    pub async fn deploys(&self, release: Option<&str>) -> Result<Vec<DeployRecord>, CatalogError> {
        let rows = match release {
            Some(r) => sqlx::query("SELECT * FROM deploys WHERE release = ? ORDER BY id").bind(r),
            None => sqlx::query("SELECT * FROM deploys ORDER BY id"),
        }
        .fetch_all(&self.pool)
        .await
        .map_err(q("select deploys"))?;
        Ok(rows
            .into_iter()
            .map(|r| DeployRecord {
                release: r.get("release"),
                policy: r.get("policy"),
                phase: r.get("phase"),
                status: r.get("status"),
                backup_id: r.get("backup_id"),
                caller: r.get("caller"),
                detail: r.get("detail"),
                at: r.get("at"),
            })
            .collect())
    }

    /// Arms a policy's tag pattern; returns true the first time.
    pub async fn arm_releases(
        &self,
        policy: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, CatalogError> {
        let done = sqlx::query(
            "INSERT OR IGNORE INTO release_policies (policy, first_seen_at) VALUES (?, ?)",
        )
        .bind(policy)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(q("arm releases"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Records a tag as handled (`existing` at arming time, or `done` with its backup).
    pub async fn mark_release(
        &self,
        policy: &str,
        tag: &str,
        state: &str,
        backup_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), CatalogError> {
        sqlx::query(
            "INSERT INTO release_tags (policy, tag, state, backup_id, at) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (policy, tag) DO NOTHING",
        )
        .bind(policy)
        .bind(tag)
        .bind(state)
        .bind(backup_id)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(q("mark release"))?;
        Ok(())
    }

    /// Tags of `policy` already handled.
    pub async fn handled_releases(&self, policy: &str) -> Result<Vec<String>, CatalogError> {
        let rows = sqlx::query("SELECT tag FROM release_tags WHERE policy = ?")
            .bind(policy)
            .fetch_all(&self.pool)
            .await
            .map_err(q("select release tags"))?;
        Ok(rows.into_iter().map(|r| r.get("tag")).collect())
    }
}
