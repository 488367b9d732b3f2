//! IO: MySQL/MariaDB sources. Row counts are taken in a consistent-snapshot
//! transaction immediately before `mariadb-dump --single-transaction` starts
//! its own (MySQL cannot share a snapshot with another session: the counts
//! are as close to the dump as MySQL allows, exact when no write lands in
//! between). The dump's stdout streams into the artifact writer. A restore
//! creates the target database (or replaces it with `--force`) and feeds the
//! stream to the `mariadb` client. Passwords travel in MYSQL_PWD.

use std::io::{Read, Write};
use std::str::FromStr;

use sqlx::MySqlConnection;
use sqlx::mysql::MySqlConnectOptions;

use super::process::{self, Tool};
use super::secret::Redactor;
use super::sql::{self, Dialect, TargetState};
use super::{ExecContext, ExecError, Produced, until_cancelled};
use crate::policy::SecretRef;

/// MySQL/MariaDB's differences from the other SQL servers.
pub(crate) struct My;

type Server = sql::Server<My>;

impl Dialect for My {
    type Conn = MySqlConnection;
    type Opts = MySqlConnectOptions;
    const PASSWORD_ENV: &'static str = "MYSQL_PWD";
    const DROP_TARGET: &'static str = "drop target database (--force)";

    fn options(url: &str, password: Option<&str>) -> Result<MySqlConnectOptions, String> {
        let normalised = match url.split_once("://") {
            Some(("mariadb", rest)) => format!("mysql://{rest}"),
            _ => url.to_string(),
        };
        let opts = MySqlConnectOptions::from_str(&normalised)
            .map_err(|e| format!("not a valid MySQL URL: {e}"))?;
        Ok(match password {
            Some(pw) => opts.password(pw),
            None => opts,
        })
    }

    fn describe(_opts: &MySqlConnectOptions, url: &str) -> String {
        url.to_string()
    }

    /// The same server without a default database.
    fn admin_options(server: &Server, _db: &str) -> MySqlConnectOptions {
        let mut opts = MySqlConnectOptions::new()
            .host(server.opts.get_host())
            .port(server.opts.get_port())
            .username(server.opts.get_username());
        if let Some(socket) = server.opts.get_socket() {
            opts = opts.socket(socket);
        }
        match &server.creds.password {
            Some(pw) => opts.password(pw),
            None => opts,
        }
    }

    fn quote_ident(name: &str) -> String {
        quote_ident(name)
    }

    fn create_database(db: &str) -> String {
        format!("CREATE DATABASE {} CHARACTER SET utf8mb4", quote_ident(db))
    }

    fn drop_database_if_exists(db: &str) -> String {
        format!("DROP DATABASE IF EXISTS {}", quote_ident(db))
    }

    /// The base tables of the current database, keyed by name.
    async fn tables(conn: &mut MySqlConnection) -> Result<Vec<(String, String)>, sqlx::Error> {
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT CAST(table_name AS CHAR) FROM information_schema.tables \
             WHERE table_schema = DATABASE() AND table_type = 'BASE TABLE' ORDER BY 1",
        )
        .fetch_all(&mut *conn)
        .await?;
        Ok(tables
            .into_iter()
            .map(|t| {
                let quoted = quote_ident(&t);
                (t, quoted)
            })
            .collect())
    }

    async fn count(conn: &mut MySqlConnection, quoted: &str) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM {quoted}"
        )))
        .fetch_one(&mut *conn)
        .await
    }

    async fn execute(conn: &mut MySqlConnection, sql: String) -> Result<(), sqlx::Error> {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut *conn)
            .await
            .map(|_| ())
    }

    async fn inspect(
        server: &Server,
        admin: &mut MySqlConnection,
        db: &str,
    ) -> Result<TargetState, ExecError> {
        let (schemas, objects): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = ?), \
                    (SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = ?) + \
                    (SELECT COUNT(*) FROM information_schema.routines WHERE routine_schema = ?)",
        )
        .bind(db)
        .bind(db)
        .bind(db)
        .fetch_one(&mut *admin)
        .await
        .map_err(server.query_err("inspect target"))?;
        Ok(TargetState {
            exists: schemas > 0,
            objects: objects.max(0) as u64,
        })
    }
}

fn database(server: &Server) -> Result<String, ExecError> {
    server
        .opts
        .get_database()
        .filter(|d| !d.is_empty())
        .map(str::to_string)
        .ok_or_else(|| ExecError::NoDatabase(server.target().to_string()))
}

/// `mariadb-dump` or `mariadb` (falling back to the `mysql*` names)
/// pointed at this server; the password goes into MYSQL_PWD.
fn tool(server: &Server, program: &str) -> Tool {
    let mut tool = Tool::new(program, server.target(), server.redactor.clone());
    match server.opts.get_socket() {
        Some(socket) => {
            tool.cmd.arg(format!("--socket={}", socket.display()));
        }
        None => {
            tool.cmd
                .arg("--protocol=TCP")
                .arg(format!("--host={}", server.opts.get_host()))
                .arg(format!("--port={}", server.opts.get_port()));
        }
    }
    tool.cmd
        .arg(format!("--user={}", server.opts.get_username()));
    match &server.creds.password {
        Some(pw) => tool.cmd.env("MYSQL_PWD", pw),
        None => tool.cmd.env_remove("MYSQL_PWD"),
    };
    tool
}

/// The first of `names` that is installed (`mariadb-*`, else the `mysql*`
/// name of the MySQL client), with its version line; when neither is, the
/// error names both.
fn installed(names: [&str; 2]) -> Result<(String, String), ExecError> {
    match version_of(names[0]) {
        Err(ExecError::ToolMissing { .. }) => match version_of(names[1]) {
            Err(ExecError::ToolMissing { .. }) => Err(ExecError::ToolMissing {
                tool: format!("{} (or {})", names[0], names[1]),
            }),
            other => Ok((names[1].to_string(), other?)),
        },
        other => Ok((names[0].to_string(), other?)),
    }
}

fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

fn version_of(program: &str) -> Result<String, ExecError> {
    let mut tool = Tool::new(
        program,
        &format!("{program} --version"),
        Redactor::default(),
    );
    tool.cmd.arg("--version");
    process::output(tool)
}

pub async fn backup<W: Write + Send + 'static>(
    url: &str,
    password_from: Option<&SecretRef>,
    ctx: &ExecContext,
    out: W,
) -> Result<(W, Produced), ExecError> {
    let server = Server::new(url, password_from)?;
    let db = database(&server)?;
    let cancel = &ctx.cancel;
    // A missing client fails before the server is asked anything.
    let (program, client) = super::blocking(|| installed(["mariadb-dump", "mysqldump"])).await?;
    let (version, counts) = until_cancelled(cancel, async {
        let mut conn = server.connect(&server.opts).await?;
        let version: String = sqlx::query_scalar("SELECT CAST(VERSION() AS CHAR)")
            .fetch_one(&mut conn)
            .await
            .map_err(server.query_err("read server version"))?;
        sqlx::query("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .execute(&mut conn)
            .await
            .map_err(server.query_err("set isolation level"))?;
        sqlx::query("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            .execute(&mut conn)
            .await
            .map_err(server.query_err("start consistent snapshot"))?;
        let counts = server.count_rows(&mut conn).await?;
        sql::close(conn).await;
        Ok((version, counts))
    })
    .await?;
    let mut tool = tool(&server, &program);
    tool.cmd
        .args([
            "--single-transaction",
            "--routines",
            "--triggers",
            "--events",
            "--hex-blob",
            "--default-character-set=utf8mb4",
        ])
        .arg(&db);
    let stops = vec![cancel.clone()];
    let out = super::blocking(move || process::pump_stdout(tool, out, &stops)).await?;
    let mut produced = Produced {
        counts,
        ..Produced::default()
    };
    produced.tools.insert(program, client);
    produced.tools.insert("server".into(), version);
    Ok((out, produced))
}

/// Restores an SQL dump with the `mariadb` client reading the stream.
pub async fn restore(
    input: Box<dyn Read + Send>,
    url: &str,
    password_from: Option<&SecretRef>,
    force: bool,
) -> Result<Produced, ExecError> {
    let server = Server::new(url, password_from)?;
    let db = database(&server)?;
    server.prepare_target(&db, force).await?;
    let (program, _) = super::blocking(|| installed(["mariadb", "mysql"])).await?;
    let mut tool = tool(&server, &program);
    tool.cmd.arg("--default-character-set=utf8mb4").arg(&db);
    let mut input = input;
    super::blocking(move || process::feed_stdin(tool, &mut input)).await?;
    let mut conn = server.connect(&server.opts).await?;
    let counts = server.count_rows(&mut conn).await?;
    sql::close(conn).await;
    Ok(Produced {
        counts,
        ..Produced::default()
    })
}

/// Drops a scratch database (drills) if it exists.
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
    let mut conn = server.connect(&server.opts.clone()).await?;
    let wrapped = format!("SELECT CAST(q.v AS CHAR) FROM (SELECT ({sql}) AS v) AS q");
    let value: Option<Option<String>> = sqlx::query_scalar(sqlx::AssertSqlSafe(wrapped))
        .fetch_optional(&mut conn)
        .await
        .map_err(server.query_err("run drill check"))?;
    sql::close(conn).await;
    Ok(value.flatten())
}
