//! IO: SQLite sources. An online-consistent copy is made with `VACUUM INTO`
//! (never a raw file copy of a live database), row counts are taken from that
//! copy, and the copy is streamed into the artifact. Restores are checked with
//! `PRAGMA integrity_check`.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use sqlx::{ConnectOptions, Connection, SqliteConnection};

use super::{ExecContext, ExecError, Produced, blocking};

fn db_err(what: &'static str, path: &Path) -> impl FnOnce(sqlx::Error) -> ExecError {
    let path = path.to_path_buf();
    move |e| ExecError::Database {
        what,
        path,
        message: e.to_string(),
    }
}

async fn connect(path: &Path, read_only: bool) -> Result<SqliteConnection, ExecError> {
    SqliteConnectOptions::from_str("sqlite://")
        .map_err(db_err("open", path))?
        .filename(path)
        .read_only(read_only)
        .journal_mode(SqliteJournalMode::Delete)
        .busy_timeout(std::time::Duration::from_secs(30))
        .connect()
        .await
        .map_err(db_err("open", path))
}

/// Row count of every user table.
pub(crate) async fn table_counts(
    conn: &mut SqliteConnection,
    path: &Path,
) -> Result<BTreeMap<String, u64>, ExecError> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(db_err("list tables", path))?;
    let mut counts = BTreeMap::new();
    for table in tables {
        let sql = format!("SELECT count(*) FROM \"{}\"", table.replace('"', "\"\""));
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&mut *conn)
            .await
            .map_err(db_err("count rows", path))?;
        counts.insert(table, n.max(0) as u64);
    }
    Ok(counts)
}

pub async fn backup<W: Write + Send + 'static>(
    path: &Path,
    ctx: &ExecContext,
    out: W,
) -> Result<(W, Produced), ExecError> {
    match fs::metadata(path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => {
            return Err(ExecError::SourceUnreadable {
                path: path.to_path_buf(),
                source: std::io::Error::other("not a regular file"),
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ExecError::SourceMissing {
                path: path.to_path_buf(),
                base: ctx.base.clone(),
            });
        }
        Err(source) => {
            return Err(ExecError::SourceUnreadable {
                path: path.to_path_buf(),
                source,
            });
        }
    }
    fs::create_dir_all(&ctx.tmp_dir).map_err(|source| ExecError::Target {
        path: ctx.tmp_dir.clone(),
        source,
    })?;
    let copy = tempfile_path(&ctx.tmp_dir);
    let result = snapshot_and_stream(path, &copy, out).await;
    let _ = fs::remove_file(&copy);
    result
}

fn tempfile_path(dir: &Path) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    dir.join(format!("sqlite-copy-{}-{nanos}.db", std::process::id()))
}

async fn snapshot_and_stream<W: Write + Send + 'static>(
    path: &Path,
    copy: &Path,
    out: W,
) -> Result<(W, Produced), ExecError> {
    let mut conn = connect(path, true).await?;
    let version: String = sqlx::query_scalar("SELECT sqlite_version()")
        .fetch_one(&mut conn)
        .await
        .map_err(db_err("query version", path))?;
    let target = copy.to_string_lossy().replace('\'', "''");
    sqlx::query(sqlx::AssertSqlSafe(format!("VACUUM INTO '{target}'")))
        .execute(&mut conn)
        .await
        .map_err(db_err("VACUUM INTO (consistent copy)", path))?;
    conn.close().await.map_err(db_err("close", path))?;

    let mut copy_conn = connect(copy, true).await?;
    let counts = table_counts(&mut copy_conn, copy).await?;
    copy_conn.close().await.map_err(db_err("close", copy))?;

    let copy = copy.to_path_buf();
    let mut out = out;
    let out = blocking(move || {
        let mut f = fs::File::open(&copy).map_err(|source| ExecError::SourceUnreadable {
            path: copy.clone(),
            source,
        })?;
        std::io::copy(&mut f, &mut out).map_err(ExecError::from_write)?;
        Ok(out)
    })
    .await?;
    let mut produced = Produced {
        counts,
        ..Produced::default()
    };
    produced.tools.insert("sqlite".into(), version);
    Ok((out, produced))
}

/// Writes the database to `<target>.safepoint-tmp`, checks it, then renames
/// it into place: a failed restore never leaves a half-written target.
pub async fn restore(
    mut input: Box<dyn Read + Send>,
    target: PathBuf,
    force: bool,
) -> Result<Produced, ExecError> {
    if target.exists() && !force {
        return Err(ExecError::TargetNotEmpty(target));
    }
    let tmp = PathBuf::from(format!("{}.safepoint-tmp", target.display()));
    let tmp2 = tmp.clone();
    blocking(move || {
        let err = |source| ExecError::Target {
            path: tmp2.clone(),
            source,
        };
        if let Some(parent) = tmp2.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(err)?;
        }
        let mut f = fs::File::create(&tmp2).map_err(err)?;
        std::io::copy(&mut input, &mut f).map_err(err)?;
        f.sync_all().map_err(err)?;
        Ok(())
    })
    .await?;
    let checked = async {
        let mut conn = connect(&tmp, true).await?;
        let verdict: String = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(&mut conn)
            .await
            .map_err(db_err("integrity check", &tmp))?;
        if verdict != "ok" {
            return Err(ExecError::RestoredInvalid(format!(
                "integrity_check: {verdict}"
            )));
        }
        let counts = table_counts(&mut conn, &tmp).await?;
        conn.close().await.map_err(db_err("close", &tmp))?;
        Ok(counts)
    }
    .await;
    match checked {
        Ok(counts) => {
            fs::rename(&tmp, &target).map_err(|source| ExecError::Target {
                path: target.clone(),
                source,
            })?;
            Ok(Produced {
                counts,
                ..Produced::default()
            })
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}
