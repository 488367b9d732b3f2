//! `safepoint restore --policy P --to-time T | --latest --to-dir DIR [--start]`
//! for PITR policies, and `safepoint wal-fetch`, the restore_command it
//! writes. The restore picks the newest verified base backup that was
//! finished at or before the target and whose first WAL segment is archived,
//! extracts it through the one restore pipeline (`engine::restore`), and
//! configures recovery: `recovery.signal`, `restore_command` calling
//! `safepoint wal-fetch` with a recovery file naming the storage (no catalog
//! or repository needed while PostgreSQL recovers), `recovery_target_time`
//! and `recovery_target_action = 'promote'`. With `--start` it runs the
//! server on a free loopback port and waits until recovery ended.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::catalog::BackupRow;
use crate::cli::Output;
use crate::engine::context::Context;
use crate::engine::{self, restore::Restore};
use crate::executor::pitr_base::BaseBackup;
use crate::executor::{RestoreOptions, RestoreTarget};
use crate::model::Health;
use crate::policy::StorageSpec;
use crate::storage::crypt::Identities;
use crate::storage::wal;

/// File written into the restored data directory for `wal-fetch`.
const RECOVERY_FILE: &str = "safepoint.recovery.json";

/// A PITR restore as asked on the command line.
pub struct Args {
    policy: String,
    target: Option<DateTime<Utc>>,
    dir: PathBuf,
    start: bool,
    force: bool,
}

impl Args {
    pub fn new(
        policy: Option<String>,
        to_time: Option<String>,
        latest: bool,
        dir: PathBuf,
        start: bool,
        force: bool,
    ) -> anyhow::Result<Args> {
        let policy = policy.context("--to-dir needs --policy P")?;
        let target = match (to_time, latest) {
            (Some(t), _) => Some(
                DateTime::parse_from_rfc3339(&t)
                    .with_context(|| {
                        format!("--to-time {t} is not an RFC 3339 time like 2026-11-29T10:42:00Z")
                    })?
                    .with_timezone(&Utc),
            ),
            (None, true) => None,
            (None, false) => bail!("--to-dir needs --to-time TIME or --latest"),
        };
        Ok(Args {
            policy,
            target,
            dir,
            start,
            force,
        })
    }
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
    let rows = ctx.catalog.backups().await?;
    let (row, base) = choose(&rows, &args.policy, args.target, &archived)?;
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
        args.target
            .map_or("the end of the archive".into(), |t| t.to_rfc3339()),
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
    configure(&dir, &recovery, args.target)?;
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
    report(output, &row.manifest.id, &base, &dir, args.target, started)
}

/// The newest verified base backup of `policy` finished at or before
/// `target` (any, for `None`) whose first WAL segment is in the archive.
fn choose<'a>(
    rows: &'a [BackupRow],
    policy: &str,
    target: Option<DateTime<Utc>>,
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
        .filter(|(_, b)| target.is_none_or(|t| b.stop_time <= t) && usable(b))
        .max_by_key(|(_, b)| b.stop_time);
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
                    "no base backup of {policy} was finished at or before {}; the oldest usable one was finished at {}: pick a later --to-time",
                    target.map_or("now".into(), |t| t.to_rfc3339()),
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
fn configure(dir: &Path, recovery: &Recovery, target: Option<DateTime<Utc>>) -> anyhow::Result<()> {
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
    if let Some(t) = target {
        conf.push_str(&format!(
            "recovery_target_time = '{}'\nrecovery_target_inclusive = on\nrecovery_target_action = 'promote'\n",
            t.format("%Y-%m-%d %H:%M:%S%.6f+00")
        ));
    }
    let auto = dir.join("postgresql.auto.conf");
    let mut text = std::fs::read_to_string(&auto).unwrap_or_default();
    text.push_str(&conf);
    std::fs::write(&auto, text).with_context(|| format!("cannot write {}", auto.display()))?;
    std::fs::write(dir.join("recovery.signal"), "")?;
    Ok(())
}

/// `'text'` for sh, with embedded quotes closed and escaped.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
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

/// A restored server left running.
struct Started {
    port: u16,
    log: PathBuf,
}

/// Starts the restored cluster on a free loopback port (as the owner of the
/// data directory's parent when run as root: PostgreSQL refuses root) and
/// waits until recovery ended and the server was promoted.
async fn start(dir: &Path, major: Option<u32>) -> anyhow::Result<Started> {
    let owner = server_user(dir)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let log = dir.join("safepoint-restore.log");
    let pg_ctl = program(major, "pg_ctl");
    let mut cmd = Command::new(&pg_ctl);
    cmd.arg("-D")
        .arg(dir)
        .arg("-l")
        .arg(&log)
        .arg("-o")
        .arg(format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={}",
            shell_quote(&dir.to_string_lossy())
        ))
        .args(["-w", "-t", "3600", "start"])
        .current_dir(dir);
    if let Some((uid, gid)) = owner {
        use std::os::unix::process::CommandExt;
        cmd.uid(uid).gid(gid);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
    let tail = || log_tail(&dir.join("safepoint-restore.log"));
    if !out.status.success() {
        bail!(
            "the restored server did not start ({}): {}",
            out.status,
            tail()
        );
    }
    let controldata = program(major, "pg_controldata");
    loop {
        let out = Command::new(&controldata).arg(dir).output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        if text.contains("in production") {
            return Ok(Started { port, log });
        }
        if !dir.join("postmaster.pid").exists() {
            bail!("recovery failed and the server stopped: {}", tail());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `<LAYOUT_ROOT>/<major>/bin/<name>` when installed, else `name` on PATH
/// (server programs must match the data directory's major version).
fn program(major: Option<u32>, name: &str) -> PathBuf {
    major
        .map(|m| {
            Path::new("/usr/lib/postgresql")
                .join(m.to_string())
                .join("bin")
                .join(name)
        })
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// As root: the uid/gid of the data directory's parent, which then owns the
/// data directory too.
fn server_user(dir: &Path) -> anyhow::Result<Option<(u32, u32)>> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let parent = dir.parent().context("--to-dir has no parent directory")?;
    let meta = std::fs::metadata(parent)?;
    if meta.uid() == 0 {
        bail!(
            "PostgreSQL does not run as root: make the parent of --to-dir ({}) owned by the user the restored server should run as (e.g. `chown postgres: {}`), or start it yourself without --start",
            parent.display(),
            parent.display()
        );
    }
    chown_tree(dir, meta.uid(), meta.gid())?;
    Ok(Some((meta.uid(), meta.gid())))
}

fn chown_tree(path: &Path, uid: u32, gid: u32) -> anyhow::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .with_context(|| format!("cannot hand {} to uid {uid}", path.display()))?;
    if std::fs::symlink_metadata(path)?.is_dir() {
        for entry in std::fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

fn report(
    output: Output,
    backup: &str,
    base: &BaseBackup,
    dir: &Path,
    target: Option<DateTime<Utc>>,
    started: Option<Started>,
) -> anyhow::Result<u8> {
    let target_text = target.map_or("the end of the archive".to_string(), |t| t.to_rfc3339());
    if output == Output::Json {
        let value = serde_json::json!({
            "backup": backup,
            "baseBackupFinished": base.stop_time.to_rfc3339(),
            "dataDir": dir.display().to_string(),
            "target": target.map(|t| t.to_rfc3339()),
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
    fn quoting_survives_shell_and_config() {
        assert_eq!(shell_quote("/a b/it's"), r"'/a b/it'\''s'");
        assert_eq!(conf_quote("it's"), "'it''s'");
    }
}
