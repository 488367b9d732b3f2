//! IO: a named restore point on the server of a PITR policy (the deploy
//! gate). `pg_create_restore_point(name)` writes a restore-point record into
//! the WAL; `pg_switch_wal()` then completes the segment holding it, so
//! `pg_receivewal` closes that segment and the archiver stores it whole at
//! its next flush. A complete segment is what the gate waits for: it is one
//! object in the storage, named by its segment and checked against its
//! checksum, whereas the growing `.partial` copy would have to be parsed to
//! know whether it already holds the record. The switch costs what an
//! `archive_timeout` costs: one segment closed early (zero-filled, a few
//! KiB after zstd). Both functions need a superuser or an explicit
//! `GRANT EXECUTE` (docs/pitr.md).

use super::postgres;
use super::sql;
use super::{ExecError, pitr_base};
use crate::policy::SecretRef;

/// A restore point created on the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestorePoint {
    pub name: String,
    /// The end of the restore-point record.
    pub lsn: u64,
    /// The segment holding the record (`pg_walfile_name`).
    pub segment: String,
    /// The server's `wal_segment_size` in bytes.
    pub segment_size: u64,
}

/// Creates the restore point `name` and switches to a new WAL segment.
pub async fn create(
    url: &str,
    password_from: Option<&SecretRef>,
    name: &str,
) -> Result<RestorePoint, ExecError> {
    let server = postgres::Server::new(url, password_from)?;
    let mut conn = server.connect(&server.opts).await?;
    let created: Result<(String, String, String), ExecError> = sqlx::query_as(
        "SELECT p.lsn::text, pg_walfile_name(p.lsn), \
         (SELECT setting FROM pg_settings WHERE name = 'wal_segment_size') \
         FROM (SELECT pg_create_restore_point($1) AS lsn) AS p",
    )
    .bind(name)
    .fetch_one(&mut conn)
    .await
    .map_err(server.query_err("create restore point (pg_create_restore_point)"));
    let switched: Result<String, ExecError> = match &created {
        Ok(_) => sqlx::query_scalar("SELECT pg_switch_wal()::text")
            .fetch_one(&mut conn)
            .await
            .map_err(server.query_err("complete the WAL segment (pg_switch_wal)")),
        Err(_) => Ok(String::new()),
    };
    sql::close(conn).await;
    let (lsn, segment, size) = created?;
    switched?;
    let bad = |what: &str, value: &str| ExecError::Query {
        what: "create restore point (pg_create_restore_point)",
        target: server.target().to_string(),
        transient: false,
        message: format!("the server answered {what} `{value}`"),
    };
    Ok(RestorePoint {
        name: name.to_string(),
        lsn: pitr_base::parse_lsn(&lsn).ok_or_else(|| bad("the position", &lsn))?,
        segment,
        segment_size: size
            .parse()
            .map_err(|_| bad("the wal_segment_size", &size))?,
    })
}
