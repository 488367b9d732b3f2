//! IO: the skeleton shared by the SQL-server executors (PostgreSQL, MySQL/
//! MariaDB): credentials and redaction, connecting with a timeout, query
//! errors, per-table row counts, preparing a restore target and dropping a
//! scratch database. A `Dialect` supplies only what differs: URL parsing,
//! identifier quoting, the catalog queries and the DDL.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use sqlx::ConnectOptions;

use super::ExecError;
use super::secret::{Credentials, Redactor};
use crate::policy::SecretRef;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// What a restore target holds before it is restored into.
pub(crate) struct TargetState {
    pub exists: bool,
    /// User objects (tables, views, routines, ...) in it.
    pub objects: u64,
}

/// What differs between SQL servers.
pub(crate) trait Dialect: Sized + Send + Sync {
    type Conn: sqlx::Connection + Send;
    type Opts: ConnectOptions<Connection = Self::Conn> + Clone + Send + Sync;
    /// The environment variable the client tools read the password from.
    const PASSWORD_ENV: &'static str;
    /// The operation named when dropping a non-empty target fails.
    const DROP_TARGET: &'static str;

    /// Connect options for `url` with `password` applied, or why the URL is
    /// not valid (not redacted yet).
    fn options(url: &str, password: Option<&str>) -> Result<Self::Opts, String>;
    /// How a connection target is named in errors.
    fn describe(opts: &Self::Opts, url: &str) -> String;
    /// The same server, connected to a maintenance database (to create or
    /// drop `db`).
    fn admin_options(server: &Server<Self>, db: &str) -> Self::Opts;
    fn quote_ident(name: &str) -> String;
    fn create_database(db: &str) -> String;
    fn drop_database_if_exists(db: &str) -> String;
    /// Every user table as (key in the counts map, quoted name to count).
    fn tables(
        conn: &mut Self::Conn,
    ) -> impl Future<Output = Result<Vec<(String, String)>, sqlx::Error>> + Send;
    fn count(
        conn: &mut Self::Conn,
        quoted: &str,
    ) -> impl Future<Output = Result<i64, sqlx::Error>> + Send;
    fn execute(
        conn: &mut Self::Conn,
        sql: String,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
    /// Whether database `db` exists and how many user objects it holds.
    fn inspect(
        server: &Server<Self>,
        admin: &mut Self::Conn,
        db: &str,
    ) -> impl Future<Output = Result<TargetState, ExecError>> + Send;
}

/// A connection target with everything needed to talk about it safely.
pub(crate) struct Server<D: Dialect> {
    pub creds: Credentials,
    pub redactor: Redactor,
    pub opts: D::Opts,
}

impl<D: Dialect> Server<D> {
    pub fn new(url: &str, password_from: Option<&SecretRef>) -> Result<Server<D>, ExecError> {
        let creds = Credentials::resolve(url, password_from, D::PASSWORD_ENV)?;
        let redactor = creds.redactor();
        let opts = D::options(&creds.url, creds.password.as_deref()).map_err(|message| {
            ExecError::Connect {
                target: creds.url.clone(),
                message: redactor.redact(&message),
                transient: false,
            }
        })?;
        Ok(Server {
            creds,
            redactor,
            opts,
        })
    }

    /// The URL as configured (no password in it).
    pub fn target(&self) -> &str {
        &self.creds.url
    }

    pub async fn connect(&self, opts: &D::Opts) -> Result<D::Conn, ExecError> {
        let target = D::describe(opts, self.target());
        match tokio::time::timeout(CONNECT_TIMEOUT, opts.connect()).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(ExecError::Connect {
                target,
                transient: super::postgres::sqlx_transient(&e),
                message: self.redactor.redact(&e.to_string()),
            }),
            Err(_) => Err(ExecError::Connect {
                target,
                message: format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()),
                transient: true,
            }),
        }
    }

    pub fn query_err(&self, what: &'static str) -> impl FnOnce(sqlx::Error) -> ExecError + '_ {
        move |e| ExecError::Query {
            what,
            target: self.target().to_string(),
            transient: super::postgres::sqlx_transient(&e),
            message: self.redactor.redact(&e.to_string()),
        }
    }

    /// Exact row count of every user table, keyed as the dialect names them.
    pub async fn count_rows(&self, conn: &mut D::Conn) -> Result<BTreeMap<String, u64>, ExecError> {
        let tables = D::tables(conn)
            .await
            .map_err(self.query_err("list tables"))?;
        let mut counts = BTreeMap::new();
        for (key, quoted) in tables {
            let n = D::count(conn, &quoted)
                .await
                .map_err(self.query_err("count rows"))?;
            counts.insert(key, n.max(0) as u64);
        }
        Ok(counts)
    }

    /// Creates the target database `db` if missing; an existing non-empty one
    /// is refused, or with `force` dropped and created afresh (never merged into).
    /// Makes `db` an empty database to restore into (dropped and created
    /// again with `force` when it holds objects). `true` when this call
    /// created it: a failed restore may then drop it again.
    pub async fn prepare_target(&self, db: &str, force: bool) -> Result<bool, ExecError> {
        let mut admin = self.connect(&D::admin_options(self, db)).await?;
        let state = D::inspect(self, &mut admin, db).await?;
        if state.objects > 0 {
            if !force {
                return Err(ExecError::DatabaseNotEmpty {
                    target: self.target().to_string(),
                    tables: state.objects,
                });
            }
            D::execute(&mut admin, format!("DROP DATABASE {}", D::quote_ident(db)))
                .await
                .map_err(self.query_err(D::DROP_TARGET))?;
        }
        let create = state.objects > 0 || !state.exists;
        if create {
            D::execute(&mut admin, D::create_database(db))
                .await
                .map_err(self.query_err("create target database"))?;
        }
        close(admin).await;
        Ok(create)
    }

    /// Drops a scratch database (drills) if it exists.
    pub async fn drop_database(&self, db: &str) -> Result<(), ExecError> {
        let mut admin = self.connect(&D::admin_options(self, db)).await?;
        D::execute(&mut admin, D::drop_database_if_exists(db))
            .await
            .map_err(self.query_err("drop scratch database"))?;
        close(admin).await;
        Ok(())
    }
}

/// Closes a connection; a failure to say goodbye changes nothing (the server
/// drops the session when the socket closes).
pub(crate) async fn close<C: sqlx::Connection>(conn: C) {
    if let Err(e) = conn.close().await {
        tracing::debug!(error = %e, "closing a database connection failed");
    }
}
