//! IO: recovery drills. Restore a backup into a scratch target
//! with a name safepoint generates (`safepoint_drill_<policy>_<stamp>`),
//! run the named checks (checksum, restore, completeness, the user's queries,
//! recovery time), record the verdict, and always remove the scratch copy —
//! also after a crash, where a later drill removes what the dead one created
//! (recorded in the catalog before it was created), and only that.

pub mod verdict;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, Row};

use crate::catalog::CheckResult;
use crate::engine::context::{Applied, Context};
use crate::engine::restore::{self, RestoreError};
use crate::executor::{self, RestoreTarget};
use crate::lock;
use crate::model::AuditKind;
use crate::policy::{BackupPolicy, DrillSpec, DrillTarget};
use crate::storage;

pub use crate::model::DrillOutcome;

/// Where a drill's scratch copy lives.
enum Scratch {
    Dir(PathBuf),
    /// A scratch database `name` on the drill target's server.
    Db {
        kind: &'static str,
        /// The target server URL as declared (its database is the maintenance one).
        server: String,
        /// The same URL naming the scratch database.
        url: String,
        password_from: Option<crate::policy::SecretRef>,
        name: String,
    },
}

/// `scheme://user@host:port/db?params` with `db` replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (before_query, query) = match rest.split_once('?') {
        Some((a, q)) => (a, format!("?{q}")),
        None => (rest, String::new()),
    };
    let authority = before_query.split('/').next().unwrap_or(before_query);
    format!("{scheme}://{authority}/{name}{query}")
}

impl Scratch {
    fn describe(&self) -> String {
        match self {
            Scratch::Dir(p) => p.display().to_string(),
            Scratch::Db { kind, url, .. } => format!("{kind} {}", crate::audit::redact(url)),
        }
    }

    async fn remove(&self) -> Result<(), String> {
        match self {
            Scratch::Dir(p) => match std::fs::remove_dir_all(p) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(format!("cannot remove scratch {}: {e}", p.display())),
            },
            Scratch::Db {
                kind,
                server,
                password_from,
                name,
                ..
            } => {
                let dropped = if *kind == "postgres" {
                    executor::postgres::drop_database(server, password_from.as_ref(), name).await
                } else {
                    executor::mysql::drop_database(server, password_from.as_ref(), name).await
                };
                dropped.map_err(|e| format!("cannot drop scratch database {name}: {e}"))
            }
        }
    }
}

/// The scratch name for a drill of `policy` started now.
pub fn scratch_name(policy: &str) -> String {
    let id = crate::engine::ids::new_backup_id(Utc::now(), policy);
    let stamp: String = id.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    format!(
        "safepoint_drill_{}_{}",
        policy.replace('-', "_"),
        stamp.to_lowercase()
    )
}

fn scratch_for(ctx: &Context, spec: &DrillSpec, name: &str) -> Result<Scratch, String> {
    let db = |kind: &'static str, url: &str, password_from: &Option<crate::policy::SecretRef>| {
        Scratch::Db {
            kind,
            server: url.to_string(),
            url: with_database(url, name),
            password_from: password_from.clone(),
            name: name.to_string(),
        }
    };
    // Defence in depth: validation already rejected the daemon's own paths.
    let guard = crate::executor::guard::PathGuard::new(&ctx.settings.permissions.protected);
    let secret_file = |p: &Option<crate::policy::SecretRef>| match p {
        Some(crate::policy::SecretRef::File(f)) => guard
            .check_file(&ctx.settings.base_dir.join(f))
            .map_err(|e| e.to_string()),
        _ => Ok(()),
    };
    Ok(match &spec.target {
        DrillTarget::Directory { path } => {
            let root = ctx.settings.base_dir.join(path);
            guard.check_tree(&root).map_err(|e| e.to_string())?;
            Scratch::Dir(root.join(name))
        }
        DrillTarget::Postgres { url, password_from } => {
            secret_file(password_from)?;
            db("postgres", url, password_from)
        }
        DrillTarget::Mysql { url, password_from } => {
            secret_file(password_from)?;
            db("mysql", url, password_from)
        }
    })
}

/// Removes scratch copies of drills whose process died (policy lock free),
/// and marks those drills failed. Only names recorded in the catalog.
pub async fn collect_leftovers(ctx: &Context, applied: &Applied) -> Result<usize, String> {
    let mut removed = 0;
    for d in ctx
        .catalog
        .running_drills()
        .await
        .map_err(|e| e.to_string())?
    {
        let Ok(Some(_held)) = lock::try_lock(&ctx.settings.locks_dir(), &d.policy) else {
            continue;
        };
        let Some(spec) = applied
            .desired
            .policies
            .get(&d.policy)
            .and_then(|p| p.drill.as_ref())
        else {
            continue;
        };
        if let Ok(scratch) = scratch_for(ctx, spec, &d.scratch) {
            scratch.remove().await?;
        }
        let check = CheckResult {
            name: "interrupted".into(),
            passed: false,
            detail: format!("the drill's process died; scratch {} removed", d.scratch),
        };
        ctx.catalog
            .finish_drill(d.id, false, None, &[check], Utc::now())
            .await
            .map_err(|e| e.to_string())?;
        removed += 1;
    }
    Ok(removed)
}

/// Runs one drill of `policy` on `backup_id`.
pub async fn run(
    ctx: &Context,
    applied: &Applied,
    policy: &BackupPolicy,
    backup_id: &str,
    requested_by: Option<&str>,
) -> Result<DrillOutcome, String> {
    let Some(spec) = &policy.drill else {
        return Err(format!(
            "policy {} declares no `drill:`; add one to run drills",
            policy.name
        ));
    };
    let _lock = match lock::try_lock(&ctx.settings.locks_dir(), &policy.name) {
        Ok(Some(l)) => l,
        Ok(None) => {
            return Err(format!(
                "a backup or drill of {} is running; try again when it ends",
                policy.name
            ));
        }
        Err(e) => return Err(format!("cannot take the lock of {}: {e}", policy.name)),
    };
    let row = ctx
        .catalog
        .backup(backup_id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            format!(
                "no backup {backup_id}; run `safepoint list --policy {}`",
                policy.name
            )
        })?;
    let Some(st_spec) = applied.desired.storages.get(&row.manifest.storage) else {
        return Err(format!(
            "storage {} of backup {backup_id} is not declared",
            row.manifest.storage
        ));
    };
    let st = restore::open_storage(ctx, st_spec);
    let name = scratch_name(&policy.name);
    let scratch = scratch_for(ctx, spec, &name)?;
    let started = Utc::now();
    let drill_id = ctx
        .catalog
        .start_drill(
            &policy.name,
            backup_id,
            &scratch.describe(),
            &name,
            requested_by,
            started,
        )
        .await
        .map_err(|e| e.to_string())?;
    let (checks, restore_seconds) = checks(ctx, spec, &row.manifest, st, &scratch).await;
    let cleanup = scratch.remove().await;
    let mut checks = checks;
    if let Err(e) = cleanup {
        checks.push(CheckResult {
            name: "cleanup".into(),
            passed: false,
            detail: e,
        });
    }
    let passed = checks.iter().all(|c| c.passed);
    let now = Utc::now();
    ctx.catalog
        .finish_drill(drill_id, passed, restore_seconds, &checks, now)
        .await
        .map_err(|e| e.to_string())?;
    let summary: Vec<String> = checks
        .iter()
        .map(|c| format!("{} {}", c.name, if c.passed { "ok" } else { "FAILED" }))
        .collect();
    let msg = format!(
        "drill of backup {backup_id} {}: {}",
        if passed { "passed" } else { "FAILED" },
        summary.join(", ")
    );
    let kind = if passed {
        AuditKind::DrillPassed
    } else {
        AuditKind::DrillFailed
    };
    let actor = requested_by.unwrap_or(&ctx.actor);
    // The verdict is already recorded; without its audit entry the drill
    // still fails, so the gap is visible rather than silent.
    ctx.catalog
        .audit(now, kind, Some(&policy.name), actor, &msg)
        .await
        .map_err(|e| format!("{msg}; but its audit entry could not be written: {e}"))?;
    if passed {
        tracing::info!(policy = %policy.name, backup = backup_id, "{msg}");
    } else {
        tracing::error!(policy = %policy.name, backup = backup_id, "{msg}");
    }
    Ok(DrillOutcome {
        policy: policy.name.clone(),
        backup_id: backup_id.to_string(),
        passed,
        scratch: name,
        restore_seconds,
        checks,
    })
}

async fn checks(
    ctx: &Context,
    spec: &DrillSpec,
    manifest: &storage::Manifest,
    st: Arc<dyn storage::Storage>,
    scratch: &Scratch,
) -> (Vec<CheckResult>, Option<f64>) {
    let mut checks = Vec::new();
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
            Scratch::Db { .. } => None,
        },
        wrap: None,
    };
    let verified = restore::verify(&job).await;
    checks.push(match verified {
        Ok(()) => CheckResult {
            name: "checksum".into(),
            passed: true,
            detail: manifest.artifact.checksum.clone(),
        },
        Err(RestoreError::Unverified { problem, .. }) => CheckResult {
            name: "checksum".into(),
            passed: false,
            detail: problem.detail,
        },
        Err(e) => CheckResult {
            name: "checksum".into(),
            passed: false,
            detail: e.to_string(),
        },
    });
    if !checks[0].passed {
        return (checks, None);
    }
    // 2. The restore tool exits cleanly.
    let started = Instant::now();
    let restored = restore::restore_verified(ctx, job).await;
    let seconds = started.elapsed().as_secs_f64();
    let produced = match restored {
        Ok(p) => {
            checks.push(CheckResult {
                name: "restore".into(),
                passed: true,
                detail: format!("restored into {}", scratch.describe()),
            });
            p
        }
        Err(e) => {
            checks.push(CheckResult {
                name: "restore".into(),
                passed: false,
                detail: e.to_string(),
            });
            return (checks, Some(seconds));
        }
    };
    // 3. Completeness against the counts recorded at backup time.
    if let Some(c) = verdict::completeness(spec.completeness, &manifest.counts, &produced.counts) {
        checks.push(c);
    }
    // 4. The user's checks.
    match (scratch, &target) {
        (Scratch::Dir(_), RestoreTarget::Path(db))
            if manifest.source_kind == "sqlite" && !spec.checks.is_empty() =>
        {
            checks.extend(sqlite_checks(db, spec).await);
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
            for check in &spec.checks {
                let value = if *kind == "postgres" {
                    executor::postgres::query_first(url, password_from.as_ref(), &check.sql).await
                } else {
                    executor::mysql::query_first(url, password_from.as_ref(), &check.sql).await
                };
                checks.push(match value {
                    Err(e) => CheckResult {
                        name: check.name.clone(),
                        passed: false,
                        detail: format!("query failed: {e}"),
                    },
                    Ok(v) => match check.expect.check(v.as_deref()) {
                        Ok(()) => CheckResult {
                            name: check.name.clone(),
                            passed: true,
                            detail: format!("{} (expect {})", v.unwrap_or_default(), check.expect),
                        },
                        Err(detail) => CheckResult {
                            name: check.name.clone(),
                            passed: false,
                            detail,
                        },
                    },
                });
            }
        }
        _ => {}
    }
    // 5. Recovery time against maxDuration.
    checks.push(verdict::recovery_time(
        seconds,
        spec.max_duration.map(|d| d.num_seconds()),
    ));
    (checks, Some(seconds))
}

/// Where a drill restores into, and how (always replacing the scratch).
fn restore_target(
    manifest: &storage::Manifest,
    scratch: &Scratch,
) -> (RestoreTarget, executor::RestoreOptions) {
    match scratch {
        Scratch::Dir(dir) => (
            RestoreTarget::Path(if manifest.source_kind == "sqlite" {
                dir.join("restored.db")
            } else {
                dir.clone()
            }),
            executor::RestoreOptions {
                force: true,
                ..Default::default()
            },
        ),
        Scratch::Db {
            url, password_from, ..
        } => (
            RestoreTarget::Url(url.clone()),
            executor::RestoreOptions {
                force: true,
                password_from: password_from.clone(),
                command: None,
            },
        ),
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
                .map(|c| CheckResult {
                    name: c.name.clone(),
                    passed: false,
                    detail: format!("cannot open the restored copy: {e}"),
                })
                .collect();
        }
    };
    let mut out = Vec::new();
    for check in &spec.checks {
        let row = sqlx::query(sqlx::AssertSqlSafe(check.sql.clone()))
            .fetch_optional(&mut conn)
            .await;
        let result = match row {
            Err(e) => Err(format!("query failed: {e}")),
            Ok(row) => {
                let value = row.and_then(|r| {
                    r.try_get::<Option<i64>, _>(0)
                        .map(|v| v.map(|v| v.to_string()))
                        .or_else(|_| {
                            r.try_get::<Option<f64>, _>(0)
                                .map(|v| v.map(|v| v.to_string()))
                        })
                        .or_else(|_| r.try_get::<Option<String>, _>(0))
                        .ok()
                        .flatten()
                });
                check
                    .expect
                    .check(value.as_deref())
                    .map(|()| value.unwrap_or_default())
            }
        };
        out.push(match result {
            Ok(value) => CheckResult {
                name: check.name.clone(),
                passed: true,
                detail: format!("{} (expect {})", value, check.expect),
            },
            Err(detail) => CheckResult {
                name: check.name.clone(),
                passed: false,
                detail,
            },
        });
    }
    let _ = conn.close().await;
    out
}
