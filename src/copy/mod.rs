//! Carry out a plan: blobs, then manifests (children before parents), then the tag.
//! Nothing here reads config: the composition root hands in [`CopyOptions`].

mod blob;
mod body;
mod deletes;
mod error;
mod fallback;
mod fanout;
mod habits;
mod manifest;
mod recorded;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::model::{Digest, ErrorKind, RepoName};
use crate::plan::RepoPlan;
use crate::registry::{RateLimiter, Registry, WriteGate};
use crate::state::{Counts, StateStore};

pub use blob::{push_blob, BlobOutcome};
pub use error::{CopyError, Failure, FenceError, Shared, TagOutcome};
pub use fanout::Fanout;
pub use manifest::RepoReport;
pub use recorded::Record;

/// Most a fan-out member may have buffered, whatever the chunk size: enough to ride out a
/// chunk's round trip on a slow link without holding the faster targets back.
const FANOUT_BUFFER: u64 = 8 << 20;

#[derive(Clone, Copy, Debug)]
pub struct CopyOptions {
    pub chunk_size: u64,
    pub max_concurrent_blobs: usize,
    /// Bytes per second this process sends in blob uploads, all targets together.
    pub bandwidth_limit: Option<u64>,
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
    /// The same failures by kind, for `ferry_failures_total{kind}`.
    failure_kinds: Mutex<BTreeMap<ErrorKind, u64>>,
    retries: AtomicU64,
    held: AtomicU64,
    deleted: AtomicU64,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// One async lock per key, made on first use and dropped once nobody holds or waits for it.
pub struct KeyedLocks<K>(Mutex<HashMap<K, Arc<tokio::sync::Mutex<()>>>>);

impl<K: Eq + std::hash::Hash> Default for KeyedLocks<K> {
    fn default() -> Self {
        KeyedLocks(Mutex::default())
    }
}

impl<K: Eq + std::hash::Hash> KeyedLocks<K> {
    /// Wait for the lock of `key`; it is held until the guard is dropped.
    pub async fn lock(&self, key: K) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut map = self.0.lock().expect("lock poisoned");
            // Held or awaited locks have a clone outside the map; the rest are spent.
            map.retain(|_, l| Arc::strong_count(l) > 1);
            map.entry(key).or_default().clone()
        };
        lock.lock_owned().await
    }
}

/// Shared by every policy run of one process: the blob slots (`max_concurrent_blobs`) and the
/// per-digest locks that make a layer shared by several repositories upload once and mount
/// everywhere else.
pub struct CopyShared {
    opts: CopyOptions,
    blob_slots: Arc<Semaphore>,
    /// One per (target, digest): a copy of that digest to that target holds it.
    locks: KeyedLocks<(String, Digest)>,
    bandwidth: Option<Arc<RateLimiter>>,
    /// Live totals across every run of this process, for a progress line.
    pub progress: Progress,
    /// Work a copy leaves running on its own (a fan-out's source read and its start timer):
    /// the daemon waits for it at a stop like for its runs.
    tasks: tokio_util::task::TaskTracker,
}

/// What has been done so far, updated as it happens (bytes per acknowledged chunk).
#[derive(Default)]
pub struct Progress {
    pub tags: AtomicU64,
    pub blobs: AtomicU64,
    pub bytes: AtomicU64,
    /// Large blobs being sent now, each worth a progress bar of its own.
    large: std::sync::Mutex<std::collections::BTreeMap<u64, Arc<BlobProgress>>>,
    next: AtomicU64,
}

/// One large blob on its way to one target.
pub struct BlobProgress {
    pub id: u64,
    /// `repository@sha256:0123abcd → target`
    pub label: String,
    pub size: u64,
    pub done: AtomicU64,
}

/// A blob's bar, shown while this lives.
pub(crate) struct BarGuard<'a> {
    progress: &'a Progress,
    pub bar: Arc<BlobProgress>,
}

impl Drop for BarGuard<'_> {
    fn drop(&mut self) {
        self.progress
            .large
            .lock()
            .expect("lock poisoned")
            .remove(&self.bar.id);
    }
}

/// Blobs from this size up get their own bar on a terminal: smaller ones come and go too fast.
const LARGE_BLOB: u64 = 32 << 20;

impl Progress {
    /// The blobs being sent now that have bars, oldest first.
    pub fn large_blobs(&self) -> Vec<Arc<BlobProgress>> {
        self.large
            .lock()
            .expect("lock poisoned")
            .values()
            .cloned()
            .collect()
    }

    /// A bar for a blob about to be sent, when it is large; it goes when the guard drops.
    pub(crate) fn bar(&self, label: impl FnOnce() -> String, size: u64) -> Option<BarGuard<'_>> {
        if size < LARGE_BLOB {
            return None;
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let bar = Arc::new(BlobProgress {
            id,
            label: label(),
            size,
            done: AtomicU64::new(0),
        });
        self.large
            .lock()
            .expect("lock poisoned")
            .insert(id, bar.clone());
        Some(BarGuard {
            progress: self,
            bar,
        })
    }
}

impl CopyShared {
    pub fn new(opts: CopyOptions) -> Arc<Self> {
        Arc::new(CopyShared {
            blob_slots: Arc::new(Semaphore::new(opts.max_concurrent_blobs.max(1))),
            bandwidth: opts.bandwidth_limit.map(|b| Arc::new(RateLimiter::new(b))),
            opts,
            locks: KeyedLocks::default(),
            progress: Progress::default(),
            tasks: tokio_util::task::TaskTracker::new(),
        })
    }

    pub fn tasks(&self) -> &tokio_util::task::TaskTracker {
        &self.tasks
    }
}

/// Asked right before every tag write or tag delete: may this process still write the tags
/// of the policy being run? A cluster member checks that it still holds the policy; a
/// daemon alone has no fence. A registry cannot check a fencing token itself, so this is
/// the last moment at which a member that lost its policy can still be stopped.
pub trait Fence: Send + Sync {
    fn check(&self) -> futures_util::future::BoxFuture<'_, Result<(), FenceError>>;
    /// How much longer a write that starts now is safe (the lease's time left, less a
    /// margin); `None`: no limit.
    fn vouched_for(&self) -> Option<std::time::Duration> {
        None
    }
}

/// What may stop a run's writes: its cancellation (a stop, a reload, the policy moving to
/// another cluster member), and in a cluster the fence asked before every tag write.
#[derive(Clone)]
pub struct Guards {
    pub cancel: CancellationToken,
    pub fence: Option<Arc<dyn Fence>>,
}

impl Guards {
    /// Cancellation only: a daemon alone, or `ferry sync`.
    pub fn cancel(cancel: CancellationToken) -> Self {
        Guards {
            cancel,
            fence: None,
        }
    }
}

/// One policy run's copier: its counters (per target), and the shared limits and state.
pub struct Copier {
    shared: Arc<CopyShared>,
    state: StateStore,
    stats: Mutex<BTreeMap<String, Arc<Stats>>>,
    cancel: CancellationToken,
    fence: Option<Arc<dyn Fence>>,
    deletes: deletes::DeleteWays,
    /// The audit ledger and who writes; none for copies outside a run.
    record: Option<Record>,
}

/// Every attempt of a tag write or delete asks the fence first, and the run's stop ends a
/// wait between attempts (a 503 with `Retry-After` must not outlive the policy's lock).
impl WriteGate for Copier {
    fn admit(&self) -> futures_util::future::BoxFuture<'_, Result<(), String>> {
        use futures_util::FutureExt;
        async move { self.fenced().await.map_err(|e| e.to_string()) }.boxed()
    }

    fn stopped(&self) -> futures_util::future::BoxFuture<'_, ()> {
        use futures_util::FutureExt;
        self.cancel.cancelled().boxed()
    }

    fn vouched_for(&self) -> Option<std::time::Duration> {
        self.fence.as_ref().and_then(|f| f.vouched_for())
    }
}

impl Stats {
    fn fail(&self, kind: ErrorKind) {
        add(&self.failures, 1);
        *self
            .failure_kinds
            .lock()
            .expect("lock poisoned")
            .entry(kind)
            .or_default() += 1;
    }

    fn snapshot(&self) -> Counts {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counts {
            tags_copied: g(&self.tags_copied),
            tags_in_sync: g(&self.tags_in_sync),
            conflicts: g(&self.conflicts),
            manifests_written: g(&self.manifests_written),
            blobs_uploaded: g(&self.blobs_uploaded),
            blobs_mounted: g(&self.blobs_mounted),
            blobs_skipped: g(&self.blobs_skipped),
            bytes_sent: g(&self.bytes_sent),
            failures: g(&self.failures),
            retries: g(&self.retries),
            held: g(&self.held),
            deleted: g(&self.deleted),
        }
    }
}

impl Copier {
    pub fn new(shared: Arc<CopyShared>, state: StateStore, guards: Guards) -> Self {
        Copier {
            shared,
            state,
            stats: Mutex::default(),
            cancel: guards.cancel,
            fence: guards.fence,
            deletes: deletes::DeleteWays::default(),
            record: None,
        }
    }

    /// Record every write in the audit ledger, as `record` says who makes it.
    pub fn recording(self, record: Record) -> Self {
        Copier {
            record: Some(record),
            ..self
        }
    }

    /// Before a tag write or delete: the fence, if any, still lets us write.
    async fn fenced(&self) -> Result<(), FenceError> {
        match &self.fence {
            Some(f) => f.check().await,
            None => Ok(()),
        }
    }

    /// The gate of this run's tag writes and deletes: asked before every attempt.
    fn gate(&self) -> Option<&dyn WriteGate> {
        Some(self)
    }

    /// The fan-out groups of one repository copied to several targets in this run: every
    /// blob that more than one of `plans` lacks is read from the source once for all of them.
    pub fn fanout(&self, source: &Registry, repo: &RepoName, plans: &[RepoPlan]) -> Arc<Fanout> {
        let fan = Fanout::new(
            self.shared.clone(),
            source,
            repo,
            self.shared.opts.chunk_size.min(FANOUT_BUFFER),
        );
        for p in plans.iter().filter(|p| p.error.is_none()) {
            for (digest, _) in p.missing_blobs() {
                fan.expect(&p.target, digest);
            }
        }
        fan.settle();
        fan
    }

    pub fn cancel_token(&self) -> &CancellationToken {
        &self.cancel
    }

    fn stats(&self, target: &str) -> Arc<Stats> {
        self.stats
            .lock()
            .expect("lock poisoned")
            .entry(target.to_owned())
            .or_default()
            .clone()
    }

    /// Counters of this run, per target.
    pub fn counts_by_target(&self) -> BTreeMap<String, Counts> {
        self.stats
            .lock()
            .expect("lock poisoned")
            .iter()
            .map(|(t, s)| (t.clone(), s.snapshot()))
            .collect()
    }

    /// Count a failure that happened outside a repository copy (a source that cannot be
    /// listed, a repository that cannot be planned).
    pub fn count_failure(&self, target: &str, kind: ErrorKind) {
        self.stats(target).fail(kind);
    }

    /// Failures of this run by target and kind.
    pub fn failure_kinds(&self) -> BTreeMap<(String, ErrorKind), u64> {
        let stats = self.stats.lock().expect("lock poisoned");
        let mut out = BTreeMap::new();
        for (target, s) in stats.iter() {
            for (kind, n) in s.failure_kinds.lock().expect("lock poisoned").iter() {
                out.insert((target.clone(), *kind), *n);
            }
        }
        out
    }
}
