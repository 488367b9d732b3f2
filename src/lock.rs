//! IO: one backup per policy at a time, across processes (daemon and CLI),
//! with an advisory file lock per policy under `<data-dir>/locks/`. The OS
//! releases the lock when a process dies, which is how a crashed run is told
//! apart from a running one.
//!
//! Inside one process (the daemon runs scheduled and requested work in two
//! lanes) every held lock is also registered here, so a backup about to start
//! can tell a short probe (observe checking whether a run died) from another
//! backup, and a waiter is woken the moment the holder lets go.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use tokio::sync::watch;

/// Locks held by this process: lock file -> holder.
static HELD: LazyLock<Mutex<BTreeMap<PathBuf, Holder>>> = LazyLock::new(Default::default);

struct Holder {
    backup: bool,
    /// Dropped on release: `changed()` of every receiver then returns.
    released: watch::Sender<()>,
}

/// Held while a policy's backup runs (or while observe probes the policy).
#[derive(Debug)]
pub struct PolicyLock {
    file: File,
    path: PathBuf,
}

impl PolicyLock {
    /// Marks this lock as held by a backup (not a probe).
    pub fn for_backup(self) -> PolicyLock {
        if let Ok(mut held) = HELD.lock()
            && let Some(h) = held.get_mut(&self.path)
        {
            h.backup = true;
        }
        self
    }
}

impl Drop for PolicyLock {
    fn drop(&mut self) {
        // Unlock before waking waiters, so their retry finds the lock free.
        let _ = self.file.unlock();
        if let Ok(mut held) = HELD.lock() {
            held.remove(&self.path);
        }
    }
}

fn path(dir: &Path, policy: &str) -> PathBuf {
    dir.join(format!("{policy}.lock"))
}

/// `Ok(None)` when another process or task holds the lock.
pub fn try_lock(dir: &Path, policy: &str) -> std::io::Result<Option<PolicyLock>> {
    std::fs::create_dir_all(dir)?;
    let path = path(dir, policy);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)?;
    match file.try_lock() {
        Ok(()) => {
            if let Ok(mut held) = HELD.lock() {
                let (released, _) = watch::channel(());
                held.insert(
                    path.clone(),
                    Holder {
                        backup: false,
                        released,
                    },
                );
            }
            Ok(Some(PolicyLock { file, path }))
        }
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// The lock for a backup: waits out a probe of this process (it holds the
/// lock for a moment), `Ok(None)` when a backup holds it.
pub async fn lock_for_backup(dir: &Path, policy: &str) -> std::io::Result<Option<PolicyLock>> {
    loop {
        if let Some(lock) = try_lock(dir, policy)? {
            return Ok(Some(lock.for_backup()));
        }
        match holder(dir, policy) {
            Some((false, mut released)) => {
                let _ = released.changed().await;
            }
            _ => return Ok(None),
        }
    }
}

/// Whether this process holds the lock: `(held by a backup, released)`.
fn holder(dir: &Path, policy: &str) -> Option<(bool, watch::Receiver<()>)> {
    let held = HELD.lock().ok()?;
    held.get(&path(dir, policy))
        .map(|h| (h.backup, h.released.subscribe()))
}

/// True while a backup of `policy` runs (in this process or another).
pub fn busy(dir: &Path, policy: &str) -> std::io::Result<bool> {
    if let Some((backup, _)) = holder(dir, policy) {
        return Ok(backup);
    }
    Ok(try_lock(dir, policy)?.is_none())
}

/// Returns once no backup of `policy` runs: at once when this process holds
/// the lock (woken on release), polling every `poll` when another process does.
pub async fn released(dir: &Path, policy: &str, poll: Duration) -> std::io::Result<()> {
    loop {
        match holder(dir, policy) {
            Some((_, mut rx)) => {
                let _ = rx.changed().await;
            }
            None => {
                if try_lock(dir, policy)?.is_some() {
                    return Ok(());
                }
                tokio::time::sleep(poll).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_probe_is_waited_out_a_backup_is_not_and_release_wakes_waiters() {
        let dir = tempfile::tempdir().unwrap();
        let probe = try_lock(dir.path(), "p").unwrap().unwrap();
        assert!(!busy(dir.path(), "p").unwrap(), "a probe is no backup");
        let d = dir.path().to_path_buf();
        let waiter = tokio::spawn(async move { lock_for_backup(&d, "p").await });
        tokio::task::yield_now().await;
        drop(probe);
        let backup = waiter
            .await
            .unwrap()
            .unwrap()
            .expect("lock after the probe");
        assert!(busy(dir.path(), "p").unwrap());
        assert!(lock_for_backup(dir.path(), "p").await.unwrap().is_none());
        let d = dir.path().to_path_buf();
        let wait = tokio::spawn(async move { released(&d, "p", Duration::from_secs(3600)).await });
        tokio::task::yield_now().await;
        drop(backup);
        wait.await.unwrap().unwrap();
        assert!(!busy(dir.path(), "p").unwrap());
    }
}
