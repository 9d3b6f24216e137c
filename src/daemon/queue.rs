//! Accepted events waiting for their targeted runs: the in-memory side of the journal.
//!
//! The state store's journal is the durable copy (written before a webhook gets its 202,
//! removed when the work is done); this queue decides what runs next. One item per
//! (policy, repository, tag, action): events for an item that is queued fold into it; events
//! for an item that is running mark it to run once more afterwards, because the run may have
//! read the registry before the new push. A failed targeted run is retried with backoff, then
//! given up (it is in the run history, and the policy's periodic run reconciles anyway).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::shared::Claimed;
use super::Shared;
use crate::model::now_ms;
use crate::plan::{RunOptions, Scope};
use crate::run::Reach;
use crate::state::{JournalAction, JournalEntry, JournalKey, PendingEvent, StateError, StateStore};

/// Targeted runs in flight at once; each is one repository and is itself bounded by the
/// shared blob slots and the registries' `max_concurrent`.
const CONCURRENT_RUNS: usize = 8;
/// Targeted runs one item gets before it is given up: about 17 minutes of backoff.
const MAX_ATTEMPTS: u32 = 10;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("journal full: {0} events pending (daemon.max_pending_events); try again later")]
    Full(usize),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot hand the event to its policy's owner: {0}")]
    Cluster(#[from] crate::cluster::HandoffError),
}

/// What a journal key asks for, as a targeted run; `None` for a whole policy (those go to
/// its loop, never to this queue) or a push with no tag.
pub fn reach_of(key: &JournalKey) -> Option<Reach> {
    let repository = key.repository.clone()?;
    let scope = match (key.action, &key.tag) {
        (JournalAction::Push | JournalAction::Run, Some(t)) => Scope::Tag(t.clone()),
        (JournalAction::Run, None) => Scope::All,
        (JournalAction::Delete, t) => Scope::Deleted(t.clone()),
        (JournalAction::Push, None) => return None,
    };
    Some(Reach::Targeted { repository, scope })
}

struct Item {
    entry: JournalEntry,
    /// In a cluster: the etcd keys this item stands for (deleted once it is done).
    remote: Vec<String>,
    /// It has an entry in the local journal (items that came through etcd are kept there).
    journaled: bool,
    running: bool,
    /// An event came while running: run again afterwards.
    again: bool,
    /// Run requests waiting for the next run of this item.
    waiters: Vec<u64>,
}

#[derive(Default)]
struct Inner {
    items: HashMap<JournalKey, Item>,
    ready: VecDeque<JournalKey>,
}

pub struct EventQueue {
    state: StateStore,
    inner: Mutex<Inner>,
    wake: Notify,
    limit: AtomicUsize,
}

impl EventQueue {
    /// The queue, with every entry the journal holds (left by an earlier process) ready to run.
    ///
    /// # Errors
    /// When the journal cannot be read at all.
    pub fn replay(state: StateStore, limit: usize) -> Result<(Self, usize), StateError> {
        let (entries, damaged) = state.journal_all()?;
        if damaged > 0 {
            warn!(damaged, "journal entries that cannot be read were dropped; the policies' periodic runs cover them");
        }
        let mut inner = Inner::default();
        for (key, entry) in entries {
            inner.ready.push_back(key.clone());
            inner.items.insert(
                key,
                Item {
                    entry,
                    remote: vec![],
                    journaled: true,
                    running: false,
                    again: false,
                    waiters: vec![],
                },
            );
        }
        let n = inner.items.len();
        Ok((
            EventQueue {
                state,
                inner: Mutex::new(inner),
                wake: Notify::new(),
                limit: AtomicUsize::new(limit),
            },
            n,
        ))
    }

    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    pub fn pending(&self) -> usize {
        self.inner.lock().expect("lock poisoned").items.len()
    }

    /// The oldest `max` items waiting or running, oldest first, and how many in all.
    pub fn listed(&self, max: usize) -> (Vec<PendingEvent>, usize) {
        let inner = self.inner.lock().expect("lock poisoned");
        let mut all: Vec<(&JournalKey, &Item)> = inner.items.iter().collect();
        let total = all.len();
        if total > max {
            all.select_nth_unstable_by_key(max, |(_, i)| i.entry.accepted_ms);
            all.truncate(max);
        }
        all.sort_by_key(|(_, i)| i.entry.accepted_ms);
        (
            all.into_iter()
                .map(|(k, i)| PendingEvent::new(k.clone(), &i.entry, !i.journaled))
                .collect(),
            total,
        )
    }

    /// Add work (journaled, not yet flushed: the caller awaits `StateStore::commit` before it
    /// acknowledges). `waiter`: a run request to tell when it is done. `remote`: the etcd key
    /// it came from in a cluster (etcd keeps it; the local journal does not).
    ///
    /// # Errors
    /// When the journal is full or cannot be written: the event must then be refused.
    pub fn enqueue(
        &self,
        key: JournalKey,
        registry: &str,
        waiter: Option<u64>,
        remote: Option<String>,
    ) -> Result<(), QueueError> {
        let mut g = self.inner.lock().expect("lock poisoned");
        if let Some(item) = g.items.get_mut(&key) {
            if remote.as_ref().is_some_and(|r| item.remote.contains(r)) {
                return Ok(()); // the same etcd key delivered twice (watch and scan)
            }
            item.entry.events += 1;
            item.again |= item.running;
            item.waiters.extend(waiter);
            item.remote.extend(remote);
            return Ok(());
        }
        let limit = self.limit.load(Ordering::Relaxed);
        if g.items.len() >= limit {
            return Err(QueueError::Full(g.items.len()));
        }
        let entry = JournalEntry::new(registry, now_ms());
        if remote.is_none() {
            self.state.journal_put(&key, &entry)?;
        }
        let journaled = remote.is_none();
        let item = Item {
            entry,
            remote: remote.into_iter().collect(),
            journaled,
            running: false,
            again: false,
            waiters: waiter.into_iter().collect(),
        };
        g.items.insert(key.clone(), item);
        g.ready.push_back(key);
        drop(g);
        self.wake.notify_one();
        Ok(())
    }

    /// The next item to run, marked running, with its run requests.
    fn next(&self) -> Option<(JournalKey, JournalEntry, Vec<u64>)> {
        let mut g = self.inner.lock().expect("lock poisoned");
        while let Some(key) = g.ready.pop_front() {
            if let Some(item) = g.items.get_mut(&key).filter(|i| !i.running) {
                item.running = true;
                let waiters = std::mem::take(&mut item.waiters);
                return Some((key, item.entry.clone(), waiters));
            }
        }
        None
    }

    fn make_ready(&self, key: JournalKey) {
        self.inner
            .lock()
            .expect("lock poisoned")
            .ready
            .push_back(key);
        self.wake.notify_one();
    }

    /// After a run of `key`: run it again, retry it later, or forget it.
    fn finished(
        &self,
        key: &JournalKey,
        failed: bool,
        interrupted: bool,
    ) -> Result<Finish, StateError> {
        let mut g = self.inner.lock().expect("lock poisoned");
        let Some(item) = g.items.get_mut(key) else {
            return Ok(Finish::Done(vec![]));
        };
        item.running = false;
        if interrupted {
            return Ok(Finish::Kept); // stopping: the journal keeps it for the next start
        }
        if item.again {
            item.again = false;
            g.ready.push_back(key.clone());
            drop(g);
            self.wake.notify_one();
            return Ok(Finish::Again);
        }
        if failed && item.entry.attempts + 1 < MAX_ATTEMPTS {
            item.entry.attempts += 1;
            if item.journaled {
                self.state.journal_put(key, &item.entry)?;
            }
            return Ok(Finish::Retry(Duration::from_secs(
                (2u64 << item.entry.attempts.min(8)).min(300),
            )));
        }
        let item = g.items.remove(key).expect("present above");
        if item.journaled {
            self.state.journal_remove(key)?;
        }
        Ok(Finish::Done(item.remote))
    }

    /// Drop an item that will not run here (its policy is gone or changed, or in a cluster
    /// another member runs it now): its run requests, and its etcd keys, which stay in etcd
    /// for the policy's owner.
    fn forget(&self, key: &JournalKey) -> (Vec<u64>, Vec<String>) {
        let item = self.inner.lock().expect("lock poisoned").items.remove(key);
        if item.as_ref().is_some_and(|i| i.journaled) {
            if let Err(e) = self.state.journal_remove(key) {
                warn!(error = %e, "could not remove a journal entry");
            }
        }
        item.map(|i| (i.waiters, i.remote)).unwrap_or_default()
    }

    /// Run queued items until `stop`, at most `CONCURRENT_RUNS` at once.
    pub async fn dispatch(self: Arc<Self>, shared: Arc<Shared>, stop: CancellationToken) {
        let slots = Arc::new(Semaphore::new(CONCURRENT_RUNS));
        let tasks = TaskTracker::new();
        loop {
            let permit = tokio::select! {
                () = stop.cancelled() => break,
                p = slots.clone().acquire_owned() => p.expect("never closed"),
            };
            let (key, entry, waiters) = loop {
                if let Some(next) = self.next() {
                    break next;
                }
                tokio::select! {
                    () = stop.cancelled() => return drain(tasks).await,
                    () = self.wake.notified() => {}
                }
            };
            let (queue, shared, stop) = (self.clone(), shared.clone(), stop.clone());
            tasks.spawn(async move {
                queue.run_one(&shared, key, entry, waiters, &stop).await;
                drop(permit);
            });
        }
        drain(tasks).await;
    }

    async fn run_one(
        self: &Arc<Self>,
        shared: &Shared,
        key: JournalKey,
        entry: JournalEntry,
        waiters: Vec<u64>,
        stop: &CancellationToken,
    ) {
        let app = shared.app();
        let policy = app.policy(&key.policy);
        let reach = reach_of(&key);
        let covered = |p: &crate::config::Policy, reach: &Reach| match reach {
            Reach::Targeted { repository, .. } => {
                p.repositories.covers(repository) || key.action == JournalAction::Run
            }
            Reach::Full => true,
        };
        let (policy, reach) = match (policy, reach) {
            (Some(p), Some(r)) if covered(p, &r) => (p, r),
            _ => {
                warn!(policy = %key.policy, repository = key.repository_str(), tag = key.tag_str(), "event no longer matches a policy (config changed); dropped");
                let (mut all, remote) = self.forget(&key);
                all.extend(waiters);
                shared
                    .runs
                    .abandoned(&all, "the policy no longer covers this repository");
                if let Some(c) = shared.cluster().filter(|c| c.holds(&key.policy)) {
                    c.done(&remote).await;
                }
                return;
            }
        };
        // In a cluster, only while this member holds the policy; otherwise its owner has it.
        let opts = RunOptions::default();
        let (run, moved) = match shared
            .run_claimed(&app, policy, &reach, opts, stop, &waiters, || {})
            .await
        {
            Claimed::Ran { run, moved } => {
                shared.metrics.counted(&run);
                (*run, moved)
            }
            Claimed::Elsewhere => {
                let (all, _) = self.forget(&key);
                shared.runs.moved(&all);
                return;
            }
        };
        let copied = run.counts().tags_copied;
        if copied > 0 {
            shared
                .metrics
                .replicated(&key.policy, now_ms().saturating_sub(entry.accepted_ms));
        }
        // A run cut short because the policy moved is the new owner's to do again.
        let interrupted = run.interrupted || moved;
        let failed = !run.failures.is_empty();
        match self.finished(&key, failed, interrupted) {
            Ok(Finish::Done(remote)) => {
                if failed {
                    warn!(policy = %key.policy, repository = key.repository_str(), tag = key.tag_str(), attempts = MAX_ATTEMPTS, "event given up after repeated failures; the next periodic run reconciles");
                }
                if let Some(c) = shared.cluster() {
                    c.done(&remote).await;
                }
            }
            Ok(Finish::Kept) if !stop.is_cancelled() => {
                // The policy moved: requests that joined during the run go with it too.
                let (waiters, _) = self.forget(&key);
                shared.runs.moved(&waiters);
            }
            Ok(Finish::Again | Finish::Kept) => {}
            Ok(Finish::Retry(delay)) => {
                info!(policy = %key.policy, repository = key.repository_str(), tag = key.tag_str(), retry_in = ?delay, "targeted run failed; retrying later");
                let (queue, stop) = (self.clone(), stop.clone());
                shared.tasks.spawn(async move {
                    tokio::select! {
                        () = stop.cancelled() => {}
                        () = tokio::time::sleep(delay) => queue.make_ready(key),
                    }
                });
            }
            Err(e) => {
                warn!(error = %e, "journal update failed; the entry is replayed on the next start")
            }
        }
    }
}

/// What happens to an item after a run.
enum Finish {
    /// An event came during the run: it runs again now.
    Again,
    /// Failed: tried again after the delay.
    Retry(Duration),
    /// Interrupted by a stop: the journal (or etcd) keeps it.
    Kept,
    /// Done for good; in a cluster, the etcd keys to delete.
    Done(Vec<String>),
}

async fn drain(tasks: TaskTracker) {
    tasks.close();
    tasks.wait().await;
}
