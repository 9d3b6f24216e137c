use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::model::ByteSize;
use crate::state::Counts;

use super::SyncArgs;
use crate::app::App;

/// First SIGINT/SIGTERM: stop starting work, let chunks in flight finish and be
/// checkpointed. Second: leave at once (the saved checkpoints still hold).
fn stop_on_signals(cancel: CancellationToken) {
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else { return };
        tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
        warn!("stopping: finishing the chunks in flight (signal again to abort now)");
        cancel.cancel();
        tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
        std::process::exit(130);
    });
}

/// On a terminal: one status line, redrawn twice a second, while `work` runs.
async fn with_progress<T>(app: &App, work: impl std::future::Future<Output = T>) -> T {
    let started = std::time::Instant::now();
    let line = || {
        let p = app.progress();
        let bytes = p.bytes.load(Ordering::Relaxed);
        let rate = bytes as f64 / started.elapsed().as_secs_f64().max(0.001);
        format!(
            "\r\x1b[Kferry: {} tags copied, {} blobs, {} sent ({}/s)",
            p.tags.load(Ordering::Relaxed),
            p.blobs.load(Ordering::Relaxed),
            ByteSize(bytes),
            ByteSize(rate as u64)
        )
    };
    let mut work = std::pin::pin!(work);
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    loop {
        tokio::select! {
            out = &mut work => {
                eprint!("\r\x1b[K");
                return out;
            }
            _ = tick.tick() => eprint!("{}", line()),
        }
    }
}

pub async fn run(config: &Path, args: &SyncArgs) -> ExitCode {
    let app = match super::open(config, Some(true)) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let policies = match app.select(&args.policies) {
        Ok(p) => p,
        Err(e) => return super::fail(e, 2),
    };
    let cancel = CancellationToken::new();
    stop_on_signals(cancel.clone());
    let runs = futures_util::future::join_all(policies.iter().map(|p| app.run_policy(p, &cancel, args.force_delete)));
    let runs = if std::io::stderr().is_terminal() { with_progress(&app, runs).await } else { runs.await };
    let mut total = Counts::default();
    let mut errors = Vec::new();
    for r in &runs {
        total.add(&r.counts());
        errors.extend(r.errors.iter().map(|e| format!("{}: {e}", r.policy)));
    }
    let interrupted = runs.iter().any(|r| r.interrupted);
    for e in &errors {
        eprintln!("failed: {e}");
    }
    for r in &runs {
        for h in &r.held {
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
    if let Some(s) = app.state() {
        if let Err(e) = s.flush().await {
            return super::fail(e, 1);
        }
    }
    if interrupted || !errors.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
