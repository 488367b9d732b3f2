//! IO: reading an artifact from S3 as a stream of chunks behind `Read`.

use std::io::{self, Read};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use object_store::path::Path;

use super::runtime::block;
use crate::storage::s3_error::{Target, remote};

pub(super) struct S3Reader {
    rt: &'static tokio::runtime::Runtime,
    stream: BoxStream<'static, object_store::Result<Bytes>>,
    chunk: Bytes,
    target: Target,
    key: Path,
}

impl S3Reader {
    pub(super) fn new(
        rt: &'static tokio::runtime::Runtime,
        stream: BoxStream<'static, object_store::Result<Bytes>>,
        target: Target,
        key: Path,
    ) -> S3Reader {
        S3Reader {
            rt,
            stream,
            chunk: Bytes::new(),
            target,
            key,
        }
    }
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
