//! One blob from source to target: resume a saved upload, else mount, else an upload
//! streamed from the source in the way the target takes (`habits.rs`). In a chunked upload
//! every acknowledged chunk is checkpointed (and flushed) before the next is sent; a failed
//! chunk is never re-sent blindly: the registry is asked first, and its answer is checked
//! against ferry's own count of what it sent.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::body::{chunk_body, source_error, Limits, SourceReader};
use super::habits::{refusal, Habit, Refusal};
use super::CopyError;
use crate::model::{Digest, Hasher, RepoName, UploadStrategy};
use crate::registry::{
    BlobStream, RateLimiter, Registry, RegistryError, UploadSession, UploadStart,
};
use crate::state::{StateStore, UploadRecord};

/// Attempts at one blob within a run; each resumes from what the registry acknowledged.
const MAX_ATTEMPTS: u32 = 6;
/// Strategy changes one blob may go through (chunked, stream, monolithic, bigger parts).
const MAX_CHANGES: u32 = 4;

/// How one blob reached the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobOutcome {
    Uploaded { bytes: u64 },
    Mounted,
    AlreadyThere,
}

/// Send one blob the way a copy does (learning the target's upload habits): for `ferry
/// probe --write`, outside any plan.
///
/// # Errors
/// As a blob copy fails.
#[allow(clippy::too_many_arguments)]
pub async fn push_blob(
    source: &Registry,
    src_repo: &RepoName,
    target: &Registry,
    target_key: &str,
    dst_repo: &RepoName,
    digest: &Digest,
    size: u64,
    chunk_size: u64,
    state: &StateStore,
) -> Result<BlobOutcome, CopyError> {
    let (cancel, retries, progress) = (
        CancellationToken::new(),
        AtomicU64::new(0),
        AtomicU64::new(0),
    );
    let job = BlobJob {
        source,
        target,
        target_key,
        src_repo,
        dst_repo,
        digest,
        size,
        chunk_size,
        state,
        cancel: &cancel,
        retries: &retries,
        global_limit: None,
        progress: &progress,
        bar: None,
        feed: std::sync::Mutex::new(None),
    };
    job.run(None).await
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

/// How far a transfer got, for the decisions after a failure.
#[derive(Default)]
struct Sent {
    /// Bytes the registry acknowledged, over every attempt (the run's counters).
    bytes: u64,
    /// Chunk PATCHes of the current session.
    patches: u32,
    /// The body of the request that failed.
    body: u64,
}

impl BlobJob<'_> {
    async fn checkpoint(&self, s: &UploadSession) {
        let rec = UploadRecord::new(s.location.clone(), s.offset, self.size);
        self.state
            .save_upload(self.target_key, self.dst_repo, self.digest, &rec)
            .await;
    }

    fn acknowledged(&self, sent: &mut Sent, len: u64) {
        sent.bytes += len;
        self.progress.fetch_add(len, Ordering::Relaxed);
        if let Some(b) = self.bar {
            b.done.fetch_add(len, Ordering::Relaxed);
        }
    }

    fn forget(&self) {
        self.state
            .forget_upload(self.target_key, self.dst_repo, self.digest);
    }

    /// How the target takes uploads: as configured, else as it has answered before.
    fn habit(&self) -> Habit {
        let learnt = self
            .state
            .habits(self.target_key, self.target.url().as_str());
        Habit::of(self.target.upload_setting(), learnt.as_ref())
    }

    /// A session to continue: the saved one if the registry still has it (a mount first, when
    /// another repository holds the blob: no byte to send then), else a mount or a new one.
    async fn open_session(
        &self,
        mount_from: Option<&RepoName>,
    ) -> Result<Result<UploadSession, BlobOutcome>, CopyError> {
        if let Some(rec) = self
            .state
            .upload(self.target_key, self.dst_repo, self.digest)
        {
            if let Some(from) = mount_from {
                match self
                    .target
                    .start_upload(self.dst_repo, Some((self.digest, from)))
                    .await?
                {
                    UploadStart::Mounted => {
                        self.target
                            .cancel_upload(self.dst_repo, &rec.location)
                            .await;
                        self.forget();
                        return Ok(Err(BlobOutcome::Mounted));
                    }
                    UploadStart::Session(fresh) => {
                        self.target
                            .cancel_upload(self.dst_repo, &fresh.location)
                            .await;
                        self.state.blob_gone(self.target_key, from, self.digest);
                    }
                }
            }
            match self
                .target
                .upload_status(self.dst_repo, &rec.location)
                .await?
            {
                Some(mut s) => {
                    // Quay's status counts one past the end (QUAY-3): what ferry knows it sent
                    // is the better figure then. Otherwise the registry's figure is the truth
                    // (it may hold more than the checkpoint: a body that landed after a kill).
                    if rec.offset.checked_add(1) == Some(s.offset) {
                        s.offset = rec.offset;
                    }
                    info!(offset = s.offset, saved = rec.offset, "resuming upload");
                    return Ok(Ok(s));
                }
                None => {
                    // Distribution 2.8 invalidates a session whose PATCH was cut (crash, reset),
                    // and refuses even to say where it stood.
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
        match self
            .target
            .start_upload(self.dst_repo, mount_from.map(|from| (self.digest, from)))
            .await?
        {
            UploadStart::Mounted => Ok(Err(BlobOutcome::Mounted)),
            UploadStart::Session(s) => {
                if let Some(from) = mount_from {
                    debug!(from = %from, "mount refused; uploading");
                    self.state.blob_gone(self.target_key, from, self.digest);
                }
                Ok(Ok(s))
            }
        }
    }

    pub(super) async fn run(
        &self,
        mount_from: Option<&RepoName>,
    ) -> Result<BlobOutcome, CopyError> {
        let mut habit = self.habit();
        let mut session = match self.open_session(mount_from).await? {
            Ok(s) => s,
            Err(done) => return Ok(done),
        };
        let mut sent = Sent::default();
        let (mut attempt, mut changes) = (0, 0);
        loop {
            attempt += 1;
            let before = session.offset;
            // Only chunks resume after a restart: a crash from here on finds this record.
            if habit.strategy == UploadStrategy::Chunked {
                self.checkpoint(&session).await;
            }
            let result = match habit.strategy {
                UploadStrategy::Chunked => self.send_chunked(&mut session, &mut sent, &habit).await,
                whole => self.send_whole(&session, &mut sent, whole).await,
            };
            let e = match result {
                Ok(()) => {
                    self.forget();
                    return Ok(BlobOutcome::Uploaded { bytes: sent.bytes });
                }
                Err(CopyError::Interrupted) => return Err(CopyError::Interrupted),
                Err(e) => e,
            };
            let part = habit.part(self.chunk_size, session.min_chunk);
            let learnt = refusal(&e, habit.strategy, sent.patches, sent.body)
                .and_then(|r| habit.after(r, part).map(|h| (r, h)));
            if let Some((r, next)) = learnt.filter(|_| changes < MAX_CHANGES) {
                changes += 1;
                warn!(registry = self.target.name(), error = %e, from = %habit.strategy, to = %next.strategy, "upload refused; going on the way the registry takes");
                self.state
                    .remember_habits(self.target_key, &next.record(self.target.url().as_str()));
                habit = next;
                // A body too large for one request: the chunks already there stay, the rest goes
                // in smaller requests. Any other refusal starts the blob over the new way.
                if let (Refusal::BodyTooLarge(_), Some(s)) = (r, self.status(&session).await?) {
                    session = s;
                    continue;
                }
                session = self.restart(&session).await?;
                sent.patches = 0;
                continue;
            }
            if (e.is_retryable() || lost_session(&e))
                && attempt < MAX_ATTEMPTS
                && !self.cancel.is_cancelled()
            {
                self.retries.fetch_add(1, Ordering::Relaxed);
                let wait = e
                    .retry_after()
                    .unwrap_or(Duration::from_millis(500 << attempt.min(6)));
                warn!(error = %e, attempt, offset = session.offset, ?wait, "blob transfer failed; asking the target where it stands");
                tokio::select! {
                    () = self.cancel.cancelled() => return Err(CopyError::Interrupted),
                    () = tokio::time::sleep(wait) => {}
                }
                // Only chunks resume: a stream or a single PUT goes again from its start.
                let resumed = match habit.strategy {
                    UploadStrategy::Chunked => self.status(&session).await?,
                    _ => None,
                };
                session = match resumed {
                    Some(s) => s,
                    None => {
                        warn!(
                            lost = before.max(session.offset),
                            "target invalidated the upload; starting this blob over"
                        );
                        sent.patches = 0;
                        self.restart(&session).await?
                    }
                };
                continue;
            }
            // A permanent failure: do not leave a half upload for a later run to resume.
            self.target
                .cancel_upload(self.dst_repo, &session.location)
                .await;
            self.forget();
            return Err(e);
        }
    }

    /// Where the registry says the upload stands; `None` when it has forgotten it.
    async fn status(&self, session: &UploadSession) -> Result<Option<UploadSession>, CopyError> {
        let s = self
            .target
            .upload_status(self.dst_repo, &session.location)
            .await?;
        if let Some(s) = &s {
            self.checkpoint(s).await;
        }
        Ok(s)
    }

    /// Abandon `session` and open a new one.
    async fn restart(&self, session: &UploadSession) -> Result<UploadSession, CopyError> {
        self.target
            .cancel_upload(self.dst_repo, &session.location)
            .await;
        self.forget();
        match self.target.start_upload(self.dst_repo, None).await? {
            UploadStart::Session(s) => Ok(s),
            UploadStart::Mounted => Err(CopyError::Protocol(
                "the registry mounted a blob it was not asked to".into(),
            )),
        }
    }

    /// The source from `offset`, hashed when it starts at byte 0.
    async fn reader(&self, offset: u64) -> Result<SourceReader, CopyError> {
        let feed = self.feed.lock().expect("lock poisoned").take();
        let body = match feed {
            Some(stream) if offset == 0 => BlobStream { offset: 0, stream },
            _ => {
                self.source
                    .get_blob(self.src_repo, self.digest, offset)
                    .await?
            }
        };
        Ok(SourceReader {
            stream: body.stream,
            pending: Bytes::new(),
            skip: offset - body.offset,
            // Only a stream from byte 0 can be hashed here (a source that ignored our Range
            // sends one); a resumed upload is verified by the registry when the PUT names it.
            hasher: (body.offset == 0).then(Hasher::default),
            digest: self.digest.clone(),
            size: self.size,
        })
    }

    fn limits(&self) -> Limits {
        Limits {
            target: self.target.clone(),
            global: self.global_limit.clone(),
        }
    }

    /// The whole blob in one request: one PATCH without `Content-Range` and an empty PUT
    /// (`Stream`), or one PUT (`Monolithic`). Neither resumes: a failure starts over.
    async fn send_whole(
        &self,
        session: &UploadSession,
        sent: &mut Sent,
        how: UploadStrategy,
    ) -> Result<(), CopyError> {
        if self.cancel.is_cancelled() {
            return Err(CopyError::Interrupted);
        }
        if let Some(b) = self.bar {
            b.done.store(0, Ordering::Relaxed);
        }
        let src = self.reader(0).await?;
        let (body, back) = chunk_body(src, self.size, true, self.limits());
        sent.body = self.size;
        let (target, repo) = (self.target, self.dst_repo);
        if how == UploadStrategy::Monolithic {
            target
                .finish_upload(repo, session, self.digest, Some((body, self.size)))
                .await
                .map_err(|e| source_error(e, back))?;
        } else {
            let patched = target
                .patch_chunk(repo, session, body, self.size, false)
                .await
                .map_err(|e| source_error(e, back))?;
            target
                .finish_upload(repo, &patched.session, self.digest, None)
                .await?;
        }
        self.acknowledged(sent, self.size);
        Ok(())
    }

    /// Send from `session.offset` to the end in chunks: PATCH whole chunks, then PUT the last
    /// one (or PATCH it too, and PUT nothing, when the registry takes no body that large).
    async fn send_chunked(
        &self,
        session: &mut UploadSession,
        sent: &mut Sent,
        habit: &Habit,
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
        let part = habit.part(self.chunk_size, session.min_chunk);
        let mut src = self.reader(session.offset).await?;
        loop {
            if self.cancel.is_cancelled() {
                return Err(CopyError::Interrupted);
            }
            let len = part.min(self.size - session.offset);
            let last = session.offset + len == self.size;
            let (body, back) = chunk_body(src, len, last, self.limits());
            sent.body = len;
            if last && habit.fits(len) {
                self.target
                    .finish_upload(self.dst_repo, session, self.digest, Some((body, len)))
                    .await
                    .map_err(|e| source_error(e, back))?;
                self.acknowledged(sent, len);
                return Ok(());
            }
            let patched = match self
                .target
                .patch_chunk(self.dst_repo, session, body, len, true)
                .await
            {
                Ok(p) => p,
                Err(e) => return Err(source_error(e, back)),
            };
            sent.patches += 1;
            self.acknowledged(sent, len);
            *session = patched.session;
            if let Some(says) = patched.registry_says {
                // ECR's Range goes stale after the first chunk (ECR-2): ask, and go on if the
                // registry's own status agrees with what ferry sent; start over rather than
                // loop when it does not.
                match self
                    .target
                    .upload_status(self.dst_repo, &session.location)
                    .await?
                {
                    Some(s)
                        if s.offset == session.offset
                            || session.offset.checked_add(1) == Some(s.offset) =>
                    {
                        debug!(
                            says,
                            offset = session.offset,
                            "the PATCH answer's Range is stale; the status agrees with ferry"
                        );
                        session.location = s.location;
                    }
                    other => {
                        let held = other.map_or("nothing".to_owned(), |s| s.offset.to_string());
                        return Err(CopyError::Protocol(format!(
                            "the registry acknowledged {says} bytes and holds {held}, ferry sent {}",
                            session.offset
                        )));
                    }
                }
            }
            self.checkpoint(session).await;
            debug!(
                offset = session.offset,
                size = self.size,
                "chunk acknowledged"
            );
            if last {
                self.target
                    .finish_upload(self.dst_repo, session, self.digest, None)
                    .await?;
                return Ok(());
            }
            src = back.take().await?;
        }
    }
}

/// The registry forgot or invalidated the upload session: a PATCH of a killed run that
/// landed after this run asked where the upload stood makes Distribution reject the stale
/// `_state` (404 BLOB_UPLOAD_INVALID). Asking again and starting over is the way on.
fn lost_session(e: &CopyError) -> bool {
    matches!(e, CopyError::Registry(RegistryError::Status { status: 404, code: Some(c), .. })
        if c == "BLOB_UPLOAD_INVALID" || c == "BLOB_UPLOAD_UNKNOWN")
}
