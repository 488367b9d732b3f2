//! IO: defence in depth at execution time. Validation already rejects
//! policies that name the daemon's own files; this guard checks again where
//! the bytes are read — after following symlinks (canonical paths) and by
//! file identity (device + inode, so a hard link or bind mount of a secret
//! inside a source directory is refused too).

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::ExecError;
use crate::policy::permissions::Protected;

#[derive(Debug, Clone, Default)]
pub struct PathGuard {
    entries: Vec<Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    /// Canonical when the path exists, else as configured.
    path: PathBuf,
    /// Device and inode of the path when it exists.
    id: Option<(u64, u64)>,
    what: String,
}

impl PathGuard {
    /// Resolves the protected paths as they are now on disk.
    pub fn new(protected: &[Protected]) -> PathGuard {
        let entries = protected
            .iter()
            .map(|p| {
                let path = std::fs::canonicalize(&p.path).unwrap_or_else(|_| p.path.clone());
                let id = std::fs::metadata(&path).ok().map(|m| (m.dev(), m.ino()));
                Entry {
                    path,
                    id,
                    what: p.what.clone(),
                }
            })
            .collect();
        PathGuard { entries }
    }

    /// A file that is about to be read (`sqlite` source, secret file): not a
    /// protected file, not inside a protected directory.
    pub fn check_file(&self, path: &Path) -> Result<(), ExecError> {
        let Ok(real) = std::fs::canonicalize(path) else {
            return Ok(()); // missing: the reader reports it
        };
        let id = std::fs::metadata(&real).ok().map(|m| (m.dev(), m.ino()));
        match self
            .entries
            .iter()
            .find(|e| real.starts_with(&e.path) || (id.is_some() && e.id == id))
        {
            Some(e) => Err(forbidden(path, e)),
            None => Ok(()),
        }
    }

    /// A directory tree that is about to be read or written (`directory`
    /// source, drill scratch): neither inside nor containing a protected path.
    pub fn check_tree(&self, root: &Path) -> Result<(), ExecError> {
        let real = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
        match self
            .entries
            .iter()
            .find(|e| real.starts_with(&e.path) || e.path.starts_with(&real))
        {
            Some(e) => Err(forbidden(root, e)),
            None => Ok(()),
        }
    }

    /// One entry met while walking a tree (not followed if a symlink).
    pub fn check_entry(&self, path: &Path, meta: &Metadata) -> Result<(), ExecError> {
        let id = Some((meta.dev(), meta.ino()));
        match self.entries.iter().find(|e| e.id == id) {
            Some(e) => Err(forbidden(path, e)),
            None => Ok(()),
        }
    }
}

fn forbidden(path: &Path, e: &Entry) -> ExecError {
    ExecError::Forbidden {
        path: path.to_path_buf(),
        what: e.what.clone(),
        protected: e.path.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_and_hard_links_to_protected_files_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let secret = tmp.path().join("tokens");
        std::fs::write(&secret, "name token-of-sixteen-chars\n").unwrap();
        let guard = PathGuard::new(&[Protected {
            path: secret.clone(),
            what: "API tokens file".into(),
        }]);
        let link = tmp.path().join("innocent.db");
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        let err = guard.check_file(&link).unwrap_err().to_string();
        assert!(err.contains("API tokens file"), "{err}");
        let hard = tmp.path().join("hard");
        std::fs::hard_link(&secret, &hard).unwrap();
        let meta = std::fs::symlink_metadata(&hard).unwrap();
        assert!(guard.check_entry(&hard, &meta).is_err());
        assert!(guard.check_file(&hard).is_err());
        assert!(guard.check_tree(tmp.path()).is_err(), "contains the secret");
        let other = tmp.path().join("other");
        std::fs::create_dir(&other).unwrap();
        assert!(guard.check_tree(&other).is_ok());
        assert!(guard.check_file(&other.join("missing")).is_ok());
    }
}
