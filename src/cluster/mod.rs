//! Cluster mode (`[cluster]`): several daemons share the policies through etcd.
//!
//! The unit of work is the policy: a run reads each source manifest and blob once for all of
//! the policy's targets, so splitting a policy by target would read the source once per
//! member. A member runs a policy only while it holds the policy's lock, a key bound to the
//! member's lease, and asks etcd right before every tag write or delete that it still holds
//! it (the fence): a registry cannot check a fencing token, so this is the closest check.
//!
//! Keys under the prefix: `members/NAME` (the member's record, on its lease), `locks/POLICY`
//! (on the holder's lease), `events/POLICY/ID` (events and run requests waiting for the
//! owner, on no lease: they outlive any member), `results/MEMBER/ID` (how a run asked for on
//! MEMBER went, written by the owner).
//!
//! Owners: `etcd` the connection and its errors, `members` who is in and who owns what
//! (rendezvous hashing), `units` the locks, claims and fences, `session` the lease, the watch
//! and the reconcile loop, `handoff` the events and run requests passed between members.

mod etcd;
mod handoff;
mod members;
mod session;
mod units;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::api::ClusterStatus;
use crate::config::ClusterSettings;
pub use etcd::EtcdError;
pub use handoff::{Handoff, HandoffError, Incoming};
pub use members::MemberRecord;
pub use units::Claim;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    #[error("cluster member name `{name}` is in use by a live member (host {host}, pid {pid}); give each daemon its own cluster.member")]
    DuplicateMember {
        name: String,
        host: String,
        pid: u32,
    },
    #[error("stopped before joining the cluster")]
    Stopped,
}

/// Counters for `/metrics`.
#[derive(Default)]
pub(crate) struct Counters {
    ownership_changes: AtomicU64,
    lease_lost: AtomicU64,
    fence_ok: AtomicU64,
    fence_refused: AtomicU64,
}

impl Counters {
    fn fence(&self, ok: bool) {
        let c = if ok {
            &self.fence_ok
        } else {
            &self.fence_refused
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// This member's lease as it knows it: the id, and until when etcd is sure to keep it (the
/// time the last acknowledged keepalive was *sent*, plus the TTL etcd granted).
#[derive(Clone, Copy)]
struct Lease {
    id: i64,
    deadline: Instant,
}

pub(crate) struct Inner {
    name: String,
    prefix: String,
    ttl: Duration,
    etcd: etcd::Etcd,
    record: Mutex<MemberRecord>,
    lease: Mutex<Option<Lease>>,
    /// A lease given up as lost, to revoke once etcd answers again.
    stale_lease: Mutex<Option<i64>>,
    /// Members and lock holders as the watch last saw them.
    members: Mutex<BTreeMap<String, MemberRecord>>,
    locks: Mutex<BTreeMap<String, String>>,
    units: units::Units,
    /// Bumped whenever ownership may have changed; the reconcile loop and the policy loops wait on it.
    generation: watch::Sender<u64>,
    inbox: mpsc::UnboundedSender<Incoming>,
    counters: Counters,
    /// How long a release waits for the runs of a policy it gives up.
    handover_wait: Mutex<Duration>,
    /// Handed-over work could not be queued here: read the waiting keys again.
    rescan: std::sync::atomic::AtomicBool,
    /// The watch has read the members once: until then this member would think itself alone
    /// and want every policy.
    synced: std::sync::atomic::AtomicBool,
    /// Most events and run requests waiting in etcd before new ones are refused
    /// (`daemon.max_pending_events`, cluster-wide), and the last count (when, how many).
    max_waiting: std::sync::atomic::AtomicUsize,
    waiting: Mutex<Option<(Instant, i64)>>,
    /// The lease keeper, the watch, the reconcile loop and the hand-overs they start: all
    /// awaited when the member leaves.
    tasks: TaskTracker,
}

impl Inner {
    fn new(
        settings: &ClusterSettings,
        etcd: etcd::Etcd,
        api: std::net::SocketAddr,
        policies: BTreeMap<String, String>,
        handover_wait: Duration,
        max_waiting: usize,
        inbox: mpsc::UnboundedSender<Incoming>,
    ) -> Self {
        let record = MemberRecord {
            name: settings.member.clone(),
            host: crate::model::hostname(),
            pid: std::process::id(),
            started_ms: crate::model::now_ms(),
            api: api.to_string(),
            policies,
            lease: 0,
        };
        Inner {
            name: settings.member.clone(),
            prefix: settings.prefix.clone(),
            ttl: settings.lease_ttl,
            etcd,
            record: Mutex::new(record),
            lease: Mutex::new(None),
            stale_lease: Mutex::new(None),
            members: Mutex::default(),
            locks: Mutex::default(),
            units: units::Units::default(),
            generation: watch::channel(0).0,
            inbox,
            counters: Counters::default(),
            handover_wait: Mutex::new(handover_wait),
            rescan: std::sync::atomic::AtomicBool::new(false),
            synced: std::sync::atomic::AtomicBool::new(false),
            max_waiting: std::sync::atomic::AtomicUsize::new(max_waiting),
            waiting: Mutex::new(None),
            tasks: TaskTracker::new(),
        }
    }

    /// The lease may still be relied on: its deadline is more than a safety margin away (a
    /// tag write that starts now must end before another member could take the policy).
    fn lease_alive(&self) -> bool {
        self.lease_id().is_some()
    }

    /// The lease, while it may still be relied on.
    fn lease_id(&self) -> Option<i64> {
        self.lease_safe_for().map(|(id, _)| id)
    }

    /// The lease and how much longer it may be relied on: its deadline less a margin (a
    /// write that starts now must end before another member could take the policy).
    fn lease_safe_for(&self) -> Option<(i64, Duration)> {
        let margin = (self.ttl / 5).min(Duration::from_secs(2));
        let now = Instant::now();
        self.lease
            .lock()
            .expect("lock poisoned")
            .filter(|l| now + margin < l.deadline)
            .map(|l| (l.id, l.deadline - now - margin))
    }

    fn changed(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }
}

/// Say that etcd is away; returns how long to wait before the next try (doubling up to 10 s).
fn away(e: &EtcdError, delay: &mut Duration) -> Duration {
    let wait = *delay;
    warn!(error = %e, retry_in = ?wait, "etcd unreachable: this member runs nothing until it joins the cluster");
    *delay = (wait * 2).min(Duration::from_secs(10));
    wait
}

/// Wait `d`, unless told to stop first.
async fn pause(stop: &CancellationToken, d: Duration) -> Result<(), ClusterError> {
    tokio::select! {
        () = stop.cancelled() => Err(ClusterError::Stopped),
        () = tokio::time::sleep(d) => Ok(()),
    }
}

/// This member's view of the cluster and its counters, for `/metrics`.
pub struct Gauges {
    pub member: String,
    /// Live members, as this member sees them.
    pub members: usize,
    /// Policies this member holds.
    pub owned: usize,
    pub ownership_changes: u64,
    pub lease_lost: u64,
    pub fence_ok: u64,
    pub fence_refused: u64,
    pub etcd_requests: u64,
}

/// What this member brings from its own config (a reload changes all but `api`).
pub struct Local {
    /// The daemon's API address, shown to the other members.
    pub api: std::net::SocketAddr,
    /// Each policy it defines: name → fingerprint.
    pub policies: BTreeMap<String, String>,
    /// How long giving a policy up waits for its runs (`daemon.stop_timeout`).
    pub handover_wait: Duration,
    /// Events and run requests waiting in etcd, cluster-wide, before new ones are refused
    /// (`daemon.max_pending_events`).
    pub max_waiting: usize,
}

/// A running cluster membership. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
    stop: CancellationToken,
}

impl Cluster {
    /// Join: connect, take the member name (waiting up to one lease TTL for the key of an
    /// earlier run of this member to expire), then keep the lease, watch the cluster and
    /// take this member's share of the policies in the background. While etcd cannot be
    /// reached this keeps trying (saying so) until `stop`: a member cannot run anything
    /// safely without it, and a supervisor restarting us would do no better. Credentials
    /// or TLS that etcd refuses, and a name in use, end it.
    ///
    /// # Errors
    /// See above.
    pub async fn join(
        settings: &ClusterSettings,
        local: Local,
        inbox: mpsc::UnboundedSender<Incoming>,
        stop: &CancellationToken,
    ) -> Result<Cluster, ClusterError> {
        let Local {
            api,
            policies,
            handover_wait,
            max_waiting,
        } = local;
        let mut delay = Duration::from_secs(1);
        let client = loop {
            match etcd::connect(settings).await {
                Ok(c) => break c,
                Err(e) if e.is_fatal() => return Err(e.into()),
                Err(e) => pause(stop, away(&e, &mut delay)).await?,
            }
        };
        let inner = Arc::new(Inner::new(
            settings,
            client,
            api,
            policies,
            handover_wait,
            max_waiting,
            inbox,
        ));
        session::first_registration(&inner, stop).await?;
        info!(member = %inner.name, etcd = %inner.etcd.endpoints(), lease_ttl = ?inner.ttl, "joined the cluster");
        let cluster = Cluster {
            inner,
            stop: stop.child_token(),
        };
        let (inner, stop) = (&cluster.inner, &cluster.stop);
        inner
            .tasks
            .spawn(session::keep_lease(inner.clone(), stop.clone()));
        inner
            .tasks
            .spawn(session::watch(inner.clone(), stop.clone()));
        inner
            .tasks
            .spawn(session::reconcile(inner.clone(), stop.clone()));
        Ok(cluster)
    }

    /// The cluster as etcd holds it now, read without joining: for `ferry status` on a
    /// member whose daemon is not running. Waits for etcd at most a few seconds.
    ///
    /// # Errors
    /// When etcd cannot be read.
    pub async fn peek(
        settings: &ClusterSettings,
        local: Local,
    ) -> Result<ClusterStatus, ClusterError> {
        let client = etcd::connect(settings).await?;
        let inner = Inner::new(
            settings,
            client,
            local.api,
            local.policies,
            local.handover_wait,
            0,
            mpsc::unbounded_channel().0,
        );
        session::read_members(&inner).await?;
        let mut doc = session::status(&inner).await;
        doc.daemon_running = Some(false);
        Ok(doc)
    }

    pub fn member(&self) -> &str {
        &self.inner.name
    }

    /// A claim on `policy` when this member holds it now; `None`: another member runs it
    /// (or nobody can right now: etcd is away).
    pub fn claim(&self, policy: &str, parent: &CancellationToken) -> Option<Claim> {
        self.inner.claim(policy, parent)
    }

    pub fn holds(&self, policy: &str) -> bool {
        self.inner.units.holds(policy) && self.inner.lease_alive()
    }

    /// Changes whenever what this member holds may have changed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.generation.subscribe()
    }

    /// A reloaded config: publish the new policy set and rebalance.
    pub async fn reconfigure(&self, local: Local) {
        let Local {
            policies,
            handover_wait,
            max_waiting,
            ..
        } = local;
        *self.inner.handover_wait.lock().expect("lock poisoned") = handover_wait;
        self.inner.max_waiting.store(max_waiting, Ordering::Relaxed);
        let rec = {
            let mut r = self.inner.record.lock().expect("lock poisoned");
            r.policies = policies;
            r.clone()
        };
        if let Err(e) = session::publish(&self.inner, &rec).await {
            warn!(error = %e, "could not publish the reloaded policy set; it is published when the lease is renewed");
        }
        self.inner.changed();
    }

    /// Hand `h` to the owner of its policy through etcd (idempotent per `id`). `Ok(false)`:
    /// that id is already waiting (a redelivered event).
    ///
    /// # Errors
    /// When etcd cannot take it: the caller refuses the event (503) so its sender retries.
    pub async fn hand_off(&self, h: &Handoff, id: &str) -> Result<bool, HandoffError> {
        handoff::put(&self.inner, h, id).await
    }

    /// Work handed here could not be queued now (the queue is full): read it again later.
    pub fn rescan_later(&self) {
        self.inner.rescan.store(true, Ordering::Relaxed);
        self.inner.changed();
    }

    /// Delete these keys: their work is done, or their result was read.
    pub async fn done(&self, keys: &[String]) {
        handoff::remove(&self.inner, keys).await;
    }

    /// The owner reports how a run asked for on member `origin` went.
    pub async fn report(&self, origin: &str, id: u64, view: &crate::api::RunView) {
        handoff::report(&self.inner, origin, id, view).await;
    }

    /// Leave at once (SIGTERM): revoking the lease deletes the member key and every lock in
    /// one request, so the other members take the policies over without waiting for a TTL.
    /// The daemon has already let its runs stop.
    pub async fn leave(&self) {
        self.stop.cancel();
        self.inner.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.inner.tasks.wait()).await;
        self.inner.units.lose_all("leaving the cluster");
        let id = self
            .inner
            .lease
            .lock()
            .expect("lock poisoned")
            .take()
            .map(|l| l.id);
        if let Some(id) = id {
            match self
                .inner
                .etcd
                .call(
                    "revoke the lease",
                    self.inner.etcd.client().lease_revoke(id),
                )
                .await
            {
                Ok(_) => {
                    info!(member = %self.inner.name, "left the cluster; its policies move to the other members now")
                }
                Err(e) => {
                    warn!(error = %e, "could not revoke the lease; the other members take over when it expires")
                }
            }
        }
    }

    /// The `cluster` part of `/status`: members, their last heartbeat, what each owns, and
    /// policies the members do not agree on.
    pub async fn status(&self) -> ClusterStatus {
        session::status(&self.inner).await
    }

    /// What `/metrics` shows of this member's cluster.
    pub fn gauges(&self) -> Gauges {
        let i = &self.inner;
        let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Gauges {
            member: i.name.clone(),
            members: i.members.lock().expect("lock poisoned").len(),
            owned: i.units.names().len(),
            ownership_changes: c(&i.counters.ownership_changes),
            lease_lost: c(&i.counters.lease_lost),
            fence_ok: c(&i.counters.fence_ok),
            fence_refused: c(&i.counters.fence_refused),
            etcd_requests: i.etcd.requests(),
        }
    }
}
