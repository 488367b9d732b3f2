//! IO: MySQL/MariaDB sources. Row counts are taken in a consistent-snapshot
//! transaction immediately before `mariadb-dump --single-transaction` starts
//! its own (MySQL cannot share a snapshot with another session: the counts
//! are as close to the dump as MySQL allows, exact when no write lands in
//! between). The dump's stdout streams into the artifact writer. A restore
//! creates the target database (or replaces it with `--force`) and feeds the
//! stream to the `mariadb` client. Passwords travel in MYSQL_PWD.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::str::FromStr;
use std::time::Duration;

use sqlx::mysql::MySqlConnectOptions;
use sqlx::{ConnectOptions, Connection, MySqlConnection};

use super::postgres::sqlx_transient;
use super::process::{self, Tool};
use super::secret::{Credentials, Redactor};
use super::{ExecContext, ExecError, Produced, until_cancelled};
use crate::policy::SecretRef;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

struct Server {
    creds: Credentials,
    redactor: Redactor,
    opts: MySqlConnectOptions,
}

impl Server {
    fn new(url: &str, password_from: Option<&SecretRef>) -> Result<Server, ExecError> {
        let creds = Credentials::resolve(url, password_from, "MYSQL_PWD")?;
        let redactor = creds.redactor();
        let normalised = match creds.url.split_once("://") {
            Some(("mariadb", rest)) => format!("mysql://{rest}"),
            _ => creds.url.clone(),
        };
        let opts = MySqlConnectOptions::from_str(&normalised).map_err(|e| ExecError::Connect {
            target: creds.url.clone(),
            message: format!("not a valid MySQL URL: {}", redactor.redact(&e.to_string())),
            transient: false,
        })?;
        let opts = match &creds.password {
            Some(pw) => opts.password(pw),
            None => opts,
        };
        Ok(Server {
            creds,
            redactor,
            opts,
        })
    }

    fn target(&self) -> &str {
        &self.creds.url
    }

    fn database(&self) -> Result<String, ExecError> {
        self.opts
            .get_database()
            .filter(|d| !d.is_empty())
            .map(str::to_string)
            .ok_or_else(|| ExecError::NoDatabase(self.target().to_string()))
    }

    /// The same server without a default database (to create or drop one).
    fn admin_options(&self) -> MySqlConnectOptions {
        let mut opts = MySqlConnectOptions::new()
            .host(self.opts.get_host())
            .port(self.opts.get_port())
            .username(self.opts.get_username());
        if let Some(socket) = self.opts.get_socket() {
            opts = opts.socket(socket);
        }
        match &self.creds.password {
            Some(pw) => opts.password(pw),
            None => opts,
        }
    }

    async fn connect(&self, opts: &MySqlConnectOptions) -> Result<MySqlConnection, ExecError> {
        match tokio::time::timeout(CONNECT_TIMEOUT, opts.connect()).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(ExecError::Connect {
                target: self.target().to_string(),
                transient: sqlx_transient(&e),
                message: self.redactor.redact(&e.to_string()),
            }),
            Err(_) => Err(ExecError::Connect {
                target: self.target().to_string(),
                message: format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()),
                transient: true,
            }),
        }
    }

    fn query_err(&self, what: &'static str) -> impl FnOnce(sqlx::Error) -> ExecError + '_ {
        move |e| ExecError::Query {
            what,
            target: self.target().to_string(),
            transient: sqlx_transient(&e),
            message: self.redactor.redact(&e.to_string()),
        }
    }

    /// `mariadb-dump` or `mariadb` (falling back to the `mysql*` names)
    /// pointed at this server; the password goes into MYSQL_PWD.
    fn tool(&self, program: &str) -> Tool {
        let mut tool = Tool::new(program, self.target(), self.redactor.clone());
        match self.opts.get_socket() {
            Some(socket) => {
                tool.cmd.arg(format!("--socket={}", socket.display()));
            }
            None => {
                tool.cmd
                    .arg("--protocol=TCP")
                    .arg(format!("--host={}", self.opts.get_host()))
                    .arg(format!("--port={}", self.opts.get_port()));
            }
        }
        tool.cmd.arg(format!("--user={}", self.opts.get_username()));
        match &self.creds.password {
            Some(pw) => tool.cmd.env("MYSQL_PWD", pw),
            None => tool.cmd.env_remove("MYSQL_PWD"),
        };
        tool
    }
}

/// The first of `names` that is installed (`mariadb-*`, else the `mysql*`
/// name of the MySQL client), with its version line.
fn installed(names: [&str; 2]) -> Result<(String, String), ExecError> {
    match version_of(names[0]) {
        Err(ExecError::ToolMissing { .. }) => Ok((names[1].to_string(), version_of(names[1])?)),
        other => Ok((names[0].to_string(), other?)),
    }
}

fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Exact row count of every base table of the current database.
async fn count_rows(
    server: &Server,
    conn: &mut MySqlConnection,
) -> Result<BTreeMap<String, u64>, ExecError> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(table_name AS CHAR) FROM information_schema.tables \
         WHERE table_schema = DATABASE() AND table_type = 'BASE TABLE' ORDER BY 1",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(server.query_err("list tables"))?;
    let mut counts = BTreeMap::new();
    for table in tables {
        let sql = format!("SELECT COUNT(*) FROM {}", quote_ident(&table));
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&mut *conn)
            .await
            .map_err(server.query_err("count rows"))?;
        counts.insert(table, n.max(0) as u64);
    }
    Ok(counts)
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
    let db = server.database()?;
    let cancel = &ctx.cancel;
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
        let counts = count_rows(&server, &mut conn).await?;
        let _ = conn.close().await;
        Ok((version, counts))
    })
    .await?;
    let (program, client) = super::blocking(|| installed(["mariadb-dump", "mysqldump"])).await?;
    let mut tool = server.tool(&program);
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

/// Creates the target database if missing; an existing non-empty one is
/// refused, or with `force` dropped and created afresh.
async fn prepare_target(server: &Server, db: &str, force: bool) -> Result<(), ExecError> {
    let mut admin = server.connect(&server.admin_options()).await?;
    let (schemas, tables): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = ?), \
                (SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = ?) + \
                (SELECT COUNT(*) FROM information_schema.routines WHERE routine_schema = ?)",
    )
    .bind(db)
    .bind(db)
    .bind(db)
    .fetch_one(&mut admin)
    .await
    .map_err(server.query_err("inspect target"))?;
    if tables > 0 && !force {
        return Err(ExecError::DatabaseNotEmpty {
            target: server.target().to_string(),
            tables: tables as u64,
        });
    }
    if tables > 0 {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE {}",
            quote_ident(db)
        )))
        .execute(&mut admin)
        .await
        .map_err(server.query_err("drop target database (--force)"))?;
    }
    if tables > 0 || schemas == 0 {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE {} CHARACTER SET utf8mb4",
            quote_ident(db)
        )))
        .execute(&mut admin)
        .await
        .map_err(server.query_err("create target database"))?;
    }
    let _ = admin.close().await;
    Ok(())
}

/// Restores an SQL dump with the `mariadb` client reading the stream.
pub async fn restore(
    input: Box<dyn Read + Send>,
    url: &str,
    password_from: Option<&SecretRef>,
    force: bool,
) -> Result<Produced, ExecError> {
    let server = Server::new(url, password_from)?;
    let db = server.database()?;
    prepare_target(&server, &db, force).await?;
    let (program, _) = super::blocking(|| installed(["mariadb", "mysql"])).await?;
    let mut tool = server.tool(&program);
    tool.cmd.arg("--default-character-set=utf8mb4").arg(&db);
    let mut input = input;
    super::blocking(move || process::feed_stdin(tool, &mut input)).await?;
    let mut conn = server.connect(&server.opts).await?;
    let counts = count_rows(&server, &mut conn).await?;
    let _ = conn.close().await;
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
    let server = Server::new(url, password_from)?;
    let mut admin = server.connect(&server.admin_options()).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {}",
        quote_ident(db)
    )))
    .execute(&mut admin)
    .await
    .map_err(server.query_err("drop scratch database"))?;
    let _ = admin.close().await;
    Ok(())
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
    let _ = conn.close().await;
    Ok(value.flatten())
}
