//! Leases and replica heartbeats: which replica may act on which policy.
//! Every expiry is computed and compared on the catalog's clock (one clock
//! for all replicas, so skew between replica hosts cannot make two holders);
//! a replica measures its own, shorter, validity on its monotonic clock
//! (`crate::lease`). A lease is one row: holder, epoch, expiry. Taking a free
//! or expired lease bumps its epoch; renewing keeps it. One statement renews
//! all the leases of a replica, so 10,000 policies cost one query per
//! heartbeat, not one session lock each.

use sqlx::{AssertSqlSafe, Row};

use super::{Backend, Catalog, CatalogError, q};

/// A lease as the catalog holds it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LeaseRow {
    pub name: String,
    pub holder: String,
    pub epoch: i64,
    /// Milliseconds since the epoch, catalog clock.
    pub expires_at: i64,
    /// Unexpired when read.
    pub live: bool,
}

impl Catalog {
    /// `template` with every `{now}` replaced by the catalog clock in
    /// milliseconds since the Unix epoch (a fixed expression per backend:
    /// nothing user-given is spliced into SQL).
    pub(super) fn clock_sql(&self, template: &'static str) -> AssertSqlSafe<String> {
        self.clock_sql_owned(template.to_string())
    }

    /// `clock_sql` of a statement built from fixed pieces and placeholders.
    fn clock_sql_owned(&self, template: String) -> AssertSqlSafe<String> {
        let now = match self.backend {
            Backend::Postgres => "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT",
            Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
        };
        AssertSqlSafe(template.replace("{now}", now))
    }

    /// Records that `replica` is alive and holds `leases` leases.
    pub async fn heartbeat(&self, replica: &str, leases: i64) -> Result<(), CatalogError> {
        sqlx::query(self.clock_sql(
            "INSERT INTO replicas (id, started_at, heartbeat_at, leases) VALUES ($1, {now}, {now}, $2)
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = {now}, leases = $3",
        ))
        .bind(replica)
        .bind(leases)
        .bind(leases)
        .execute(&self.pool)
        .await
        .map_err(q("replica heartbeat"))?;
        Ok(())
    }

    /// Replicas whose heartbeat is younger than `ttl_ms`, sorted by id.
    pub async fn live_replicas(&self, ttl_ms: i64) -> Result<Vec<String>, CatalogError> {
        let rows = sqlx::query(
            self.clock_sql("SELECT id FROM replicas WHERE heartbeat_at > {now} - $1 ORDER BY id"),
        )
        .bind(ttl_ms)
        .fetch_all(&self.pool)
        .await
        .map_err(q("select live replicas"))?;
        Ok(rows.iter().map(|r| r.get("id")).collect())
    }

    /// Forgets `replica` (clean shutdown): its leases can be taken at once.
    pub async fn leave(&self, replica: &str) -> Result<(), CatalogError> {
        sqlx::query("UPDATE leases SET expires_at = 0 WHERE holder = $1")
            .bind(replica)
            .execute(&self.pool)
            .await
            .map_err(q("release leases"))?;
        sqlx::query("DELETE FROM replicas WHERE id = $1")
            .bind(replica)
            .execute(&self.pool)
            .await
            .map_err(q("remove replica"))?;
        Ok(())
    }

    /// Extends every unexpired lease of `replica` by `ttl_ms`; returns the
    /// leases it still holds (name, epoch). A lease missing from the answer
    /// expired (and may have another holder now).
    pub async fn renew_leases(
        &self,
        replica: &str,
        ttl_ms: i64,
    ) -> Result<Vec<(String, i64)>, CatalogError> {
        let rows = sqlx::query(self.clock_sql(
            "UPDATE leases SET expires_at = {now} + $1 WHERE holder = $2 AND expires_at > {now}
             RETURNING name, epoch",
        ))
        .bind(ttl_ms)
        .bind(replica)
        .fetch_all(&self.pool)
        .await
        .map_err(q("renew leases"))?;
        Ok(rows
            .iter()
            .map(|r| (r.get("name"), r.get::<i64, _>("epoch")))
            .collect())
    }

    /// Takes lease `name` for `replica` when it is free, expired or already
    /// its own; returns its epoch, or `None` when another replica holds it.
    /// A lease changing hands gets a new epoch.
    pub async fn acquire_lease(
        &self,
        name: &str,
        replica: &str,
        ttl_ms: i64,
    ) -> Result<Option<i64>, CatalogError> {
        Ok(self
            .acquire_leases(&[name], replica, ttl_ms)
            .await?
            .into_iter()
            .next()
            .map(|(_, epoch)| epoch))
    }

    /// `acquire_lease` for many names, a few statements per 500 names (a
    /// replica joining an estate of 10,000 policies takes its share in
    /// seconds): the leases taken, with their epochs.
    pub async fn acquire_leases(
        &self,
        names: &[&str],
        replica: &str,
        ttl_ms: i64,
    ) -> Result<Vec<(String, i64)>, CatalogError> {
        let mut taken = Vec::new();
        for chunk in names.chunks(500) {
            let mut tx = self.pool.begin().await.map_err(q("begin leases"))?;
            // New leases (epoch 1); placeholders in order, none reused.
            let rows: Vec<String> = (0..chunk.len())
                .map(|i| {
                    format!(
                        "(${}, ${}, 1, {{now}} + ${})",
                        3 * i + 1,
                        3 * i + 2,
                        3 * i + 3
                    )
                })
                .collect();
            let insert = format!(
                "INSERT INTO leases (name, holder, epoch, expires_at) VALUES {}
                 ON CONFLICT (name) DO NOTHING RETURNING name, epoch",
                rows.join(", ")
            );
            let mut query = sqlx::query(self.clock_sql_owned(insert));
            for name in chunk {
                query = query.bind(*name).bind(replica).bind(ttl_ms);
            }
            let inserted = query
                .fetch_all(&mut *tx)
                .await
                .map_err(q("insert leases"))?;
            let new: std::collections::BTreeSet<String> = inserted
                .iter()
                .map(|r| r.get::<String, _>("name"))
                .collect();
            taken.extend(
                inserted
                    .iter()
                    .map(|r| (r.get("name"), r.get::<i64, _>("epoch"))),
            );
            let rest: Vec<&str> = chunk
                .iter()
                .copied()
                .filter(|n| !new.contains(*n))
                .collect();
            if !rest.is_empty() {
                // Expired or already ours: taken (a new holder, a new epoch).
                let list: Vec<String> = (0..rest.len()).map(|i| format!("${}", i + 5)).collect();
                let update = format!(
                    "UPDATE leases SET
                         epoch = CASE WHEN holder = $1 AND expires_at > {{now}} THEN epoch ELSE epoch + 1 END,
                         holder = $2, expires_at = {{now}} + $3
                     WHERE (expires_at <= {{now}} OR holder = $4) AND name IN ({})
                     RETURNING name, epoch",
                    list.join(", ")
                );
                let mut query = sqlx::query(self.clock_sql_owned(update))
                    .bind(replica)
                    .bind(replica)
                    .bind(ttl_ms)
                    .bind(replica);
                for name in &rest {
                    query = query.bind(*name);
                }
                let updated = query.fetch_all(&mut *tx).await.map_err(q("take leases"))?;
                taken.extend(
                    updated
                        .iter()
                        .map(|r| (r.get("name"), r.get::<i64, _>("epoch"))),
                );
            }
            tx.commit().await.map_err(q("commit leases"))?;
        }
        Ok(taken)
    }

    /// Gives lease `name` up (when `replica` holds it): another replica may
    /// take it at once.
    pub async fn release_lease(&self, name: &str, replica: &str) -> Result<(), CatalogError> {
        sqlx::query("UPDATE leases SET expires_at = 0 WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(replica)
            .execute(&self.pool)
            .await
            .map_err(q("release lease"))?;
        Ok(())
    }

    /// Every lease, by name.
    pub async fn leases(&self) -> Result<Vec<LeaseRow>, CatalogError> {
        let rows = sqlx::query(self.clock_sql(
            "SELECT name, holder, epoch, expires_at,
                    CAST(CASE WHEN expires_at > {now} THEN 1 ELSE 0 END AS BIGINT) AS live
             FROM leases ORDER BY name",
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(q("select leases"))?;
        Ok(rows
            .iter()
            .map(|r| LeaseRow {
                name: r.get("name"),
                holder: r.get("holder"),
                epoch: r.get("epoch"),
                expires_at: r.get("expires_at"),
                live: r.get::<i64, _>("live") != 0,
            })
            .collect())
    }

    /// True when `replica` holds lease `name` with `epoch` and it has not
    /// expired (the catalog-side fence).
    pub async fn holds_lease(
        &self,
        name: &str,
        replica: &str,
        epoch: i64,
    ) -> Result<bool, CatalogError> {
        let row = sqlx::query(self.clock_sql(
            "SELECT 1 AS held FROM leases WHERE name = $1 AND holder = $2 AND epoch = $3 AND expires_at > {now}",
        ))
        .bind(name)
        .bind(replica)
        .bind(epoch)
        .fetch_optional(&self.pool)
        .await
        .map_err(q("check lease"))?;
        Ok(row.is_some())
    }
}
