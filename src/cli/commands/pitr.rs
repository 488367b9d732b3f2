//! `safepoint restore --policy P --to-time T | --before-deploy TAG |
//! --latest --to-dir DIR [--start]` for PITR policies, and `safepoint
//! wal-fetch`, the restore_command it writes: the flags parsed and the
//! result printed; the restore itself is `engine::pitr_restore` (base
//! backup, recovery settings, extraction) and `engine::pitr_start`.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, bail};
use chrono::{DateTime, Utc};

use crate::cli::Output;
use crate::deploy::{self, BeforeDeploy};
use crate::engine::context::Context;
use crate::engine::pitr_restore::{self, Goal, Outcome};
use crate::executor::pitr_base::format_lsn;

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

pub async fn restore(ctx: &Context, args: Args, output: Output) -> anyhow::Result<u8> {
    let state = super::shared::loaded_state(ctx).await?;
    let desired = state.desired()?;
    let goal = match args.asked {
        Asked::Latest => Goal::Latest,
        Asked::Time(t) => Goal::Time(t),
        Asked::BeforeDeploy(release) => {
            match deploy::before_deploy(ctx, &release, &args.policy).await? {
                BeforeDeploy::Point { name, lsn } => Goal::Point { name, lsn },
                BeforeDeploy::Time(t) => Goal::Time(t),
            }
        }
    };
    let flags = (args.start, args.force);
    let done = pitr_restore::restore(ctx, desired, &args.policy, goal, &args.dir, flags)
        .await
        .map_err(|e| anyhow!(e))?;
    report(output, &done)
}

/// `safepoint wal-fetch --recovery FILE WAL PATH`: 0 written, 1 not archived.
pub async fn wal_fetch(recovery: &Path, wal_file: &str, path: &Path) -> anyhow::Result<u8> {
    pitr_restore::wal_fetch(recovery, wal_file, path)
        .await
        .map_err(|e| anyhow!(e))
}

fn report(output: Output, done: &Outcome) -> anyhow::Result<u8> {
    let (backup, base, dir, goal) = (
        &done.base.row.manifest.id,
        &done.base.base,
        &done.dir,
        &done.goal,
    );
    let started = done.started.as_ref();
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
            "port": started.map(|s| s.port),
            "log": started.map(|s| s.log.display().to_string()),
        });
        outln!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(0);
    }
    outln!(
        "restored base backup {backup} (finished {}) into {}; recovery to {} configured",
        base.stop_time.to_rfc3339(),
        dir.display(),
        goal.describe()
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
