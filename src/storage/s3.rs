//! IO: S3 and S3-compatible storage (object_store). Keys are
//! `<prefix>/<policy>/<backup-id>/<file>`; artifacts stream up as multipart
//! uploads in bounded parts (memory stays bounded whatever the size) that
//! become visible only when completed; `manifest.json` is one PUT written
//! last; a pinned backup's `pin.json` is one PUT too (atomic: whole or absent). All requests run on a small runtime owned by this module, so the
//! sync `Storage` methods work from any thread.
//!
//! Here: the declaration, the object layout and the `Storage` operations;
//! `client` builds the client, `runtime` owns the runtime, `reader` and
//! `sink` stream artifacts down and up.

mod client;
mod reader;
mod runtime;
mod sink;

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::aws::AmazonS3;
use object_store::path::Path;
use object_store::{BackoffConfig, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};

use super::manifest;
use super::pin::parse_marker;
use super::s3_error::{RemoteClass, Target, remote};
use super::{
    ArtifactSink, Leftover, Listing, MANIFEST_FILE, Manifest, PIN_FILE, PinMarker, Storage,
    StorageError, UnreadablePin,
};
use crate::policy::S3Credentials;
use reader::S3Reader;
use runtime::{block, runtime};
use sink::S3Sink;

/// Tuning of the upload path; `Default` is what the daemon uses.
#[derive(Debug, Clone)]
pub struct S3Options {
    /// Size of the first 2000 parts; it doubles every 2000 parts so that the
    /// 10 000-part limit of S3 allows ~490 GB artifacts at the default 8 MiB.
    pub part_size: usize,
    /// Bytes of parts uploading at once (at least one part), besides the
    /// part being filled.
    pub max_in_flight: usize,
    pub retry: RetryConfig,
    /// The longest one request may take from connecting to the end of its
    /// response; a server that accepts and never answers fails the request
    /// (retried per `retry`) after this long. It must allow a part upload of
    /// the largest part size on a slow link. (No separate read timeout:
    /// reqwest's runs from the start of the request, body upload included,
    /// so it would cut slow part uploads.)
    pub request_timeout: Duration,
}

impl Default for S3Options {
    fn default() -> Self {
        S3Options {
            part_size: 8 << 20,
            max_in_flight: 16 << 20,
            retry: RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: 5,
                retry_timeout: Duration::from_secs(60),
            },
            request_timeout: Duration::from_secs(300),
        }
    }
}

/// Where one storage lives, as declared (resolved credentials included).
#[derive(Clone)]
pub struct S3Config {
    pub name: String,
    pub bucket: String,
    pub prefix: String,
    pub region: String,
    pub endpoint: Option<String>,
    pub path_style: bool,
    pub allow_http: bool,
    pub credentials: Option<S3Credentials>,
}

pub struct S3Storage {
    store: Arc<AmazonS3>,
    target: Target,
    prefix: Vec<String>,
    options: S3Options,
}

impl S3Storage {
    fn rt(&self) -> Result<&'static tokio::runtime::Runtime, StorageError> {
        runtime().map_err(|message| StorageError::Config {
            storage: self.target.storage.clone(),
            message,
            hint: "the host is out of threads or memory".into(),
        })
    }

    fn key(&self, parts: &[&str]) -> Path {
        Path::from_iter(
            self.prefix
                .iter()
                .map(String::as_str)
                .chain(parts.iter().copied()),
        )
    }

    /// Every object key under `parts`, relative to the storage prefix.
    fn list_under(&self, parts: &[&str]) -> Result<Vec<(Vec<String>, u64)>, StorageError> {
        let rt = self.rt()?;
        let root = self.key(parts);
        let skip = self.prefix.len();
        let mut stream = self.store.list(Some(&root));
        block(rt, async {
            let mut out = Vec::new();
            while let Some(item) = stream.next().await {
                let meta = item.map_err(|e| remote(&self.target, "list", &root, e))?;
                let rel: Vec<String> = meta
                    .location
                    .parts()
                    .skip(skip)
                    .map(|p| p.as_ref().to_string())
                    .collect();
                out.push((rel, meta.size));
            }
            Ok(out)
        })
    }

    fn get_bytes(&self, key: &Path) -> Result<Bytes, StorageError> {
        let rt = self.rt()?;
        block(rt, async {
            self.store
                .get(key)
                .await
                .map_err(|e| remote(&self.target, "read", key, e))?
                .bytes()
                .await
                .map_err(|e| remote(&self.target, "read", key, e))
        })
    }
}

impl Storage for S3Storage {
    fn name(&self) -> &str {
        &self.target.storage
    }

    fn describe(&self) -> String {
        let prefix = self.prefix.join("/");
        match &self.target.endpoint {
            Some(e) => format!("s3 {e} bucket {} prefix {prefix:?}", self.target.bucket),
            None => format!("s3://{}/{prefix}", self.target.bucket),
        }
    }

    fn create(
        &self,
        policy: &str,
        id: &str,
        file: &str,
    ) -> Result<Box<dyn ArtifactSink>, StorageError> {
        // Also proves bucket and credentials before the source is read.
        if !self.list_under(&[policy, id])?.is_empty() {
            return Err(StorageError::Exists {
                storage: self.target.storage.clone(),
                policy: policy.to_string(),
                id: id.to_string(),
            });
        }
        Ok(Box::new(S3Sink::new(
            self.rt()?,
            self.store.clone(),
            self.target.clone(),
            self.key(&[policy, id, file]),
            self.options.clone(),
        )))
    }

    fn commit(&self, manifest: &Manifest) -> Result<(), StorageError> {
        let key = self.key(&[&manifest.policy, &manifest.id, MANIFEST_FILE]);
        let body = serde_json::to_vec_pretty(manifest).map_err(|e| StorageError::BadManifest {
            storage: self.target.storage.clone(),
            path: key.to_string().into(),
            reason: e.to_string(),
        })?;
        let rt = self.rt()?;
        // A single PUT is atomic: the manifest is whole or absent.
        block(rt, self.store.put(&key, PutPayload::from(body)))
            .map_err(|e| remote(&self.target, "write manifest", &key, e))?;
        Ok(())
    }

    fn remove(&self, policy: &str, id: &str) -> Result<(), StorageError> {
        let rt = self.rt()?;
        let manifest = self.key(&[policy, id, MANIFEST_FILE]);
        match block(rt, self.store.delete(&manifest)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(remote(&self.target, "delete", &manifest, e)),
        }
        // Then the pin marker, then whatever is left (the artifact).
        self.remove_pin(policy, id)?;
        for (rel, _) in self.list_under(&[policy, id])? {
            let key = self.key(&rel.iter().map(String::as_str).collect::<Vec<_>>());
            match block(rt, self.store.delete(&key)) {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(remote(&self.target, "delete", &key, e)),
            }
        }
        Ok(())
    }

    fn list(&self) -> Result<Listing, StorageError> {
        // Per backup: (has a manifest, has a pin marker).
        let mut backups: BTreeMap<(String, String), (bool, bool)> = BTreeMap::new();
        for (rel, _) in self.list_under(&[])? {
            if let [policy, id, file, ..] = rel.as_slice()
                && policy != super::wal::WAL_DIR
            {
                let has = backups.entry((policy.clone(), id.clone())).or_default();
                has.0 |= rel.len() == 3 && file == MANIFEST_FILE;
                has.1 |= rel.len() == 3 && file == PIN_FILE;
            }
        }
        let mut listing = Listing::default();
        for ((policy, id), (has_manifest, has_pin)) in backups {
            if !has_manifest {
                listing.leftovers.push(Leftover { policy, id });
                continue;
            }
            let key = self.key(&[&policy, &id, MANIFEST_FILE]);
            let bytes = match self.get_bytes(&key) {
                Ok(b) => b,
                // Deleted between listing and reading: gone, not broken.
                Err(StorageError::Remote(r)) if r.class == RemoteClass::NotFound => continue,
                Err(e) => return Err(e),
            };
            let bad = |reason: String| StorageError::BadManifest {
                storage: self.target.storage.clone(),
                path: key.to_string().into(),
                reason,
            };
            match manifest::parse(&bytes, &policy, &id) {
                Ok(m) => {
                    if has_pin {
                        self.read_pin(&policy, &id, &mut listing);
                    }
                    listing.manifests.push(m)
                }
                Err(reason) => listing.unreadable.push(bad(reason)),
            }
        }
        Ok(listing)
    }

    fn open(&self, manifest: &Manifest) -> Result<Box<dyn Read + Send>, StorageError> {
        let rt = self.rt()?;
        let key = self.key(&[&manifest.policy, &manifest.id, &manifest.artifact.file]);
        let result =
            block(rt, self.store.get(&key)).map_err(|e| remote(&self.target, "open", &key, e))?;
        Ok(Box::new(S3Reader::new(
            rt,
            result.into_stream(),
            self.target.clone(),
            key,
        )))
    }

    fn artifact_size(&self, manifest: &Manifest) -> Result<Option<u64>, StorageError> {
        let rt = self.rt()?;
        let key = self.key(&[&manifest.policy, &manifest.id, &manifest.artifact.file]);
        match block(rt, self.store.head(&key)) {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(remote(&self.target, "stat", &key, e)),
        }
    }

    fn put_wal(&self, policy: &str, object: &str, body: &[u8]) -> Result<(), StorageError> {
        let key = self.key(&[super::wal::WAL_DIR, policy, object]);
        // A single PUT is atomic: the object is whole or absent.
        block(
            self.rt()?,
            self.store.put(&key, PutPayload::from(body.to_vec())),
        )
        .map_err(|e| remote(&self.target, "write", &key, e))?;
        Ok(())
    }

    fn get_wal(&self, policy: &str, object: &str) -> Result<Vec<u8>, StorageError> {
        let key = self.key(&[super::wal::WAL_DIR, policy, object]);
        Ok(self.get_bytes(&key)?.to_vec())
    }

    fn list_wal(&self, policy: &str) -> Result<Vec<String>, StorageError> {
        let mut names: Vec<String> = self
            .list_under(&[super::wal::WAL_DIR, policy])?
            .into_iter()
            .filter_map(|(rel, _)| match rel.as_slice() {
                [_, _, name] => Some(name.clone()),
                _ => None,
            })
            .collect();
        names.sort();
        Ok(names)
    }

    fn remove_wal(&self, policy: &str, object: &str) -> Result<(), StorageError> {
        let key = self.key(&[super::wal::WAL_DIR, policy, object]);
        match block(self.rt()?, self.store.delete(&key)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(remote(&self.target, "delete", &key, e)),
        }
    }

    fn write_pin(&self, marker: &PinMarker) -> Result<(), StorageError> {
        let key = self.key(&[&marker.policy, &marker.id, PIN_FILE]);
        let body = serde_json::to_vec_pretty(marker).map_err(|e| StorageError::BadPinMarker {
            storage: self.target.storage.clone(),
            path: key.to_string().into(),
            reason: e.to_string(),
        })?;
        let rt = self.rt()?;
        // A single PUT is atomic: the marker is whole or absent.
        block(rt, self.store.put(&key, PutPayload::from(body)))
            .map_err(|e| remote(&self.target, "write pin marker", &key, e))?;
        Ok(())
    }

    fn remove_pin(&self, policy: &str, id: &str) -> Result<(), StorageError> {
        let rt = self.rt()?;
        let key = self.key(&[policy, id, PIN_FILE]);
        match block(rt, self.store.delete(&key)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(remote(&self.target, "delete pin marker", &key, e)),
        }
    }
}

impl S3Storage {
    /// Adds the pin marker of a listed backup to the listing, or records it
    /// as unreadable (pin state unknown).
    fn read_pin(&self, policy: &str, id: &str, listing: &mut Listing) {
        let key = self.key(&[policy, id, PIN_FILE]);
        let unreadable = |error: StorageError| UnreadablePin {
            policy: policy.to_string(),
            id: id.to_string(),
            error,
        };
        match self.get_bytes(&key) {
            Ok(bytes) => match parse_marker(&bytes, policy, id) {
                Ok(marker) => listing.pins.push(marker),
                Err(reason) => {
                    listing
                        .unreadable_pins
                        .push(unreadable(StorageError::BadPinMarker {
                            storage: self.target.storage.clone(),
                            path: key.to_string().into(),
                            reason,
                        }))
                }
            },
            // Unpinned between listing and reading.
            Err(StorageError::Remote(r)) if r.class == RemoteClass::NotFound => {}
            Err(e) => listing.unreadable_pins.push(unreadable(e)),
        }
    }
}
