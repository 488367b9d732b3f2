//! IO: S3 and S3-compatible storage (object_store). Keys are
//! `<prefix>/<policy>/<backup-id>/<file>`; artifacts stream up as multipart
//! uploads in bounded parts (memory stays bounded whatever the size) that
//! become visible only when completed; `manifest.json` is one PUT written
//! last; a pinned backup's `pin.json` is one PUT too (atomic: whole or absent). All requests run on a small runtime owned by this module, so the
//! sync `Storage` methods work from any thread.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::io::{self, Read, Write};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, MultipartUpload, ObjectStore, ObjectStoreExt, PutPayload,
    RetryConfig,
};

use super::manifest;
use super::pin::parse_marker;
use super::s3_error::{Target, remote};
use super::{
    ArtifactSink, Leftover, Listing, MANIFEST_FILE, Manifest, PIN_FILE, PinMarker, Storage,
    StorageError, UnreadablePin,
};
use crate::policy::{S3Credentials, SecretRef};

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

// ---- a runtime of our own ---------------------------------------------------

fn runtime() -> Result<&'static tokio::runtime::Runtime, String> {
    static RT: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("safepoint-s3")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the S3 runtime: {e}"))
    })
    .as_ref()
    .map_err(Clone::clone)
}

struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Drives `fut` to completion on the calling thread inside the S3 runtime's
/// context (its reactor and timers do the IO). Works from any thread.
fn block<F: Future>(rt: &tokio::runtime::Runtime, fut: F) -> F::Output {
    let _context = rt.enter();
    let mut fut = std::pin::pin!(fut);
    let waker = Arc::new(Unpark(std::thread::current())).into();
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

fn secret(storage: &str, what: &str, r: &SecretRef) -> Result<String, StorageError> {
    let config = |message: String, hint: &str| StorageError::Config {
        storage: storage.to_string(),
        message,
        hint: hint.to_string(),
    };
    match r {
        SecretRef::Env(name) => std::env::var(name).map_err(|_| {
            config(
                format!("the {what} comes from environment variable {name}, which is not set"),
                "set it in the daemon's environment",
            )
        }),
        SecretRef::File(path) => std::fs::read_to_string(path)
            .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
            .map_err(|e| {
                config(
                    format!("cannot read the {what} from {}: {e}", path.display()),
                    "check that the file exists and the daemon may read it",
                )
            }),
    }
}

impl S3Storage {
    /// Builds the client (no request is made). Fails on unreadable
    /// credential references or an unusable configuration.
    pub fn new(config: S3Config, options: S3Options) -> Result<S3Storage, StorageError> {
        // reqwest is built without a default TLS provider: use ring (`cli::main`
        // installs it too; an already installed provider stays).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let name = config.name.clone();
        let endpoint = match (&config.endpoint, config.path_style) {
            // Virtual-hosted style on a custom endpoint: the bucket is part of the host.
            (Some(e), false) => Some(match e.split_once("://") {
                Some((scheme, host)) => format!("{scheme}://{}.{host}", config.bucket),
                None => e.clone(),
            }),
            (e, _) => e.clone(),
        };
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_virtual_hosted_style_request(!config.path_style)
            .with_retry(options.retry.clone())
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(config.allow_http)
                    .with_connect_timeout(Duration::from_secs(10))
                    .with_timeout(Duration::from_secs(300)),
            );
        if let Some(e) = &endpoint {
            builder = builder.with_endpoint(e);
        }
        if let Some(c) = &config.credentials {
            builder = builder
                .with_access_key_id(secret(&name, "access key id", &c.access_key_id_from)?)
                .with_secret_access_key(secret(
                    &name,
                    "secret access key",
                    &c.secret_access_key_from,
                )?);
        }
        let target = Target {
            storage: name.clone(),
            bucket: config.bucket.clone(),
            endpoint: config.endpoint.clone(),
        };
        let store = builder.build().map_err(|e| StorageError::Config {
            storage: name.clone(),
            message: format!(
                "cannot configure S3 client for bucket {}: {e}",
                config.bucket
            ),
            hint: "check bucket, region and endpoint in the Storage document".into(),
        })?;
        Ok(S3Storage {
            store: Arc::new(store),
            target,
            prefix: config
                .prefix
                .split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            options,
        })
    }

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
        Ok(Box::new(S3Sink {
            rt: self.rt()?,
            store: self.store.clone(),
            target: self.target.clone(),
            key: self.key(&[policy, id, file]),
            options: self.options.clone(),
            buf: Vec::new(),
            parts: 0,
            upload: None,
            in_flight: VecDeque::new(),
            done: false,
        }))
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
                Err(StorageError::Remote(r)) if r.class == "not-found" => continue,
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
        Ok(Box::new(S3Reader {
            rt,
            stream: result.into_stream(),
            chunk: Bytes::new(),
            target: self.target.clone(),
            key,
        }))
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
            Err(StorageError::Remote(r)) if r.class == "not-found" => {}
            Err(e) => listing.unreadable_pins.push(unreadable(e)),
        }
    }
}

// ---- reading ------------------------------------------------------------------

struct S3Reader {
    rt: &'static tokio::runtime::Runtime,
    stream: BoxStream<'static, object_store::Result<Bytes>>,
    chunk: Bytes,
    target: Target,
    key: Path,
}

impl Read for S3Reader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            match block(self.rt, self.stream.next()) {
                None => return Ok(0),
                Some(Ok(b)) => self.chunk = b,
                Some(Err(e)) => {
                    return Err(io::Error::other(remote(&self.target, "read", &self.key, e)));
                }
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

// ---- writing ------------------------------------------------------------------

/// Buffers one part at a time and uploads parts concurrently up to
/// `max_in_flight` bytes. Small artifacts (one part) are one PUT. Dropped
/// without `finish`, it aborts the multipart upload: nothing becomes visible.
struct S3Sink {
    rt: &'static tokio::runtime::Runtime,
    store: Arc<AmazonS3>,
    target: Target,
    key: Path,
    options: S3Options,
    buf: Vec<u8>,
    parts: usize,
    upload: Option<Box<dyn MultipartUpload>>,
    in_flight: VecDeque<(usize, tokio::task::JoinHandle<object_store::Result<()>>)>,
    done: bool,
}

impl S3Sink {
    fn part_size(&self) -> usize {
        self.options.part_size << (self.parts / 2000).min(5)
    }

    fn fail(&self, e: object_store::Error) -> io::Error {
        io::Error::other(remote(&self.target, "upload", &self.key, e))
    }

    /// Waits until the parts still uploading fit in `limit` bytes.
    fn drain(&mut self, limit: usize) -> io::Result<()> {
        while let Some((_, _)) = self.in_flight.front() {
            let bytes: usize = self.in_flight.iter().map(|(n, _)| n).sum();
            if bytes <= limit {
                break;
            }
            let Some((_, handle)) = self.in_flight.pop_front() else {
                break;
            };
            match block(self.rt, handle) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(self.fail(e)),
                Err(e) => return Err(io::Error::other(format!("part upload task failed: {e}"))),
            }
        }
        Ok(())
    }

    fn send_part(&mut self) -> io::Result<()> {
        if self.upload.is_none() {
            let (store, key) = (self.store.clone(), self.key.clone());
            let upload = block(self.rt, async move { store.put_multipart(&key).await })
                .map_err(|e| self.fail(e))?;
            self.upload = Some(upload);
        }
        let next = self.options.part_size << ((self.parts + 1) / 2000).min(5);
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(next));
        let len = data.len();
        let Some(upload) = self.upload.as_mut() else {
            return Ok(());
        };
        let part = upload.put_part(PutPayload::from(data));
        self.in_flight.push_back((len, self.rt.spawn(part)));
        self.parts += 1;
        self.drain(self.options.max_in_flight)
    }

    fn to_storage(&self, e: io::Error) -> StorageError {
        match e.downcast::<StorageError>() {
            Ok(e) => e,
            Err(e) => StorageError::Io {
                storage: self.target.storage.clone(),
                op: "upload",
                path: self.key.to_string().into(),
                source: e,
            },
        }
    }

    fn abort(&mut self) {
        for (_, handle) in self.in_flight.drain(..) {
            handle.abort();
        }
        if let Some(mut upload) = self.upload.take() {
            let abort = self.rt.spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(10), upload.abort()).await;
            });
            let _ = block(self.rt, abort);
        }
    }
}

impl Write for S3Sink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = self.part_size() - self.buf.len();
        let n = data.len().min(room);
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(self.part_size().min(1 << 20));
        }
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == self.part_size() {
            self.send_part()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ArtifactSink for S3Sink {
    fn finish(mut self: Box<Self>) -> Result<(), StorageError> {
        if self.upload.is_none() {
            // One part or less: a single PUT.
            let data = PutPayload::from(std::mem::take(&mut self.buf));
            block(self.rt, self.store.put(&self.key, data))
                .map_err(|e| remote(&self.target, "upload", &self.key, e))?;
            self.done = true;
            return Ok(());
        }
        if !self.buf.is_empty() {
            self.send_part().map_err(|e| self.to_storage(e))?;
        }
        self.drain(0).map_err(|e| self.to_storage(e))?;
        let Some(mut upload) = self.upload.take() else {
            return Ok(());
        };
        let completed = block(self.rt, upload.complete());
        if let Err(e) = completed {
            self.upload = Some(upload);
            return Err(remote(&self.target, "complete upload of", &self.key, e));
        }
        self.done = true;
        Ok(())
    }
}

impl Drop for S3Sink {
    fn drop(&mut self) {
        if !self.done {
            self.abort();
        }
    }
}
