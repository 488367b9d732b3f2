//! IO: PostgreSQL sources. A backup opens a REPEATABLE READ transaction,
//! exports its snapshot, runs `pg_dump -Fc -Z0 --snapshot` (stdout streamed
//! into the artifact writer, which compresses with multi-threaded zstd) and,
//! concurrently on the same transaction, counts the rows of every user table:
//! counts and dump see the same data. Restores are in `pg_restore.rs`.
//! Passwords reach the tools through PGPASSWORD in the child's environment.

use std::io::Write;
use std::path::Path;
use std::str::FromStr;

use sqlx::PgConnection;
use sqlx::postgres::PgConnectOptions;

use super::classify::is_transient_text;
use super::pgtools;
use super::process::{self, Tool};
use super::secret::Redactor;
use super::sql::{self, Dialect, TargetState};
use super::{ExecContext, ExecError, Produced, until_cancelled};
use crate::policy::SecretRef;
use crate::storage::pipeline::Cancel;

/// PostgreSQL's differences from the other SQL servers.
pub(crate) struct Pg;

pub(crate) type Server = sql::Server<Pg>;

impl Dialect for Pg {
    type Conn = PgConnection;
    type Opts = PgConnectOptions;
    const PASSWORD_ENV: &'static str = "PGPASSWORD";
    const DROP_TARGET: &'static str =
        "drop target database (--force; close its other sessions first)";

    fn options(url: &str, password: Option<&str>) -> Result<PgConnectOptions, String> {
        let opts = PgConnectOptions::from_str(url)
            .map_err(|e| format!("not a valid PostgreSQL URL: {e}"))?
            .application_name("safepoint");
        Ok(match password {
            Some(pw) => opts.password(pw),
            None => opts,
        })
    }

    fn describe(opts: &PgConnectOptions, _url: &str) -> String {
        format!(
            "postgres://{}@{}:{}/{}",
            opts.get_username(),
            opts.get_host(),
            opts.get_port(),
            opts.get_database().unwrap_or_default()
        )
    }

    fn admin_options(server: &Server, db: &str) -> PgConnectOptions {
        let maintenance = if db == "postgres" {
            "template1"
        } else {
            "postgres"
        };
        server.opts.clone().database(maintenance)
    }

    fn quote_ident(name: &str) -> String {
        quote_ident(name)
    }

    fn create_database(db: &str) -> String {
        format!("CREATE DATABASE {}", quote_ident(db))
    }

    fn drop_database_if_exists(db: &str) -> String {
        format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(db))
    }

    /// Partitions counted as leaves, extension-owned tables skipped (as
    /// pg_dump does), keyed `schema.table`.
    async fn tables(conn: &mut PgConnection) -> Result<Vec<(String, String)>, sqlx::Error> {
        let tables: Vec<(String, String)> = sqlx::query_as(
            "SELECT n.nspname::text, c.relname::text FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind = 'r' AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema' \
             AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass \
                             AND d.objid = c.oid AND d.deptype = 'e') \
             ORDER BY 1, 2",
        )
        .fetch_all(&mut *conn)
        .await?;
        Ok(tables
            .into_iter()
            .map(|(schema, table)| {
                let quoted = format!("{}.{}", quote_ident(&schema), quote_ident(&table));
                (format!("{schema}.{table}"), quoted)
            })
            .collect())
    }

    async fn count(conn: &mut PgConnection, quoted: &str) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {quoted}"
        )))
        .fetch_one(&mut *conn)
        .await
    }

    async fn execute(conn: &mut PgConnection, sql: String) -> Result<(), sqlx::Error> {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut *conn)
            .await
            .map(|_| ())
    }

    async fn inspect(
        server: &Server,
        admin: &mut PgConnection,
        db: &str,
    ) -> Result<TargetState, ExecError> {
        let exists: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
                .bind(db)
                .fetch_optional(&mut *admin)
                .await
                .map_err(server.query_err("look up target database"))?;
        let objects = if exists.is_some() {
            let mut conn = server.connect(&server.opts).await?;
            let n = user_relations(server, &mut conn).await;
            sql::close(conn).await;
            n?
        } else {
            0
        };
        Ok(TargetState {
            exists: exists.is_some(),
            objects,
        })
    }
}

/// A pg_dump/pg_restore invocation against this server (URL in argv
/// without password, password in the child's environment).
pub(crate) fn tool(server: &Server, program: &str) -> Tool {
    let mut tool = Tool::new(program, server.target(), server.redactor.clone());
    tool.cmd
        .arg("--no-password")
        .arg("--dbname")
        .arg(&server.creds.url);
    if let Some(pw) = &server.creds.password {
        tool.cmd.env("PGPASSWORD", pw);
    }
    tool.cmd.env("PGAPPNAME", "safepoint");
    tool
}

/// Connection failures, restarts, overload and lock timeouts pass; bad
/// passwords, missing objects and syntax errors do not.
pub(crate) fn sqlx_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            code.starts_with("08")
                || matches!(
                    code.as_ref(),
                    "57P01" | "57P02" | "57P03" | "53300" | "40001" | "40P01" | "55P03"
                )
                || is_transient_text(db.message())
        }
        other => is_transient_text(&other.to_string()),
    }
}

/// `"schema"."table"` with embedded quotes doubled.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Major version from `pg_dump (PostgreSQL) 15.20 (Debian ...)`.
pub(crate) fn client_major(version: &str) -> Option<u32> {
    let token = version
        .split_whitespace()
        .find(|t| t.starts_with(|c: char| c.is_ascii_digit()))?;
    let digits: String = token.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The server's version line and major (`server_version`, `_num`).
pub(crate) async fn server_version(
    server: &Server,
    conn: &mut PgConnection,
    cancel: &Cancel,
) -> Result<(String, u32), ExecError> {
    let (version, num): (String, String) = until_cancelled(cancel, async {
        sqlx::query_as(
            "SELECT current_setting('server_version'), current_setting('server_version_num')",
        )
        .fetch_one(conn)
        .await
        .map_err(server.query_err("read server version"))
    })
    .await?;
    let major = num.parse::<u32>().unwrap_or(0) / 10_000;
    Ok((version, major))
}

/// The client program `name` for a server of `server_major` (`bin_dir`, the
/// installed majors, else PATH) and its `--version` line; refused at once
/// when it is older than the server (`ToolTooOld` naming both and the fix).
pub(crate) async fn matching_client(
    server: &Server,
    (version, server_major): (&str, u32),
    bin_dir: Option<&Path>,
    name: &str,
) -> Result<(String, String), ExecError> {
    let root = Path::new(pgtools::LAYOUT_ROOT);
    let program = pgtools::program_for(root, bin_dir, name, server_major);
    let program = program.to_string_lossy().into_owned();
    let client = {
        let mut tool = Tool::new(
            &program,
            &format!("{program} --version"),
            Redactor::default(),
        );
        tool.cmd.arg("--version");
        super::blocking(move || process::output(tool)).await?
    };
    if client_major(&client).is_some_and(|c| c < server_major) {
        return Err(ExecError::ToolTooOld {
            tool: program,
            client,
            server: version.to_string(),
            target: server.target().to_string(),
            hint: pgtools::fix_hint(name, server_major),
        });
    }
    Ok((program, client))
}

pub async fn backup<W: Write + Send + 'static>(
    url: &str,
    password_from: Option<&SecretRef>,
    bin_dir: Option<&Path>,
    ctx: &ExecContext,
    out: W,
) -> Result<(W, Produced), ExecError> {
    let server = Server::new(url, password_from)?;
    let cancel = &ctx.cancel;
    let mut conn = until_cancelled(cancel, server.connect(&server.opts)).await?;
    let (version, server_major) = server_version(&server, &mut conn, cancel).await?;
    let (program, client) =
        matching_client(&server, (&version, server_major), bin_dir, "pg_dump").await?;
    let snapshot: String = until_cancelled(cancel, async {
        sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut conn)
            .await
            .map_err(server.query_err("begin snapshot transaction"))?;
        sqlx::query_scalar("SELECT pg_export_snapshot()")
            .fetch_one(&mut conn)
            .await
            .map_err(server.query_err("export snapshot"))
    })
    .await?;

    // pg_dump streams while the transaction holding the snapshot stays open
    // and counts rows in that same snapshot.
    let mut tool = tool(&server, &program);
    tool.cmd
        .args(["--format=custom", "--compress=0"])
        .arg(format!("--snapshot={snapshot}"));
    let abort = Cancel::new();
    let stops = vec![cancel.clone(), abort.clone()];
    let (out, counts) = {
        let dump = super::blocking(move || process::pump_stdout(tool, out, &stops));
        let counts = until_cancelled(cancel, server.count_rows(&mut conn));
        tokio::pin!(dump, counts);
        tokio::select! {
            d = &mut dump => {
                let out = d?;
                (out, counts.await?)
            }
            c = &mut counts => match c {
                // The count's error says why (a lost connection is
                // transient); the dump it aborts would only say "cancelled".
                Err(e) => {
                    abort.cancel();
                    let _ = dump.await;
                    return Err(e);
                }
                Ok(c) => (dump.await?, c),
            }
        }
    };
    sql::close(conn).await;
    let mut produced = Produced {
        counts,
        ..Produced::default()
    };
    produced.tools.insert("pg_dump".into(), client);
    produced.tools.insert("postgres".into(), version);
    produced
        .tools
        .insert("format".into(), "pg_dump custom (-Fc -Z0), zstd".into());
    Ok((out, produced))
}

/// Number of user relations (tables, views, sequences, ...) in the database.
async fn user_relations(server: &Server, conn: &mut PgConnection) -> Result<u64, ExecError> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r','p','v','m','S','f') \
         AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'",
    )
    .fetch_one(conn)
    .await
    .map_err(server.query_err("inspect target"))?;
    Ok(n.max(0) as u64)
}

/// Drops a scratch database (drills) if it exists, closing its sessions.
pub async fn drop_database(
    url: &str,
    password_from: Option<&SecretRef>,
    db: &str,
) -> Result<(), ExecError> {
    Server::new(url, password_from)?.drop_database(db).await
}

/// The first column of the first row of `sql` as text (`None`: no row or NULL).
pub async fn query_first(
    url: &str,
    password_from: Option<&SecretRef>,
    sql: &str,
) -> Result<Option<String>, ExecError> {
    let server = Server::new(url, password_from)?;
    let mut conn = server.connect(&server.opts).await?;
    let wrapped = format!("SELECT (q.*)::text FROM ({sql}) AS q LIMIT 1");
    let value: Option<Option<String>> = sqlx::query_scalar(sqlx::AssertSqlSafe(wrapped))
        .fetch_optional(&mut conn)
        .await
        .map_err(server.query_err("run drill check"))?;
    sql::close(conn).await;
    // `(q.*)::text` renders a one-column row as `(value)`: unwrap it.
    Ok(value.flatten().map(|v| {
        let inner = v
            .strip_prefix('(')
            .and_then(|v| v.strip_suffix(')'))
            .unwrap_or(&v)
            .to_string();
        inner.trim_matches('"').to_string()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_major_versions_are_read_from_version_lines() {
        assert_eq!(
            client_major("pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)"),
            Some(15)
        );
        assert_eq!(client_major("pg_dump (PostgreSQL) 9.6.24"), Some(9));
        assert_eq!(client_major("pg_dump (PostgreSQL) 17devel"), Some(17));
        assert_eq!(client_major("no version here"), None);
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident(r#"we"ird"#), r#""we""ird""#);
    }
}
