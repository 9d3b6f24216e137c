//! Cluster mode: work handed to this member because it owns the policy (events and run
//! requests accepted by any member), and results of runs asked for here but done elsewhere.
//! Nothing a peer wrote is trusted: each item is checked against this member's own policies.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::Shared;
use crate::api::RunState;
use crate::cluster::{Handoff, Incoming};
use crate::plan::RunOptions;
use crate::state::{JournalAction, Outcome};

/// How long a reporter waits for a run asked for by another member before giving up on it.
const REPORT_WAIT: Duration = Duration::from_secs(24 * 3600);

/// Take what the cluster hands this member until `stop`: results of runs asked for here and
/// done elsewhere, and waiting work of the policies it holds.
pub async fn receive(
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
    let Some(policy) = app.policy(&h.key.policy) else {
        return;
    };
    let full = h.key.repository.is_none() && h.key.action == JournalAction::Run;
    let covered = full
        || h.key
            .repository
            .as_ref()
            .is_some_and(|r| policy.repositories.covers(r));
    if !covered || (!full && super::queue::reach_of(&h.key).is_none()) {
        warn!(key = %etcd_key, policy = %policy.name, repository = h.key.repository_str(), "waiting work does not match this member's policy; dropped");
        cluster.done(&[etcd_key]).await;
        return;
    }
    let local = h.request.map(|_| shared.runs.create(&h.key));
    let queued = if full {
        let id = local.unwrap_or_else(|| shared.runs.create(&h.key));
        shared
            .request_full_run(
                &policy.name,
                id,
                RunOptions {
                    force_delete: h.force_delete,
                    verify: h.verify,
                },
            )
            .map_err(|e| e.to_string())
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
        shared.clone().tasks.spawn(async move {
            let deadline = tokio::time::Instant::now() + REPORT_WAIT;
            while tokio::time::Instant::now() < deadline {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
                let Some(view) = shared.runs.get(lid) else {
                    return;
                };
                if view.state != RunState::Done {
                    continue;
                }
                // Interrupted: the policy moved or this member is stopping; the request stays
                // in etcd for whoever holds the policy next.
                if view.outcome == Some(Outcome::Interrupted) {
                    return;
                }
                cluster.report(&origin, rid, &view).await;
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
