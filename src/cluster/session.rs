//! The member's session with etcd: the lease and its keepalive, the watch over the prefix,
//! and the reconcile loop that takes and gives up policies as membership changes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{EventType, KeyValue, PutOptions, WatchOptions};
use futures_util::future::join_all;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::etcd::Created;
use super::etcd::{EtcdError, REQUEST_TIMEOUT};
use super::handoff::{incoming, MAX_RECORD};
use super::members::{mismatches, owner, MemberRecord};
use super::{ClusterError, Inner, Lease};
use crate::api::{ClusterStatus, MemberView};

enum Register {
    Etcd(EtcdError),
    /// The member key is held under another lease: by another process, or by an earlier
    /// run of this member whose lease has not expired yet.
    Taken(Option<MemberRecord>),
}

impl From<EtcdError> for Register {
    fn from(e: EtcdError) -> Self {
        Register::Etcd(e)
    }
}

fn ttl_secs(inner: &Inner) -> i64 {
    inner.ttl.as_secs().max(1) as i64
}

/// Grant a lease and create the member key on it, if nobody has that name.
async fn register(inner: &Inner) -> Result<(), Register> {
    let sent = Instant::now();
    let grant = inner
        .etcd
        .call(
            "grant a lease",
            inner.etcd.client().lease_grant(ttl_secs(inner), None),
        )
        .await?;
    let id = grant.id();
    let mut rec = inner.record.lock().expect("lock poisoned").clone();
    rec.lease = id;
    let key = inner.key(&format!("members/{}", inner.name));
    let value = serde_json::to_vec(&rec).expect("record serializes");
    if let Created::Exists(kv) = inner
        .etcd
        .create("register this member", key, value, Some(id))
        .await?
    {
        let _ = inner
            .etcd
            .call(
                "revoke an unused lease",
                inner.etcd.client().lease_revoke(id),
            )
            .await;
        return Err(Register::Taken(
            kv.and_then(|kv| serde_json::from_slice(kv.value()).ok()),
        ));
    }
    *inner.record.lock().expect("lock poisoned") = rec.clone();
    *inner.lease.lock().expect("lock poisoned") = Some(Lease {
        id,
        deadline: sent + Duration::from_secs(grant.ttl().max(1) as u64),
    });
    inner
        .members
        .lock()
        .expect("lock poisoned")
        .insert(inner.name.clone(), rec);
    inner.changed();
    Ok(())
}

/// The first registration, at start: etcd away → keep trying; refused → error; name taken →
/// wait one TTL (an earlier run of this member that was killed leaves its key until its lease
/// expires), then refuse to start.
pub(super) async fn first_registration(
    inner: &Inner,
    stop: &CancellationToken,
) -> Result<(), ClusterError> {
    let mut taken_since: Option<Instant> = None;
    let mut delay = Duration::from_secs(1);
    loop {
        let wait = match register(inner).await {
            Ok(()) => return Ok(()),
            Err(Register::Etcd(e)) if e.is_fatal() => return Err(e.into()),
            Err(Register::Etcd(e)) => super::away(&e, &mut delay),
            Err(Register::Taken(holder)) => {
                let (host, pid) = holder.map_or_else(|| ("?".to_owned(), 0), |h| (h.host, h.pid));
                let since = *taken_since.get_or_insert_with(|| {
                    warn!(member = %inner.name, host, pid, wait = ?inner.ttl, "member name held in etcd; waiting one lease TTL in case it is an earlier run of this member");
                    Instant::now()
                });
                if since.elapsed() > inner.ttl + Duration::from_secs(2) {
                    return Err(ClusterError::DuplicateMember {
                        name: inner.name.clone(),
                        host,
                        pid,
                    });
                }
                delay = Duration::from_secs(1);
                delay
            }
        };
        super::pause(stop, wait).await?;
    }
}

/// Rewrite the member record (a reload changed the policy set).
pub(super) async fn publish(inner: &Inner, rec: &MemberRecord) -> Result<(), EtcdError> {
    let Some(id) = inner.lease_id() else {
        return Ok(());
    };
    let mut rec = rec.clone();
    rec.lease = id;
    let key = inner.key(&format!("members/{}", inner.name));
    inner
        .etcd
        .call(
            "publish this member",
            inner.etcd.client().put(
                key,
                serde_json::to_vec(&rec).expect("record serializes"),
                Some(PutOptions::new().with_lease(id)),
            ),
        )
        .await?;
    Ok(())
}

fn lost(inner: &Inner, why: &str) {
    let Some(old) = inner.lease.lock().expect("lock poisoned").take() else {
        return;
    };
    // A restarted etcd restores leases with a fresh TTL: revoke this one when etcd is back,
    // or the member key on it blocks rejoining for a whole TTL.
    *inner.stale_lease.lock().expect("lock poisoned") = Some(old.id);
    let n = inner.units.lose_all(why);
    inner.counters.lease_lost.fetch_add(1, Ordering::Relaxed);
    error!(member = %inner.name, policies = n, reason = why, "cluster lease lost: this member starts nothing until it has rejoined");
    inner.changed();
}

/// Keep the lease alive (a keepalive every TTL/3); when it cannot be, give everything up and
/// register again once etcd is back.
pub(super) async fn keep_lease(inner: Arc<Inner>, stop: CancellationToken) {
    let every = (inner.ttl / 3).max(Duration::from_millis(500));
    let mut said_away = false;
    loop {
        let lease = *inner.lease.lock().expect("lock poisoned");
        let Some(lease) = lease else {
            let stale = *inner.stale_lease.lock().expect("lock poisoned");
            if let Some(id) = stale {
                match inner
                    .etcd
                    .call(
                        "revoke the lost lease",
                        inner.etcd.client().lease_revoke(id),
                    )
                    .await
                {
                    Err(EtcdError::Away { reason, .. }) if !reason.contains("not found") => {}
                    _ => drop(inner.stale_lease.lock().expect("lock poisoned").take()),
                }
            }
            match register(&inner).await {
                Ok(()) => {
                    info!(member = %inner.name, "rejoined the cluster");
                    said_away = false;
                    continue;
                }
                Err(Register::Etcd(e)) if !said_away => {
                    warn!(error = %e, "etcd still away; retrying every second");
                    said_away = true;
                }
                Err(Register::Taken(_)) if !said_away => {
                    warn!(member = %inner.name, "the member key of the lost lease is still in etcd; retrying until it expires");
                    said_away = true;
                }
                Err(_) => {}
            }
            tokio::select! { () = stop.cancelled() => return, () = tokio::time::sleep(Duration::from_secs(1)) => {} }
            continue;
        };
        match inner
            .etcd
            .call(
                "open the lease keepalive",
                inner.etcd.client().lease_keep_alive(lease.id),
            )
            .await
        {
            Err(e) => {
                if !inner.lease_alive() {
                    lost(&inner, &e.to_string());
                } else {
                    debug!(error = %e, "lease keepalive failed; retrying");
                }
            }
            Ok((mut keeper, mut stream)) => loop {
                let sent = Instant::now();
                let answer = tokio::time::timeout(REQUEST_TIMEOUT.min(every * 2), async {
                    keeper.keep_alive().await?;
                    stream.message().await
                })
                .await;
                inner.etcd.counted();
                match answer {
                    Ok(Ok(Some(r))) if r.ttl() > 0 => {
                        if let Some(l) = inner
                            .lease
                            .lock()
                            .expect("lock poisoned")
                            .as_mut()
                            .filter(|l| l.id == lease.id)
                        {
                            l.deadline = sent + Duration::from_secs(r.ttl() as u64);
                        }
                    }
                    Ok(Ok(Some(_))) => {
                        lost(&inner, "etcd says the lease expired");
                        break;
                    }
                    _ => {
                        if !inner.lease_alive() {
                            lost(&inner, "no keepalive answered before the lease ran out");
                        }
                        break;
                    }
                }
                tokio::select! { () = stop.cancelled() => return, () = tokio::time::sleep(every) => {} }
            },
        }
        tokio::select! { () = stop.cancelled() => return, () = tokio::time::sleep(Duration::from_millis(500)) => {} }
    }
}

/// A member record as etcd holds it, if it is one ferry wrote for that name.
fn member_record(name: &str, value: &[u8]) -> Option<MemberRecord> {
    let rec = (value.len() <= MAX_RECORD)
        .then(|| serde_json::from_slice::<MemberRecord>(value).ok())
        .flatten()
        .filter(|r| r.name == name);
    if rec.is_none() {
        warn!(member = name, "unreadable member record in etcd ignored");
    }
    rec
}

/// What a key under the prefix changes in the member's picture. True: membership or locks
/// changed (ownership may have).
fn apply(inner: &Inner, kv: &KeyValue, deleted: bool) -> bool {
    let Ok(key) = kv.key_str() else { return false };
    let Some(rest) = key.strip_prefix(&inner.prefix) else {
        return false;
    };
    if let Some(name) = rest.strip_prefix("members/") {
        let mut m = inner.members.lock().expect("lock poisoned");
        if deleted {
            return m.remove(name).is_some();
        }
        return match member_record(name, kv.value()) {
            Some(rec) => m.insert(name.to_owned(), rec.clone()).as_ref() != Some(&rec),
            None => false,
        };
    }
    if let Some(unit) = rest.strip_prefix("locks/") {
        let mut l = inner.locks.lock().expect("lock poisoned");
        if deleted {
            return l.remove(unit).is_some();
        }
        l.insert(
            unit.to_owned(),
            String::from_utf8_lossy(kv.value()).into_owned(),
        );
        return true;
    }
    if !deleted {
        if let Some(work) = incoming(inner, rest, key, kv.value()) {
            let _ = inner.inbox.send(work);
        }
    }
    false
}

/// How often the sweeper looks for waiting work nobody can do.
const SWEEP_EVERY: Duration = Duration::from_secs(300);

/// Read members and locks (for a look at the cluster from outside it).
pub(super) async fn read_members(inner: &Inner) -> Result<i64, EtcdError> {
    let (mut members, mut locks) = (BTreeMap::new(), BTreeMap::new());
    let rev = scan_members(inner, &mut members, &mut locks).await?;
    *inner.members.lock().expect("lock poisoned") = members;
    *inner.locks.lock().expect("lock poisoned") = locks;
    Ok(rev)
}

/// Members and lock holders, both at one revision (returned).
async fn scan_members(
    inner: &Inner,
    members: &mut BTreeMap<String, MemberRecord>,
    locks: &mut BTreeMap<String, String>,
) -> Result<i64, EtcdError> {
    let (member_keys, lock_keys) = (inner.key("members/"), inner.key("locks/"));
    let rev = inner
        .etcd
        .scan(&member_keys, None, |kv| {
            if let Some(name) = kv.key_str().ok().and_then(|k| k.strip_prefix(&member_keys)) {
                members.extend(member_record(name, kv.value()).map(|r| (name.to_owned(), r)));
            }
        })
        .await?;
    inner
        .etcd
        .scan(&lock_keys, Some(rev), |kv| {
            if let Some(unit) = kv.key_str().ok().and_then(|k| k.strip_prefix(&lock_keys)) {
                locks.insert(
                    unit.to_owned(),
                    String::from_utf8_lossy(kv.value()).into_owned(),
                );
            }
        })
        .await?;
    Ok(rev)
}

/// Replace the picture of members and locks at once (never a moment with none of them,
/// which would make this member want every policy), read results of runs asked for here,
/// and the work waiting for the policies held. Returns the revision the watch goes on from.
async fn snapshot(inner: &Inner) -> Result<i64, EtcdError> {
    let (mut members, mut locks, mut results) = (BTreeMap::new(), BTreeMap::new(), Vec::new());
    let rev = scan_members(inner, &mut members, &mut locks).await?;
    inner
        .etcd
        .scan(
            &inner.key(&format!("results/{}/", inner.name)),
            Some(rev),
            |kv| results.push(kv.clone()),
        )
        .await?;
    *inner.members.lock().expect("lock poisoned") = members;
    *inner.locks.lock().expect("lock poisoned") = locks;
    inner.synced.store(true, Ordering::Relaxed);
    inner.changed();
    for kv in &results {
        apply(inner, kv, false);
    }
    for unit in inner.units.names() {
        deliver_waiting(inner, &unit).await;
    }
    Ok(rev)
}

/// Watch everything under the prefix: a snapshot, then changes from the revision after it.
/// A broken watch (etcd restarted, history compacted) starts over with a new snapshot.
pub(super) async fn watch(inner: Arc<Inner>, stop: CancellationToken) {
    let mut said_away = false;
    loop {
        let snap = snapshot(&inner).await;
        match snap {
            Err(e) => {
                if !said_away {
                    warn!(error = %e, "cannot watch the cluster; retrying every second");
                    said_away = true;
                }
            }
            Ok(rev) => {
                said_away = false;
                let opts = WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(rev + 1);
                match inner
                    .etcd
                    .call(
                        "watch the cluster",
                        inner.etcd.client().watch(inner.prefix.clone(), Some(opts)),
                    )
                    .await
                {
                    Err(e) => warn!(error = %e, "cannot watch the cluster; retrying"),
                    Ok(mut stream) => loop {
                        let msg = tokio::select! {
                            () = stop.cancelled() => return,
                            m = stream.message() => m,
                        };
                        match msg {
                            Ok(Some(w)) if !w.canceled() => {
                                let mut changed = false;
                                for ev in w.events() {
                                    if let Some(kv) = ev.kv() {
                                        changed |=
                                            apply(&inner, kv, ev.event_type() == EventType::Delete);
                                    }
                                }
                                if changed {
                                    inner.changed();
                                }
                            }
                            Ok(Some(_)) | Ok(None) => break,
                            Err(e) => {
                                debug!(error = %e, "cluster watch broke; starting over");
                                break;
                            }
                        }
                    },
                }
            }
        }
        tokio::select! { () = stop.cancelled() => return, () = tokio::time::sleep(Duration::from_secs(1)) => {} }
    }
}

/// The policies this member should hold now, by rendezvous hashing over the live members.
fn desired(inner: &Inner) -> BTreeSet<String> {
    if !inner.lease_alive() || !inner.synced.load(Ordering::Relaxed) {
        return BTreeSet::new();
    }
    let mut members = inner.members.lock().expect("lock poisoned").clone();
    let me = inner.record.lock().expect("lock poisoned").clone();
    members.insert(me.name.clone(), me.clone());
    me.policies
        .keys()
        .filter(|p| owner(p, &members) == Some(inner.name.as_str()))
        .cloned()
        .collect()
}

/// Take the policies this member should own and give up the others, whenever membership,
/// locks or the lease change (and every few seconds, to retry what failed).
pub(super) async fn reconcile(inner: Arc<Inner>, stop: CancellationToken) {
    let mut changes = inner.generation.subscribe();
    // Members started together (a rollout, a power cut) would each take what is free before
    // the others joined, then hand most of it over within a second, cutting runs short: give
    // the others a moment to register first.
    let grace = (inner.ttl / 3).min(Duration::from_secs(2));
    tokio::select! { () = stop.cancelled() => return, () = tokio::time::sleep(grace) => {} }
    let mut last_sweep: Option<Instant> = None;
    loop {
        let want = desired(&inner);
        let held: BTreeSet<String> = inner.units.names().into_iter().collect();
        for unit in held.difference(&want) {
            let (inner, unit) = (inner.clone(), unit.clone());
            let wait = *inner.handover_wait.lock().expect("lock poisoned");
            if let Some(h) = inner.units.start_release(&unit) {
                inner
                    .clone()
                    .tasks
                    .spawn(async move { inner.release(&unit, h, wait).await });
            }
        }
        for unit in want.difference(&held) {
            let busy = inner.units.releasing(unit)
                || inner
                    .locks
                    .lock()
                    .expect("lock poisoned")
                    .get(unit)
                    .is_some_and(|h| h != &inner.name);
            if busy || stop.is_cancelled() {
                continue; // its holder is finishing; the watch sees the lock go
            }
            match inner.acquire(unit).await {
                Ok(true) => deliver_waiting(&inner, unit).await,
                Ok(false) => {}
                Err(e) => {
                    warn!(policy = %unit, error = %e, "could not take a policy lock; retrying")
                }
            }
        }
        // Waiting work of policies gone from every member, swept by the first member by name.
        let sweeper =
            inner.members.lock().expect("lock poisoned").keys().next() == Some(&inner.name);
        if sweeper
            && last_sweep.is_none_or(|t: Instant| t.elapsed() > SWEEP_EVERY)
            && inner.lease_alive()
        {
            last_sweep = Some(Instant::now());
            if let Err(e) = super::handoff::sweep_orphans(&inner).await {
                debug!(error = %e, "sweep of orphaned events failed; next time");
            }
        }
        // Work this member could not queue (its queue was full) is still in etcd: read again.
        if inner.rescan.swap(false, Ordering::Relaxed) {
            for unit in inner.units.names() {
                deliver_waiting(&inner, &unit).await;
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            r = changes.changed() => if r.is_err() { return },
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

/// A policy just taken (or the watch restarted): the events and run requests waiting for it.
pub(super) async fn deliver_waiting(inner: &Inner, unit: &str) {
    if let Err(e) = inner
        .etcd
        .scan(&inner.key(&format!("events/{unit}/")), None, |kv| {
            apply(inner, kv, false);
        })
        .await
    {
        warn!(policy = unit, error = %e, "cannot read the events waiting for this policy; they run when it is read again");
        inner.rescan.store(true, Ordering::Relaxed);
    }
}

/// The `cluster` part of `/status`.
pub(super) async fn status(inner: &Inner) -> ClusterStatus {
    let members = inner.members.lock().expect("lock poisoned").clone();
    let locks = inner.locks.lock().expect("lock poisoned").clone();
    let ages = join_all(members.values().map(|m| async move {
        let ttl = tokio::time::timeout(
            Duration::from_secs(1),
            inner.etcd.client().lease_time_to_live(m.lease, None),
        )
        .await;
        match ttl {
            // Seconds since the last keepalive etcd saw (TTL granted minus TTL left).
            Ok(Ok(r)) if r.ttl() >= 0 => Some((r.granted_ttl() - r.ttl()).max(0)),
            _ => None,
        }
    }))
    .await;
    let waiting = tokio::time::timeout(Duration::from_secs(1), super::handoff::waiting(inner))
        .await
        .ok()
        .and_then(Result::ok);
    let mut holds: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (unit, holder) in &locks {
        holds.entry(holder.as_str()).or_default().push(unit.clone());
    }
    let list = members
        .values()
        .zip(ages)
        .map(|(m, age)| MemberView {
            name: m.name.clone(),
            host: m.host.clone(),
            pid: m.pid,
            api: m.api.clone(),
            started_ms: m.started_ms,
            heartbeat_age_seconds: age,
            policies: m.policies.len(),
            owns: m
                .policies
                .keys()
                .filter(|p| owner(p, &members) == Some(m.name.as_str()))
                .cloned()
                .collect(),
            holds: holds.get(m.name.as_str()).cloned().unwrap_or_default(),
        })
        .collect();
    ClusterStatus {
        member: inner.name.clone(),
        etcd: inner.etcd.endpoints().to_owned(),
        lease_ttl_seconds: inner.ttl.as_secs(),
        joined: inner.lease_alive(),
        holds: inner.units.names(),
        members: list,
        mismatches: mismatches(&members),
        events_waiting: waiting.map(|n| usize::try_from(n).unwrap_or(0)),
        daemon_running: None,
        error: None,
    }
}
