//! What the HTTP API, the event queue, the policy loops and the cluster inbox share, the
//! status document built from it, and the one way they all start a run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{metrics, queue, runs, scheduler};
use crate::api::{ClusterStatus, ConcurrencyView, RateLimitView, StatusDoc, PENDING_SHOWN};
use crate::app::App;
use crate::cluster::{Claim, Cluster};
use crate::config::{Config, Policy, Trigger};
use crate::plan::RunOptions;
use crate::run::{Cause, PolicyRun, Reach};
use crate::state::StateStore;

pub struct Shared {
    pub metrics: Arc<metrics::Metrics>,
    pub state: StateStore,
    app: RwLock<Arc<App>>,
    pub(super) queue: Arc<queue::EventQueue>,
    pub(super) runs: runs::RunBook,
    /// Each policy loop of the running config generation, to ask it for a run now.
    pub(super) loops: Mutex<HashMap<String, mpsc::UnboundedSender<scheduler::RunAsk>>>,
    /// In cluster mode, once joined: this member's membership.
    pub(super) cluster: OnceLock<Cluster>,
    /// `[cluster]` is configured (joined or not yet).
    clustered: bool,
    /// When this process started (Unix ms): run request ids restart with it.
    pub(super) started_ms: u64,
    /// Work the daemon's parts start on the side (a retry timer, a reporter for a peer):
    /// awaited at a stop with the runs.
    pub(super) tasks: TaskTracker,
    /// The cluster's view for `/status`, for about a second: the route may be open to
    /// anyone, and each answer would otherwise cost etcd requests.
    cluster_view: tokio::sync::Mutex<Option<(std::time::Instant, ClusterStatus)>>,
}

/// Why a policy's loop cannot take a run request now.
#[derive(Debug, thiserror::Error)]
pub enum NoLoop {
    #[error("policy `{0}` is not running (reloading?); ask again")]
    Reloading(String),
    #[error("policy `{0}` is stopping; ask again")]
    Stopping(String),
}

/// How a claimed run went.
pub(super) enum Claimed {
    /// In a cluster, another member holds the policy: it runs the work.
    Elsewhere,
    /// It ran here (boxed: a run is large beside `Elsewhere`). `moved`: the claim was cancelled without a stop (the policy moved to
    /// another member mid-run).
    Ran { run: Box<PolicyRun>, moved: bool },
}

impl Shared {
    pub(super) fn new(
        metrics: Arc<metrics::Metrics>,
        state: StateStore,
        app: Arc<App>,
        queue: queue::EventQueue,
        clustered: bool,
    ) -> Self {
        Shared {
            metrics,
            state,
            app: RwLock::new(app),
            queue: Arc::new(queue),
            runs: runs::RunBook::default(),
            loops: Mutex::default(),
            cluster: OnceLock::new(),
            clustered,
            started_ms: crate::model::now_ms(),
            tasks: TaskTracker::new(),
            cluster_view: tokio::sync::Mutex::default(),
        }
    }

    /// This member's cluster membership (`None` outside a cluster, and while joining).
    pub fn cluster(&self) -> Option<&Cluster> {
        self.cluster.get()
    }

    /// Work can be accepted: outside a cluster always; in one, once joined.
    pub fn accepting(&self) -> Result<(), &'static str> {
        if self.clustered && self.cluster.get().is_none() {
            return Err("this member has not joined the cluster yet (etcd unreachable?); try another member or again later");
        }
        Ok(())
    }

    /// The config generation running now (a reload swaps it).
    pub fn app(&self) -> Arc<App> {
        self.app.read().expect("lock poisoned").clone()
    }

    pub(super) fn set_app(&self, app: Arc<App>) {
        *self.app.write().expect("lock poisoned") = app;
    }

    /// Run `policy` as far as `reach` says, if this member may: outside a cluster always, in
    /// one only while it holds the policy. The run requests `ids` follow it; `starting` is
    /// called once the run is certain to happen here.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn run_claimed(
        &self,
        app: &App,
        policy: &Policy,
        reach: &Reach,
        opts: RunOptions,
        stop: &CancellationToken,
        ids: &[u64],
        starting: impl FnOnce(),
    ) -> Claimed {
        let claim = match self.cluster().map(|c| c.claim(&policy.name, stop)) {
            Some(None) => {
                self.runs.moved(ids);
                return Claimed::Elsewhere;
            }
            held => held.flatten(),
        };
        let guards = Claim::guards(claim.as_ref(), stop);
        let cancel = guards.cancel.clone();
        let opts = RunOptions {
            verify: opts.verify || claim.as_ref().is_some_and(|c| c.verify),
            ..opts
        };
        starting();
        self.runs.running(ids);
        let cause = match ids {
            [] => Cause::Daemon,
            ids => Cause::Requests(ids.to_vec()),
        };
        let run = app.runner().run(policy, reach, opts, guards, cause).await;
        // Only a full run has asked about every tag; a targeted one verified just its own.
        if let Some(c) = claim
            .as_ref()
            .filter(|_| !run.interrupted && matches!(reach, Reach::Full))
        {
            c.verified();
        }
        drop(claim);
        self.runs.finished(ids, &run);
        Claimed::Ran {
            run: Box::new(run),
            moved: cancel.is_cancelled() && !stop.is_cancelled(),
        }
    }

    /// The document `/status` serves and `ferry status --json` prints; in a cluster also its
    /// members and who holds what (asked of etcd).
    pub async fn status(&self) -> StatusDoc {
        let mut doc = StatusDoc::from_store(&self.state, Some(self.queue.listed(PENDING_SHOWN)));
        doc.policies = Some(self.metrics.snapshot());
        let gauges = self.app().runner().registry_gauges();
        doc.rate_limits = Some(
            gauges
                .iter()
                .filter(|g| g.remaining.is_some() || g.paused_seconds > 0.0)
                .map(|g| RateLimitView {
                    registry: g.name.clone(),
                    remaining: g.remaining,
                    limit: g.limit,
                    paused_seconds: g.paused_seconds,
                })
                .collect(),
        );
        doc.concurrency = Some(
            gauges
                .iter()
                .map(|g| ConcurrencyView {
                    registry: g.name.clone(),
                    limit: g.concurrency,
                    max: g.max_concurrent,
                })
                .collect(),
        );
        doc.cluster = match self.cluster() {
            Some(c) => {
                // Held across the etcd read: a burst of requests waits for one answer.
                let mut cached = self.cluster_view.lock().await;
                match cached.as_ref() {
                    Some((at, v)) if at.elapsed() < std::time::Duration::from_secs(1) => {
                        Some(v.clone())
                    }
                    _ => {
                        let v = c.status().await;
                        *cached = Some((std::time::Instant::now(), v.clone()));
                        Some(v)
                    }
                }
            }
            None if self.clustered => Some(ClusterStatus::default()),
            None => None,
        };
        doc
    }

    pub fn metrics_text(&self) -> String {
        let uploads = self.state.uploads_in_flight().map(|u| u.len()).unwrap_or(0);
        let app = self.app();
        let registries = app.runner().registry_gauges();
        let cluster = self.cluster().map(Cluster::gauges);
        self.metrics.render(&metrics::Live {
            uploads_in_flight: uploads,
            registries: &registries,
            journal_pending: self.queue.pending(),
            state_damage: self.state.damage(),
            notifications: app.runner().notifier().counts(),
            cluster: cluster.as_ref(),
        })
    }

    /// Ask the loop of `policy` for a full run now.
    ///
    /// # Errors
    /// While a reload replaces the loops (the caller answers 503: ask again).
    pub fn request_full_run(&self, policy: &str, id: u64, opts: RunOptions) -> Result<(), NoLoop> {
        let loops = self.loops.lock().expect("lock poisoned");
        let tx = loops
            .get(policy)
            .ok_or_else(|| NoLoop::Reloading(policy.to_owned()))?;
        tx.send(scheduler::RunAsk { id, opts })
            .map_err(|_| NoLoop::Stopping(policy.to_owned()))
    }
}

/// A trigger as people write it: `schedule "*/5 * * * *" UTC; next …`, `every 10m`, `manual`.
pub fn describe(t: &Trigger) -> String {
    match t {
        Trigger::Cron(s) => format!("schedule {}", s.describe()),
        // As an interval is written: `10m`, not `600s`.
        Trigger::Every(d) => match d.as_secs() {
            s if s >= 3600 && s % 3600 == 0 => format!("every {}h", s / 3600),
            s if s >= 60 && s % 60 == 0 => format!("every {}m", s / 60),
            s => format!("every {s}s"),
        },
        Trigger::Manual => "manual".into(),
    }
}

/// What this member brings to the cluster from its config.
pub fn local(config: &Config) -> crate::cluster::Local {
    crate::cluster::Local {
        api: config.daemon.listen,
        policies: config
            .policies
            .iter()
            .map(|p| (p.name.clone(), p.fingerprint.clone()))
            .collect(),
        handover_wait: config.daemon.stop_timeout,
        max_waiting: config.daemon.max_pending_events,
    }
}
