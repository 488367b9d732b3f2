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
    let patterns: Vec<glob::Pattern> = exclude
        .iter()
        .filter_map(|p| glob::Pattern::new(p).ok())
        .collect();
    let mut tar = tar::Builder::new(out);
    tar.follow_symlinks(false);
    tar.mode(tar::HeaderMode::Complete);
    let (mut files, mut bytes) = (0u64, 0u64);
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let mut entries: Vec<_> = fs::read_dir(&dir)
            .and_then(|rd| rd.collect::<Result<Vec<_>, _>>())
            .map_err(|source| ExecError::SourceUnreadable {
                path: dir.clone(),
                source,
            })?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let rel_path = rel.join(entry.file_name());
            if patterns.iter().any(|p| p.matches_path(&rel_path)) {
                continue;
            }
            let path = entry.path();
            let meta = entry
                .metadata()
                .map_err(|source| ExecError::SourceUnreadable {
                    path: path.clone(),
                    source,
                })?;
            guard.check_entry(&path, &meta)?;
            let ft = meta.file_type();
            if ft.is_dir() {
                tar.append_dir(&rel_path, &path)
                    .map_err(ExecError::from_write)?;
                stack.push(rel_path);
            } else if ft.is_file() {
                let mut f =
                    fs::File::open(&path).map_err(|source| ExecError::SourceUnreadable {
                        path: path.clone(),
                        source,
                    })?;
                let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                tar.append_file(&rel_path, &mut f)
                    .map_err(ExecError::from_write)?;
                files += 1;
                bytes += len;
            } else if ft.is_symlink() {
                tar.append_path_with_name(&path, &rel_path)
                    .map_err(ExecError::from_write)?;
                files += 1;
            }
        }
    }
    let out = tar.into_inner().map_err(ExecError::from_write)?;
    let mut produced = Produced::default();
    produced.counts.insert("files".into(), files);
    produced.counts.insert("bytes".into(), bytes);
    produced
        .tools
        .insert("tar".into(), "tar crate 0.4 (ustar/gnu)".into());
    Ok((out, produced))
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
