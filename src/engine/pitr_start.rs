//! Engine: a restored PostgreSQL data directory started on a free loopback
//! port (as a non-root user when safepoint runs as root: PostgreSQL refuses
//! root), waited for until recovery ended and the server was promoted, the
//! line of its log saying where recovery stopped, and stopping it again.
//! Used by `restore --to-dir --start` and by PITR drills.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The server's log, next to its data.
pub const LOG_FILE: &str = "safepoint-restore.log";

/// A restored server left running.
#[derive(Debug, Clone)]
pub struct Started {
    pub port: u16,
    pub log: PathBuf,
    /// The uid/gid it runs as (`None`: as this process).
    pub owner: Option<(u32, u32)>,
    pub major: Option<u32>,
}

/// As root: the uid/gid of `dir`'s parent, which then owns `dir` too
/// (`restore --to-dir DIR --start`: the operator chose the user).
pub fn parent_owner(dir: &Path) -> Result<Option<(u32, u32)>, String> {
    use std::os::unix::fs::MetadataExt;
    if !is_root() {
        return Ok(None);
    }
    let parent = dir.parent().ok_or("--to-dir has no parent directory")?;
    let meta =
        std::fs::metadata(parent).map_err(|e| format!("cannot read {}: {e}", parent.display()))?;
    if meta.uid() == 0 {
        return Err(format!(
            "PostgreSQL does not run as root: make the parent of --to-dir ({}) owned by the user the restored server should run as (e.g. `chown postgres: {}`), or start it yourself without --start",
            parent.display(),
            parent.display()
        ));
    }
    Ok(Some((meta.uid(), meta.gid())))
}

/// As root: the uid/gid of the system user `name` (a drill's scratch
/// cluster runs as `postgres`); `None` when not root.
pub fn system_user(name: &str) -> Result<Option<(u32, u32)>, String> {
    if !is_root() {
        return Ok(None);
    }
    let c = std::ffi::CString::new(name).map_err(|e| e.to_string())?;
    // SAFETY: getpwnam reads a NUL-terminated name; the returned record is
    // read at once, before any other passwd call on this thread.
    let pw = unsafe { libc::getpwnam(c.as_ptr()) };
    if pw.is_null() {
        return Err(format!(
            "PostgreSQL does not run as root and there is no `{name}` user to run the scratch cluster as: create it (the PostgreSQL packages do) or run safepoint as a non-root user"
        ));
    }
    // SAFETY: non-null, points to a passwd record owned by libc.
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Ok(Some((uid, gid)))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Hands `path` and everything under it to `owner`.
pub fn chown_tree(path: &Path, (uid, gid): (u32, u32)) -> Result<(), String> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .map_err(|e| format!("cannot hand {} to uid {uid}: {e}", path.display()))?;
    let meta = std::fs::symlink_metadata(path).map_err(|e| e.to_string())?;
    if meta.is_dir() {
        let entries =
            std::fs::read_dir(path).map_err(|e| format!("cannot list {}: {e}", path.display()))?;
        for entry in entries {
            chown_tree(&entry.map_err(|e| e.to_string())?.path(), (uid, gid))?;
        }
    }
    Ok(())
}

/// Starts the restored cluster in `dir` on a free loopback port as `owner`
/// (its files are handed to it first), its Unix socket in `socket_dir`, and
/// waits until recovery ended and the server was promoted.
pub async fn start(
    dir: &Path,
    socket_dir: &Path,
    major: Option<u32>,
    owner: Option<(u32, u32)>,
) -> Result<Started, String> {
    if let Some(o) = owner {
        chown_tree(dir, o)?;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free loopback port: {e}"))?
        .port();
    let log = dir.join(LOG_FILE);
    let mut cmd = Command::new(program(major, "pg_ctl"));
    cmd.arg("-D")
        .arg(dir)
        .arg("-l")
        .arg(&log)
        .arg("-o")
        .arg(format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={}",
            shell_quote(&socket_dir.to_string_lossy())
        ))
        .args(["-w", "-t", "3600", "start"])
        .current_dir(dir);
    as_owner(&mut cmd, owner);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot run pg_ctl: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "the restored server did not start ({}): {}",
            out.status,
            log_tail(&log)
        ));
    }
    let started = Started {
        port,
        log,
        owner,
        major,
    };
    wait_promoted(dir, &started).await?;
    Ok(started)
}

/// Polls `pg_controldata` until the cluster is in production.
async fn wait_promoted(dir: &Path, s: &Started) -> Result<(), String> {
    let controldata = program(s.major, "pg_controldata");
    loop {
        let out = Command::new(&controldata)
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run pg_controldata: {e}"))?;
        if String::from_utf8_lossy(&out.stdout).contains("in production") {
            return Ok(());
        }
        if !dir.join("postmaster.pid").exists() {
            return Err(format!(
                "recovery failed and the server stopped: {}",
                log_tail(&s.log)
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Stops the server of `dir` if one runs (`pg_ctl stop -m fast`, then
/// `immediate`), as the owner of the data directory. Blocking.
pub fn stop(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    if !dir.join("postmaster.pid").exists() {
        return Ok(());
    }
    let major = std::fs::read_to_string(dir.join("PG_VERSION"))
        .ok()
        .and_then(|v| v.trim().parse().ok());
    let owner = std::fs::metadata(dir)
        .ok()
        .filter(|_| is_root())
        .map(|m| (m.uid(), m.gid()));
    for mode in ["fast", "immediate"] {
        let mut cmd = Command::new(program(major, "pg_ctl"));
        cmd.arg("-D")
            .arg(dir)
            .args(["-m", mode, "-w", "-t", "60", "stop"])
            .current_dir(dir);
        as_owner(&mut cmd, owner);
        if cmd.output().is_ok_and(|o| o.status.success()) {
            return Ok(());
        }
    }
    Err(format!(
        "cannot stop the server of {}: stop it with `pg_ctl -D {} -m immediate stop`",
        dir.display(),
        dir.display()
    ))
}

fn as_owner(cmd: &mut Command, owner: Option<(u32, u32)>) {
    if let Some((uid, gid)) = owner {
        use std::os::unix::process::CommandExt;
        cmd.uid(uid).gid(gid);
    }
}

/// The line of the server's log saying where recovery stopped
/// (`recovery stopping before commit of transaction …, time …`), if any.
pub fn stop_line(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .find(|l| l.contains("recovery stopping"))
        .map(|l| match l.find("recovery stopping") {
            Some(i) => l[i..].to_string(),
            None => l.to_string(),
        })
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

/// The last lines of a server log.
pub fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

/// `'text'` for sh, with embedded quotes closed and escaped.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}
