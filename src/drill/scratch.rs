//! Engine: a drill's scratch target — the generated name, where it lives
//! (a directory under the drill target, or a database on its server), how a
//! backup is restored into it, and its removal.

use std::path::PathBuf;

use chrono::Utc;

use crate::engine::context::Context;
use crate::executor::{self, RestoreTarget};
use crate::policy::{DrillSpec, DrillTarget};
use crate::storage;

/// Where a drill's scratch copy lives.
pub(super) enum Scratch {
    Dir(PathBuf),
    /// A PITR drill's scratch cluster: `<data dir>/drills/<name>`, 0700, its
    /// data directory in `data/` (a server may run there until removed).
    Cluster(PathBuf),
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
    pub(super) fn describe(&self) -> String {
        match self {
            Scratch::Dir(p) | Scratch::Cluster(p) => p.display().to_string(),
            Scratch::Db { kind, url, .. } => format!("{kind} {}", crate::audit::redact(url)),
        }
    }

    pub(super) async fn remove(&self) -> Result<(), String> {
        match self {
            Scratch::Dir(p) => match std::fs::remove_dir_all(p) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(format!("cannot remove scratch {}: {e}", p.display())),
            },
            Scratch::Cluster(p) => {
                let p = p.clone();
                tokio::task::spawn_blocking(move || remove_cluster(&p))
                    .await
                    .map_err(|e| e.to_string())?
            }
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

/// Stops the server of a scratch cluster if one runs there, then removes
/// the scratch directory. Blocking.
pub(super) fn remove_cluster(dir: &std::path::Path) -> Result<(), String> {
    let stopped = crate::engine::pitr_start::stop(&dir.join("data"));
    let socket = socket_dir(dir);
    if let Err(e) = std::fs::remove_dir_all(&socket)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        return Err(format!("cannot remove {}: {e}", socket.display()));
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => stopped,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => stopped,
        Err(e) => Err(format!("cannot remove scratch {}: {e}", dir.display())),
    }
}

/// Where a scratch cluster's Unix socket lives: a short directory of its
/// own in the system's temp dir (a socket path is limited to 107 bytes),
/// derived from the scratch path, so removing a dead drill's finds it.
pub(super) fn socket_dir(scratch: &std::path::Path) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let hash = blake3::hash(scratch.as_os_str().as_bytes()).to_hex();
    std::env::temp_dir().join(format!("safepoint-drill-{}", &hash[..16]))
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

pub(super) fn scratch_for(ctx: &Context, spec: &DrillSpec, name: &str) -> Result<Scratch, String> {
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
        DrillTarget::PitrCluster => {
            Scratch::Cluster(ctx.settings.data_dir.join("drills").join(name))
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

/// Where a drill restores into, and how (always replacing the scratch).
pub(super) fn restore_target(
    manifest: &storage::Manifest,
    scratch: &Scratch,
) -> (RestoreTarget, executor::RestoreOptions) {
    match scratch {
        Scratch::Cluster(dir) => (
            RestoreTarget::Path(dir.join("data")),
            executor::RestoreOptions {
                force: true,
                ..Default::default()
            },
        ),
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
                // A drill reads every restored row back.
                recount: true,
                ..Default::default()
            },
        ),
    }
}
