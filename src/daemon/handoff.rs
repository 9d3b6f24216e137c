//! Cluster mode: work handed to this member because it owns the policy (events and run
//! requests accepted by any member), and results of runs asked for here but done elsewhere.
//! Nothing a peer wrote is trusted: each item is checked against this member's own policies.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::Shared;
use crate::cluster::{Handoff, Incoming};
use crate::model::RepoName;
use crate::plan::RunOptions;

/// How long a reporter waits for a run asked for by another member before giving up on it.
const REPORT_WAIT: Duration = Duration::from_secs(24 * 3600);

pub async fn pump(
    shared: Arc<Shared>,
    mut incoming: mpsc::UnboundedReceiver<Incoming>,
    stop: CancellationToken,
) {
    loop {
        let item = tokio::select! {
            () = stop.cancelled() => return,
            i = incoming.recv() => match i { Some(i) => i, None => return },
        };
        match item {
            Incoming::Result { etcd_key, id, view } => {
                shared.runs.apply_remote(id, &view);
                if let Some(c) = shared.cluster() {
                    c.done(&[etcd_key]).await;
                }
            }
            Incoming::Work { etcd_key, handoff } => take(&shared, etcd_key, handoff, &stop).await,
        }
    }
}

async fn take(shared: &Arc<Shared>, etcd_key: String, h: Handoff, stop: &CancellationToken) {
    let Some(cluster) = shared.cluster() else {
        return;
    };
    let app = shared.app();
    let Some(policy) = app.config.policies.iter().find(|p| p.name == h.key.policy) else {
        return;
    };
    let covered = h.key.repository.is_empty()
        || h.key
            .repository
            .parse::<RepoName>()
            .is_ok_and(|r| policy.repositories.covers(&r));
    if !covered || crate::daemon::queue::scope_of(&h.key).is_err() {
        warn!(key = %etcd_key, policy = %policy.name, repository = %h.key.repository, "waiting work does not match this member's policy; dropped");
        cluster.done(&[etcd_key]).await;
        return;
    }
    let local = h.request.map(|_| shared.runs.create(&h.key));
    let full = h.key.repository.is_empty();
    let queued = if full {
        let id = local.unwrap_or_else(|| shared.runs.create(&h.key));
        shared.request_full_run(
            &policy.name,
            id,
            RunOptions {
                force_delete: h.force_delete,
                verify: h.verify,
            },
        )
    } else {
        shared
            .queue
            .enqueue(h.key.clone(), &h.registry, local, Some(etcd_key.clone()))
            .map_err(|e| e.to_string())
    };
    if let Err(e) = queued {
        // Left in etcd: read again shortly.
        debug!(key = %etcd_key, error = %e, "handed-over work not queued yet");
        cluster.rescan_later();
        return;
    }
    if let (Some(lid), Some(origin), Some(rid)) = (local, h.origin.clone(), h.request) {
        let (shared, stop, cluster) = (shared.clone(), stop.clone(), cluster.clone());
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + REPORT_WAIT;
            while tokio::time::Instant::now() < deadline {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
                let Some(view) = shared.runs.get(lid) else {
                    return;
                };
                if view.state != "done" {
                    continue;
                }
                // Interrupted: the policy moved or this member is stopping; the request stays
                // in etcd for whoever holds the policy next.
                if view.outcome.as_deref() == Some("interrupted") {
                    return;
                }
                cluster
                    .report(
                        &origin,
                        rid,
                        &serde_json::to_value(&view).expect("run view serializes"),
                    )
                    .await;
                if full {
                    cluster.done(&[etcd_key]).await;
                }
                return;
            }
        });
    } else if full {
        cluster.done(&[etcd_key]).await;
    }
}
