//! Carry out a plan: blobs, then manifests (children before parents), then the tag.
//! Nothing here reads config: the composition root hands in [`CopyOptions`].

mod blob;
mod manifest;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::model::Digest;
use crate::registry::RegistryError;
use crate::state::{Counts, StateError, StateStore};

pub use manifest::RepoReport;

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("interrupted")]
    Interrupted,
    #[error("source ended before the end of blob {digest}")]
    SourceShort { digest: Digest },
    #[error("source sent more than the {size} bytes of blob {digest}")]
    SourceLong { digest: Digest, size: u64 },
    #[error("source sent blob {expected} with the wrong content (digest {actual})")]
    SourceDigest { expected: Digest, actual: Digest },
    #[error("{0}")]
    Protocol(String),
}

impl CopyError {
    /// Worth asking the target where the upload stands and going on from there.
    fn is_retryable(&self) -> bool {
        match self {
            Self::Registry(e) => e.is_retryable() || matches!(e, RegistryError::Protocol { .. }),
            Self::SourceShort { .. } | Self::Protocol(_) => true,
            Self::State(_) | Self::Interrupted | Self::SourceLong { .. } | Self::SourceDigest { .. } => false,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Registry(e) => e.retry_after(),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct CopyOptions {
    pub chunk_size: u64,
    pub max_concurrent_blobs: usize,
}

#[derive(Default)]
struct Stats {
    tags_copied: AtomicU64,
    tags_in_sync: AtomicU64,
    conflicts: AtomicU64,
    manifests_written: AtomicU64,
    blobs_uploaded: AtomicU64,
    blobs_mounted: AtomicU64,
    blobs_skipped: AtomicU64,
    bytes_sent: AtomicU64,
    failures: AtomicU64,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// One lock per (target, digest): a copy of that digest to that target holds it.
type DigestLocks = Mutex<HashMap<(String, Digest), Arc<tokio::sync::Mutex<()>>>>;

/// Shared by every policy run of one process: the blob slots (`max_concurrent_blobs`) and the
/// per-digest locks that make a layer shared by several repositories upload once and mount
/// everywhere else.
pub struct CopyShared {
    opts: CopyOptions,
    blob_slots: Semaphore,
    locks: DigestLocks,
}

impl CopyShared {
    pub fn new(opts: CopyOptions) -> Arc<Self> {
        Arc::new(CopyShared { blob_slots: Semaphore::new(opts.max_concurrent_blobs.max(1)), opts, locks: Mutex::default() })
    }

    fn digest_lock(&self, target: &str, digest: &Digest) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().expect("lock poisoned");
        locks.entry((target.to_owned(), digest.clone())).or_default().clone()
    }
}

/// One policy run's copier: its counters, and the shared limits and state.
pub struct Copier {
    shared: Arc<CopyShared>,
    state: StateStore,
    stats: Stats,
    cancel: CancellationToken,
}

impl Copier {
    pub fn new(shared: Arc<CopyShared>, state: StateStore, cancel: CancellationToken) -> Self {
        Copier { shared, state, stats: Stats::default(), cancel }
    }

    pub fn cancel_token(&self) -> &CancellationToken {
        &self.cancel
    }

    pub fn counts(&self) -> Counts {
        let s = &self.stats;
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counts {
            tags_copied: g(&s.tags_copied),
            tags_in_sync: g(&s.tags_in_sync),
            conflicts: g(&s.conflicts),
            manifests_written: g(&s.manifests_written),
            blobs_uploaded: g(&s.blobs_uploaded),
            blobs_mounted: g(&s.blobs_mounted),
            blobs_skipped: g(&s.blobs_skipped),
            bytes_sent: g(&s.bytes_sent),
            failures: g(&s.failures),
        }
    }

    /// Count a failure that happened outside a repository copy (e.g. a source that cannot be listed).
    pub fn count_failure(&self) {
        add(&self.stats.failures, 1);
    }
}
