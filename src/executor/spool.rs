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

/// Where the restored server runs, as far as its address tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerAt {
    /// Loopback or a Unix socket: its backends share this machine's cores.
    ThisMachine,
    Elsewhere,
}

impl Spool {
    /// How many `pg_restore` jobs to run from a spooled file, or `None` to
    /// stream into one transaction. `asked` is `restore --jobs` (1: always
    /// stream); else the jobs are the cores of this machine, half of them
    /// when the server runs here too (each job is a pg_restore worker here
    /// and a busy backend there), and they run only when the rows are
    /// spread over tables: when one table holds more than half of them (one
    /// big table; pgbench, whose accounts table holds 99 %) it loads alone
    /// while the other jobs idle, and the spool's extra write of the whole
    /// dump makes the restore slower (docs/performance.md). Either way the
    /// dump plus headroom must fit in `dir`'s file system (a restore never
    /// fills the daemon's disk).
    pub fn jobs(&self, asked: Option<usize>, server: ServerAt) -> Option<usize> {
        let jobs = match asked {
            Some(n) => n.min(MAX_JOBS),
            None => {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                let total: u64 = self.rows.iter().sum();
                let largest = self.rows.iter().copied().max().unwrap_or(0);
                if largest.saturating_mul(2) > total {
                    return None;
                }
                match server {
                    ServerAt::ThisMachine => cores / 2,
                    ServerAt::Elsewhere => cores,
                }
            }
        };
        let jobs = jobs.min(self.rows.len());
        if jobs < 2 {
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
    fn jobs_follow_the_cores_the_spread_of_rows_and_the_space() {
        let dir = tempfile::tempdir().unwrap();
        let spool = |raw_size, rows: &[u64]| Spool {
            dir: dir.path().join("tmp"),
            raw_size,
            rows: rows.to_vec(),
        };
        let (here, away) = (ServerAt::ThisMachine, ServerAt::Elsewhere);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let expect = |n: usize| (n.min(MAX_JOBS) >= 2).then_some(n.min(MAX_JOBS));
        assert_eq!(spool(1, &[1000]).jobs(None, away), None);
        assert_eq!(spool(1, &[1000; 100]).jobs(None, away), expect(cores));
        // A server on this machine gets half the cores.
        assert_eq!(spool(1, &[1000; 100]).jobs(None, here), expect(cores / 2));
        // One table holds most rows (pgbench): stream.
        assert_eq!(spool(1, &[2_000_000, 200, 20, 0]).jobs(None, away), None);
        // Asked for: as many as asked (up to the tables and MAX_JOBS),
        // whatever the spread; 1 streams.
        assert_eq!(spool(1, &[2_000_000, 200, 20]).jobs(Some(2), here), Some(2));
        assert_eq!(spool(1, &[1000; 3]).jobs(Some(64), here), Some(3));
        assert_eq!(spool(1, &[1000; 100]).jobs(Some(64), here), Some(MAX_JOBS));
        assert_eq!(spool(1, &[1000; 100]).jobs(Some(1), away), None);
        // More than the file system has: stream.
        assert_eq!(spool(u64::MAX / 4, &[1000; 100]).jobs(Some(4), away), None);
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
