//! `safepoint catalog migrate --to URL`: copies the catalog in use (a
//! single-node SQLite install, typically) into a new, empty catalog (a
//! PostgreSQL database) with its whole history; and the `--catalog` /
//! `--catalog-password-file` flags resolved into a catalog location.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use crate::catalog::{Catalog, Location};
use crate::cli::{Cli, Output};
use crate::engine::context::Context;

/// Where this process's audit head witness of a PostgreSQL catalog lives.
fn pg_audit_head(data_dir: &Path) -> PathBuf {
    data_dir.join("postgres-catalog.audit-head")
}

/// `--catalog` (default `<data-dir>/catalog.db`) with its password file,
/// and the local file policies must not touch (see `Settings::catalog_path`).
pub fn location(
    cli: &Cli,
    base_dir: &Path,
    data_dir: &Path,
) -> anyhow::Result<(Location, PathBuf)> {
    let location = match &cli.catalog {
        Some(text) => Location::parse(text, base_dir)?,
        None => Location::Sqlite(data_dir.join("catalog.db")),
    };
    let location = match &cli.catalog_password_file {
        Some(file) => location.with_password_file(&base_dir.join(file))?,
        None => location,
    }
    .with_audit_head(pg_audit_head(data_dir));
    let local = match (location.sqlite_path(), &cli.catalog_password_file) {
        (Some(path), _) => path.to_path_buf(),
        (None, Some(file)) => base_dir.join(file),
        (None, None) => data_dir.join("catalog.db"),
    };
    Ok((location, local))
}

pub async fn run(
    ctx: &Context,
    to: &str,
    password_file: Option<&Path>,
    output: Output,
) -> anyhow::Result<u8> {
    let base_dir = &ctx.settings.base_dir;
    let mut target = Location::parse(to, base_dir)?;
    if let Some(file) = password_file {
        target = target.with_password_file(&base_dir.join(file))?;
    }
    let target = target.with_audit_head(pg_audit_head(&ctx.settings.data_dir));
    if target.to_string() == ctx.settings.catalog.to_string() {
        bail!("--to {target} is the catalog in use (--catalog); name a new, empty database");
    }
    let into = Catalog::open(&target)
        .await
        .with_context(|| format!("cannot open the target catalog {target}; create the database first (createdb) and check --to-password-file"))?;
    let report = ctx.catalog.copy_into(&into).await.with_context(|| {
        format!(
            "nothing was copied from {} to {target}",
            ctx.catalog.location()
        )
    })?;
    let entries = into.audit_entries(None).await?;
    let head = into.audit_head();
    let verdict = crate::audit::verify(&entries, head.as_ref().map(|(s, h)| (*s, h.as_str())));
    into.close().await;
    if !verdict.ok {
        bail!(
            "the copied audit log does not verify ({:?}); do not switch to {target}",
            verdict.problem
        );
    }
    if output == Output::Json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "from": ctx.catalog.location(),
                "to": target.to_string(),
                "tables": report.tables,
                "auditEntries": verdict.entries,
            }))?
        );
    } else {
        outln!("copied {} into {target}:", ctx.catalog.location());
        for c in &report.tables {
            outln!("  {:<17} {:>8} rows", c.table, c.target);
        }
        outln!(
            "audit chain verified on the target ({} entries). Run safepoint with --catalog {target} from now on.",
            verdict.entries
        );
    }
    Ok(0)
}
