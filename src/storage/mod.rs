//! IO: where artifacts and manifests live. A backup is the directory
//! `<root>/<policy>/<backup-id>/` holding one artifact, `manifest.json` and,
//! when the backup is pinned, `pin.json` (`pin.rs`). The manifest is written
//! last, so a backup is visible only when complete; deleting removes the
//! manifest first (then the marker and the artifact), so a half-deleted backup
//! is invisible and collected as a leftover.
//!
//! The trait is synchronous (called from `spawn_blocking`); it does exactly what
//! it is told and decides nothing.

pub mod crypt;
pub mod local;
pub mod manifest;
pub mod pin;
pub mod pipeline;
pub mod s3;
pub mod s3_error;
pub mod wal;

use std::io::{Read, Write};
use std::path::PathBuf;

pub use manifest::{ArtifactInfo, MANIFEST_FILE, MANIFEST_FORMAT, Manifest};
pub use pin::{PIN_FILE, PIN_FORMAT, PinMarker, UnreadablePin};

use crate::model::ArtifactProblem;
use crate::policy::{StorageKind, StorageSpec};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage {storage}: cannot {op} {path}: {source}")]
    Io {
        storage: String,
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("storage {storage}: manifest {path} is unreadable: {reason}")]
    BadManifest {
        storage: String,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "storage {storage}: pin marker {path} is unreadable: {reason}; the backup's pin state is unknown, so it is never pruned until the marker is fixed (`safepoint pin` or `unpin` rewrites it)"
    )]
    BadPinMarker {
        storage: String,
        path: PathBuf,
        reason: String,
    },
    /// S3 and other remote stores (boxed: the error type stays small).
    #[error(transparent)]
    Remote(Box<s3_error::RemoteError>),
    #[error("storage {storage}: {message}; {hint}")]
    Config {
        storage: String,
        message: String,
        hint: String,
    },
    #[error("storage {storage}: backup {policy}/{id} already exists")]
    Exists {
        storage: String,
        policy: String,
        id: String,
    },
}

impl StorageError {
    /// Bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            StorageError::Io { .. } => "io",
            StorageError::BadManifest { .. } => "bad-manifest",
            StorageError::BadPinMarker { .. } => "bad-pin-marker",
            StorageError::Exists { .. } => "exists",
            StorageError::Remote(r) => r.class.as_str(),
            StorageError::Config { .. } => "config",
        }
    }

    /// Full disk, permissions and the like need a human; other IO may pass.
    pub fn is_transient(&self) -> bool {
        match self {
            StorageError::Io { source, .. } => !matches!(
                source.kind(),
                std::io::ErrorKind::PermissionDenied
                    | std::io::ErrorKind::StorageFull
                    | std::io::ErrorKind::ReadOnlyFilesystem
                    | std::io::ErrorKind::NotFound
            ),
            StorageError::Remote(r) => matches!(
                r.class,
                s3_error::RemoteClass::Unreachable | s3_error::RemoteClass::Remote
            ),
            _ => false,
        }
    }
}

/// An artifact being written. Dropping it without `finish` leaves a leftover
/// that `abort` or the garbage collector removes.
pub trait ArtifactSink: Write + Send {
    /// Flushes and makes the bytes durable (fsync).
    fn finish(self: Box<Self>) -> Result<(), StorageError>;
}

/// A backup directory without a manifest: an interrupted or aborted write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    pub policy: String,
    pub id: String,
}

/// Everything a storage holds, as read in one listing.
#[derive(Debug, Default)]
pub struct Listing {
    pub manifests: Vec<Manifest>,
    pub leftovers: Vec<Leftover>,
    /// Manifests that exist but cannot be read: reported, never deleted.
    pub unreadable: Vec<StorageError>,
    /// Pin markers of the listed backups (complete backups only).
    pub pins: Vec<PinMarker>,
    /// Listed backups whose pin marker exists but cannot be read.
    pub unreadable_pins: Vec<UnreadablePin>,
}

pub trait Storage: Send + Sync {
    fn name(&self) -> &str;
    /// Human description for messages (`local /var/backups`).
    fn describe(&self) -> String;
    /// Opens `<policy>/<id>/<file>` for writing. Fails if the backup exists.
    fn create(
        &self,
        policy: &str,
        id: &str,
        file: &str,
    ) -> Result<Box<dyn ArtifactSink>, StorageError>;
    /// Makes the backup visible by writing its manifest (atomically, durably).
    fn commit(&self, manifest: &Manifest) -> Result<(), StorageError>;
    /// Removes whatever exists of `<policy>/<id>` (manifest first).
    fn remove(&self, policy: &str, id: &str) -> Result<(), StorageError>;
    fn list(&self) -> Result<Listing, StorageError>;
    /// Reads the stored bytes of an artifact (as stored: compressed/encrypted).
    fn open(&self, manifest: &Manifest) -> Result<Box<dyn Read + Send>, StorageError>;
    /// Size of the stored artifact, `None` when it is gone.
    fn artifact_size(&self, manifest: &Manifest) -> Result<Option<u64>, StorageError>;
    /// Writes (or replaces) the pin marker of `<marker.policy>/<marker.id>`,
    /// atomically and durably.
    fn write_pin(&self, marker: &PinMarker) -> Result<(), StorageError>;
    /// Removes the pin marker of `<policy>/<id>`; absent is fine.
    fn remove_pin(&self, policy: &str, id: &str) -> Result<(), StorageError>;
    /// Writes `_wal/<policy>/<object>` (the WAL archive, `wal.rs`) whole or
    /// not at all, durably. `_wal` is never listed as a policy (policy names
    /// are DNS labels, without `_`).
    fn put_wal(&self, policy: &str, object: &str, body: &[u8]) -> Result<(), StorageError>;
    /// Reads `_wal/<policy>/<object>` as stored.
    fn get_wal(&self, policy: &str, object: &str) -> Result<Vec<u8>, StorageError>;
    /// The object names under `_wal/<policy>/`, sorted (empty when none).
    fn list_wal(&self, policy: &str) -> Result<Vec<String>, StorageError>;
    /// Removes `_wal/<policy>/<object>`; absent is fine.
    fn remove_wal(&self, policy: &str, object: &str) -> Result<(), StorageError>;
}

/// Builds the storage a `Storage` document describes. Relative paths are
/// resolved against `base` (the daemon's working directory).
/// A storage whose configuration cannot be used (e.g. an unset credential
/// variable) answers every operation with that error.
pub fn open(spec: &StorageSpec, base: &std::path::Path) -> Box<dyn Storage> {
    match &spec.kind {
        StorageKind::Local { path } => {
            Box::new(local::LocalStorage::new(spec.name.clone(), base.join(path)))
        }
        StorageKind::S3 {
            bucket,
            prefix,
            region,
            endpoint,
            path_style,
            allow_http,
            credentials,
        } => {
            let config = s3::S3Config {
                name: spec.name.clone(),
                bucket: bucket.clone(),
                prefix: prefix.clone(),
                region: region.clone(),
                endpoint: endpoint.clone(),
                path_style: *path_style,
                allow_http: *allow_http,
                credentials: credentials.clone(),
            };
            match s3::S3Storage::new(config, s3::S3Options::default()) {
                Ok(st) => Box::new(st),
                Err(e) => Box::new(Unavailable {
                    name: spec.name.clone(),
                    error: e.to_string(),
                }),
            }
        }
    }
}

struct Unavailable {
    name: String,
    error: String,
}

impl Unavailable {
    fn err(&self) -> StorageError {
        StorageError::Config {
            storage: self.name.clone(),
            message: self.error.clone(),
            hint: "fix the storage's configuration; nothing on it is pruned meanwhile".into(),
        }
    }
}

impl Storage for Unavailable {
    fn name(&self) -> &str {
        &self.name
    }
    fn describe(&self) -> String {
        format!("unavailable storage {}", self.name)
    }
    fn create(&self, _: &str, _: &str, _: &str) -> Result<Box<dyn ArtifactSink>, StorageError> {
        Err(self.err())
    }
    fn commit(&self, _: &Manifest) -> Result<(), StorageError> {
        Err(self.err())
    }
    fn remove(&self, _: &str, _: &str) -> Result<(), StorageError> {
        Err(self.err())
    }
    fn list(&self) -> Result<Listing, StorageError> {
        Err(self.err())
    }
    fn open(&self, _: &Manifest) -> Result<Box<dyn Read + Send>, StorageError> {
        Err(self.err())
    }
    fn artifact_size(&self, _: &Manifest) -> Result<Option<u64>, StorageError> {
        Err(self.err())
    }
    fn write_pin(&self, _: &PinMarker) -> Result<(), StorageError> {
        Err(self.err())
    }
    fn remove_pin(&self, _: &str, _: &str) -> Result<(), StorageError> {
        Err(self.err())
    }
    fn put_wal(&self, _: &str, _: &str, _: &[u8]) -> Result<(), StorageError> {
        Err(self.err())
    }
    fn get_wal(&self, _: &str, _: &str) -> Result<Vec<u8>, StorageError> {
        Err(self.err())
    }
    fn list_wal(&self, _: &str) -> Result<Vec<String>, StorageError> {
        Err(self.err())
    }
    fn remove_wal(&self, _: &str, _: &str) -> Result<(), StorageError> {
        Err(self.err())
    }
}

/// Checks a stored artifact against its manifest: `Ok(None)` when it matches,
/// `Ok(Some(problem))` when it is missing or differs.
pub fn verify(
    storage: &dyn Storage,
    manifest: &Manifest,
) -> Result<Option<ArtifactProblem>, StorageError> {
    if let Some(problem) = check_size(storage, manifest)? {
        return Ok(Some(problem));
    }
    let reader = storage.open(manifest)?;
    let (_, checksum) = pipeline::checksum_of(reader).map_err(|source| StorageError::Io {
        storage: storage.name().to_string(),
        op: "read",
        path: PathBuf::from(format!(
            "{}/{}/{}",
            manifest.policy, manifest.id, manifest.artifact.file
        )),
        source,
    })?;
    if checksum != manifest.artifact.checksum {
        return Ok(Some(ArtifactProblem::corrupt(format!(
            "checksum is {checksum}, manifest says {}",
            manifest.artifact.checksum
        ))));
    }
    Ok(None)
}

/// The cheap check: the artifact exists and has the manifest's size.
pub fn check_size(
    storage: &dyn Storage,
    manifest: &Manifest,
) -> Result<Option<ArtifactProblem>, StorageError> {
    Ok(match storage.artifact_size(manifest)? {
        None => Some(ArtifactProblem::missing(format!(
            "artifact {} is missing",
            manifest.artifact.file
        ))),
        Some(size) if size != manifest.artifact.size => Some(ArtifactProblem::corrupt(format!(
            "artifact size is {size} bytes, manifest says {}",
            manifest.artifact.size
        ))),
        Some(_) => None,
    })
}
