//! Forwarded API jobs: a request for a policy another replica holds is a
//! row here, claimed by that policy's lease holder and answered in place;
//! the replica the caller talks to polls the row for the answer. Claiming is
//! a compare-and-set on `state` (and `claimed_by`): of two replicas trying
//! at once exactly one updates the row, whatever the backend.

use sqlx::Row;

use super::{Catalog, CatalogError, q};

/// An open job row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRow {
    pub id: i64,
    pub policy: String,
    /// The job, serialized by the app layer.
    pub kind: String,
    pub caller: String,
    pub state: String,
    pub claimed_by: Option<String>,
}

impl Catalog {
    /// Queues a job for the holder of `policy`; returns its id.
    pub async fn queue_job(
        &self,
        policy: &str,
        kind: &str,
        caller: &str,
    ) -> Result<i64, CatalogError> {
        let row = sqlx::query(self.clock_sql(
            "INSERT INTO jobs (policy, kind, caller, state, created_at)
             VALUES ($1, $2, $3, 'queued', {now}) RETURNING id",
        ))
        .bind(policy)
        .bind(kind)
        .bind(caller)
        .fetch_one(&self.pool)
        .await
        .map_err(q("queue job"))?;
        Ok(row.get("id"))
    }

    /// Jobs not answered yet, oldest first.
    pub async fn open_jobs(&self) -> Result<Vec<JobRow>, CatalogError> {
        let rows = sqlx::query(
            "SELECT id, policy, kind, caller, state, claimed_by FROM jobs
             WHERE state <> 'done' ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(q("select open jobs"))?;
        Ok(rows
            .iter()
            .map(|r| JobRow {
                id: r.get("id"),
                policy: r.get("policy"),
                kind: r.get("kind"),
                caller: r.get("caller"),
                state: r.get("state"),
                claimed_by: r.get("claimed_by"),
            })
            .collect())
    }

    /// Claims job `id` for `replica`: a queued job, or one claimed by
    /// another replica (which lost the policy's lease: only the holder
    /// claims). True when this call claimed it.
    pub async fn claim_job(&self, id: i64, replica: &str) -> Result<bool, CatalogError> {
        let done = sqlx::query(
            "UPDATE jobs SET state = 'claimed', claimed_by = $1
             WHERE id = $2 AND (state = 'queued' OR (state = 'claimed' AND claimed_by <> $3))",
        )
        .bind(replica)
        .bind(id)
        .bind(replica)
        .execute(&self.pool)
        .await
        .map_err(q("claim job"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Answers job `id` (when `replica` still has it claimed).
    pub async fn answer_job(
        &self,
        id: i64,
        replica: &str,
        answer: &str,
    ) -> Result<bool, CatalogError> {
        let done = sqlx::query(self.clock_sql(
            "UPDATE jobs SET state = 'done', answer = $1, done_at = {now}
             WHERE id = $2 AND state = 'claimed' AND claimed_by = $3",
        ))
        .bind(answer)
        .bind(id)
        .bind(replica)
        .execute(&self.pool)
        .await
        .map_err(q("answer job"))?;
        Ok(done.rows_affected() == 1)
    }

    /// The answer of job `id` once it is done (and who ran it).
    pub async fn job_answer(&self, id: i64) -> Result<Option<(String, String)>, CatalogError> {
        let row =
            sqlx::query("SELECT answer, claimed_by FROM jobs WHERE id = $1 AND state = 'done'")
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(q("select job answer"))?;
        Ok(row.map(|r| {
            (
                r.get::<Option<String>, _>("answer").unwrap_or_default(),
                r.get::<Option<String>, _>("claimed_by").unwrap_or_default(),
            )
        }))
    }

    /// Withdraws a job nobody answered (the caller gave up): marked done
    /// with no answer so no replica runs it later.
    pub async fn withdraw_job(&self, id: i64) -> Result<(), CatalogError> {
        sqlx::query(self.clock_sql(
            "UPDATE jobs SET state = 'done', done_at = {now} WHERE id = $1 AND state = 'queued'",
        ))
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(q("withdraw job"))?;
        Ok(())
    }
}
