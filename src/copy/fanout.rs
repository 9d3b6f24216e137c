//! Read once, write N: a blob that several targets of a policy lack is read from the source
//! once and streamed to all of them.
//!
//! Planning tells which targets will upload which blob. The first of them to reach it opens
//! a group and takes a transfer slot for it (one slot for one read, however many targets it
//! feeds); the group's single source read (the pump) starts once every expected target has
//! joined or withdrawn (it found the blob there, mounted it, resumes a saved upload, or its
//! repository copy ended), or after `GATHER` at most, so a target far behind in its own work
//! costs the others a bounded wait, not a deadlock. Members wait for the start before they
//! open their uploads, so no waiting member holds a connection to its registry. A target
//! arriving after the pump started reads the source itself.
//!
//! Each member gets the bytes through its own bounded buffer; all share the same frames,
//! so memory is the slowest member's buffer, not one per target. A member whose buffer stays
//! full for `STALL` is cut loose: it drains what it has, then continues from that offset with
//! a source read of its own, and the others go on at their pace. A member that fails simply
//! drops out. Each member's upload is checkpointed and resumable exactly as when alone: the
//! fan-out only changes where the bytes come from.
//!
//! A blob is copied to one target by one repository at a time (the per-target lock; a
//! second repository then mounts it). A group takes the locks of all its targets at once, in
//! name order: taken one by one by its members, two repositories sharing a layer could each
//! hold some targets' locks and wait for the other's, and both groups would read the blob.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot, OnceCell, OwnedMutexGuard, OwnedSemaphorePermit};

use super::CopyShared;
use crate::model::{Digest, RepoName};
use crate::registry::{Registry, RegistryError};

/// Longest an early member waits for the expected others before the read starts without them.
const GATHER: Duration = Duration::from_secs(2);
/// Longest the others wait for a member whose buffer is full before it is cut loose.
const STALL: Duration = Duration::from_secs(2);
/// Frames are cut to at most this size, so a buffer's frame count bounds its bytes.
const FRAME: usize = 64 * 1024;

type Frame = Result<Bytes, RegistryError>;
/// The per-target locks a group took for its members, by target.
type GroupLocks = Mutex<HashMap<String, OwnedMutexGuard<()>>>;

/// The fan-out groups of one repository copy, for every target of a policy run.
pub struct Fanout {
    source: Registry,
    repo: RepoName,
    shared: Arc<CopyShared>,
    /// Frames each member may have waiting.
    depth: usize,
    groups: Mutex<HashMap<Digest, Group>>,
}

#[derive(Default)]
struct Group {
    /// Targets planned to upload the blob that have neither joined nor withdrawn.
    expected: HashSet<String>,
    /// Each member's frames, and the signal that the read started.
    members: Vec<(mpsc::Sender<Frame>, oneshot::Sender<()>)>,
    /// A member is getting the group's transfer slot, or has it.
    slotted: bool,
    slot: Option<OwnedSemaphorePermit>,
    started: bool,
    /// The per-target locks of the blob for every expected target, taken in name order by
    /// the first member to need its own; each member takes its guard out.
    locks: Arc<OnceCell<GroupLocks>>,
}

impl Group {
    fn ready(&self) -> bool {
        !self.started && self.slot.is_some()
    }
}

impl Fanout {
    /// `buffer`: bytes each member may have waiting (about a chunk).
    pub fn new(
        shared: Arc<CopyShared>,
        source: &Registry,
        repo: &RepoName,
        buffer: u64,
    ) -> Arc<Self> {
        let depth = usize::try_from(buffer / FRAME as u64)
            .unwrap_or(usize::MAX)
            .clamp(4, 1024);
        Arc::new(Fanout {
            source: source.clone(),
            repo: repo.clone(),
            shared,
            depth,
            groups: Mutex::default(),
        })
    }

    /// Planning says `target` will upload `digest`. A blob only one target needs gets no group.
    pub fn expect(&self, target: &str, digest: &Digest) {
        self.groups
            .lock()
            .expect("lock poisoned")
            .entry(digest.clone())
            .or_default()
            .expected
            .insert(target.to_owned());
    }

    /// Groups with one expected member are not worth a rendezvous.
    pub fn settle(&self) {
        self.groups
            .lock()
            .expect("lock poisoned")
            .retain(|_, g| g.expected.len() > 1);
    }

    /// `target`'s turn to copy `digest`: the per-target lock, which no other repository's
    /// copy of the blob holds. For a group's member, the group takes every member's lock.
    pub async fn turn(&self, target: &str, digest: &Digest) -> OwnedMutexGuard<()> {
        let group = {
            let groups = self.groups.lock().expect("lock poisoned");
            groups
                .get(digest)
                .filter(|g| !g.started && g.expected.contains(target))
                .map(|g| (g.locks.clone(), g.expected.clone()))
        };
        let Some((locks, expected)) = group else {
            return self
                .shared
                .locks
                .lock((target.to_owned(), digest.clone()))
                .await;
        };
        let held = locks
            .get_or_init(|| async {
                let mut held = HashMap::new();
                for t in expected
                    .into_iter()
                    .collect::<std::collections::BTreeSet<_>>()
                {
                    let guard = self.shared.locks.lock((t.clone(), digest.clone())).await;
                    held.insert(t, guard);
                }
                Mutex::new(held)
            })
            .await;
        // A member that withdrew while the locks were being taken never comes for its own.
        if let Some(g) = self.groups.lock().expect("lock poisoned").get(digest) {
            held.lock()
                .expect("lock poisoned")
                .retain(|t, _| t == target || g.expected.contains(t));
        }
        let mine = held.lock().expect("lock poisoned").remove(target);
        match mine {
            Some(guard) => guard,
            None => {
                self.shared
                    .locks
                    .lock((target.to_owned(), digest.clone()))
                    .await
            }
        }
    }

    /// `target` will not read `digest` through the group (already there, mounted, resumed).
    pub fn withdraw(self: &Arc<Self>, target: &str, digest: &Digest) {
        let mut groups = self.groups.lock().expect("lock poisoned");
        if let Some(g) = groups.get_mut(digest) {
            // Its lock, if the group took it and the member never came for it.
            if let Some(held) = g.locks.get() {
                held.lock().expect("lock poisoned").remove(target);
            }
            if g.expected.remove(target) && g.expected.is_empty() && g.ready() {
                self.start(digest, g);
            }
        }
    }

    /// `target`'s repository copy is over: it reads nothing more through any group.
    pub fn leave(self: &Arc<Self>, target: &str) {
        let digests: Vec<Digest> = self
            .groups
            .lock()
            .expect("lock poisoned")
            .keys()
            .cloned()
            .collect();
        digests.iter().for_each(|d| self.withdraw(target, d));
    }

    /// Join the group reading `digest` from byte 0, if there is one still gathering, and
    /// wait for its read to start: the returned stream is the whole blob (from the group,
    /// then from the source alone if cut loose). None: read the source alone.
    pub async fn join(
        self: &Arc<Self>,
        target: &str,
        digest: &Digest,
        size: u64,
    ) -> Option<BoxStream<'static, Frame>> {
        let (rx, go, first) = {
            let mut groups = self.groups.lock().expect("lock poisoned");
            let g = groups.get_mut(digest)?;
            if g.started || !g.expected.remove(target) {
                return None;
            }
            let (tx, rx) = mpsc::channel(self.depth);
            let (go_tx, go) = oneshot::channel();
            g.members.push((tx, go_tx));
            if g.expected.is_empty() && g.ready() {
                self.start(digest, g); // the last one expected, and the slot is there
            }
            (rx, go, !std::mem::replace(&mut g.slotted, true))
        };
        if first {
            let slot = self
                .shared
                .blob_slots
                .clone()
                .acquire_owned()
                .await
                .expect("semaphore never closed");
            let mut groups = self.groups.lock().expect("lock poisoned");
            let g = groups
                .get_mut(digest)
                .expect("groups are never removed once joined");
            g.slot = Some(slot);
            if g.expected.is_empty() {
                self.start(digest, g);
            } else {
                let (me, d) = (self.clone(), digest.clone());
                self.shared.tasks.spawn(async move {
                    tokio::time::sleep(GATHER).await;
                    let mut groups = me.groups.lock().expect("lock poisoned");
                    if let Some(g) = groups.get_mut(&d).filter(|g| g.ready()) {
                        tracing::debug!(digest = %d, waiting_for = ?g.expected, "fan-out starts without the members still busy elsewhere");
                        me.start(&d, g);
                    }
                });
            }
        }
        // A group dropped unstarted (the run is ending) closes the channel: the stream
        // then reads the source itself.
        let _ = go.await;
        Some(member_stream(
            rx,
            self.source.clone(),
            self.repo.clone(),
            digest.clone(),
            size,
        ))
    }

    fn start(&self, digest: &Digest, g: &mut Group) {
        g.started = true;
        let slot = g.slot.take();
        let members: Vec<_> = std::mem::take(&mut g.members)
            .into_iter()
            .map(|(tx, go)| {
                let _ = go.send(());
                tx
            })
            .collect();
        let (source, repo, digest) = (self.source.clone(), self.repo.clone(), digest.clone());
        tracing::debug!(%digest, members = members.len(), "one source read for several targets");
        self.shared.tasks.spawn(async move {
            let _slot = slot;
            pump(&source, &repo, &digest, members).await;
        });
    }
}

/// Read the blob once and hand each frame to every member still there.
async fn pump(
    source: &Registry,
    repo: &RepoName,
    digest: &Digest,
    mut members: Vec<mpsc::Sender<Frame>>,
) {
    let mut body = match source.get_blob(repo, digest, 0).await {
        Ok(b) => b.stream,
        Err(e) => return fail(&members, source, &e),
    };
    while let Some(frame) = body.next().await {
        let mut frame = match frame {
            Ok(f) => f,
            Err(e) => return fail(&members, source, &e),
        };
        while !frame.is_empty() {
            let piece = frame.split_to(frame.len().min(FRAME));
            let mut kept = Vec::with_capacity(members.len());
            for m in members {
                match m.try_send(Ok(piece.clone())) {
                    Ok(()) => kept.push(m),
                    Err(mpsc::error::TrySendError::Closed(_)) => {} // that member failed; the others go on
                    Err(mpsc::error::TrySendError::Full(item)) => {
                        match m.send_timeout(item, STALL).await {
                            Ok(()) => kept.push(m),
                            Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                                tracing::info!(%digest, "a target is slower than the others: it reads the rest of this blob itself");
                            }
                            Err(mpsc::error::SendTimeoutError::Closed(_)) => {}
                        }
                    }
                }
            }
            members = kept;
            if members.is_empty() {
                return;
            }
        }
    }
}

/// The shared read failed: every member's attempt fails with it, and each retries alone. A
/// member with a full buffer just loses its sender: it drains, then reads the rest itself.
fn fail(members: &[mpsc::Sender<Frame>], source: &Registry, e: &RegistryError) {
    for m in members {
        let e = RegistryError::Protocol {
            registry: source.name().to_owned(),
            op: "get blob",
            detail: format!("shared read: {e}"),
        };
        let _ = m.try_send(Err(e));
    }
}

/// What a member reads: the group's frames, then, if the group let go of it before the end,
/// the rest from a source read of its own (skipping what it already has when the source
/// ignores the Range).
fn member_stream(
    rx: mpsc::Receiver<Frame>,
    source: Registry,
    repo: RepoName,
    digest: Digest,
    size: u64,
) -> BoxStream<'static, Frame> {
    struct S {
        rx: mpsc::Receiver<Frame>,
        got: u64,
        own: Option<BoxStream<'static, Frame>>,
        skip: u64,
        done: bool,
    }
    let state = S {
        rx,
        got: 0,
        own: None,
        skip: 0,
        done: false,
    };
    futures_util::stream::unfold(state, move |mut s| {
        let (source, repo, digest) = (source.clone(), repo.clone(), digest.clone());
        async move {
            if s.done {
                return None;
            }
            loop {
                if let Some(own) = s.own.as_mut() {
                    let mut frame = match own.next().await? {
                        Ok(f) => f,
                        Err(e) => {
                            s.done = true;
                            return Some((Err(e), s));
                        }
                    };
                    let drop = (frame.len() as u64).min(s.skip) as usize;
                    let _ = frame.split_to(drop);
                    s.skip -= drop as u64;
                    if frame.is_empty() {
                        continue;
                    }
                    return Some((Ok(frame), s));
                }
                match s.rx.recv().await {
                    Some(Ok(frame)) => {
                        s.got += frame.len() as u64;
                        return Some((Ok(frame), s));
                    }
                    Some(Err(e)) => {
                        s.done = true;
                        return Some((Err(e), s));
                    }
                    // The pump finished (the reader checks the length and digest)...
                    None if s.got >= size => return None,
                    // ...or let go of this member early.
                    None => match source.get_blob(&repo, &digest, s.got).await {
                        Ok(body) => {
                            s.skip = s.got - body.offset.min(s.got);
                            s.own = Some(body.stream);
                        }
                        Err(e) => {
                            s.done = true;
                            return Some((Err(e), s));
                        }
                    },
                }
            }
        }
    })
    .boxed()
}
