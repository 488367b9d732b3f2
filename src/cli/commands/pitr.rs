//! `safepoint restore --policy P --to-time T | --before-deploy TAG |
//! --latest --to-dir DIR [--start]` for PITR policies, and `safepoint
//! wal-fetch`, the restore_command it writes. The restore picks the newest
//! verified base backup that was finished before the target and whose first
//! WAL segment is archived, extracts it through the one restore pipeline
//! (`engine::restore`), and configures recovery: `recovery.signal`,
//! `restore_command` calling `safepoint wal-fetch` with a recovery file
//! naming the storage (no catalog or repository needed while PostgreSQL
//! recovers), the target (`recovery_target_time`, or `recovery_target_name`
//! for the restore point of a deploy gate) and `recovery_target_action =
//! 'promote'`. With `--start` it runs the server on a free loopback port
//! and waits until recovery ended (`pitr_start`).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::pitr_start::{Started, shell_quote, start};
use crate::catalog::BackupRow;
use crate::cli::Output;
use crate::deploy::{self, BeforeDeploy};
use crate::engine::context::Context;
use crate::engine::{self, restore::Restore};
use crate::executor::pitr_base::{BaseBackup, format_lsn};
use crate::executor::{RestoreOptions, RestoreTarget};
use crate::model::Health;
use crate::policy::StorageSpec;
use crate::storage::crypt::Identities;
use crate::storage::wal;

/// File written into the restored data directory for `wal-fetch`.
const RECOVERY_FILE: &str = "safepoint.recovery.json";

/// The recovery target asked for.
pub enum Asked {
    Latest,
    Time(DateTime<Utc>),
    BeforeDeploy(String),
}

impl Asked {
    pub fn new(
        to_time: Option<String>,
        before_deploy: Option<String>,
        latest: bool,
    ) -> anyhow::Result<Asked> {
        Ok(match (to_time, before_deploy, latest) {
            (Some(t), _, _) => Asked::Time(
                DateTime::parse_from_rfc3339(&t)
                    .with_context(|| {
                        format!("--to-time {t} is not an RFC 3339 time like 2026-11-29T10:42:00Z")
                    })?
                    .with_timezone(&Utc),
            ),
            (None, Some(release), _) => Asked::BeforeDeploy(release),
            (None, None, true) => Asked::Latest,
            (None, None, false) => {
                bail!("--to-dir needs --to-time TIME, --before-deploy TAG or --latest")
            }
        })
    }
}

/// Where recovery stops.
#[derive(Debug, Clone, PartialEq)]
enum Goal {
    /// The end of the archive.
    Latest,
    /// Every transaction committed at or before it.
    Time(DateTime<Utc>),
    /// A named restore point (the deploy gate's), at its WAL position.
    Point { name: String, lsn: u64 },
}

impl Goal {
    fn describe(&self) -> String {
        match self {
            Goal::Latest => "the end of the archive".into(),
            Goal::Time(t) => t.to_rfc3339(),
            Goal::Point { name, lsn } => format!("restore point `{name}` ({})", format_lsn(*lsn)),
        }
    }

    /// Whether a base backup is consistent before the goal.
    fn after(&self, b: &BaseBackup) -> bool {
        match self {
            Goal::Latest => true,
            Goal::Time(t) => b.stop_time <= *t,
            Goal::Point { lsn, .. } => b.stop_lsn <= *lsn,
        }
    }

    /// The recovery target settings for postgresql.auto.conf.
    fn settings(&self) -> String {
        let target = match self {
            Goal::Latest => return String::new(),
            Goal::Time(t) => format!(
                "recovery_target_time = '{}'\nrecovery_target_inclusive = on\n",
                t.format("%Y-%m-%d %H:%M:%S%.6f+00")
            ),
            Goal::Point { name, .. } => format!("recovery_target_name = {}\n", conf_quote(name)),
        };
        format!("{target}recovery_target_action = 'promote'\n")
    }
}

/// A PITR restore as asked on the command line.
pub struct Args {
    policy: String,
    asked: Asked,
    dir: PathBuf,
    start: bool,
    force: bool,
}

impl Args {
    pub fn new(
        policy: Option<String>,
        asked: Asked,
        dir: PathBuf,
        start: bool,
        force: bool,
    ) -> anyhow::Result<Args> {
        let policy = policy.context("--to-dir needs --policy P")?;
        Ok(Args {
            policy,
            asked,
            dir,
            start,
            force,
        })
    }
}

/// The goal of `asked` for `policy` (`--before-deploy`: the deploy records).
async fn goal(ctx: &Context, asked: &Asked, policy: &str) -> anyhow::Result<Goal> {
    Ok(match asked {
        Asked::Latest => Goal::Latest,
        Asked::Time(t) => Goal::Time(*t),
        Asked::BeforeDeploy(release) => match deploy::before_deploy(ctx, release, policy).await? {
            BeforeDeploy::Point { name, lsn } => Goal::Point { name, lsn },
            BeforeDeploy::Time(t) => Goal::Time(t),
        },
    })
}

/// What `wal-fetch` needs, written next to the restored data.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Recovery {
    policy: String,
    storage: StorageSpec,
    /// Relative storage paths are resolved against it.
    base_dir: PathBuf,
    age_identity_file: Option<PathBuf>,
}

pub async fn restore(ctx: &Context, args: Args, output: Output) -> anyhow::Result<u8> {
    let state = super::shared::loaded_state(ctx).await?;
    let desired = state.desired()?;
    let policy = desired
        .policies
        .get(&args.policy)
        .with_context(|| format!("no policy {} in the applied revision", args.policy))?;
    if policy.source.pitr().is_none() {
        bail!(
            "policy {} has no `source.pitr`: restore one of its backups with --to (docs/pitr.md)",
            args.policy
        );
    }
    let spec = desired.storages.get(&policy.storage).with_context(|| {
        format!(
            "storage {} of policy {} is not declared",
            policy.storage, policy.name
        )
    })?;
    let storage = engine::restore::open_storage(ctx, spec);
    let st = storage.clone();
    let name = args.policy.clone();
    let archived = tokio::task::spawn_blocking(move || wal::list(&*st, &name)).await??;
    let goal = goal(ctx, &args.asked, &args.policy).await?;
    let rows = ctx.catalog.backups().await?;
    let (row, base) = choose(&rows, &args.policy, &goal, &archived)?;
    let dir = absolute(&args.dir)?;
    let options = RestoreOptions {
        force: args.force,
        ..RestoreOptions::default()
    };
    let target = RestoreTarget::Path(dir.clone());
    let audit = format!(
        "restored base backup {}/{} into {} for recovery to {} by {}",
        row.manifest.policy,
        row.manifest.id,
        dir.display(),
        goal.describe(),
        ctx.actor
    );
    let job = Restore {
        manifest: &row.manifest,
        storage,
        target: &target,
        options: &options,
        create_dir: None,
        wrap: None,
    };
    engine::restore::run(ctx, job, &audit).await?;
    let recovery = Recovery {
        policy: args.policy.clone(),
        storage: spec.clone(),
        base_dir: ctx.settings.base_dir.clone(),
        age_identity_file: ctx.settings.age_identity_file.clone(),
    };
    configure(&dir, &recovery, &goal)?;
    let major = row
        .manifest
        .tools
        .get("postgres")
        .and_then(|v| crate::executor::postgres::client_major(v));
    let started = if args.start {
        Some(start(&dir, major).await?)
    } else {
        None
    };
    report(output, &row.manifest.id, &base, &dir, &goal, started)
}

/// The newest verified base backup of `policy` finished before `goal`
/// whose first WAL segment is in the archive.
fn choose<'a>(
    rows: &'a [BackupRow],
    policy: &str,
    goal: &Goal,
    archived: &[wal::WalObject],
) -> anyhow::Result<(&'a BackupRow, BaseBackup)> {
    let bases: Vec<(&BackupRow, BaseBackup)> = rows
        .iter()
        .filter(|r| r.record.policy == policy && r.record.health == Health::Verified)
        .filter_map(|r| Some((r, BaseBackup::from_tools(&r.manifest.tools)?)))
        .collect();
    let usable = |b: &BaseBackup| archived.iter().any(|o| o.segment() == b.start_wal);
    let best = bases
        .iter()
        .filter(|(_, b)| goal.after(b) && usable(b))
        .max_by_key(|(_, b)| b.stop_lsn);
    match best {
        Some((r, b)) => Ok((*r, b.clone())),
        None if bases.is_empty() => bail!(
            "policy {policy} has no verified base backup yet; take one with `safepoint backup {policy}`"
        ),
        None => {
            let oldest = bases
                .iter()
                .filter(|(_, b)| usable(b))
                .map(|(_, b)| b.stop_time)
                .min();
            match oldest {
                Some(t) => bail!(
                    "no base backup of {policy} was finished before {}; the oldest usable one was finished at {}: pick a later --to-time",
                    goal.describe(),
                    t.to_rfc3339()
                ),
                None => bail!(
                    "the WAL archive of {policy} holds no base backup's first segment (the backups were taken before archiving started, or the archive is behind): take a new base backup with `safepoint backup {policy}`"
                ),
            }
        }
    }
}

fn absolute(dir: &Path) -> anyhow::Result<PathBuf> {
    Ok(if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir()?.join(dir)
    })
}

/// Writes the recovery file, `recovery.signal` and the recovery settings
/// (appended to `postgresql.auto.conf`, which wins over `postgresql.conf`).
fn configure(dir: &Path, recovery: &Recovery, goal: &Goal) -> anyhow::Result<()> {
    let file = dir.join(RECOVERY_FILE);
    std::fs::write(&file, serde_json::to_vec_pretty(recovery)?)
        .with_context(|| format!("cannot write {}", file.display()))?;
    // A cluster whose configuration lives outside its data directory
    // (Debian's /etc/postgresql) needs one to start.
    for conf in ["postgresql.conf", "pg_ident.conf"] {
        if !dir.join(conf).exists() {
            std::fs::write(dir.join(conf), "")?;
        }
    }
    if !dir.join("pg_hba.conf").exists() {
        std::fs::write(dir.join("pg_hba.conf"), "local all all peer\n")?;
    }
    let exe = std::env::current_exe().context("cannot locate the safepoint binary")?;
    let fetch = format!(
        "{} wal-fetch --recovery {} %f %p; rc=$?; [ $rc -le 1 ] || exit 255; exit $rc",
        shell_quote(&exe.to_string_lossy()),
        shell_quote(&file.to_string_lossy())
    );
    let mut conf = format!(
        "\n# safepoint restore: point-in-time recovery of policy {}\nrestore_command = {}\n",
        recovery.policy,
        conf_quote(&fetch)
    );
    conf.push_str(&goal.settings());
    let auto = dir.join("postgresql.auto.conf");
    let mut text = std::fs::read_to_string(&auto).unwrap_or_default();
    text.push_str(&conf);
    std::fs::write(&auto, text).with_context(|| format!("cannot write {}", auto.display()))?;
    std::fs::write(dir.join("recovery.signal"), "")?;
    Ok(())
}

/// `'text'` for postgresql.conf (quotes doubled).
fn conf_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `safepoint wal-fetch --recovery FILE WAL PATH`: 0 written, 1 not archived.
pub async fn wal_fetch(recovery: &Path, wal_file: &str, path: &Path) -> anyhow::Result<u8> {
    let text = std::fs::read(recovery)
        .with_context(|| format!("cannot read the recovery file {}", recovery.display()))?;
    let r: Recovery = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not a safepoint recovery file", recovery.display()))?;
    // Backup history files and the like are never archived: "not there".
    if !wal::is_wal_file(wal_file) {
        return Ok(1);
    }
    let identities = match &r.age_identity_file {
        Some(f) if !r.storage.age_recipients.is_empty() => Some(Identities::from_file(f)?),
        _ => None,
    };
    let (wal_file, path) = (wal_file.to_string(), path.to_path_buf());
    tokio::task::spawn_blocking(move || {
        let st = crate::storage::open(&r.storage, &r.base_dir);
        let Some(bytes) = wal::fetch(&*st, &r.policy, &wal_file, identities.as_ref())? else {
            return Ok(1);
        };
        let tmp = path.with_extension("safepoint-tmp");
        std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(0)
    })
    .await?
}

fn report(
    output: Output,
    backup: &str,
    base: &BaseBackup,
    dir: &Path,
    goal: &Goal,
    started: Option<Started>,
) -> anyhow::Result<u8> {
    let target_text = goal.describe();
    if output == Output::Json {
        let value = serde_json::json!({
            "backup": backup,
            "baseBackupFinished": base.stop_time.to_rfc3339(),
            "dataDir": dir.display().to_string(),
            "target": match goal {
                Goal::Time(t) => Some(t.to_rfc3339()),
                _ => None,
            },
            "restorePoint": match goal {
                Goal::Point { name, lsn } => Some(serde_json::json!({"name": name, "lsn": format_lsn(*lsn)})),
                _ => None,
            },
            "port": started.as_ref().map(|s| s.port),
            "log": started.as_ref().map(|s| s.log.display().to_string()),
        });
        outln!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(0);
    }
    outln!(
        "restored base backup {backup} (finished {}) into {}; recovery to {target_text} configured",
        base.stop_time.to_rfc3339(),
        dir.display()
    );
    match started {
        Some(s) => outln!(
            "recovered and promoted: the server runs on 127.0.0.1:{} (log {}); stop it with `pg_ctl -D {} stop`",
            s.port,
            s.log.display(),
            dir.display()
        ),
        None => outln!(
            "start it with `pg_ctl -D {} start`: it replays the archived WAL through `safepoint wal-fetch` and promotes at the target",
            dir.display()
        ),
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_goal_writes_its_recovery_target() {
        let t: DateTime<Utc> = "2026-11-29T10:42:00Z".parse().unwrap();
        assert_eq!(Goal::Latest.settings(), "");
        assert_eq!(
            Goal::Time(t).settings(),
            "recovery_target_time = '2026-11-29 10:42:00.000000+00'\nrecovery_target_inclusive = on\nrecovery_target_action = 'promote'\n"
        );
        let point = Goal::Point {
            name: "safepoint-v1.4-it's".into(),
            lsn: 0x300_0060,
        };
        assert_eq!(
            point.settings(),
            "recovery_target_name = 'safepoint-v1.4-it''s'\nrecovery_target_action = 'promote'\n"
        );
    }

    #[test]
    fn quoting_survives_shell_and_config() {
        assert_eq!(shell_quote("/a b/it's"), r"'/a b/it'\''s'");
        assert_eq!(conf_quote("it's"), "'it''s'");
    }
}
