//! IO: deploy events and release-tag bookkeeping.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;

use super::{Catalog, CatalogError, get_ts, q, ts};
use crate::model::DeployRestorePoint;

// PITR bookkeeping: a file of its own beside this one.
#[path = "pitr_archive.rs"]
mod pitr_archive;

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
        self.record_deploy_at_point(d, None).await
    }

    /// Records a deploy step with the restore point it created, if any.
    pub async fn record_deploy_at_point(
        &self,
        d: &DeployRecord,
        point: Option<&DeployRestorePoint>,
    ) -> Result<(), CatalogError> {
        sqlx::query(
            "INSERT INTO deploys (release, policy, phase, status, backup_id, caller, detail, at,
                                  restore_point, restore_lsn)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&d.release)
        .bind(&d.policy)
        .bind(&d.phase)
        .bind(&d.status)
        .bind(&d.backup_id)
        .bind(&d.caller)
        .bind(&d.detail)
        .bind(ts(d.at))
        .bind(point.map(|p| p.name.clone()))
        .bind(point.map(|p| p.lsn.clone()))
        .execute(&self.pool)
        .await
        .map_err(q("insert deploy"))?;
        Ok(())
    }

    /// The start rows of `release` for `policy`, oldest first, each with
    /// the restore point it recorded.
    pub async fn deploy_starts(
        &self,
        release: &str,
        policy: &str,
    ) -> Result<Vec<(DeployRecord, Option<DeployRestorePoint>)>, CatalogError> {
        let rows = sqlx::query(
            "SELECT * FROM deploys WHERE release = $1 AND policy = $2 AND phase = 'start' ORDER BY id",
        )
        .bind(release)
        .bind(policy)
        .fetch_all(&self.pool)
        .await
        .map_err(q("select deploy starts"))?;
        rows.iter()
            .map(|r| {
                let name: Option<String> = r.get("restore_point");
                let lsn: Option<String> = r.get("restore_lsn");
                let point = name
                    .zip(lsn)
                    .map(|(name, lsn)| DeployRestorePoint { name, lsn });
                Ok((deploy_of(r)?, point))
            })
            .collect()
    }

    pub async fn deploys(&self, release: Option<&str>) -> Result<Vec<DeployRecord>, CatalogError> {
        let rows = match release {
            Some(r) => sqlx::query("SELECT * FROM deploys WHERE release = $1 ORDER BY id").bind(r),
            None => sqlx::query("SELECT * FROM deploys ORDER BY id"),
        }
        .fetch_all(&self.pool)
        .await
        .map_err(q("select deploys"))?;
        rows.iter().map(deploy_of).collect()
    }

    /// Arms a policy's tag pattern; returns true the first time.
    pub async fn arm_releases(
        &self,
        policy: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, CatalogError> {
        let done = sqlx::query(
            "INSERT INTO release_policies (policy, first_seen_at) VALUES ($1, $2)
             ON CONFLICT (policy) DO NOTHING",
        )
        .bind(policy)
        .bind(ts(now))
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
            "INSERT INTO release_tags (policy, tag, state, backup_id, at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (policy, tag) DO NOTHING",
        )
        .bind(policy)
        .bind(tag)
        .bind(state)
        .bind(backup_id)
        .bind(ts(now))
        .execute(&self.pool)
        .await
        .map_err(q("mark release"))?;
        Ok(())
    }

    /// Tags of `policy` already handled.
    pub async fn handled_releases(&self, policy: &str) -> Result<Vec<String>, CatalogError> {
        let rows = sqlx::query("SELECT tag FROM release_tags WHERE policy = $1")
            .bind(policy)
            .fetch_all(&self.pool)
            .await
            .map_err(q("select release tags"))?;
        Ok(rows.into_iter().map(|r| r.get("tag")).collect())
    }
}

fn deploy_of(r: &sqlx::any::AnyRow) -> Result<DeployRecord, CatalogError> {
    Ok(DeployRecord {
        release: r.get("release"),
        policy: r.get("policy"),
        phase: r.get("phase"),
        status: r.get("status"),
        backup_id: r.get("backup_id"),
        caller: r.get("caller"),
        detail: r.get("detail"),
        at: get_ts(r, "at")?,
    })
}
