//! IO: one backup per policy at a time, across processes (daemon and CLI),
//! with an advisory file lock per policy under `<data-dir>/locks/`. The OS
//! releases the lock when a process dies, which is how a crashed run is told
//! apart from a running one.

use std::fs::File;
use std::path::Path;

/// Held while a policy's backup runs.
#[derive(Debug)]
pub struct PolicyLock {
    _file: File,
}

/// `Ok(None)` when another process or task holds the lock.
pub fn try_lock(dir: &Path, policy: &str) -> std::io::Result<Option<PolicyLock>> {
    std::fs::create_dir_all(dir)?;
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(format!("{policy}.lock")))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(PolicyLock { _file: file })),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}
