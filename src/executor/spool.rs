//! IO: local scratch space for a parallel database restore. `pg_restore -j`
//! needs a seekable dump file, not a stream: the decompressed dump is
//! spooled to a file under the data directory, restored from there with
//! several jobs, and the file is removed whatever happens (`SpoolFile`'s
//! `Drop`). Whether to spool is decided from what the manifest says
//! (`raw_size`, the number of tables) and the free space measured here.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::ExecError;

/// Space kept free besides the dump itself (the catalog and other work
/// share the data directory's file system).
const HEADROOM: u64 = 256 * 1024 * 1024;

/// At most this many restore jobs, whatever the machine has.
const MAX_JOBS: usize = 8;

/// Where and what a restore may spool: filled by the restore pipeline from
/// the backup's manifest and the data directory.
#[derive(Debug, Clone)]
pub struct Spool {
    /// Scratch directory (created 0700 when used).
    pub dir: PathBuf,
    /// Bytes the source produced (the decompressed dump).
    pub raw_size: u64,
    /// Row counts per table in the backup (its manifest's counts).
    pub rows: Vec<u64>,
}

impl Spool {
    /// How many `pg_restore` jobs to run from a spooled file, or `None` to
    /// stream into one transaction. Parallel jobs pay only when the rows are
    /// spread over tables: when one table holds more than half of them
    /// (one big table; pgbench, whose accounts table holds 99 %), it loads
    /// alone while the other jobs idle, and the spool's extra write of the
    /// whole dump makes the restore slower (docs/performance.md). The dump
    /// plus headroom must fit in `dir`'s file system (a restore never fills
    /// the daemon's disk).
    pub fn jobs(&self) -> Option<usize> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let jobs = cores.min(self.rows.len()).min(MAX_JOBS);
        let total: u64 = self.rows.iter().sum();
        let largest = self.rows.iter().copied().max().unwrap_or(0);
        if jobs < 2 || largest.saturating_mul(2) > total {
            return None;
        }
        let needed = self.raw_size + self.raw_size / 10 + HEADROOM;
        let existing = self.dir.ancestors().find(|d| d.exists())?;
        (free_bytes(existing)? >= needed).then_some(jobs)
    }
}

/// Bytes available to this user on the file system holding `dir`.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid NUL-terminated string and `st` a writable
    // statvfs the call fills.
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut st) };
    (rc == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

/// A spooled dump, removed when dropped.
pub struct SpoolFile {
    path: PathBuf,
}

impl SpoolFile {
    /// Copies `input` into a new private file in `dir` (blocking).
    pub fn write(dir: &Path, input: &mut dyn Read) -> Result<SpoolFile, ExecError> {
        let err = |path: &Path, source: io::Error| ExecError::Target {
            path: path.to_path_buf(),
            source,
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| err(dir, e))?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let spooled = SpoolFile {
            path: dir.join(format!("restore-{}-{nanos}.dump", std::process::id())),
        };
        let file: File = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&spooled.path)
            .map_err(|e| err(&spooled.path, e))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        io::copy(input, &mut out)
            .and_then(|_| out.flush())
            .map_err(|e| err(&spooled.path, e))?;
        Ok(spooled)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SpoolFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_table_or_one_core_streams_and_space_is_measured() {
        let dir = tempfile::tempdir().unwrap();
        let spool = |raw_size, rows: &[u64]| Spool {
            dir: dir.path().join("tmp"),
            raw_size,
            rows: rows.to_vec(),
        };
        assert_eq!(spool(1, &[1000]).jobs(), None);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let many = spool(1, &[1000; 100]).jobs();
        if cores >= 2 {
            assert_eq!(many, Some(cores.min(MAX_JOBS)));
        } else {
            assert_eq!(many, None);
        }
        // One table holds most rows (pgbench): stream.
        assert_eq!(spool(1, &[2_000_000, 200, 20, 0]).jobs(), None);
        // More than the file system has: stream.
        assert_eq!(spool(u64::MAX / 4, &[1000; 100]).jobs(), None);
        assert!(free_bytes(dir.path()).unwrap() > 0);
    }

    #[test]
    fn a_spooled_file_is_private_and_removed_when_dropped() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let scratch = dir.path().join("tmp");
        let spooled = SpoolFile::write(&scratch, &mut &b"dump bytes"[..]).unwrap();
        let path = spooled.path().to_path_buf();
        assert_eq!(fs::read(&path).unwrap(), b"dump bytes");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::metadata(&scratch).unwrap().permissions().mode() & 0o777,
            0o700
        );
        drop(spooled);
        assert!(!path.exists());
    }
}
