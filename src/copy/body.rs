//! Request bodies that pull exactly their bytes from a source response as the registry
//! reads them, so memory holds a few network frames, never a chunk or a layer; the source
//! reader is handed from one request's body to the next, and the last body checks the end of
//! the blob (length and digest) before its final bytes go out.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use tokio::sync::oneshot;

use super::CopyError;
use crate::model::{Digest, Hasher};
use crate::registry::{RateLimiter, Registry, RegistryError};

/// When a request fails because its body failed, the body's error (a source fault or a
/// digest mismatch) is the real cause, not the transport error it provoked.
pub(super) fn source_error(e: RegistryError, back: Returned) -> CopyError {
    match back.try_error() {
        Some(cause) => cause,
        None => CopyError::Registry(e),
    }
}

/// The source body and what has been read of it, handed from one chunk's request to the next.
pub(super) struct SourceReader {
    pub stream: BoxStream<'static, Result<Bytes, RegistryError>>,
    pub pending: Bytes,
    /// Bytes still to discard because the source ignored our Range request.
    pub skip: u64,
    pub hasher: Option<Hasher>,
    pub digest: Digest,
    pub size: u64,
}

impl SourceReader {
    async fn next_bytes(&mut self, max: u64) -> Result<Bytes, CopyError> {
        loop {
            if !self.pending.is_empty() {
                let n = (self.pending.len() as u64).min(max) as usize;
                let out = self.pending.split_to(n);
                if let Some(h) = &mut self.hasher {
                    h.update(&out);
                }
                return Ok(out);
            }
            match self.stream.next().await {
                Some(Ok(mut b)) => {
                    if self.skip > 0 {
                        let drop = (b.len() as u64).min(self.skip) as usize;
                        let skipped = b.split_to(drop);
                        if let Some(h) = &mut self.hasher {
                            h.update(&skipped);
                        }
                        self.skip -= drop as u64;
                    }
                    self.pending = b;
                }
                Some(Err(e)) => return Err(CopyError::Registry(e)),
                None => {
                    return Err(CopyError::SourceShort {
                        digest: self.digest.clone(),
                    })
                }
            }
        }
    }

    /// At the end of the blob: no byte more, and (when hashed from 0) the right digest.
    async fn verify_end(&mut self) -> Result<(), CopyError> {
        if !self.pending.is_empty() {
            return Err(CopyError::SourceLong {
                digest: self.digest.clone(),
                size: self.size,
            });
        }
        while let Some(b) = self.stream.next().await {
            if !b.map_err(CopyError::Registry)?.is_empty() {
                return Err(CopyError::SourceLong {
                    digest: self.digest.clone(),
                    size: self.size,
                });
            }
        }
        if let Some(h) = self.hasher.take() {
            let actual = h.finish();
            if actual != self.digest {
                return Err(CopyError::SourceDigest {
                    expected: self.digest.clone(),
                    actual,
                });
            }
        }
        Ok(())
    }
}

/// What a chunk body hands back when the request is done with it.
pub(super) struct Returned(oneshot::Receiver<Result<SourceReader, CopyError>>);

impl Returned {
    pub async fn take(self) -> Result<SourceReader, CopyError> {
        // A body dropped unread (request failed before sending it) returns nothing: the
        // caller then reopens the source from the offset the registry reports.
        self.0.await.unwrap_or(Err(CopyError::Protocol(
            "source stream lost with a failed request".into(),
        )))
    }
    fn try_error(mut self) -> Option<CopyError> {
        match self.0.try_recv() {
            Ok(Err(e)) => Some(e),
            _ => None,
        }
    }
}

/// A request body of exactly `len` bytes taken from `src`. The reader is handed back as the
/// last byte is produced (hyper may never poll an exhausted body again); on the last chunk
/// the end of the blob is verified first, and a mismatch fails the body before its final
/// bytes go out, so the registry never commits a wrong blob.
pub(super) fn chunk_body(
    src: SourceReader,
    len: u64,
    last: bool,
    limits: Limits,
) -> (reqwest::Body, Returned) {
    let (tx, rx) = oneshot::channel();
    let limits = Arc::new(limits);
    let stream =
        futures_util::stream::unfold((Some(src), len, Some(tx)), move |(src, left, tx)| {
            let limits = limits.clone();
            async move {
                let mut src = src?;
                let tx = tx?;
                let fail = |e: CopyError, tx: oneshot::Sender<_>| {
                    let msg = e.to_string();
                    let _ = tx.send(Err(e));
                    Some((Err(std::io::Error::other(msg)), (None, 0, None)))
                };
                let b = match src.next_bytes(left).await {
                    Ok(b) => b,
                    Err(e) => return fail(e, tx),
                };
                limits.wait(b.len()).await;
                let left = left - b.len() as u64;
                if left > 0 {
                    return Some((Ok(b), (Some(src), left, Some(tx))));
                }
                if last {
                    if let Err(e) = src.verify_end().await {
                        return fail(e, tx);
                    }
                }
                let _ = tx.send(Ok(src));
                Some((Ok(b), (None, 0, None)))
            }
        });
    (reqwest::Body::wrap_stream(stream), Returned(rx))
}

/// The bandwidth limits an upload body honours: its target registry's and the daemon's.
pub(super) struct Limits {
    pub target: Registry,
    pub global: Option<Arc<RateLimiter>>,
}

impl Limits {
    async fn wait(&self, n: usize) {
        self.target.throttle(n).await;
        if let Some(g) = &self.global {
            g.acquire(n).await;
        }
    }
}
