//! The policies this member holds: each a lock key bound to the member's lease, taken with a
//! create-if-absent transaction. A run holds a claim on its policy; losing the policy cancels
//! the claims (runs stop at a chunk boundary), and the lock is deleted only once they ended,
//! so the next owner never starts while this one still writes.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::etcd::Created;
use super::etcd::EtcdError;
use super::Inner;
use crate::copy::{Fence, FenceError, Guards};

/// A lock this member holds.
pub(super) struct Held {
    /// The lock key's create revision: the fencing token.
    pub rev: i64,
    /// Cancelled when the policy is lost or given up.
    pub token: CancellationToken,
    /// Runs holding a claim on it now.
    pub active: Arc<AtomicUsize>,
    /// A run under this lock has finished: the targets were checked since it was taken.
    pub verified: Arc<std::sync::atomic::AtomicBool>,
}

#[derive(Default)]
pub(super) struct Units {
    pub held: Mutex<HashMap<String, Held>>,
    /// Given up, lock not yet deleted: not to be taken again until it is.
    releasing: Mutex<HashSet<String>>,
}

impl Units {
    /// Stop holding `unit` (its runs are cancelled); the caller deletes the lock afterwards.
    pub fn start_release(&self, unit: &str) -> Option<Held> {
        let h = self.held.lock().expect("lock poisoned").remove(unit)?;
        h.token.cancel();
        self.releasing
            .lock()
            .expect("lock poisoned")
            .insert(unit.to_owned());
        Some(h)
    }

    pub fn releasing(&self, unit: &str) -> bool {
        self.releasing.lock().expect("lock poisoned").contains(unit)
    }

    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .held
            .lock()
            .expect("lock poisoned")
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }

    pub fn holds(&self, unit: &str) -> bool {
        self.held.lock().expect("lock poisoned").contains_key(unit)
    }

    /// Everything lost at once (the lease is gone: etcd deletes the locks with it).
    pub fn lose_all(&self, why: &str) -> usize {
        let lost: Vec<(String, Held)> = self.held.lock().expect("lock poisoned").drain().collect();
        for (unit, h) in &lost {
            h.token.cancel();
            warn!(policy = %unit, reason = why, "policy lost; its runs stop at the next chunk boundary");
        }
        lost.len()
    }
}

/// A run's hold on its policy: its cancel token (cancelled when the run's parent stops or
/// the policy is lost) and the fence its tag writes go through.
pub struct Claim {
    pub cancel: CancellationToken,
    pub fence: Arc<dyn Fence>,
    /// The first run since this member took the policy: what earlier owners wrote is not
    /// known here (a fenced-off owner's last write may have landed late), so the targets are
    /// asked, not trusted.
    pub verify: bool,
    verified: Arc<std::sync::atomic::AtomicBool>,
    active: Arc<AtomicUsize>,
    link: tokio::task::JoinHandle<()>,
}

impl Claim {
    /// What a run gets: the claim's cancel token and fence; outside a cluster (no claim),
    /// `outside` and no fence.
    pub fn guards(claim: Option<&Claim>, outside: &CancellationToken) -> Guards {
        claim.map_or_else(
            || Guards::cancel(outside.clone()),
            |c| Guards {
                cancel: c.cancel.clone(),
                fence: Some(c.fence.clone()),
            },
        )
    }

    /// The run under this claim finished (not interrupted): later runs may trust the records.
    pub fn verified(&self) {
        self.verified.store(true, Ordering::Release);
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.active.fetch_sub(1, Ordering::AcqRel);
        self.link.abort();
    }
}

impl Inner {
    fn lock_key(&self, unit: &str) -> String {
        format!("{}locks/{unit}", self.prefix)
    }

    /// A claim on `unit` when this member holds it and its lease is alive.
    pub(super) fn claim(self: &Arc<Self>, unit: &str, parent: &CancellationToken) -> Option<Claim> {
        if !self.lease_alive() {
            return None;
        }
        let held = self.units.held.lock().expect("lock poisoned");
        let h = held.get(unit).filter(|h| !h.token.is_cancelled())?;
        h.active.fetch_add(1, Ordering::AcqRel);
        let cancel = parent.child_token();
        let (lost, mine) = (h.token.clone(), cancel.clone());
        let link = tokio::spawn(async move {
            lost.cancelled().await;
            mine.cancel();
        });
        let fence = Arc::new(UnitFence {
            inner: self.clone(),
            unit: unit.to_owned(),
            rev: h.rev,
            run: cancel.clone(),
        });
        Some(Claim {
            cancel,
            fence,
            verify: !h.verified.load(Ordering::Acquire),
            verified: h.verified.clone(),
            active: h.active.clone(),
            link,
        })
    }

    /// Take the lock of `unit` if nobody holds it. `Ok(false)`: another member holds it (the
    /// watch says when it is released).
    pub(super) async fn acquire(self: &Arc<Self>, unit: &str) -> Result<bool, EtcdError> {
        let Some(lease) = self.lease_id() else {
            return Ok(false);
        };
        let rev = match self
            .etcd
            .create(
                "take a policy lock",
                self.lock_key(unit),
                self.name.clone().into_bytes(),
                Some(lease),
            )
            .await?
        {
            Created::Now(rev) => rev,
            // Ours already (taken under this lease before a failed release): adopt it.
            Created::Exists(Some(kv))
                if kv.lease() == lease && kv.value() == self.name.as_bytes() =>
            {
                kv.create_revision()
            }
            Created::Exists(_) => return Ok(false),
        };
        if self.lease_id() != Some(lease) {
            return Ok(false); // the lease was lost meanwhile, and the lock with it
        }
        let held = Held {
            rev,
            token: CancellationToken::new(),
            active: Arc::new(AtomicUsize::new(0)),
            verified: Arc::default(),
        };
        self.units
            .held
            .lock()
            .expect("lock poisoned")
            .insert(unit.to_owned(), held);
        self.counters
            .ownership_changes
            .fetch_add(1, Ordering::Relaxed);
        info!(
            policy = unit,
            revision = rev,
            "policy taken: this member runs it now"
        );
        self.changed();
        Ok(true)
    }

    /// Give `unit` up (taken out of `held` by `Units::start_release`, runs cancelled): wait
    /// for its runs (at most `wait` before saying so), then delete the lock if it is still
    /// the one we took.
    pub(super) async fn release(self: &Arc<Self>, unit: &str, h: Held, wait: Duration) {
        let deadline = Instant::now() + wait;
        while h.active.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if h.active.load(Ordering::Acquire) > 0 {
            // Keep the lock: it expires with our lease if we die; otherwise the runs end soon.
            warn!(
                policy = unit,
                "runs still busy after the handover wait; the lock stays until they end"
            );
            while h.active.load(Ordering::Acquire) > 0 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        let key = self.lock_key(unit);
        let txn = Txn::new()
            .when([Compare::create_revision(
                key.clone(),
                CompareOp::Equal,
                h.rev,
            )])
            .and_then([TxnOp::delete(key, None)]);
        match self
            .etcd
            .call("release a policy lock", self.etcd.client().txn(txn))
            .await
        {
            Ok(_) => info!(policy = unit, "policy handed over"),
            Err(e) => {
                warn!(policy = unit, error = %e, "could not delete the policy lock; it expires with this member's lease")
            }
        }
        self.units
            .releasing
            .lock()
            .expect("lock poisoned")
            .remove(unit);
        self.counters
            .ownership_changes
            .fetch_add(1, Ordering::Relaxed);
        self.changed();
    }
}

/// Before each tag write: the policy is still ours here, our lease has time left, and etcd
/// still has our lock (same create revision). Any doubt stops the run.
struct UnitFence {
    inner: Arc<Inner>,
    unit: String,
    rev: i64,
    run: CancellationToken,
}

impl UnitFence {
    async fn verify(&self) -> Result<(), FenceError> {
        let lost = || {
            FenceError(format!(
                "policy `{}` is no longer held by cluster member `{}`; write not done",
                self.unit, self.inner.name
            ))
        };
        let ours = self
            .inner
            .units
            .held
            .lock()
            .expect("lock poisoned")
            .get(&self.unit)
            .is_some_and(|h| h.rev == self.rev && !h.token.is_cancelled());
        if !ours || !self.inner.lease_alive() {
            return Err(lost());
        }
        let key = self.inner.lock_key(&self.unit);
        let txn = Txn::new().when([Compare::create_revision(key, CompareOp::Equal, self.rev)]);
        match self.inner.etcd.call("check a policy lock", self.inner.etcd.client().txn(txn)).await {
            Ok(r) if r.succeeded() => Ok(()),
            Ok(_) => {
                // Deleted or taken over behind our back (an operator, or our lease expired in
                // etcd): forget this lock (not a newer one taken since) so it is taken again.
                let mut held = self.inner.units.held.lock().expect("lock poisoned");
                if held.get(&self.unit).is_some_and(|h| h.rev == self.rev) {
                    held.remove(&self.unit).expect("present").token.cancel();
                }
                drop(held);
                self.inner.changed();
                Err(lost())
            }
            Err(e) => Err(FenceError(format!(
                "cannot confirm that cluster member `{}` still holds policy `{}` ({e}); write not done",
                self.inner.name, self.unit
            ))),
        }
    }
}

impl Fence for UnitFence {
    fn check(&self) -> BoxFuture<'_, Result<(), FenceError>> {
        async move {
            let r = self.verify().await;
            self.inner.counters.fence(r.is_ok());
            if let Err(e) = &r {
                warn!(policy = %self.unit, "{e}; the run stops");
                self.run.cancel();
            }
            r
        }
        .boxed()
    }

    /// A renewed lease moves the deadline on; a retry is cut to what the lease covers now.
    fn vouched_for(&self) -> Option<std::time::Duration> {
        Some(
            self.inner
                .lease_safe_for()
                .map_or(std::time::Duration::ZERO, |(_, d)| d),
        )
    }
}
