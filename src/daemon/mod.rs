//! `ferry daemon`: every policy on its trigger, until SIGINT/SIGTERM; webhook events and
//! runs on request through the HTTP API. SIGHUP re-reads the config and policies; an invalid
//! new config is logged (FILE:LINE:COL) and the running one kept. A stop lets each blob in
//! flight finish its current chunk (checkpointed), flushes the state store and exits within
//! `daemon.stop_timeout`; accepted events stay in the journal for the next start.
//!
//! Owners: `api` the HTTP server, `queue` the events waiting for targeted runs, `runs` the
//! runs asked for over the API, `scheduler` the policy loops, `metrics` the counters,
//! `handoff` the work cluster members pass each other.

mod api;
mod handoff;
pub mod metrics;
mod queue;
mod runs;
pub mod scheduler;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use tokio::sync::mpsc;

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::app::{App, AppError};
use crate::cluster::{Cluster, ClusterError};
use crate::config::{Config, Trigger};
use crate::state::StateStore;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    App(#[from] AppError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("signal handler: {0}")]
    Signal(std::io::Error),
    #[error("event journal: {0}")]
    Journal(#[from] crate::state::StateError),
    #[error("cluster: {0}")]
    Cluster(#[from] ClusterError),
}

/// What the HTTP API, the event queue and the policy loops share.
pub struct Shared {
    pub metrics: Arc<metrics::Metrics>,
    pub state: StateStore,
    app: RwLock<Arc<App>>,
    queue: Arc<queue::EventQueue>,
    runs: runs::RunBook,
    /// Each policy loop of the running config generation, to ask it for a run now.
    loops: Mutex<HashMap<String, mpsc::UnboundedSender<scheduler::RunAsk>>>,
    /// In cluster mode, once joined: this member's membership.
    cluster: OnceLock<Cluster>,
    /// `[cluster]` is configured (joined or not yet).
    clustered: bool,
    /// When this process started (Unix ms): run request ids restart with it.
    started_ms: u64,
}

impl Shared {
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

    /// The document `/status` serves and `ferry status --json` prints; in a cluster also its
    /// members and who holds what (asked of etcd).
    pub async fn status(&self) -> serde_json::Value {
        let (pending, total) = self.queue.listed(crate::state::PENDING_SHOWN);
        let mut doc = match self.state.status_with(pending, total) {
            Ok(s) => serde_json::to_value(s).expect("status serializes"),
            Err(e) => serde_json::json!({ "error": e.to_string() }),
        };
        doc["policies"] = serde_json::to_value(self.metrics.snapshot()).expect("metrics serialize");
        let gauges = self.app().registry_gauges();
        doc["rate_limits"] = gauges
            .iter()
            .filter(|g| g.remaining.is_some() || g.paused_seconds > 0.0)
            .map(|g| serde_json::json!({ "registry": g.name, "remaining": g.remaining, "limit": g.limit, "paused_seconds": g.paused_seconds }))
            .collect();
        doc["concurrency"] =
            gauges.iter().map(|g| serde_json::json!({ "registry": g.name, "limit": g.concurrency, "max": g.max_concurrent })).collect();
        match self.cluster() {
            Some(c) => doc["cluster"] = c.status().await,
            None if self.clustered => doc["cluster"] = serde_json::json!({ "joined": false }),
            None => {}
        }
        doc
    }

    pub fn metrics_text(&self) -> String {
        let uploads = self.state.uploads_in_flight().map(|u| u.len()).unwrap_or(0);
        let app = self.app();
        let registries = app.registry_gauges();
        let cluster = self.cluster().map(Cluster::gauges);
        self.metrics.render(&metrics::Live {
            uploads_in_flight: uploads,
            registries: &registries,
            journal_pending: self.queue.pending(),
            state_damage: self.state.damage(),
            notifications: app.notifier().counts(),
            cluster: cluster.as_ref(),
        })
    }

    /// Ask the loop of `policy` for a full run now.
    ///
    /// # Errors
    /// While a reload replaces the loops (the caller answers 503: ask again).
    pub fn request_full_run(
        &self,
        policy: &str,
        id: u64,
        opts: crate::plan::RunOptions,
    ) -> Result<(), String> {
        let loops = self.loops.lock().expect("lock poisoned");
        let tx = loops
            .get(policy)
            .ok_or_else(|| format!("policy `{policy}` is not running (reloading?); ask again"))?;
        tx.send(scheduler::RunAsk { id, opts })
            .map_err(|_| format!("policy `{policy}` is stopping; ask again"))
    }
}

/// A trigger as people write it: `schedule 0 */5 * * * *`, `every 30s`, `manual`.
pub fn describe(t: &Trigger) -> String {
    match t {
        Trigger::Cron(s) => format!("schedule {}", s.describe()),
        Trigger::Every(d) => format!("every {}s", d.as_secs()),
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

/// Tell systemd (Type=notify) how we are doing; a no-op outside systemd.
fn notify(msg: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let _ = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|a| sock.send_to_addr(msg.as_bytes(), &a))
    } else {
        sock.send_to(msg.as_bytes(), &path)
    };
}

/// Start every policy loop of `app`; policies with uploads left in flight start with a run.
fn start(app: &Arc<App>, shared: &Arc<Shared>, stop: &CancellationToken, tasks: &TaskTracker) {
    let pending: HashSet<String> = shared
        .state
        .uploads_in_flight()
        .unwrap_or_default()
        .into_iter()
        .map(|u| u.target)
        .collect();
    shared.metrics.set_policies(
        &app.config
            .policies
            .iter()
            .map(|p| (p.name.clone(), describe(&p.trigger)))
            .collect::<Vec<_>>(),
    );
    let mut loops = shared.loops.lock().expect("lock poisoned");
    loops.clear();
    for (i, p) in app.config.policies.iter().enumerate() {
        let resume =
            !matches!(p.trigger, Trigger::Manual) && p.targets.iter().any(|t| pending.contains(t));
        if resume {
            info!(policy = %p.name, "uploads left in flight: running now to resume them");
        }
        let (tx, rx) = mpsc::unbounded_channel();
        loops.insert(p.name.clone(), tx);
        tasks.spawn(scheduler::policy_loop(
            app.clone(),
            i,
            stop.child_token(),
            shared.clone(),
            rx,
            resume,
        ));
    }
}

/// Wait for the policy loops to stop, at most `limit`; then the process may exit: the state
/// store holds every acknowledged chunk.
async fn drain(tasks: &TaskTracker, limit: Duration) {
    tasks.close();
    if tokio::time::timeout(limit, tasks.wait()).await.is_err() {
        warn!(
            ?limit,
            "runs still busy at the stop deadline; their last acknowledged chunks are checkpointed"
        );
    }
}

/// Run until stopped. Returns after a clean stop.
///
/// # Errors
/// When the state store, a registry client or the listen socket cannot be set up.
pub async fn run(config_path: &Path, config: Config) -> Result<(), DaemonError> {
    let state = App::open_state(&config)?;
    let listen = config.daemon.listen;
    let mut stop_timeout = config.daemon.stop_timeout;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| DaemonError::Listen {
            addr: listen,
            source,
        })?;
    let (mut int, mut term, mut hup) = (
        signal(SignalKind::interrupt()).map_err(DaemonError::Signal)?,
        signal(SignalKind::terminate()).map_err(DaemonError::Signal)?,
        signal(SignalKind::hangup()).map_err(DaemonError::Signal)?,
    );
    let metrics = Arc::new(metrics::Metrics::default());
    let (queue, replayed) =
        queue::EventQueue::replay(state.clone(), config.daemon.max_pending_events)?;
    if replayed > 0 {
        info!(
            events = replayed,
            "replaying events accepted before the last stop"
        );
        metrics
            .events_replayed
            .fetch_add(replayed as u64, std::sync::atomic::Ordering::Relaxed);
    }
    let root = CancellationToken::new();
    let (inbox, incoming) = mpsc::unbounded_channel();
    let cluster_settings = config.cluster.clone().map(|c| (c, local(&config)));
    let app = Arc::new(App::new(config, Some(state.clone()))?);
    let shared = Arc::new(Shared {
        metrics: metrics.clone(),
        state: state.clone(),
        app: RwLock::new(app.clone()),
        queue: Arc::new(queue),
        runs: runs::RunBook::default(),
        loops: Mutex::default(),
        cluster: OnceLock::new(),
        clustered: cluster_settings.is_some(),
        started_ms: crate::model::now_ms(),
    });
    // Health and metrics answer while the cluster is joined (readyz says not yet).
    let http_tasks = TaskTracker::new();
    http_tasks.spawn(api::serve(
        listener,
        shared.clone(),
        root.clone(),
        http_tasks.clone(),
    ));
    if let Some((settings, local)) = cluster_settings {
        // While etcd is awaited, signals are honoured (a member that cannot join yet must
        // still stop when told to), and systemd (Type=notify, not started until READY=1) has
        // its start timeout extended rather than killing and restarting us for the wait.
        let joining = async {
            loop {
                notify(
                    "STATUS=joining the cluster: waiting for etcd\nEXTEND_TIMEOUT_USEC=60000000",
                );
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
        };
        let joined = tokio::select! {
            r = Cluster::join(&settings, local, inbox, &root) => r,
            () = joining => unreachable!("loops forever"),
            _ = int.recv() => Err(ClusterError::Stopped),
            _ = term.recv() => Err(ClusterError::Stopped),
        };
        notify("STATUS=");
        match joined {
            Ok(c) => drop(shared.cluster.set(c)),
            Err(ClusterError::Stopped) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
    let events_stop = root.child_token();
    let event_tasks = TaskTracker::new();
    event_tasks.spawn(
        shared
            .queue
            .clone()
            .dispatch(shared.clone(), events_stop.clone()),
    );
    event_tasks.spawn(handoff::pump(shared.clone(), incoming, events_stop.clone()));
    info!(%listen, policies = app.config.policies.len(), api = app.config.daemon.api_token.is_some(), "daemon started");

    let mut app = app;
    loop {
        let generation = root.child_token();
        let tasks = TaskTracker::new();
        start(&app, &shared, &generation, &tasks);
        metrics
            .ready
            .store(true, std::sync::atomic::Ordering::Relaxed);
        notify("READY=1");
        let reloaded = loop {
            tokio::select! {
                _ = int.recv() => break None,
                _ = term.recv() => break None,
                _ = hup.recv() => {
                    notify("RELOADING=1");
                    match crate::config::load(config_path).map_err(|d| d.iter().map(ToString::to_string).collect::<Vec<_>>()) {
                        Err(problems) => {
                            for p in &problems {
                                error!(problem = %p, "config reload failed; still running the previous config");
                            }
                            notify("READY=1");
                        }
                        Ok(new) => match App::new(new, Some(state.clone())) {
                            Ok(a) => break Some(a.after(&app)),
                            Err(e) => {
                                error!(error = %e, "config reload failed; still running the previous config");
                                notify("READY=1");
                            }
                        },
                    }
                }
            }
        };
        // Runs stop at a chunk boundary (the chunk in flight completes and is checkpointed).
        generation.cancel();
        match reloaded {
            Some(new) => {
                info!(
                    policies = new.config.policies.len(),
                    "config reloaded; restarting policy loops"
                );
                drain(&tasks, stop_timeout).await;
                if new.config.daemon.listen != listen {
                    warn!(old = %listen, new = %new.config.daemon.listen, "daemon.listen changes only on restart");
                }
                stop_timeout = new.config.daemon.stop_timeout;
                shared.queue.set_limit(new.config.daemon.max_pending_events);
                app = Arc::new(new);
                *shared.app.write().expect("lock poisoned") = app.clone();
                if let Some(c) = shared.cluster() {
                    c.reconfigure(local(&app.config)).await;
                }
            }
            None => {
                notify("STOPPING=1");
                info!("stopping: letting the chunks in flight finish");
                metrics
                    .ready
                    .store(false, std::sync::atomic::Ordering::Relaxed);
                events_stop.cancel();
                tokio::join!(
                    drain(&tasks, stop_timeout),
                    drain(&event_tasks, stop_timeout)
                );
                if let Some(c) = shared.cluster() {
                    c.leave().await;
                }
                root.cancel();
                drain(&http_tasks, Duration::from_secs(1)).await;
                if let Err(e) = state.flush().await {
                    error!(error = %e, "state store flush failed");
                }
                info!("stopped");
                return Ok(());
            }
        }
    }
}
