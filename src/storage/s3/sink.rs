//! IO: writing an artifact to S3: bounded parts of a multipart upload,
//! several in flight, visible only once completed; aborted when dropped
//! unfinished.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3;
use object_store::path::Path;
use object_store::{MultipartUpload, ObjectStoreExt, PutPayload};

use super::S3Options;
use super::runtime::block;
use crate::storage::s3_error::{Target, remote};
use crate::storage::{ArtifactSink, StorageError};

/// Buffers one part at a time and uploads parts concurrently up to
/// `max_in_flight` bytes. Small artifacts (one part) are one PUT. Dropped
/// without `finish`, it aborts the multipart upload: nothing becomes visible.
pub(super) struct S3Sink {
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
    pub(super) fn new(
        rt: &'static tokio::runtime::Runtime,
        store: Arc<AmazonS3>,
        target: Target,
        key: Path,
        options: S3Options,
    ) -> S3Sink {
        S3Sink {
            rt,
            store,
            target,
            key,
            options,
            buf: Vec::new(),
            parts: 0,
            upload: None,
            in_flight: VecDeque::new(),
            done: false,
        }
    }

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
