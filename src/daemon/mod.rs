//! `ferry daemon`: every policy on its trigger, until SIGINT/SIGTERM; webhook events and
//! runs on request through the HTTP API. SIGHUP re-reads the config and policies; an invalid
//! new config is logged (FILE:LINE:COL) and the running one kept. A stop lets each blob in
//! flight finish its current chunk (checkpointed), flushes the state store and exits within
//! `daemon.stop_timeout`; accepted events stay in the journal for the next start.
//!
//! This file is the lifecycle: start, reload, stop. Owners of the rest: `shared` what the
//! parts share and the status document, `http` the HTTP server, `queue` the events waiting
//! for targeted runs, `runs` the runs asked for over the API, `scheduler` the policy loops,
//! `metrics` the counters, `peers` the work and results other cluster members hand this one.

mod http;
pub mod metrics;
mod peers;
mod queue;
mod runs;
pub mod scheduler;
mod shared;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

pub use shared::{describe, local, Shared};

use crate::app::{App, AppError};
use crate::cluster::{Cluster, ClusterError};
use crate::config::Trigger;
use crate::signals::{Signal, Signals};

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

/// Wait for `tasks` to stop, at most `limit`; then the process may exit: the state store
/// holds every acknowledged chunk.
async fn drain(tasks: &TaskTracker, limit: Duration) {
    tasks.close();
    if tokio::time::timeout(limit, tasks.wait()).await.is_err() {
        warn!(
            ?limit,
            "runs still busy at the stop deadline; their last acknowledged chunks are checkpointed"
        );
    }
}

/// A panic anywhere takes the daemon down (systemd restarts it): a task that died holding a
/// lock would otherwise leave it poisoned behind a `/healthz` that still says ok.
fn abort_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::abort();
    }));
}

/// Wait until joined to the cluster, honouring stop signals (a member that cannot join yet
/// must still stop when told to) and extending systemd's start timeout (Type=notify, not
/// started until READY=1) rather than being killed and restarted for the wait.
async fn join(
    settings: &crate::config::ClusterSettings,
    local: crate::cluster::Local,
    inbox: mpsc::UnboundedSender<crate::cluster::Incoming>,
    root: &CancellationToken,
    signals: &mut Signals,
) -> Result<Cluster, ClusterError> {
    let joining = async {
        loop {
            notify("STATUS=joining the cluster: waiting for etcd\nEXTEND_TIMEOUT_USEC=60000000");
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
    };
    let joined = tokio::select! {
        r = Cluster::join(settings, local, inbox, root) => r,
        () = joining => unreachable!("loops forever"),
        _ = signals.stop() => Err(ClusterError::Stopped),
    };
    notify("STATUS=");
    joined
}

/// Re-read the config; `None` (each problem logged) keeps the running one.
fn reload(config_path: &Path, running: &App, state: &crate::state::StateStore) -> Option<App> {
    let new = match crate::config::load(config_path) {
        Ok(c) => c,
        Err(problems) => {
            for p in &problems {
                error!(problem = %p, "config reload failed; still running the previous config");
            }
            return None;
        }
    };
    match App::new(new, Some(state.clone())) {
        Ok(a) => Some(a.after(running)),
        Err(e) => {
            error!(error = %e, "config reload failed; still running the previous config");
            None
        }
    }
}

/// Run until stopped. Returns after a clean stop.
///
/// # Errors
/// When the state store, a registry client or the listen socket cannot be set up.
pub async fn run(config_path: &Path, config: crate::config::Config) -> Result<(), DaemonError> {
    abort_on_panic();
    let state = App::open_state(&config)?;
    let listen = config.daemon.listen;
    let mut stop_timeout = config.daemon.stop_timeout;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| DaemonError::Listen {
            addr: listen,
            source,
        })?;
    let mut signals = Signals::new().map_err(DaemonError::Signal)?;
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
    let (to_peers_inbox, from_peers) = mpsc::unbounded_channel();
    let cluster_settings = config.cluster.clone().map(|c| (c, local(&config)));
    let app = Arc::new(App::new(config, Some(state.clone()))?);
    let shared = Arc::new(Shared::new(
        metrics.clone(),
        state.clone(),
        app.clone(),
        queue,
        cluster_settings.is_some(),
    ));
    // Health and metrics answer while the cluster is joined (readyz says not yet).
    let http_tasks = TaskTracker::new();
    http_tasks.spawn(http::serve(
        listener,
        shared.clone(),
        root.clone(),
        http_tasks.clone(),
    ));
    if let Some((settings, local)) = cluster_settings {
        match join(&settings, local, to_peers_inbox, &root, &mut signals).await {
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
    event_tasks.spawn(peers::receive(
        shared.clone(),
        from_peers,
        events_stop.clone(),
    ));
    info!(%listen, policies = app.config.policies.len(), api = app.config.daemon.api_token.is_some(), "daemon started");

    let mut app = app;
    let tasks = loop {
        let generation = root.child_token();
        let tasks = TaskTracker::new();
        start(&app, &shared, &generation, &tasks);
        metrics
            .ready
            .store(true, std::sync::atomic::Ordering::Relaxed);
        notify("READY=1");
        let reloaded = loop {
            match signals.next().await {
                Signal::Stop | Signal::Abort => break None,
                Signal::Reload => {
                    notify("RELOADING=1");
                    match reload(config_path, &app, &state) {
                        Some(a) => break Some(a),
                        None => notify("READY=1"),
                    }
                }
            }
        };
        // Runs stop at a chunk boundary (the chunk in flight completes and is checkpointed).
        generation.cancel();
        let Some(new) = reloaded else { break tasks };
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
        shared.set_app(app.clone());
        if let Some(c) = shared.cluster() {
            c.reconfigure(local(&app.config)).await;
        }
    };
    notify("STOPPING=1");
    info!("stopping: letting the chunks in flight finish");
    metrics
        .ready
        .store(false, std::sync::atomic::Ordering::Relaxed);
    events_stop.cancel();
    // The fan-out reads of this config's copies end with the runs they feed; those of a
    // config replaced by a reload ended with its runs.
    tokio::join!(
        drain(&tasks, stop_timeout),
        drain(&event_tasks, stop_timeout),
        drain(&shared.tasks, stop_timeout),
        drain(app.runner().tasks(), stop_timeout),
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
    Ok(())
}

#[cfg(test)]
mod tests {
    /// A panic in any task ends the process with SIGABRT. Run in a child copy of this test
    /// binary: the hook would take the test runner down with it.
    #[test]
    fn a_panic_in_a_task_aborts_the_process() {
        if std::env::var_os("FERRY_PANIC_CHILD").is_some() {
            super::abort_on_panic();
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                let lock = std::sync::Arc::new(std::sync::Mutex::new(0));
                let held = lock.clone();
                let _ = tokio::spawn(async move {
                    let _guard = held.lock().unwrap();
                    panic!("a bug while holding a lock");
                })
                .await;
                // Without the hook, tokio swallows the panic and this line runs.
                println!(
                    "still running; the lock is poisoned: {}",
                    lock.is_poisoned()
                );
            });
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "daemon::tests::a_panic_in_a_task_aborts_the_process",
                "--nocapture",
            ])
            .env("FERRY_PANIC_CHILD", "1")
            .output()
            .unwrap();
        use std::os::unix::process::ExitStatusExt;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGABRT),
            "{:?}: {stdout}",
            out.status
        );
        assert!(!stdout.contains("still running"), "{stdout}");
    }
}
