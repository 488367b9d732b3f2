//! IO: local filesystem storage. Artifacts are written in place and fsynced;
//! the manifest and the pin marker go through a temp file + rename +
//! directory fsync.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::manifest;
use super::pin::parse_marker;
use super::{
    ArtifactSink, Leftover, Listing, MANIFEST_FILE, Manifest, PIN_FILE, PinMarker, Storage,
    StorageError, UnreadablePin,
};

pub struct LocalStorage {
    name: String,
    root: PathBuf,
}

impl LocalStorage {
    pub fn new(name: String, root: PathBuf) -> Self {
        LocalStorage { name, root }
    }

    fn dir(&self, policy: &str, id: &str) -> PathBuf {
        self.root.join(policy).join(id)
    }

    fn err(&self, op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StorageError {
        let storage = self.name.clone();
        let path = path.to_path_buf();
        move |source| StorageError::Io {
            storage,
            op,
            path,
            source,
        }
    }
}

struct LocalSink {
    file: BufWriter<File>,
    path: PathBuf,
    storage: String,
}

impl Write for LocalSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl ArtifactSink for LocalSink {
    fn finish(self: Box<Self>) -> Result<(), StorageError> {
        let LocalSink {
            file,
            path,
            storage,
        } = *self;
        let err = |source| StorageError::Io {
            storage: storage.clone(),
            op: "write",
            path: path.clone(),
            source,
        };
        let file = file.into_inner().map_err(|e| err(e.into_error()))?;
        file.sync_all().map_err(err)?;
        Ok(())
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `dir/file` whole or not at all: temp file, fsync, rename, directory
/// fsync. Fails when `dir` does not exist (it is never created here).
fn write_atomically(dir: &Path, file: &str, body: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{file}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(body)?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(file))?;
    sync_dir(dir)
}

/// Removes `dir/file` durably; absent is fine.
fn remove_durably(dir: &Path, file: &str) -> io::Result<()> {
    match fs::remove_file(dir.join(file)) {
        Ok(()) => sync_dir(dir),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

impl Storage for LocalStorage {
    fn name(&self) -> &str {
        &self.name
    }

    fn describe(&self) -> String {
        format!("local {}", self.root.display())
    }

    fn create(
        &self,
        policy: &str,
        id: &str,
        file: &str,
    ) -> Result<Box<dyn ArtifactSink>, StorageError> {
        let dir = self.dir(policy, id);
        fs::create_dir_all(dir.parent().unwrap_or(&self.root))
            .map_err(self.err("create directory", &dir))?;
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(StorageError::Exists {
                    storage: self.name.clone(),
                    policy: policy.to_string(),
                    id: id.to_string(),
                });
            }
            Err(e) => return Err(self.err("create directory", &dir)(e)),
        }
        let path = dir.join(file);
        let f = File::options()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(self.err("create", &path))?;
        Ok(Box::new(LocalSink {
            file: BufWriter::with_capacity(1 << 20, f),
            path,
            storage: self.name.clone(),
        }))
    }

    fn commit(&self, manifest: &Manifest) -> Result<(), StorageError> {
        let dir = self.dir(&manifest.policy, &manifest.id);
        let path = dir.join(MANIFEST_FILE);
        let body = serde_json::to_vec_pretty(manifest).map_err(|e| StorageError::BadManifest {
            storage: self.name.clone(),
            path: path.clone(),
            reason: e.to_string(),
        })?;
        write_atomically(&dir, MANIFEST_FILE, &body).map_err(self.err("write manifest", &path))
    }

    fn remove(&self, policy: &str, id: &str) -> Result<(), StorageError> {
        let dir = self.dir(policy, id);
        // Manifest first (the backup becomes invisible), then the pin marker,
        // then whatever is left.
        for file in [MANIFEST_FILE, PIN_FILE] {
            remove_durably(&dir, file).map_err(self.err("delete", &dir.join(file)))?;
        }
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.err("delete", &dir)(e)),
        }
    }

    fn list(&self) -> Result<Listing, StorageError> {
        let mut listing = Listing::default();
        let policies = match fs::read_dir(&self.root) {
            Ok(rd) => rd,
            // A storage nobody wrote to yet is empty, not broken.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(listing),
            Err(e) => return Err(self.err("list", &self.root)(e)),
        };
        for policy in policies {
            let policy = policy.map_err(self.err("list", &self.root))?;
            if !policy
                .file_type()
                .map_err(self.err("list", &policy.path()))?
                .is_dir()
            {
                continue;
            }
            let policy_name = policy.file_name().to_string_lossy().into_owned();
            if policy_name == super::wal::WAL_DIR {
                continue;
            }
            let backups = fs::read_dir(policy.path()).map_err(self.err("list", &policy.path()))?;
            for backup in backups {
                let backup = backup.map_err(self.err("list", &policy.path()))?;
                if !backup
                    .file_type()
                    .map_err(self.err("list", &backup.path()))?
                    .is_dir()
                {
                    continue;
                }
                let id = backup.file_name().to_string_lossy().into_owned();
                let path = backup.path().join(MANIFEST_FILE);
                match fs::read(&path) {
                    Ok(bytes) => match manifest::parse(&bytes, &policy_name, &id) {
                        Ok(m) => {
                            self.read_pin(&backup.path(), &m, &mut listing);
                            listing.manifests.push(m)
                        }
                        Err(reason) => listing.unreadable.push(StorageError::BadManifest {
                            storage: self.name.clone(),
                            path,
                            reason,
                        }),
                    },
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        listing.leftovers.push(Leftover {
                            policy: policy_name.clone(),
                            id,
                        })
                    }
                    Err(e) => return Err(self.err("read", &path)(e)),
                }
            }
        }
        listing
            .manifests
            .sort_by(|a, b| (&a.policy, &a.id).cmp(&(&b.policy, &b.id)));
        Ok(listing)
    }

    fn open(&self, manifest: &Manifest) -> Result<Box<dyn Read + Send>, StorageError> {
        let path = self
            .dir(&manifest.policy, &manifest.id)
            .join(&manifest.artifact.file);
        let f = File::open(&path).map_err(self.err("open", &path))?;
        Ok(Box::new(io::BufReader::with_capacity(1 << 20, f)))
    }

    fn artifact_size(&self, manifest: &Manifest) -> Result<Option<u64>, StorageError> {
        let path = self
            .dir(&manifest.policy, &manifest.id)
            .join(&manifest.artifact.file);
        match fs::metadata(&path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err("stat", &path)(e)),
        }
    }

    fn put_wal(&self, policy: &str, object: &str, body: &[u8]) -> Result<(), StorageError> {
        let dir = self.root.join(super::wal::WAL_DIR).join(policy);
        fs::create_dir_all(&dir).map_err(self.err("create directory", &dir))?;
        write_atomically(&dir, object, body).map_err(self.err("write", &dir.join(object)))
    }

    fn get_wal(&self, policy: &str, object: &str) -> Result<Vec<u8>, StorageError> {
        let path = self
            .root
            .join(super::wal::WAL_DIR)
            .join(policy)
            .join(object);
        fs::read(&path).map_err(self.err("read", &path))
    }

    fn list_wal(&self, policy: &str) -> Result<Vec<String>, StorageError> {
        let dir = self.root.join(super::wal::WAL_DIR).join(policy);
        let entries = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.err("list", &dir)(e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let name = entry.map_err(self.err("list", &dir))?.file_name();
            let name = name.to_string_lossy();
            // `write_atomically`'s temp files are not objects yet.
            if !name.ends_with(".tmp") {
                names.push(name.into_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    fn remove_wal(&self, policy: &str, object: &str) -> Result<(), StorageError> {
        let dir = self.root.join(super::wal::WAL_DIR).join(policy);
        remove_durably(&dir, object).map_err(self.err("delete", &dir.join(object)))
    }

    fn write_pin(&self, marker: &PinMarker) -> Result<(), StorageError> {
        let dir = self.dir(&marker.policy, &marker.id);
        let path = dir.join(PIN_FILE);
        let body = serde_json::to_vec_pretty(marker).map_err(|e| StorageError::BadPinMarker {
            storage: self.name.clone(),
            path: path.clone(),
            reason: e.to_string(),
        })?;
        write_atomically(&dir, PIN_FILE, &body).map_err(self.err("write pin marker", &path))
    }

    fn remove_pin(&self, policy: &str, id: &str) -> Result<(), StorageError> {
        let dir = self.dir(policy, id);
        remove_durably(&dir, PIN_FILE).map_err(self.err("delete pin marker", &dir.join(PIN_FILE)))
    }
}

impl LocalStorage {
    /// Adds the pin marker of a listed backup (in `dir`) to the listing, or
    /// records it as unreadable.
    fn read_pin(&self, dir: &Path, m: &Manifest, listing: &mut Listing) {
        let path = dir.join(PIN_FILE);
        let unreadable = |reason: String| UnreadablePin {
            policy: m.policy.clone(),
            id: m.id.clone(),
            error: StorageError::BadPinMarker {
                storage: self.name.clone(),
                path: path.clone(),
                reason,
            },
        };
        match fs::read(&path) {
            Ok(bytes) => match parse_marker(&bytes, &m.policy, &m.id) {
                Ok(marker) => listing.pins.push(marker),
                Err(reason) => listing.unreadable_pins.push(unreadable(reason)),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => listing.unreadable_pins.push(unreadable(e.to_string())),
        }
    }
}
