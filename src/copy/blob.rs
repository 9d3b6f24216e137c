//! One blob from source to target: resume a saved upload, else mount, else a chunked upload
//! streamed from the source. Every acknowledged chunk is checkpointed (and flushed) before
//! the next is sent; a failed chunk is never re-sent blindly: the registry is asked first.
//!
//! Each chunk's request body pulls exactly its bytes from the source response as the
//! registry reads them, so memory holds a few network frames, never a chunk or a layer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::CopyError;
use crate::model::{Digest, Hasher, RepoName};
use crate::registry::{
    BlobStream, RateLimiter, Registry, RegistryError, UploadSession, UploadStart,
};
use crate::state::{StateStore, UploadRecord};

/// Attempts at one blob within a run; each resumes from what the registry acknowledged.
const MAX_ATTEMPTS: u32 = 6;

pub(super) enum BlobOutcome {
    Uploaded { bytes: u64 },
    Mounted,
    AlreadyThere,
}

/// Everything one blob copy needs; borrowed from the engine.
pub(super) struct BlobJob<'a> {
    pub source: &'a Registry,
    pub target: &'a Registry,
    pub target_key: &'a str,
    pub src_repo: &'a RepoName,
    pub dst_repo: &'a RepoName,
    pub digest: &'a Digest,
    pub size: u64,
    pub chunk_size: u64,
    pub state: &'a StateStore,
    pub cancel: &'a CancellationToken,
    pub retries: &'a AtomicU64,
    pub global_limit: Option<Arc<RateLimiter>>,
    /// Bytes acknowledged so far, across the process (the progress line), and of this blob
    /// when it has a bar of its own.
    pub progress: &'a AtomicU64,
    pub bar: Option<&'a super::BlobProgress>,
    /// The blob from byte 0 through a fan-out group, for the first attempt that starts at 0.
    pub feed: std::sync::Mutex<Option<BoxStream<'static, Result<Bytes, RegistryError>>>>,
}

impl BlobJob<'_> {
    async fn checkpoint(&self, s: &UploadSession) {
        let rec = UploadRecord::new(s.location.clone(), s.offset, self.size);
        self.state
            .save_upload(self.target_key, self.dst_repo, self.digest, &rec)
            .await;
    }

    fn acknowledged(&self, sent: &mut u64, len: u64) {
        *sent += len;
        self.progress.fetch_add(len, Ordering::Relaxed);
        if let Some(b) = self.bar {
            b.done.fetch_add(len, Ordering::Relaxed);
        }
    }

    fn forget(&self) {
        self.state
            .forget_upload(self.target_key, self.dst_repo, self.digest);
    }

    /// A session to continue: the saved one if the registry still has it, else a mount or a new one.
    async fn open_session(
        &self,
        mount_from: Option<&RepoName>,
    ) -> Result<Result<UploadSession, BlobOutcome>, CopyError> {
        if let Some(rec) = self
            .state
            .upload(self.target_key, self.dst_repo, self.digest)
        {
            match self
                .target
                .upload_status(self.dst_repo, &rec.location)
                .await?
            {
                Some(s) => {
                    info!(offset = s.offset, saved = rec.offset, "resuming upload");
                    return Ok(Ok(s));
                }
                None => {
                    // Distribution invalidates a session whose PATCH was cut (crash, reset).
                    warn!(
                        saved = rec.offset,
                        "target no longer holds the saved upload; starting this blob over"
                    );
                    self.forget();
                    if self
                        .target
                        .head_blob(self.dst_repo, self.digest)
                        .await?
                        .is_some()
                    {
                        return Ok(Err(BlobOutcome::AlreadyThere)); // the last run finished it, then stopped
                    }
                }
            }
        }
        let start = self
            .target
            .start_upload(self.dst_repo, mount_from.map(|from| (self.digest, from)))
            .await?;
        match start {
            UploadStart::Mounted => Ok(Err(BlobOutcome::Mounted)),
            UploadStart::Session(s) => {
                if let Some(from) = mount_from {
                    debug!(from = %from, "mount refused; uploading");
                    self.state.blob_gone(self.target_key, from, self.digest);
                }
                self.checkpoint(&s).await;
                Ok(Ok(s))
            }
        }
    }

    pub(super) async fn run(
        &self,
        mount_from: Option<&RepoName>,
    ) -> Result<BlobOutcome, CopyError> {
        let mut session = match self.open_session(mount_from).await? {
            Ok(s) => s,
            Err(done) => return Ok(done),
        };
        let mut sent = 0u64;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let before = session.offset;
            match self.send_from(&mut session, &mut sent).await {
                Ok(()) => {
                    self.forget();
                    return Ok(BlobOutcome::Uploaded { bytes: sent });
                }
                Err(CopyError::Interrupted) => return Err(CopyError::Interrupted),
                Err(e)
                    if e.is_retryable()
                        && attempt < MAX_ATTEMPTS
                        && !self.cancel.is_cancelled() =>
                {
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    let wait = e
                        .retry_after()
                        .unwrap_or(Duration::from_millis(500 << attempt.min(6)));
                    warn!(error = %e, attempt, offset = session.offset, ?wait, "blob transfer failed; asking the target where it stands");
                    tokio::select! { () = self.cancel.cancelled() => return Err(CopyError::Interrupted), () = tokio::time::sleep(wait) => {} }
                    session = match self
                        .target
                        .upload_status(self.dst_repo, &session.location)
                        .await?
                    {
                        Some(s) => s,
                        None => {
                            warn!(
                                lost = before.max(session.offset),
                                "target invalidated the upload; starting this blob over"
                            );
                            self.target
                                .cancel_upload(self.dst_repo, &session.location)
                                .await;
                            match self.target.start_upload(self.dst_repo, None).await? {
                                UploadStart::Session(s) => s,
                                UploadStart::Mounted => return Ok(BlobOutcome::Mounted),
                            }
                        }
                    };
                    self.checkpoint(&session).await;
                }
                Err(e) => {
                    // A permanent failure: do not leave a half upload for a later run to resume.
                    self.target
                        .cancel_upload(self.dst_repo, &session.location)
                        .await;
                    self.forget();
                    return Err(e);
                }
            }
        }
    }

    /// Send from `session.offset` to the end: PATCH whole chunks, then PUT the last one.
    async fn send_from(
        &self,
        session: &mut UploadSession,
        sent: &mut u64,
    ) -> Result<(), CopyError> {
        if session.offset > self.size {
            return Err(CopyError::Protocol(format!(
                "target holds {} bytes of a {}-byte blob",
                session.offset, self.size
            )));
        }
        if session.offset == self.size {
            // Every byte is there (a 0-byte blob, or a stop just before the PUT): the registry
            // checks the digest when the PUT names it.
            self.target
                .finish_upload(self.dst_repo, session, self.digest, None)
                .await?;
            return Ok(());
        }
        if let Some(b) = self.bar {
            b.done.store(session.offset, Ordering::Relaxed);
        }
        let feed = self.feed.lock().expect("lock poisoned").take();
        let body = match feed {
            Some(stream) if session.offset == 0 => BlobStream { offset: 0, stream },
            _ => {
                self.source
                    .get_blob(self.src_repo, self.digest, session.offset)
                    .await?
            }
        };
        let mut src = SourceReader {
            stream: body.stream,
            pending: Bytes::new(),
            skip: session.offset - body.offset,
            // Only a stream from byte 0 can be hashed here (a source that ignored our Range sends
            // one); a resumed upload is verified by the registry when the PUT names the digest.
            hasher: (body.offset == 0).then(Hasher::default),
            digest: self.digest.clone(),
            size: self.size,
        };
        loop {
            if self.cancel.is_cancelled() {
                return Err(CopyError::Interrupted);
            }
            let len = self.chunk_size.min(self.size - session.offset);
            let last = session.offset + len == self.size;
            let limits = Limits {
                target: self.target.clone(),
                global: self.global_limit.clone(),
            };
            let (body, back) = chunk_body(src, len, last, limits);
            if last {
                self.target
                    .finish_upload(self.dst_repo, session, self.digest, Some((body, len)))
                    .await
                    .map_err(|e| source_error(e, back))?;
                self.acknowledged(sent, len);
                return Ok(());
            }
            let next = match self
                .target
                .patch_chunk(self.dst_repo, session, body, len)
                .await
            {
                Ok(next) => next,
                Err(e) => return Err(source_error(e, back)),
            };
            self.acknowledged(sent, len);
            *session = next;
            self.checkpoint(session).await;
            debug!(
                offset = session.offset,
                size = self.size,
                "chunk acknowledged"
            );
            src = back.take().await?;
        }
    }
}

/// When a request fails because its body failed, the body's error (a source fault or a
/// digest mismatch) is the real cause, not the transport error it provoked.
fn source_error(e: RegistryError, back: Returned) -> CopyError {
    match back.try_error() {
        Some(cause) => cause,
        None => CopyError::Registry(e),
    }
}

/// The source body and what has been read of it, handed from one chunk's request to the next.
struct SourceReader {
    stream: BoxStream<'static, Result<Bytes, RegistryError>>,
    pending: Bytes,
    /// Bytes still to discard because the source ignored our Range request.
    skip: u64,
    hasher: Option<Hasher>,
    digest: Digest,
    size: u64,
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
struct Returned(oneshot::Receiver<Result<SourceReader, CopyError>>);

impl Returned {
    async fn take(self) -> Result<SourceReader, CopyError> {
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
fn chunk_body(
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
struct Limits {
    target: Registry,
    global: Option<Arc<RateLimiter>>,
}

impl Limits {
    async fn wait(&self, n: usize) {
        self.target.throttle(n).await;
        if let Some(g) = &self.global {
            g.acquire(n).await;
        }
    }
}
