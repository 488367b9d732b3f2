//! Engine: the point-in-time restore of a PITR policy, used by `safepoint
//! restore --to-dir` and by PITR drills. It picks the newest verified base
//! backup that was finished before the target and whose first WAL segment
//! is archived, extracts it through the one restore pipeline
//! (`engine::restore`), and configures recovery: `recovery.signal`,
//! `restore_command` calling `safepoint wal-fetch` with a recovery file
//! naming the storage (no catalog or repository needed while PostgreSQL
//! recovers), the target (`recovery_target_time`, or `recovery_target_name`
//! for the restore point of a deploy gate) and `recovery_target_action =
//! 'promote'`. Starting the restored server is `pitr_start`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::pitr_start::{self, Started, shell_quote};
use crate::catalog::BackupRow;
use crate::engine::context::Context;
use crate::engine::restore::{self, Restore};
use crate::executor::pitr_base::{BaseBackup, format_lsn};
use crate::executor::{RestoreOptions, RestoreTarget};
use crate::model::Health;
use crate::policy::{DesiredState, StorageSpec};
use crate::storage::crypt::Identities;
use crate::storage::{Storage, wal};

/// File written into the restored data directory for `wal-fetch`.
pub const RECOVERY_FILE: &str = "safepoint.recovery.json";

/// Where recovery stops.
#[derive(Debug, Clone, PartialEq)]
pub enum Goal {
    /// The end of the archive.
    Latest,
    /// Every transaction committed at or before it.
    Time(DateTime<Utc>),
    /// A named restore point (the deploy gate's), at its WAL position.
    Point { name: String, lsn: u64 },
}

impl Goal {
    pub fn describe(&self) -> String {
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

/// The base backup a restore to a goal starts from, and where it is stored.
pub struct Base {
    pub row: BackupRow,
    pub base: BaseBackup,
    pub storage: Arc<dyn Storage>,
    pub spec: StorageSpec,
}

impl Base {
    /// The server's major version the backup was taken from.
    pub fn major(&self) -> Option<u32> {
        self.row
            .manifest
            .tools
            .get("postgres")
            .and_then(|v| crate::executor::postgres::client_major(v))
    }
}

/// The base backup of PITR policy `policy` to restore for `goal`.
pub async fn base_for(
    ctx: &Context,
    desired: &DesiredState,
    policy: &str,
    goal: &Goal,
) -> Result<Base, String> {
    let p = desired
        .policies
        .get(policy)
        .ok_or_else(|| format!("no policy {policy} in the applied revision"))?;
    if p.source.pitr().is_none() {
        return Err(format!(
            "policy {policy} has no `source.pitr`: restore one of its backups with --to (docs/pitr.md)"
        ));
    }
    let spec = desired
        .storages
        .get(&p.storage)
        .ok_or_else(|| format!("storage {} of policy {policy} is not declared", p.storage))?;
    let storage = restore::open_storage(ctx, spec);
    let (st, name) = (storage.clone(), policy.to_string());
    let archived = tokio::task::spawn_blocking(move || wal::list(&*st, &name))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot list the WAL archive of {policy}: {e}"))?;
    let rows = ctx.catalog.backups().await.map_err(|e| e.to_string())?;
    let (row, base) = choose(&rows, policy, goal, &archived)?;
    Ok(Base {
        row: row.clone(),
        base,
        storage,
        spec: spec.clone(),
    })
}

/// What `restore` did.
pub struct Outcome {
    pub base: Base,
    pub dir: PathBuf,
    pub goal: Goal,
    pub started: Option<Started>,
}

/// `restore --policy P --to-time/--before-deploy/--latest --to-dir DIR
/// [--start]`: the base backup extracted into `dir` (audited), recovery
/// configured, and with `start` the server started and promoted.
pub async fn restore(
    ctx: &Context,
    desired: &DesiredState,
    policy: &str,
    goal: Goal,
    dir: &Path,
    (start, force): (bool, bool),
) -> Result<Outcome, String> {
    let dir = absolute(dir)?;
    let base = base_for(ctx, desired, policy, &goal).await?;
    let options = RestoreOptions {
        force,
        ..RestoreOptions::default()
    };
    let target = RestoreTarget::Path(dir.clone());
    let audit = format!(
        "restored base backup {}/{} into {} for recovery to {} by {}",
        base.row.manifest.policy,
        base.row.manifest.id,
        dir.display(),
        goal.describe(),
        ctx.actor
    );
    let job = Restore {
        manifest: &base.row.manifest,
        storage: base.storage.clone(),
        target: &target,
        options: &options,
        create_dir: None,
        wrap: None,
    };
    restore::run(ctx, job, &audit)
        .await
        .map_err(|e| e.to_string())?;
    configure(ctx, &dir, policy, &base.spec, &goal)?;
    let started = if start {
        let owner = pitr_start::parent_owner(&dir)?;
        Some(pitr_start::start(&dir, &socket_dir(&dir), base.major(), owner).await?)
    } else {
        None
    };
    Ok(Outcome {
        base,
        dir,
        goal,
        started,
    })
}

/// The newest verified base backup of `policy` finished before `goal`
/// whose first WAL segment is in the archive.
fn choose<'a>(
    rows: &'a [BackupRow],
    policy: &str,
    goal: &Goal,
    archived: &[wal::WalObject],
) -> Result<(&'a BackupRow, BaseBackup), String> {
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
    if let Some((r, b)) = best {
        return Ok((*r, b.clone()));
    }
    if bases.is_empty() {
        return Err(format!(
            "policy {policy} has no verified base backup yet; take one with `safepoint backup {policy}`"
        ));
    }
    let oldest = bases
        .iter()
        .filter(|(_, b)| usable(b))
        .map(|(_, b)| b.stop_time)
        .min();
    Err(match oldest {
        Some(t) => format!(
            "no base backup of {policy} was finished before {}; the oldest usable one was finished at {}: pick a later --to-time",
            goal.describe(),
            t.to_rfc3339()
        ),
        None => format!(
            "the WAL archive of {policy} holds no base backup's first segment (the backups were taken before archiving started, or the archive is behind): take a new base backup with `safepoint backup {policy}`"
        ),
    })
}

fn absolute(dir: &Path) -> Result<PathBuf, String> {
    Ok(if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| format!("cannot read the current directory: {e}"))?
            .join(dir)
    })
}

/// Writes the recovery file, `recovery.signal` and the recovery settings
/// (appended to `postgresql.auto.conf`, which wins over `postgresql.conf`)
/// into the extracted data directory `dir`.
pub fn configure(
    ctx: &Context,
    dir: &Path,
    policy: &str,
    spec: &StorageSpec,
    goal: &Goal,
) -> Result<(), String> {
    let recovery = Recovery {
        policy: policy.to_string(),
        storage: spec.clone(),
        base_dir: ctx.settings.base_dir.clone(),
        age_identity_file: ctx.settings.age_identity_file.clone(),
    };
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    let json = serde_json::to_vec_pretty(&recovery).map_err(|e| e.to_string())?;
    write(RECOVERY_FILE, &json)?;
    // A cluster whose configuration lives outside its data directory
    // (Debian's /etc/postgresql) needs one to start.
    for conf in ["postgresql.conf", "pg_ident.conf"] {
        if !dir.join(conf).exists() {
            write(conf, b"")?;
        }
    }
    if !dir.join("pg_hba.conf").exists() {
        write("pg_hba.conf", b"local all all peer\n")?;
    }
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot locate the safepoint binary: {e}"))?;
    let file = dir.join(RECOVERY_FILE);
    let fetch = format!(
        "{} wal-fetch --recovery {} %f %p; rc=$?; [ $rc -le 1 ] || exit 255; exit $rc",
        shell_quote(&exe.to_string_lossy()),
        shell_quote(&file.to_string_lossy())
    );
    let mut conf = format!(
        "\n# safepoint restore: point-in-time recovery of policy {policy}\nrestore_command = {}\n",
        conf_quote(&fetch)
    );
    conf.push_str(&goal.settings());
    let mut text = std::fs::read_to_string(dir.join("postgresql.auto.conf")).unwrap_or_default();
    text.push_str(&conf);
    write("postgresql.auto.conf", text.as_bytes())?;
    write("recovery.signal", b"")
}

/// `'text'` for postgresql.conf (quotes doubled).
fn conf_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `safepoint wal-fetch --recovery FILE WAL PATH`: 0 written, 1 not archived.
pub async fn wal_fetch(recovery: &Path, wal_file: &str, path: &Path) -> Result<u8, String> {
    let text = std::fs::read(recovery)
        .map_err(|e| format!("cannot read the recovery file {}: {e}", recovery.display()))?;
    let r: Recovery = serde_json::from_slice(&text).map_err(|e| {
        format!(
            "{} is not a safepoint recovery file: {e}",
            recovery.display()
        )
    })?;
    // Backup history files and the like are never archived: "not there".
    if !wal::is_wal_file(wal_file) {
        return Ok(1);
    }
    let identities = match &r.age_identity_file {
        Some(f) if !r.storage.age_recipients.is_empty() => {
            Some(Identities::from_file(f).map_err(|e| e.to_string())?)
        }
        _ => None,
    };
    let (wal_file, path) = (wal_file.to_string(), path.to_path_buf());
    tokio::task::spawn_blocking(move || {
        let st = crate::storage::open(&r.storage, &r.base_dir);
        let fetched = wal::fetch(&*st, &r.policy, &wal_file, identities.as_ref())
            .map_err(|e| format!("cannot fetch {wal_file}: {e}"))?;
        let Some(bytes) = fetched else {
            return Ok(1);
        };
        let tmp = path.with_extension("safepoint-tmp");
        std::fs::write(&tmp, bytes).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &path)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(0)
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Where the started server puts its Unix socket: beside its data, unless
/// `<dir>/.s.PGSQL.<port>` is longer than a socket address holds (107 bytes
/// on Linux; the server would refuse to start): then none, and clients use
/// 127.0.0.1:<port> as `restore --start` prints.
fn socket_dir(dir: &Path) -> PathBuf {
    const SOCKET_PATH_MAX: usize = 107;
    let socket = dir.join(".s.PGSQL.65535");
    if socket.as_os_str().len() <= SOCKET_PATH_MAX {
        dir.to_path_buf()
    } else {
        PathBuf::new()
    }
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
    fn a_socket_path_too_long_for_an_address_means_tcp_only() {
        let short = Path::new("/tmp/restored");
        assert_eq!(socket_dir(short), short);
        let long = Path::new("/tmp").join("d".repeat(100));
        assert_eq!(socket_dir(&long), PathBuf::new());
        // What the server is then started with: no Unix socket at all.
        assert_eq!(shell_quote(&socket_dir(&long).to_string_lossy()), "''");
    }

    #[test]
    fn quoting_survives_shell_and_config() {
        assert_eq!(shell_quote("/a b/it's"), r"'/a b/it'\''s'");
        assert_eq!(conf_quote("it's"), "'it''s'");
    }
}
