//! IO: the state of each PITR policy's WAL archive (table `pitr_archives`,
//! one row per policy, replaced by its archiver after its flushes; removed
//! with the policy's slot). Declared under `deploys` (the catalog's module
//! list is `catalog/mod.rs`); its methods are the `Catalog`'s like any other.

use std::collections::BTreeMap;

use sqlx::Row;

use crate::catalog::{Catalog, CatalogError, get_ots, get_ts, q, ts};
use crate::model::PitrArchive;

impl Catalog {
    /// Records (replaces) the archive state of `a.policy`.
    pub async fn record_pitr_archive(&self, a: &PitrArchive) -> Result<(), CatalogError> {
        sqlx::query(
            "INSERT INTO pitr_archives (policy, window_start, window_end, end_lsn, lag_bytes, gaps, checked_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (policy) DO UPDATE SET window_start = $2, window_end = $3, end_lsn = $4,
                 lag_bytes = $5, gaps = $6, checked_at = $7",
        )
        .bind(&a.policy)
        .bind(a.window_start.map(ts))
        .bind(a.window_end.map(ts))
        .bind(&a.end_lsn)
        .bind(a.lag_bytes.map(|b| i64::try_from(b).unwrap_or(i64::MAX)))
        .bind(a.gaps.join(","))
        .bind(ts(a.checked_at))
        .execute(&self.pool)
        .await
        .map_err(q("record WAL archive state"))?;
        Ok(())
    }

    /// The archive state of every PITR policy that has one.
    pub async fn pitr_archives(&self) -> Result<BTreeMap<String, PitrArchive>, CatalogError> {
        let rows = sqlx::query("SELECT * FROM pitr_archives ORDER BY policy")
            .fetch_all(&self.pool)
            .await
            .map_err(q("select WAL archive states"))?;
        let mut out = BTreeMap::new();
        for r in &rows {
            let gaps: String = r.get("gaps");
            let lag: Option<i64> = r.get("lag_bytes");
            let a = PitrArchive {
                policy: r.get("policy"),
                window_start: get_ots(r, "window_start")?,
                window_end: get_ots(r, "window_end")?,
                end_lsn: r.get("end_lsn"),
                lag_bytes: lag.map(|b| u64::try_from(b).unwrap_or(0)),
                gaps: gaps
                    .split(',')
                    .filter(|g| !g.is_empty())
                    .map(str::to_string)
                    .collect(),
                checked_at: get_ts(r, "checked_at")?,
            };
            out.insert(a.policy.clone(), a);
        }
        Ok(out)
    }

    /// Records where the slot of `policy` is (JSON, references to secrets
    /// only), written when its archiver starts.
    pub async fn record_pitr_source(
        &self,
        policy: &str,
        source: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), CatalogError> {
        sqlx::query(
            "INSERT INTO pitr_archives (policy, checked_at, source) VALUES ($1, $2, $3)
             ON CONFLICT (policy) DO UPDATE SET source = $3",
        )
        .bind(policy)
        .bind(ts(now))
        .bind(source)
        .execute(&self.pool)
        .await
        .map_err(q("record WAL archive source"))?;
        Ok(())
    }

    /// The recorded slot source of every policy that had an archiver.
    pub async fn pitr_sources(&self) -> Result<BTreeMap<String, String>, CatalogError> {
        let rows = sqlx::query("SELECT policy, source FROM pitr_archives WHERE source IS NOT NULL")
            .fetch_all(&self.pool)
            .await
            .map_err(q("select WAL archive sources"))?;
        Ok(rows
            .iter()
            .map(|r| (r.get("policy"), r.get("source")))
            .collect())
    }

    /// Forgets the archive state of a policy (its slot was dropped).
    pub async fn remove_pitr_archive(&self, policy: &str) -> Result<(), CatalogError> {
        sqlx::query("DELETE FROM pitr_archives WHERE policy = $1")
            .bind(policy)
            .execute(&self.pool)
            .await
            .map_err(q("remove WAL archive state"))?;
        Ok(())
    }
}
