//! Engine: a drill's checks, in order — the artifact's checksum, the restore
//! into the scratch target (the same pipeline as `safepoint restore`),
//! completeness against the counts recorded at backup time, the user's
//! queries with their `expect`, and the recovery time.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, Row};

use super::scratch::{Scratch, restore_target};
use super::verdict;
use crate::catalog::CheckResult;
use crate::engine::context::Context;
use crate::engine::restore::{self, RestoreError};
use crate::executor::{self, RestoreTarget};
use crate::policy::{DrillCheck, DrillSpec};
use crate::storage;

/// Runs the checks of `spec` on a restore of `manifest` into `scratch`;
/// returns them with the restore's duration (none when it did not start).
pub(super) async fn checks(
    ctx: &Context,
    spec: &DrillSpec,
    manifest: &storage::Manifest,
    st: Arc<dyn storage::Storage>,
    scratch: &Scratch,
) -> (Vec<CheckResult>, Option<f64>) {
    let (target, options) = restore_target(manifest, scratch);
    // The same pipeline as `safepoint restore`, its two stages reported as
    // checks: 1. the artifact's checksum matches the manifest.
    let job = restore::Restore {
        manifest,
        storage: st,
        target: &target,
        options: &options,
        create_dir: match scratch {
            Scratch::Dir(dir) => Some(dir.as_path()),
            Scratch::Cluster(_) | Scratch::Db { .. } => None,
        },
        wrap: None,
    };
    let checksum = checksum_check(manifest, restore::verify(&job).await);
    let mut checks = vec![checksum];
    if !checks[0].passed {
        return (checks, None);
    }
    // 2. The restore tool exits cleanly.
    let started = Instant::now();
    let restored = restore::restore_verified(ctx, job).await;
    let seconds = started.elapsed().as_secs_f64();
    let produced = match restored {
        Ok(p) => p,
        Err(e) => {
            checks.push(failed("restore", e.to_string()));
            return (checks, Some(seconds));
        }
    };
    checks.push(CheckResult {
        name: "restore".into(),
        passed: true,
        detail: format!("restored into {}", scratch.describe()),
    });
    // 3. Completeness against the counts recorded at backup time.
    if let Some(c) = verdict::completeness(spec.completeness, &manifest.counts, &produced.counts) {
        checks.push(c);
    }
    // 4. The user's checks.
    checks.extend(user_checks(spec, manifest, scratch, &target).await);
    // 5. Recovery time against maxDuration.
    checks.push(verdict::recovery_time(
        seconds,
        spec.max_duration.map(|d| d.num_seconds()),
    ));
    (checks, Some(seconds))
}

pub(super) fn failed(name: &str, detail: String) -> CheckResult {
    CheckResult {
        name: name.into(),
        passed: false,
        detail,
    }
}

/// The `checksum` check from the restore pipeline's verification.
pub(super) fn checksum_check(
    manifest: &storage::Manifest,
    verified: Result<(), RestoreError>,
) -> CheckResult {
    match verified {
        Ok(()) => CheckResult {
            name: "checksum".into(),
            passed: true,
            detail: manifest.artifact.checksum.clone(),
        },
        Err(RestoreError::Unverified { problem, .. }) => failed("checksum", problem.detail),
        Err(e) => failed("checksum", e.to_string()),
    }
}

/// The user's queries on the restored copy: SQLite files in a scratch
/// directory, or the scratch database on the drill target's server.
async fn user_checks(
    spec: &DrillSpec,
    manifest: &storage::Manifest,
    scratch: &Scratch,
    target: &RestoreTarget,
) -> Vec<CheckResult> {
    match (scratch, target) {
        (Scratch::Dir(_), RestoreTarget::Path(db))
            if manifest.source_kind == "sqlite" && !spec.checks.is_empty() =>
        {
            sqlite_checks(db, spec).await
        }
        (
            Scratch::Db {
                kind,
                url,
                password_from,
                ..
            },
            _,
        ) => {
            let mut checks = Vec::new();
            for check in &spec.checks {
                let value = if *kind == "postgres" {
                    executor::postgres::query_first(url, password_from.as_ref(), &check.sql).await
                } else {
                    executor::mysql::query_first(url, password_from.as_ref(), &check.sql).await
                };
                checks.push(match value {
                    Err(e) => failed(&check.name, format!("query failed: {e}")),
                    Ok(v) => expect(check, v),
                });
            }
            checks
        }
        _ => Vec::new(),
    }
}

/// A query's value against the check's `expect`.
pub(super) fn expect(check: &DrillCheck, value: Option<String>) -> CheckResult {
    match check.expect.check(value.as_deref()) {
        Ok(()) => CheckResult {
            name: check.name.clone(),
            passed: true,
            detail: format!("{} (expect {})", value.unwrap_or_default(), check.expect),
        },
        Err(detail) => failed(&check.name, detail),
    }
}

async fn sqlite_checks(db: &Path, spec: &DrillSpec) -> Vec<CheckResult> {
    let conn = async {
        SqliteConnectOptions::from_str("sqlite://")
            .map_err(|e| e.to_string())?
            .filename(db)
            .read_only(true)
            .connect()
            .await
            .map_err(|e| e.to_string())
    }
    .await;
    let mut conn = match conn {
        Ok(c) => c,
        Err(e) => {
            return spec
                .checks
                .iter()
                .map(|c| failed(&c.name, format!("cannot open the restored copy: {e}")))
                .collect();
        }
    };
    let mut out = Vec::new();
    for check in &spec.checks {
        let row = sqlx::query(sqlx::AssertSqlSafe(check.sql.clone()))
            .fetch_optional(&mut conn)
            .await;
        out.push(match row {
            Err(e) => failed(&check.name, format!("query failed: {e}")),
            Ok(row) => expect(check, row.and_then(|r| first_value(&r))),
        });
    }
    let _ = conn.close().await;
    out
}

/// The first column of a row as text: an integer, a real or a string.
fn first_value(r: &sqlx::sqlite::SqliteRow) -> Option<String> {
    r.try_get::<Option<i64>, _>(0)
        .map(|v| v.map(|v| v.to_string()))
        .or_else(|_| {
            r.try_get::<Option<f64>, _>(0)
                .map(|v| v.map(|v| v.to_string()))
        })
        .or_else(|_| r.try_get::<Option<String>, _>(0))
        .ok()
        .flatten()
}
