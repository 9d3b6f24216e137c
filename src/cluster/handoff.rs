//! Events and run requests passed from the member that accepted them to the member that owns
//! their policy: a key per item under `events/POLICY/`, on no lease, so nothing accepted is
//! lost when a member dies. The owner deletes it once the work is done; a new owner finds
//! the keys still there when it takes the policy. Run results go back under `results/`.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use etcd_client::{GetOptions, PutOptions, Txn, TxnOp};
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::etcd::Created;
use super::etcd::EtcdError;
use super::Inner;
use crate::api::RunView;
use crate::state::JournalKey;

/// Largest record read back from etcd; anything bigger was not written by ferry.
pub(super) const MAX_RECORD: usize = 64 << 10;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Handoff {
    pub key: JournalKey,
    pub registry: String,
    pub accepted_ms: u64,
    /// A run asked for over the API of this member, under `request` there.
    #[serde(default)]
    pub origin: Option<String>,
    #[serde(default)]
    pub request: Option<u64>,
    #[serde(default)]
    pub force_delete: bool,
    #[serde(default)]
    pub verify: bool,
}

pub enum Incoming {
    /// Waiting work of a policy this member holds.
    Work { etcd_key: String, handoff: Handoff },
    /// How a run asked for on this member went on the member that ran it (its key is
    /// deleted once read).
    Result {
        etcd_key: String,
        id: u64,
        /// The run view as the owner wrote it: a peer's words, checked by whoever reads them.
        view: Vec<u8>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    #[error("{0} events and run requests are waiting in etcd (daemon.max_pending_events); try again later")]
    Full(i64),
}

/// How long a count of the waiting keys is trusted: a burst of webhooks costs one count a second.
const COUNT_FOR: Duration = Duration::from_secs(1);

/// Waiting keys in etcd, counted at most once a second.
pub(super) async fn waiting(inner: &Inner) -> Result<i64, EtcdError> {
    let cached = *inner.waiting.lock().expect("lock poisoned");
    if let Some((_, n)) = cached.filter(|(at, _)| at.elapsed() < COUNT_FOR) {
        return Ok(n);
    }
    let opts = GetOptions::new().with_prefix().with_count_only();
    let n = inner
        .etcd
        .call(
            "count waiting events",
            inner.etcd.client().get(inner.key("events/"), Some(opts)),
        )
        .await?
        .count();
    *inner.waiting.lock().expect("lock poisoned") = Some((Instant::now(), n));
    Ok(n)
}

pub(super) async fn put(inner: &Inner, h: &Handoff, id: &str) -> Result<bool, HandoffError> {
    let n = waiting(inner).await?;
    if n >= inner.max_waiting.load(Ordering::Relaxed) as i64 {
        return Err(HandoffError::Full(n));
    }
    let key = inner.key(&format!("events/{}/{id}", h.key.policy));
    let value = serde_json::to_vec(h).expect("handoff serializes");
    let added = matches!(
        inner
            .etcd
            .create("hand an event to its policy's owner", key, value, None)
            .await?,
        Created::Now(_)
    );
    if let Some((_, n)) = inner.waiting.lock().expect("lock poisoned").as_mut() {
        *n += i64::from(added);
    }
    Ok(added)
}

pub(super) async fn remove(inner: &Inner, keys: &[String]) {
    // etcd takes at most 128 operations per transaction by default.
    for chunk in keys.chunks(100) {
        let txn = Txn::new().and_then(
            chunk
                .iter()
                .map(|k| TxnOp::delete(k.clone(), None))
                .collect::<Vec<_>>(),
        );
        if let Err(e) = inner
            .etcd
            .call("remove done events", inner.etcd.client().txn(txn))
            .await
        {
            warn!(error = %e, keys = chunk.len(), "could not remove finished events from etcd; their policy's next owner runs them again");
        }
    }
}

pub(super) async fn report(inner: &Inner, origin: &str, id: u64, view: &RunView) {
    let key = inner.key(&format!("results/{origin}/{id}"));
    // On our lease: a result nobody collects (its member is gone) goes away with us.
    let opts = inner.lease_id().map(|l| PutOptions::new().with_lease(l));
    let value = serde_json::to_vec(view).expect("run view serializes");
    if let Err(e) = inner
        .etcd
        .call(
            "report a run result",
            inner.etcd.client().put(key, value, opts),
        )
        .await
    {
        warn!(error = %e, origin, id, "could not report a run's result to the member that was asked for it");
    }
}

/// A watched `events/` or `results/` key and its value, as work for this member (or nothing).
pub(super) fn incoming(
    inner: &Inner,
    rest: &str,
    full_key: &str,
    value: &[u8],
) -> Option<Incoming> {
    if value.len() > MAX_RECORD {
        warn!(
            key = full_key,
            bytes = value.len(),
            "oversized record in etcd ignored"
        );
        return None;
    }
    if let Some(r) = rest.strip_prefix("events/") {
        let policy = r.split('/').next()?;
        if !inner.units.holds(policy) {
            return None;
        }
        return match serde_json::from_slice::<Handoff>(value) {
            Ok(h) if h.key.policy == policy => Some(Incoming::Work {
                etcd_key: full_key.to_owned(),
                handoff: h,
            }),
            Ok(_) | Err(_) => {
                warn!(key = full_key, "unreadable event record in etcd ignored");
                None
            }
        };
    }
    let r = rest.strip_prefix("results/")?;
    let (member, id) = r.split_once('/')?;
    if member != inner.name {
        return None;
    }
    let id = id.parse().ok()?;
    Some(Incoming::Result {
        etcd_key: full_key.to_owned(),
        id,
        view: value.to_vec(),
    })
}

/// Waiting work for a policy that no live member defines is kept this long (its owner may be
/// restarting, or a config rollout may bring the policy back), then deleted as moot.
const ORPHAN_AFTER: Duration = Duration::from_secs(3600);

/// Delete waiting work whose policy no live member defines and that is older than
/// `ORPHAN_AFTER`. Returns how many keys went. One member does it (the first by name).
pub(super) async fn sweep_orphans(inner: &Inner) -> Result<usize, EtcdError> {
    if waiting(inner).await? == 0 {
        return Ok(0);
    }
    let prefix = inner.key("events/");
    let defined: std::collections::BTreeSet<String> = inner
        .members
        .lock()
        .expect("lock poisoned")
        .values()
        .flat_map(|m| m.policies.keys().cloned())
        .collect();
    let cutoff = crate::model::now_ms().saturating_sub(ORPHAN_AFTER.as_millis() as u64);
    let mut orphans = Vec::new();
    inner
        .etcd
        .scan(&prefix, None, |kv| {
            let Some(policy) = kv
                .key_str()
                .ok()
                .and_then(|k| k.strip_prefix(&prefix))
                .and_then(|r| r.split('/').next())
            else {
                return;
            };
            let old = serde_json::from_slice::<Handoff>(kv.value())
                .map_or(true, |h| h.accepted_ms < cutoff);
            if !defined.contains(policy) && old {
                orphans.push(String::from_utf8_lossy(kv.key()).into_owned());
            }
        })
        .await?;
    if !orphans.is_empty() {
        warn!(
            keys = orphans.len(),
            "deleting events waiting over an hour for policies no member defines"
        );
        remove(inner, &orphans).await;
    }
    Ok(orphans.len())
}
