use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::remote::DaemonClient;
use super::SyncArgs;
use crate::api::RunRequest;
use crate::app::App;
use crate::copy::Guards;
use crate::model::ByteSize;
use crate::plan::RunOptions;
use crate::run::Reach;
use crate::signals::Signals;
use crate::state::{Counts, Outcome, StateError};

/// First SIGINT/SIGTERM: stop starting work, let chunks in flight finish and be
/// checkpointed. Second: leave at once (the saved checkpoints still hold).
fn stop_on_signals(cancel: CancellationToken) -> std::io::Result<()> {
    let mut signals = Signals::new()?;
    tokio::spawn(async move {
        signals.stop().await;
        warn!("stopping: finishing the chunks in flight (signal again to abort now)");
        cancel.cancel();
        signals.stop().await;
        std::process::exit(130);
    });
    Ok(())
}

/// On a terminal, while `work` runs: one status line, and a bar per large blob in flight,
/// redrawn five times a second.
async fn with_progress<T>(app: &App, work: impl std::future::Future<Output = T>) -> T {
    use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
    let started = std::time::Instant::now();
    let line = || {
        let p = app.runner().progress();
        let bytes = p.bytes.load(Ordering::Relaxed);
        let rate = bytes as f64 / started.elapsed().as_secs_f64().max(0.001);
        format!(
            "ferry: {} tags copied, {} blobs, {} sent ({}/s)",
            p.tags.load(Ordering::Relaxed),
            p.blobs.load(Ordering::Relaxed),
            ByteSize(bytes),
            ByteSize(rate as u64)
        )
    };
    let bars = MultiProgress::new();
    let total = bars.add(ProgressBar::new_spinner());
    let blob_style =
        ProgressStyle::with_template("  {msg:50!} {bar:30} {binary_bytes:>10}/{binary_total_bytes:<10} {binary_bytes_per_sec:>12} {eta}")
            .expect("valid template");
    // One bar per large blob in flight, added when it starts and removed when it ends.
    let mut shown: std::collections::BTreeMap<u64, ProgressBar> = std::collections::BTreeMap::new();
    let mut work = std::pin::pin!(work);
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
    loop {
        tokio::select! {
            out = &mut work => {
                shown.values().for_each(ProgressBar::finish_and_clear);
                total.finish_and_clear();
                return out;
            }
            _ = tick.tick() => {
                total.set_message(line());
                total.tick();
                let live = app.runner().progress().large_blobs();
                shown.retain(|id, bar| {
                    let keep = live.iter().any(|b| b.id == *id);
                    if !keep {
                        bar.finish_and_clear();
                        bars.remove(bar);
                    }
                    keep
                });
                for b in live {
                    let bar = shown.entry(b.id).or_insert_with(|| {
                        let bar = bars.add(ProgressBar::new(b.size).with_style(blob_style.clone()).with_message(b.label.clone()));
                        bar.reset_eta();
                        bar
                    });
                    bar.set_position(b.done.load(Ordering::Relaxed));
                }
            }
        }
    }
}

/// How one policy's run ended, whether ferry ran it here or a daemon did.
struct Finished {
    policy: String,
    counts: Counts,
    errors: Vec<String>,
    findings: crate::state::Findings,
    interrupted: bool,
}

/// How long `ferry sync` waits for notifications still being retried before it exits.
const NOTIFY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

pub async fn run(config: &Path, args: &SyncArgs) -> ExitCode {
    let cfg = match super::load(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let state = match App::open_state(&cfg) {
        Ok(_) if cfg.cluster.is_some() => {
            // Copying from here, outside the cluster, could write a tag its owner is writing.
            let msg = format!(
                "{}: a cluster member's config: `ferry sync` goes through this member's daemon (which hands the run to the policy's owner), and no daemon runs here; start it, or sync with a config without [cluster]",
                config.display()
            );
            return super::fail(msg, 1);
        }
        Ok(s) => s,
        Err(crate::app::AppError::State(StateError::Locked { path })) => {
            return through_daemon(&cfg, args, &path).await
        }
        Err(e) => return super::fail(e, 1),
    };
    let app = match App::new(cfg, Some(state)) {
        Ok(a) => a,
        Err(e) => return super::fail(e, 1),
    };
    let policies = match app.select(&args.policies) {
        Ok(p) => p,
        Err(e) => return super::fail(e, 2),
    };
    let cancel = CancellationToken::new();
    if let Err(e) = stop_on_signals(cancel.clone()) {
        return super::fail(format!("signal handlers: {e}"), 1);
    }
    let opts = RunOptions {
        force_delete: args.force_delete,
        verify: args.verify,
    };
    let runs = futures_util::future::join_all(policies.iter().map(|p| {
        app.runner().run(
            p,
            &Reach::Full,
            opts,
            Guards::cancel(cancel.clone()),
            crate::run::Cause::Sync,
        )
    }));
    let runs = if std::io::stderr().is_terminal() {
        with_progress(&app, runs).await
    } else {
        runs.await
    };
    let outcomes: Vec<Finished> = runs
        .into_iter()
        .map(|r| Finished {
            counts: r.counts(),
            errors: r.errors(),
            policy: r.policy,
            findings: r.findings,
            interrupted: r.interrupted,
        })
        .collect();
    // Failure notifications are retried in the background; give them a moment, not forever.
    app.runner().notifier().settle(NOTIFY_WAIT).await;
    if let Some(s) = app.runner().state() {
        if let Err(e) = s.flush().await {
            report(&outcomes);
            return super::fail(e, 1);
        }
    }
    report(&outcomes)
}

/// A daemon holds the state store: ask it to run each policy, wait, and report as if the
/// runs were ours.
async fn through_daemon(cfg: &crate::config::Config, args: &SyncArgs, store: &str) -> ExitCode {
    let names: Vec<String> = if args.policies.is_empty() {
        cfg.policies.iter().map(|p| p.name.clone()).collect()
    } else {
        args.policies.clone()
    };
    if let Some(n) = names
        .iter()
        .find(|n| !cfg.policies.iter().any(|p| &p.name == *n))
    {
        return super::fail(crate::app::AppError::UnknownPolicy(n.clone()), 2);
    }
    let client = match DaemonClient::new(cfg) {
        Ok(c) => c,
        Err(e) => return super::fail(e, 1),
    };
    eprintln!(
        "ferry: the daemon holds {store}; asking it to run {} at {}",
        names.join(", "),
        client.base()
    );
    let mut ids = Vec::new();
    for n in &names {
        let req = RunRequest {
            policy: n.clone(),
            force_delete: args.force_delete,
            verify: args.verify,
            ..Default::default()
        };
        match client.start_run(&req).await {
            Ok(id) => ids.push(id),
            Err(e) => return super::fail(e, 1),
        }
    }
    let mut signals = match Signals::new() {
        Ok(s) => s,
        Err(e) => return super::fail(format!("signal handlers: {e}"), 1),
    };
    let mut outcomes = Vec::new();
    for id in ids {
        let v = tokio::select! {
            v = client.wait_run(id) => v,
            _ = signals.stop() => return super::fail("interrupted; the daemon goes on with the runs", 1),
        };
        let v = match v {
            Ok(v) => v,
            Err(e) => return super::fail(e, 1),
        };
        outcomes.push(Finished {
            interrupted: v.outcome == Some(Outcome::Interrupted),
            policy: v.policy,
            counts: v.counts,
            errors: v.errors,
            findings: v.findings,
        });
    }
    report(&outcomes)
}

/// The summary line and the failures and holds, on stdout and stderr; the exit code.
fn report(runs: &[Finished]) -> ExitCode {
    let mut total = Counts::default();
    let mut errors = Vec::new();
    for r in runs {
        total.add(&r.counts);
        errors.extend(r.errors.iter().map(|e| format!("{}: {e}", r.policy)));
    }
    let interrupted = runs.iter().any(|r| r.interrupted);
    let mut told = crate::run::Told::default();
    for e in &errors {
        eprintln!("failed: {}", told.brief(e));
    }
    for r in runs {
        for c in &r.findings.conflicts {
            eprintln!(
                "conflict: {}: {c}; left as it is (overwrite = false)",
                r.policy
            );
        }
        for h in &r.findings.held {
            eprintln!("held: {}: {h}", r.policy);
        }
    }
    println!(
        "sync {}: {} tags copied, {} in sync, {} conflicts, {} held, {} deleted; {} manifests written; blobs: {} uploaded, {} mounted, {} skipped; {} sent; {} failures",
        if interrupted { "interrupted" } else if errors.is_empty() { "ok" } else { "failed" },
        total.tags_copied,
        total.tags_in_sync,
        total.conflicts,
        total.held,
        total.deleted,
        total.manifests_written,
        total.blobs_uploaded,
        total.blobs_mounted,
        total.blobs_skipped,
        ByteSize(total.bytes_sent),
        total.failures
    );
    if interrupted || !errors.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
