//! `restore --to-dir --start`: the restored cluster started on a free
//! loopback port (as the owner of the data directory's parent when run as
//! root: PostgreSQL refuses root), waited for until recovery ended and the
//! server was promoted; the end of its log when it did not.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};

/// A restored server left running.
pub(super) struct Started {
    pub port: u16,
    pub log: PathBuf,
}

/// Starts the restored cluster on a free loopback port (as the owner of the
/// data directory's parent when run as root: PostgreSQL refuses root) and
/// waits until recovery ended and the server was promoted.
pub(super) async fn start(dir: &Path, major: Option<u32>) -> anyhow::Result<Started> {
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

pub(super) fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

/// `'text'` for sh, with embedded quotes closed and escaped.
pub(super) fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}
