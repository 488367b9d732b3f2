//! Engine: the drill of a PITR policy. It picks a random point inside the
//! recoverable window its archiver recorded (`pitr_archives`: from the end
//! of the oldest usable base backup to the archived end), restores the base
//! backup for that point into a scratch cluster under the daemon's data
//! directory (`drills/<name>/data`, 0700; as root it runs as `postgres`),
//! starts it on a free loopback port with recovery stopping at the point,
//! checks that recovery reached it (the server's `recovery stopping …`
//! line, and the promotion), runs the policy's SQL checks through the
//! cluster's socket (in a short 0700 directory of the system's temp dir), and always stops the server and removes the scratch —
//! also on failure, and when the drill is cancelled (`Armed`).

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::{DateTime, TimeDelta, Utc};

use super::checks::{checksum_check, expect, failed};
use super::scratch::{Scratch, remove_cluster, scratch_for, scratch_name, socket_dir};
use super::{DrillOutcome, lock_policy, record, verdict};
use crate::catalog::CheckResult;
use crate::engine::context::{Applied, Context};
use crate::engine::pitr_restore::{self, Base, Goal};
use crate::engine::pitr_start::{self, Started};
use crate::engine::restore::{self, Restore};
use crate::executor::{self, RestoreOptions, RestoreTarget};
use crate::policy::{BackupPolicy, DrillSpec, Source};

/// Runs one drill of the PITR policy `policy`.
pub(super) async fn run(
    ctx: &Context,
    applied: &Applied,
    policy: &BackupPolicy,
    spec: &DrillSpec,
    requested_by: Option<&str>,
) -> Result<DrillOutcome, String> {
    let _lock = lock_policy(ctx, policy).await?;
    let target = pick(ctx, &policy.name).await?;
    let goal = Goal::Time(target);
    let base = pitr_restore::base_for(ctx, &applied.desired, &policy.name, &goal).await?;
    let name = scratch_name(&policy.name);
    let scratch = scratch_for(ctx, spec, &name)?;
    let Scratch::Cluster(dir) = &scratch else {
        return Err(format!(
            "the drill of PITR policy {} has no scratch cluster",
            policy.name
        ));
    };
    let backup_id = base.row.manifest.id.clone();
    let drill_id = ctx
        .catalog
        .start_drill(
            &policy.name,
            &backup_id,
            &scratch.describe(),
            &name,
            requested_by,
            Utc::now(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let armed = Armed(Some(dir.clone()));
    let drill = Drill {
        policy,
        spec,
        base: &base,
        goal: &goal,
        dir,
    };
    let (mut checks, seconds) = drill.checks(ctx).await;
    if let Err(e) = scratch.remove().await {
        checks.push(failed("cleanup", e));
    }
    armed.disarm();
    let outcome = DrillOutcome {
        policy: policy.name.clone(),
        backup_id,
        passed: checks.iter().all(|c| c.passed),
        scratch: name,
        restore_seconds: seconds,
        checks,
    };
    record(ctx, drill_id, &outcome, requested_by).await?;
    Ok(outcome)
}

/// A random point of the recoverable window recorded for `policy`.
async fn pick(ctx: &Context, policy: &str) -> Result<DateTime<Utc>, String> {
    let archives = ctx
        .catalog
        .pitr_archives()
        .await
        .map_err(|e| e.to_string())?;
    let window = archives
        .get(policy)
        .and_then(|a| Some((a.window_start?, a.window_end?)));
    let Some((start, end)) = window.filter(|(s, e)| s <= e) else {
        return Err(format!(
            "policy {policy} has no recoverable window yet: the daemon's WAL archiver records one once a base backup and the WAL after it are archived (see `safepoint status {policy}`)"
        ));
    };
    let span = (end - start).num_microseconds().unwrap_or(i64::MAX).max(0) as u64;
    let offset = if span == 0 { 0 } else { random() % (span + 1) };
    Ok(start + TimeDelta::microseconds(offset as i64))
}

/// 64 random bits from the standard library's per-process hash keys.
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Utc::now().timestamp_nanos_opt().unwrap_or_default() as u128);
    h.finish()
}

/// Stops and removes the scratch cluster when dropped armed: a cancelled
/// drill (its future dropped) leaves no server and no copy behind.
struct Armed(Option<PathBuf>);

impl Armed {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take()
            && let Err(e) = remove_cluster(&dir)
        {
            tracing::error!("cancelled drill: {e}");
        }
    }
}

/// One PITR drill's inputs.
struct Drill<'a> {
    policy: &'a BackupPolicy,
    spec: &'a DrillSpec,
    base: &'a Base,
    goal: &'a Goal,
    dir: &'a Path,
}

impl Drill<'_> {
    /// checksum → restore (extract + recovery settings) → recovery (start,
    /// promoted at the target) → the user's checks → recovery time.
    async fn checks(&self, ctx: &Context) -> (Vec<CheckResult>, Option<f64>) {
        let manifest = &self.base.row.manifest;
        let data = self.dir.join("data");
        let target = RestoreTarget::Path(data.clone());
        let options = RestoreOptions {
            force: true,
            ..RestoreOptions::default()
        };
        let job = Restore {
            manifest,
            storage: self.base.storage.clone(),
            target: &target,
            options: &options,
            create_dir: None,
            wrap: None,
        };
        let mut checks = vec![checksum_check(manifest, restore::verify(&job).await)];
        if !checks[0].passed {
            return (checks, None);
        }
        let started = Instant::now();
        if let Err(e) = self.extract(ctx, job, &data).await {
            checks.push(failed("restore", e));
            return (checks, Some(started.elapsed().as_secs_f64()));
        }
        checks.push(CheckResult {
            name: "restore".into(),
            passed: true,
            detail: format!(
                "base backup {} (finished {}) extracted into {}",
                manifest.id,
                self.base.base.stop_time.to_rfc3339(),
                data.display()
            ),
        });
        let server = self.recover(&data).await;
        let seconds = started.elapsed().as_secs_f64();
        let server = match server {
            Ok((server, check)) => {
                checks.push(check);
                server
            }
            Err(check) => {
                checks.push(check);
                return (checks, Some(seconds));
            }
        };
        checks.extend(self.user_checks(&server).await);
        checks.push(verdict::recovery_time(
            seconds,
            self.spec.max_duration.map(|d| d.num_seconds()),
        ));
        (checks, Some(seconds))
    }

    /// The base backup extracted into `data` with recovery configured; its
    /// client authentication is the scratch socket only (`local all all
    /// trust`: the socket lives in the 0700 data directory).
    async fn extract(&self, ctx: &Context, job: Restore<'_>, data: &Path) -> Result<(), String> {
        let root = self.dir.parent().ok_or("the scratch has no parent")?;
        std::fs::create_dir_all(root)
            .map_err(|e| format!("cannot create {}: {e}", root.display()))?;
        // Others may pass through (the server's user, as root), not list.
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o711))
            .map_err(|e| format!("cannot protect {}: {e}", root.display()))?;
        for dir in [self.dir.to_path_buf(), socket_dir(self.dir)] {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&dir)
                .map_err(|e| format!("cannot create scratch {}: {e}", dir.display()))?;
        }
        restore::restore_verified(ctx, job)
            .await
            .map_err(|e| e.to_string())?;
        pitr_restore::configure(ctx, data, &self.policy.name, &self.base.spec, self.goal)?;
        std::fs::write(data.join("pg_hba.conf"), "local all all trust\n")
            .map_err(|e| format!("cannot write {}: {e}", data.display()))
    }

    /// Starts the scratch cluster and checks that recovery stopped at the
    /// target and the server was promoted.
    async fn recover(&self, data: &Path) -> Result<(Started, CheckResult), CheckResult> {
        let target = self.goal.describe();
        let id = &self.base.row.manifest.id;
        let owner = pitr_start::system_user("postgres").map_err(|e| failed("recovery", e))?;
        let socket = socket_dir(self.dir);
        if let Some(o) = owner {
            for dir in [self.dir, &socket] {
                pitr_start::chown_tree(dir, o).map_err(|e| failed("recovery", e))?;
            }
        }
        let server = pitr_start::start(data, &socket, self.base.major(), owner)
            .await
            .map_err(|e| {
                failed(
                    "recovery",
                    format!("recovery to {target} from base backup {id} failed: {e}"),
                )
            })?;
        let check = match pitr_start::stop_line(&server.log) {
            Some(line) => CheckResult {
                name: "recovery".into(),
                passed: true,
                detail: format!("recovered to {target} from base backup {id} and promoted: {line}"),
            },
            None => failed(
                "recovery",
                format!(
                    "the server recovered from base backup {id} and was promoted, but its log does not say recovery stopped at {target}: {}",
                    pitr_start::log_tail(&server.log)
                ),
            ),
        };
        if check.passed {
            Ok((server, check))
        } else {
            Err(check)
        }
    }

    /// The drill's SQL checks on the restored cluster, through its socket,
    /// as the source's user on the source's database.
    async fn user_checks(&self, server: &Started) -> Vec<CheckResult> {
        let url = match &self.policy.source {
            Source::Postgres { url, .. } => scratch_url(url, &socket_dir(self.dir), server.port),
            _ => None,
        };
        let Some(url) = url else {
            return self
                .spec
                .checks
                .iter()
                .map(|c| failed(&c.name, "the source URL names no user and database".into()))
                .collect();
        };
        let mut checks = Vec::new();
        for check in &self.spec.checks {
            checks.push(
                match executor::postgres::query_first(&url, None, &check.sql).await {
                    Err(e) => failed(&check.name, format!("query failed: {e}")),
                    Ok(v) => expect(check, v),
                },
            );
        }
        checks
    }
}

/// `postgres://user@localhost:port/db?host=<socket dir>` for the source
/// URL's user and database.
fn scratch_url(source: &str, socket_dir: &Path, port: u16) -> Option<String> {
    use std::str::FromStr;
    let o = sqlx::postgres::PgConnectOptions::from_str(source).ok()?;
    Some(format!(
        "postgres://{}@localhost:{port}/{}?host={}",
        o.get_username(),
        o.get_database().unwrap_or("postgres"),
        socket_dir.display()
    ))
}
