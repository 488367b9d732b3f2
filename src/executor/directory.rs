//! IO: directory sources as a tar stream (relative paths, symlinks stored as
//! links, never followed), restored with the tar crate's path-safe unpacking.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::guard::PathGuard;
use super::{ExecError, Produced, blocking};

/// Tars `root`; refuses (through `guard`) any entry that is one of the
/// daemon's own files or directories, also when reached by a hard link.
pub async fn backup<W: Write + Send + 'static>(
    root: PathBuf,
    exclude: Vec<String>,
    guard: std::sync::Arc<PathGuard>,
    out: W,
) -> Result<(W, Produced), ExecError> {
    blocking(move || backup_blocking(&root, &exclude, &guard, out)).await
}

fn backup_blocking<W: Write>(
    root: &Path,
    exclude: &[String],
    guard: &PathGuard,
    out: W,
) -> Result<(W, Produced), ExecError> {
    check_root(root)?;
    let mut archive = Archive {
        // Patterns that do not compile were reported at validation.
        exclude: exclude
            .iter()
            .filter_map(|p| glob::Pattern::new(p).ok())
            .collect(),
        guard,
        tar: tar::Builder::new(out),
        files: 0,
        bytes: 0,
    };
    archive.tar.follow_symlinks(false);
    archive.tar.mode(tar::HeaderMode::Complete);
    // Depth first, each directory's entries in name order.
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for entry in sorted_entries(&root.join(&rel))? {
            if let Some(dir) = archive.append(&rel, &entry)? {
                stack.push(dir);
            }
        }
    }
    let (files, bytes) = (archive.files, archive.bytes);
    let out = archive.tar.into_inner().map_err(ExecError::from_write)?;
    let mut produced = Produced::default();
    produced.counts.insert("files".into(), files);
    produced.counts.insert("bytes".into(), bytes);
    produced
        .tools
        .insert("tar".into(), "tar crate 0.4 (ustar/gnu)".into());
    Ok((out, produced))
}

/// `root` exists and is a directory.
fn check_root(root: &Path) -> Result<(), ExecError> {
    let meta = fs::metadata(root).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ExecError::SourceMissing {
            path: root.to_path_buf(),
            base: std::env::current_dir().unwrap_or_default(),
        },
        _ => ExecError::SourceUnreadable {
            path: root.to_path_buf(),
            source: e,
        },
    })?;
    if !meta.is_dir() {
        return Err(ExecError::SourceUnreadable {
            path: root.to_path_buf(),
            source: std::io::Error::other("not a directory"),
        });
    }
    Ok(())
}

/// The entries of `dir`, sorted by name (the archive is reproducible).
fn sorted_entries(dir: &Path) -> Result<Vec<fs::DirEntry>, ExecError> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .and_then(|rd| rd.collect::<Result<Vec<_>, _>>())
        .map_err(|source| ExecError::SourceUnreadable {
            path: dir.to_path_buf(),
            source,
        })?;
    entries.sort_by_key(|e| e.file_name());
    Ok(entries)
}

/// The tar stream being written, and what went into it.
struct Archive<'a, W: Write> {
    exclude: Vec<glob::Pattern>,
    guard: &'a PathGuard,
    tar: tar::Builder<W>,
    files: u64,
    bytes: u64,
}

impl<W: Write> Archive<'_, W> {
    /// Appends `entry` of the directory `rel` (relative to the root) unless
    /// excluded; a directory's relative path is returned for the walk to
    /// descend into. Other entry types (sockets, devices) are skipped.
    fn append(&mut self, rel: &Path, entry: &fs::DirEntry) -> Result<Option<PathBuf>, ExecError> {
        let rel_path = rel.join(entry.file_name());
        if self.exclude.iter().any(|p| p.matches_path(&rel_path)) {
            return Ok(None);
        }
        let path = entry.path();
        let meta = entry
            .metadata()
            .map_err(|source| ExecError::SourceUnreadable {
                path: path.clone(),
                source,
            })?;
        self.guard.check_entry(&path, &meta)?;
        let ft = meta.file_type();
        if ft.is_dir() {
            self.tar
                .append_dir(&rel_path, &path)
                .map_err(ExecError::from_write)?;
            return Ok(Some(rel_path));
        }
        if ft.is_file() {
            self.append_file(&path, &rel_path)?;
        } else if ft.is_symlink() {
            self.tar
                .append_path_with_name(&path, &rel_path)
                .map_err(ExecError::from_write)?;
            self.files += 1;
        }
        Ok(None)
    }

    fn append_file(&mut self, path: &Path, rel_path: &Path) -> Result<(), ExecError> {
        let mut f = fs::File::open(path).map_err(|source| ExecError::SourceUnreadable {
            path: path.to_path_buf(),
            source,
        })?;
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        self.tar
            .append_file(rel_path, &mut f)
            .map_err(ExecError::from_write)?;
        self.files += 1;
        self.bytes += len;
        Ok(())
    }
}

pub async fn restore(
    input: Box<dyn Read + Send>,
    target: PathBuf,
    force: bool,
) -> Result<Produced, ExecError> {
    blocking(move || {
        let err = |source| ExecError::Target {
            path: target.clone(),
            source,
        };
        if target.exists() {
            let non_empty = fs::read_dir(&target).map_err(err)?.next().is_some();
            if non_empty && !force {
                return Err(ExecError::TargetNotEmpty(target.clone()));
            }
        }
        fs::create_dir_all(&target).map_err(err)?;
        let mut archive = tar::Archive::new(input);
        archive.set_preserve_permissions(true);
        archive.set_overwrite(true);
        let (mut files, mut bytes) = (0u64, 0u64);
        for entry in archive.entries().map_err(err)? {
            let mut entry = entry.map_err(err)?;
            if entry.header().entry_type().is_file() {
                files += 1;
                bytes += entry.header().size().unwrap_or(0);
            } else if entry.header().entry_type().is_symlink() {
                files += 1;
            }
            entry.unpack_in(&target).map_err(err)?;
        }
        let mut produced = Produced::default();
        produced.counts.insert("files".into(), files);
        produced.counts.insert("bytes".into(), bytes);
        Ok(produced)
    })
    .await
}
