//! IO: copying a whole catalog into an empty one (`safepoint catalog
//! migrate`): every table row for row, ids and audit sequence numbers kept,
//! in one transaction on the target, so the audit chain, pins, run history,
//! deploys, drills, alert state and outbox arrive intact or not at all.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row, SqlSafeStr};

use super::{Backend, Catalog, CatalogError, q};

#[derive(Clone, Copy)]
enum Ty {
    Text,
    Int,
    Real,
}
use Ty::{Int, Real, Text};

/// Every table of the catalog with its columns, in an order that copies
/// (no foreign keys between them). `id` columns are identities on PostgreSQL.
const TABLES: &[(&str, &[(&str, Ty)])] = &[
    (
        "revisions",
        &[
            ("id", Int),
            ("commit_id", Text),
            ("branch", Text),
            ("author", Text),
            ("summary", Text),
            ("attempted_at", Text),
            ("valid", Int),
            ("diagnostics", Text),
        ],
    ),
    (
        "backups",
        &[
            ("id", Text),
            ("policy", Text),
            ("storage", Text),
            ("trigger", Text),
            ("release", Text),
            ("commit_id", Text),
            ("started_at", Text),
            ("finished_at", Text),
            ("size", Int),
            ("checksum", Text),
            ("health", Text),
            ("checked_at", Text),
            ("problem", Text),
            ("pinned", Text),
            ("manifest", Text),
            ("deleted_at", Text),
            ("pinned_by", Text),
            ("pinned_at", Text),
            ("pin_release", Text),
        ],
    ),
    (
        "runs",
        &[
            ("id", Int),
            ("policy", Text),
            ("backup_id", Text),
            ("storage", Text),
            ("trigger", Text),
            ("release", Text),
            ("requested_by", Text),
            ("started_at", Text),
            ("finished_at", Text),
            ("outcome", Text),
            ("error_kind", Text),
            ("error", Text),
        ],
    ),
    (
        "audit",
        &[
            ("seq", Int),
            ("at", Text),
            ("kind", Text),
            ("policy", Text),
            ("actor", Text),
            ("message", Text),
            ("prev_hash", Text),
            ("hash", Text),
        ],
    ),
    (
        "deploys",
        &[
            ("id", Int),
            ("release", Text),
            ("policy", Text),
            ("phase", Text),
            ("status", Text),
            ("backup_id", Text),
            ("caller", Text),
            ("detail", Text),
            ("at", Text),
            ("restore_point", Text),
            ("restore_lsn", Text),
        ],
    ),
    (
        "pitr_archives",
        &[
            ("policy", Text),
            ("window_start", Text),
            ("window_end", Text),
            ("end_lsn", Text),
            ("lag_bytes", Int),
            ("gaps", Text),
            ("checked_at", Text),
            ("source", Text),
        ],
    ),
    (
        "release_policies",
        &[("policy", Text), ("first_seen_at", Text)],
    ),
    (
        "release_tags",
        &[
            ("policy", Text),
            ("tag", Text),
            ("state", Text),
            ("backup_id", Text),
            ("at", Text),
        ],
    ),
    (
        "drills",
        &[
            ("id", Int),
            ("policy", Text),
            ("backup_id", Text),
            ("target", Text),
            ("scratch", Text),
            ("started_at", Text),
            ("finished_at", Text),
            ("verdict", Text),
            ("restore_seconds", Real),
            ("checks", Text),
            ("requested_by", Text),
        ],
    ),
    (
        "alerts",
        &[
            ("policy", Text),
            ("reason", Text),
            ("since", Text),
            ("notified_at", Text),
            ("detail", Text),
            ("recipients", Text),
        ],
    ),
    (
        "outbox",
        &[
            ("id", Int),
            ("created_at", Text),
            ("channel", Text),
            ("kind", Text),
            ("policy", Text),
            ("reason", Text),
            ("notifier", Text),
            ("sender", Text),
            ("recipients", Text),
            ("subject", Text),
            ("body", Text),
            ("attempts", Int),
            ("next_attempt_at", Text),
            ("last_error", Text),
            ("state", Text),
            ("done_at", Text),
            ("target", Text),
        ],
    ),
];

/// Rows per table, in the source and in the target after the copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CopyReport {
    pub tables: Vec<TableCount>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableCount {
    pub table: &'static str,
    pub source: i64,
    pub target: i64,
}

impl Catalog {
    /// Rows per catalog table.
    pub async fn table_counts(&self) -> Result<Vec<(&'static str, i64)>, CatalogError> {
        let mut out = Vec::new();
        for (table, _) in TABLES {
            let n: i64 = sqlx::query_scalar(AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
                .fetch_one(&self.pool)
                .await
                .map_err(q("count rows"))?;
            out.push((*table, n));
        }
        Ok(out)
    }

    /// Copies every row of this catalog into `target`, which must be empty.
    /// Nothing is written to the target unless everything is.
    pub async fn copy_into(&self, target: &Catalog) -> Result<CopyReport, CatalogError> {
        let before = target.table_counts().await?;
        if let Some((table, n)) = before.iter().find(|(_, n)| *n > 0) {
            return Err(CatalogError::Location {
                location: target.shown.clone(),
                reason: format!(
                    "the target catalog is not empty ({n} rows in {table}); \
                     migrate only into a new, empty database"
                ),
            });
        }
        let mut tx = target.pool.begin().await.map_err(q("begin copy"))?;
        for (table, columns) in TABLES {
            let names: Vec<&str> = columns.iter().map(|(c, _)| *c).collect();
            let select = format!("SELECT {} FROM {table}", names.join(", "));
            let rows = sqlx::query(AssertSqlSafe(select))
                .fetch_all(&self.pool)
                .await
                .map_err(q("read source rows"))?;
            let params: Vec<String> = (1..=columns.len()).map(|i| format!("${i}")).collect();
            let insert = format!(
                "INSERT INTO {table} ({}) VALUES ({})",
                names.join(", "),
                params.join(", ")
            );
            let insert = AssertSqlSafe(insert).into_sql_str();
            for row in &rows {
                bind_row(sqlx::query(insert.clone()), row, columns)?
                    .execute(&mut *tx)
                    .await
                    .map_err(q("write target row"))?;
            }
            if target.backend == Backend::Postgres
                && names[0] == "id"
                && matches!(columns[0].1, Int)
            {
                // Identities continue after the copied ids.
                sqlx::query(AssertSqlSafe(format!(
                    "SELECT setval(pg_get_serial_sequence('{table}', 'id'), \
                     (SELECT COALESCE(MAX(id), 0) + 1 FROM {table}), false)"
                )))
                .execute(&mut *tx)
                .await
                .map_err(q("advance identity"))?;
            }
        }
        tx.commit().await.map_err(q("commit copy"))?;
        if let Some(last) = self.audit_entries(None).await?.last() {
            target.write_head(last.seq, &last.hash);
        }
        let source = self.table_counts().await?;
        let copied = target.table_counts().await?;
        let tables: Vec<TableCount> = source
            .iter()
            .zip(&copied)
            .map(|((table, s), (_, t))| TableCount {
                table,
                source: *s,
                target: *t,
            })
            .collect();
        if let Some(c) = tables.iter().find(|c| c.source != c.target) {
            return Err(CatalogError::Corrupt {
                what: "copied catalog",
                value: format!(
                    "{} has {} rows in the source and {} in the target (was the source written to during the copy?)",
                    c.table, c.source, c.target
                ),
            });
        }
        Ok(CopyReport { tables })
    }
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

fn bind_row<'q>(
    mut query: AnyQuery<'q>,
    row: &AnyRow,
    columns: &[(&'static str, Ty)],
) -> Result<AnyQuery<'q>, CatalogError> {
    for (column, ty) in columns {
        let column = *column;
        query = match ty {
            Text => query.bind(
                row.try_get::<Option<String>, _>(column)
                    .map_err(q(column))?,
            ),
            Int => query.bind(row.try_get::<Option<i64>, _>(column).map_err(q(column))?),
            Real => query.bind(row.try_get::<Option<f64>, _>(column).map_err(q(column))?),
        };
    }
    Ok(query)
}
