//! IO: restoring a PostgreSQL custom-format dump into a database URL: the
//! target prepared (created, or refused / replaced when it holds objects),
//! `pg_restore` fed from the stream or from a spooled file with `-j`, and
//! the restored rows per table counted from the archive as it passes.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;

use sqlx::PgConnection;
use sqlx::postgres::PgConnectOptions;

use super::pg_archive::Counted;
use super::pgtools;
use super::postgres::{Pg, Server, tool};
use super::process;
use super::spool::{ServerAt, SpoolFile};
use super::sql::{self, Dialect};
use super::{ExecError, Produced};

/// Restores a custom-format dump and says how many rows each table got.
/// Streamed into `pg_restore --no-owner --single-transaction` (all or
/// nothing), unless this call created the database and `Spool::jobs` finds
/// parallel jobs worth it (`--jobs`, or spread rows and spare cores) and
/// room for the dump: then it is spooled to a local file and restored with
/// `pg_restore -j N --exit-on-error` (tables, indexes and constraints in
/// parallel); a failure drops the database it created, so nothing
/// half-restored remains either way.
///
/// The rows are counted from the archive as it passes (`pg_archive`): each
/// table's COPY is all or nothing and the target held no tables before, so
/// a restore that succeeded loaded exactly those rows. Where the archive
/// cannot tell (or with `recount`) every table is counted instead.
pub async fn restore(
    input: Box<dyn Read + Send>,
    url: &str,
    opts: &super::RestoreOptions,
) -> Result<Produced, ExecError> {
    let server = Server::new(url, opts.password_from.as_ref())?;
    let db = server
        .opts
        .get_database()
        .filter(|d| !d.is_empty())
        .ok_or_else(|| ExecError::NoDatabase(server.target().to_string()))?
        .to_string();
    let created = server.prepare_target(&db, opts.force).await?;
    // The newest installed pg_restore reads dumps of every older pg_dump.
    let program = pgtools::program_for(Path::new(pgtools::LAYOUT_ROOT), None, "pg_restore", 0);
    let mut tool = tool(&server, &program.to_string_lossy());
    tool.cmd.arg("--no-owner");
    let mut input = Counted::new(input);
    let parallel = opts.spool.as_ref().filter(|_| created);
    let at = server_at(&server.opts);
    let input = match parallel.and_then(|s| Some((s, s.jobs(opts.jobs, at)?))) {
        Some((spool, jobs)) => {
            tracing::info!(
                target = %server.target(),
                jobs,
                spool = %spool.dir.display(),
                "restoring with pg_restore -j from a spooled copy of the dump"
            );
            let dir = spool.dir.clone();
            let restored = super::blocking(move || {
                let file = SpoolFile::write(&dir, &mut input)?;
                tool.cmd
                    .args(["--exit-on-error", "--jobs", &jobs.to_string()])
                    .arg(file.path());
                process::output(tool).map(|_| input)
            })
            .await;
            match restored {
                Ok(input) => input,
                Err(e) => {
                    // Best effort: the error says what failed either way.
                    let _ = server.drop_database(&db).await;
                    return Err(e);
                }
            }
        }
        None => {
            tracing::info!(target = %server.target(), "restoring in one transaction from the stream");
            tool.cmd.arg("--single-transaction");
            super::blocking(move || process::feed_stdin(tool, &mut input).map(|_| input)).await?
        }
    };
    let mut conn = server.connect(&server.opts).await?;
    let streamed = if opts.recount {
        Err("asked to read every table back (a drill, or --recount)".to_string())
    } else {
        input.finish()
    };
    let counts = match streamed {
        Ok(rows) => rows_with_descendants(&server, &mut conn, &rows).await?,
        Err(why) => {
            tracing::info!(target = %server.target(), reason = %why, "counting the restored rows table by table");
            server.count_rows(&mut conn).await?
        }
    };
    sql::close(conn).await;
    Ok(Produced {
        counts,
        ..Produced::default()
    })
}

/// Loopback addresses and Unix sockets are this machine.
fn server_at(opts: &PgConnectOptions) -> ServerAt {
    let host = opts.get_host();
    let local = host == "localhost"
        || host.starts_with('/')
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if local {
        ServerAt::ThisMachine
    } else {
        ServerAt::Elsewhere
    }
}

/// The restored tables with the rows `count(*)` gives: each table's own
/// rows from the archive plus those of the tables that inherit from it (a
/// parent's count includes its children's), read from the catalog. A table
/// the archive has no data for (one the template database already had) is
/// counted.
async fn rows_with_descendants(
    server: &Server,
    conn: &mut PgConnection,
    archive: &BTreeMap<String, u64>,
) -> Result<BTreeMap<String, u64>, ExecError> {
    let tables = Pg::tables(conn)
        .await
        .map_err(server.query_err("list tables"))?;
    let inherits: Vec<(String, String)> = sqlx::query_as(
        "WITH RECURSIVE tree(ancestor, descendant) AS ( \
           SELECT inhparent, inhrelid FROM pg_inherits \
           UNION SELECT t.ancestor, i.inhrelid FROM tree t \
             JOIN pg_inherits i ON i.inhparent = t.descendant) \
         SELECT an.nspname::text || '.' || a.relname::text, \
                dn.nspname::text || '.' || d.relname::text \
         FROM tree JOIN pg_class a ON a.oid = tree.ancestor \
         JOIN pg_namespace an ON an.oid = a.relnamespace \
         JOIN pg_class d ON d.oid = tree.descendant \
         JOIN pg_namespace dn ON dn.oid = d.relnamespace",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(server.query_err("list inherited tables"))?;
    let mut family: HashMap<String, Vec<String>> = HashMap::new();
    for (ancestor, descendant) in inherits {
        family.entry(ancestor).or_default().push(descendant);
    }
    let mut counts = BTreeMap::new();
    for (key, quoted) in tables {
        let members: Vec<&String> = std::iter::once(&key)
            .chain(family.get(&key).into_iter().flatten())
            .collect();
        let n = if members.iter().all(|k| archive.contains_key(*k)) {
            members.iter().map(|k| archive[*k]).sum()
        } else {
            let n = Pg::count(conn, &quoted)
                .await
                .map_err(server.query_err("count rows"))?;
            n.max(0) as u64
        };
        counts.insert(key, n);
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    #[test]
    fn loopback_and_unix_sockets_are_this_machine() {
        let at = |url: &str| server_at(&PgConnectOptions::from_str(url).unwrap());
        for url in [
            "postgres://u@localhost/db",
            "postgres://u@127.0.0.1:5433/db",
            "postgres://u@[::1]/db",
            "postgres://u@%2Fvar%2Frun%2Fpostgresql/db",
        ] {
            assert_eq!(at(url), ServerAt::ThisMachine, "{url}");
        }
        for url in ["postgres://u@db.internal/db", "postgres://u@10.0.0.5/db"] {
            assert_eq!(at(url), ServerAt::Elsewhere, "{url}");
        }
    }
}
