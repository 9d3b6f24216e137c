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

use super::Shared;
use crate::app::PolicyRun;
use crate::model::now_ms;
use crate::model::RepoName;
use crate::plan::Scope;
use crate::state::{JournalEntry, JournalKey, StateError, StateStore};

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
}

/// What a journal key asks for, as a planning scope.
pub fn scope_of(key: &JournalKey) -> Result<Scope, String> {
    let tag = if key.tag.is_empty() { None } else { Some(key.tag.parse().map_err(|e: String| e)?) };
    Ok(match (key.action.as_str(), tag) {
        ("push" | "run", Some(t)) => Scope::Tag(t),
        ("run", None) => Scope::All,
        ("delete", t) => Scope::Deleted(t),
        (a, _) => return Err(format!("unknown journal action `{a}`")),
    })
}

struct Item {
    entry: JournalEntry,
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
            inner.items.insert(key, Item { entry, running: false, again: false, waiters: vec![] });
        }
        let n = inner.items.len();
        Ok((EventQueue { state, inner: Mutex::new(inner), wake: Notify::new(), limit: AtomicUsize::new(limit) }, n))
    }

    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    pub fn pending(&self) -> usize {
        self.inner.lock().expect("lock poisoned").items.len()
    }

    /// Add work (journaled, not yet flushed: the caller awaits `StateStore::commit` before it
    /// acknowledges). `waiter`: a run request to tell when it is done.
    ///
    /// # Errors
    /// When the journal is full or cannot be written: the event must then be refused.
    pub fn enqueue(&self, key: JournalKey, registry: &str, waiter: Option<u64>) -> Result<(), QueueError> {
        let mut g = self.inner.lock().expect("lock poisoned");
        if let Some(item) = g.items.get_mut(&key) {
            item.entry.events += 1;
            item.again |= item.running;
            item.waiters.extend(waiter);
            return Ok(());
        }
        let limit = self.limit.load(Ordering::Relaxed);
        if g.items.len() >= limit {
            return Err(QueueError::Full(g.items.len()));
        }
        let entry = JournalEntry::new(registry, now_ms());
        self.state.journal_put(&key, &entry)?;
        g.items.insert(key.clone(), Item { entry, running: false, again: false, waiters: waiter.into_iter().collect() });
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
        self.inner.lock().expect("lock poisoned").ready.push_back(key);
        self.wake.notify_one();
    }

    /// After a run of `key`: run it again, retry it later, or forget it. `None`: the item is
    /// done for good (its journal entry is removed). `Some(delay)`: retry after `delay`.
    fn finished(&self, key: &JournalKey, failed: bool, interrupted: bool) -> Result<Option<Duration>, StateError> {
        let mut g = self.inner.lock().expect("lock poisoned");
        let Some(item) = g.items.get_mut(key) else { return Ok(None) };
        item.running = false;
        if interrupted {
            return Ok(Some(Duration::MAX)); // stopping: the journal keeps it for the next start
        }
        if item.again {
            item.again = false;
            g.ready.push_back(key.clone());
            drop(g);
            self.wake.notify_one();
            return Ok(Some(Duration::ZERO));
        }
        if failed && item.entry.attempts + 1 < MAX_ATTEMPTS {
            item.entry.attempts += 1;
            self.state.journal_put(key, &item.entry)?;
            return Ok(Some(Duration::from_secs((2u64 << item.entry.attempts.min(8)).min(300))));
        }
        g.items.remove(key);
        self.state.journal_remove(key)?;
        Ok(None)
    }

    /// Drop an item that can no longer run (its policy is gone or changed).
    fn forget(&self, key: &JournalKey) -> Vec<u64> {
        let item = self.inner.lock().expect("lock poisoned").items.remove(key);
        if let Err(e) = self.state.journal_remove(key) {
            warn!(error = %e, "could not remove a journal entry");
        }
        item.map(|i| i.waiters).unwrap_or_default()
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

    async fn run_one(self: &Arc<Self>, shared: &Shared, key: JournalKey, entry: JournalEntry, waiters: Vec<u64>, stop: &CancellationToken) {
        let app = shared.app();
        let policy = app.config.policies.iter().find(|p| p.name == key.policy);
        let repo: Result<RepoName, String> = key.repository.parse();
        let scope = scope_of(&key);
        let (policy, repo, scope) = match (policy, repo, scope) {
            (Some(p), Ok(r), Ok(s)) if p.repositories.covers(&r) || key.action == "run" => (p, r, s),
            _ => {
                warn!(policy = %key.policy, repository = %key.repository, tag = %key.tag, "event no longer matches a policy (config changed); dropped");
                let mut all = waiters;
                all.extend(self.forget(&key));
                shared.runs.abandoned(&all, "the policy no longer covers this repository");
                return;
            }
        };
        shared.runs.running(&waiters);
        let run: PolicyRun = app.run_targeted(policy, &repo, &scope, stop).await;
        shared.runs.finished(&waiters, &run);
        let copied = run.counts().tags_copied;
        if copied > 0 {
            shared.metrics.replicated(&key.policy, now_ms().saturating_sub(entry.accepted_ms));
        }
        match self.finished(&key, !run.errors.is_empty(), run.interrupted) {
            Ok(None) if !run.errors.is_empty() => {
                warn!(policy = %key.policy, repository = %key.repository, tag = %key.tag, attempts = MAX_ATTEMPTS, "event given up after repeated failures; the next periodic run reconciles")
            }
            Ok(None) | Ok(Some(Duration::ZERO)) | Ok(Some(Duration::MAX)) => {}
            Ok(Some(delay)) => {
                info!(policy = %key.policy, repository = %key.repository, tag = %key.tag, retry_in = ?delay, "targeted run failed; retrying later");
                let (queue, stop) = (self.clone(), stop.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        () = stop.cancelled() => {}
                        () = tokio::time::sleep(delay) => queue.make_ready(key),
                    }
                });
            }
            Err(e) => warn!(error = %e, "journal update failed; the entry is replayed on the next start"),
        }
    }
}

async fn drain(tasks: TaskTracker) {
    tasks.close();
    tasks.wait().await;
}
