//! The event journal: events the daemon accepted and has not yet carried out, kept so that a
//! crash or restart replays them. An entry is written and flushed before the webhook gets its
//! 202, and removed when its targeted run is done.
//!
//! Trees (keys as in the rest of the store, fields joined by `\0`):
//!   journal   : policy \0 repository \0 tag \0 action -> JournalEntry  one per pending unit of work
//!   event_ids : event id                               -> u64 BE ms     ids seen lately, for dedup
//!
//! One entry per (policy, repository, tag, action): a burst of events for one tag coalesces
//! into one entry by construction.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::{key, StateError, StateStore, Versioned, VERSION};
use crate::model::{RepoName, Tag};

/// How long an event id is remembered for dedup: redeliveries come within seconds or
/// minutes (a sender that did not see our 202), never a day later.
const ID_TTL_MS: u64 = 3_600_000;
/// Prune the id tree every this many new ids.
const PRUNE_EVERY: u64 = 4096;
/// Event ids remembered at most (a few MiB).
const MAX_EVENT_IDS: usize = 100_000;

/// What a journal entry asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JournalAction {
    /// A pushed tag: copy it (with its referrers) through the policy's rules.
    Push,
    /// A deleted tag or manifest: delete what the source confirms is gone.
    Delete,
    /// A run asked for over the API.
    Run,
}

impl JournalAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Push => "push",
            Self::Delete => "delete",
            Self::Run => "run",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [Self::Push, Self::Delete, Self::Run]
            .into_iter()
            .find(|a| a.as_str() == s)
    }
}

impl std::fmt::Display for JournalAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One unit of pending work. On the wire (status documents, etcd hand-overs) a missing
/// repository or tag is the empty string, as it always was.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct JournalKey {
    pub policy: String,
    /// `None`: the whole policy (a full run asked for over the API).
    #[serde(with = "empty_is_none")]
    pub repository: Option<RepoName>,
    /// `None`: the whole repository.
    #[serde(with = "empty_is_none")]
    pub tag: Option<Tag>,
    pub action: JournalAction,
}

/// `Option<T>` as `T`'s string, `None` as `""`.
mod empty_is_none {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<T: ToString, S: Serializer>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.as_ref().map(ToString::to_string).unwrap_or_default())
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<Option<T>, D::Error>
    where
        T: std::str::FromStr<Err: std::fmt::Display>,
        D: Deserializer<'de>,
    {
        let s = String::deserialize(d)?;
        (!s.is_empty())
            .then(|| s.parse().map_err(D::Error::custom))
            .transpose()
    }
}

impl JournalKey {
    /// `{"policy": P}` for a whole policy, or one repository (and tag) of it.
    pub fn new(
        policy: &str,
        repository: Option<RepoName>,
        tag: Option<Tag>,
        action: JournalAction,
    ) -> Self {
        JournalKey {
            policy: policy.to_owned(),
            repository,
            tag,
            action,
        }
    }

    /// The repository as logs and documents name it (empty for a whole policy).
    pub fn repository_str(&self) -> &str {
        self.repository.as_ref().map_or("", RepoName::as_str)
    }

    /// The tag as logs and documents name it (empty for a whole repository).
    pub fn tag_str(&self) -> &str {
        self.tag.as_ref().map_or("", Tag::as_str)
    }

    fn bytes(&self) -> Vec<u8> {
        let (repository, tag) = (self.repository_str(), self.tag_str());
        key(&[
            self.policy.as_bytes(),
            repository.as_bytes(),
            tag.as_bytes(),
            self.action.as_str().as_bytes(),
        ])
    }

    /// A key as stored; `None` for one that no longer parses (it is dropped and counted).
    fn parse(k: &[u8]) -> Option<Self> {
        let parts: Vec<&str> = k
            .split(|&b| b == 0)
            .map(std::str::from_utf8)
            .collect::<Result<_, _>>()
            .ok()?;
        let [policy, repository, tag, action] = <[&str; 4]>::try_from(parts).ok()?;
        fn named(s: &str) -> Option<&str> {
            (!s.is_empty()).then_some(s)
        }
        Some(JournalKey {
            policy: policy.to_owned(),
            repository: named(repository).map(str::parse).transpose().ok()?,
            tag: named(tag).map(str::parse).transpose().ok()?,
            action: JournalAction::parse(action)?,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    pub v: u32,
    /// When the first event of this entry was accepted (Unix ms): latency is measured from here.
    pub accepted_ms: u64,
    /// Events folded into this entry.
    pub events: u64,
    /// Targeted runs tried so far without success.
    pub attempts: u32,
    /// Registry the events came from, for messages.
    pub registry: String,
}

impl Versioned for JournalEntry {
    fn version(&self) -> u32 {
        self.v
    }
}

impl JournalEntry {
    pub fn new(registry: &str, accepted_ms: u64) -> Self {
        JournalEntry {
            v: VERSION,
            accepted_ms,
            events: 1,
            attempts: 0,
            registry: registry.to_owned(),
        }
    }
}

/// Group commit: callers that wrote before a flush started share it.
#[derive(Default)]
pub(super) struct Commit {
    requested: AtomicU64,
    flushed: tokio::sync::Mutex<u64>,
    ids_added: AtomicU64,
}

impl StateStore {
    /// Make every write made before this call durable. Concurrent callers share one flush,
    /// so a thousand webhooks a second cost far fewer than a thousand fsyncs.
    ///
    /// # Errors
    /// When sled cannot write or fsync.
    pub async fn commit(&self) -> Result<(), StateError> {
        let ticket = self.commit.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let mut flushed = self.commit.flushed.lock().await;
        if *flushed >= ticket {
            return Ok(());
        }
        let upto = self.commit.requested.load(Ordering::SeqCst);
        self.flush().await?;
        *flushed = upto;
        Ok(())
    }

    /// Whether `registry`'s event `id` was accepted within the last hour (a redelivery). Ids
    /// are per registry: one sender cannot mark another's events as seen.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub fn event_known(&self, registry: &str, id: &str, now: u64) -> Result<bool, StateError> {
        let at = self
            .event_ids
            .get(key(&[registry.as_bytes(), id.as_bytes()]))?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes);
        Ok(at.is_some_and(|at| now.saturating_sub(at) < ID_TTL_MS))
    }

    /// Remember event `id` as accepted at `now`. Called after its journal entry is written,
    /// so an event refused on the way is not mistaken for a duplicate when it is sent again.
    ///
    /// # Errors
    /// When the store cannot be written.
    pub fn remember_event(&self, registry: &str, id: &str, now: u64) -> Result<(), StateError> {
        self.event_ids.insert(
            key(&[registry.as_bytes(), id.as_bytes()]),
            &now.to_be_bytes(),
        )?;
        if self.commit.ids_added.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            self.prune_event_ids(now)?;
        }
        Ok(())
    }

    /// Drop ids older than the TTL, then the oldest past `MAX_EVENT_IDS`: a flood of unique
    /// ids within the hour cannot grow the store without end (a redelivery of one of the
    /// dropped ones is then run again, which is harmless).
    fn prune_event_ids(&self, now: u64) -> Result<(), StateError> {
        let mut kept = Vec::new();
        for kv in self.event_ids.iter() {
            let (k, v) = kv?;
            let at = <[u8; 8]>::try_from(v.as_ref()).map_or(0, u64::from_be_bytes);
            if now.saturating_sub(at) >= ID_TTL_MS {
                self.event_ids.remove(k)?;
            } else {
                kept.push((at, k));
            }
        }
        if kept.len() > MAX_EVENT_IDS {
            kept.sort_unstable_by_key(|(at, _)| *at);
            for (_, k) in kept.drain(..kept.len() - MAX_EVENT_IDS) {
                self.event_ids.remove(k)?;
            }
        }
        Ok(())
    }

    pub fn journal_put(&self, k: &JournalKey, e: &JournalEntry) -> Result<(), StateError> {
        self.journal
            .insert(k.bytes(), serde_json::to_vec(e).expect("records serialize"))?;
        Ok(())
    }

    pub fn journal_get(&self, k: &JournalKey) -> Result<Option<JournalEntry>, StateError> {
        let kb = k.bytes();
        self.journal
            .get(&kb)?
            .map(|v| Self::decode(&kb, &v))
            .transpose()
    }

    pub fn journal_remove(&self, k: &JournalKey) -> Result<(), StateError> {
        self.journal.remove(k.bytes())?;
        Ok(())
    }

    /// Every pending entry. Entries that cannot be read (damaged, or written by a newer
    /// ferry) are left out and counted in the second value: the periodic run covers them.
    pub fn journal_all(&self) -> Result<(Vec<(JournalKey, JournalEntry)>, usize), StateError> {
        let mut out = Vec::new();
        let mut bad = 0;
        for kv in self.journal.iter() {
            let (k, v) = kv?;
            match (JournalKey::parse(&k), Self::decode::<JournalEntry>(&k, &v)) {
                (Some(key), Ok(e)) => out.push((key, e)),
                _ => bad += 1,
            }
        }
        Ok((out, bad))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(tag: &str) -> JournalKey {
        JournalKey::new(
            "p",
            Some("team/app".parse().unwrap()),
            Some(tag.parse().unwrap()),
            JournalAction::Push,
        )
    }

    #[tokio::test]
    async fn entries_survive_reopen_and_ids_dedup() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = StateStore::open(dir.path()).unwrap();
            s.journal_put(&k("v1"), &JournalEntry::new("src", 5))
                .unwrap();
            s.journal_put(&k("v2"), &JournalEntry::new("src", 6))
                .unwrap();
            s.journal_remove(&k("v2")).unwrap();
            assert!(!s.event_known("src", "id-1", 1_000).unwrap());
            s.remember_event("src", "id-1", 1_000).unwrap();
            assert!(s.event_known("src", "id-1", 2_000).unwrap());
            assert!(
                !s.event_known("other", "id-1", 2_000).unwrap(),
                "ids are per registry: one sender cannot mark another's events seen"
            );
            assert!(
                !s.event_known("src", "id-1", 1_000 + ID_TTL_MS).unwrap(),
                "an id an hour old is new again"
            );
            s.commit().await.unwrap();
        }
        let s = StateStore::open(dir.path()).unwrap();
        let (all, bad) = s.journal_all().unwrap();
        assert_eq!((all.len(), bad), (1, 0));
        assert_eq!(
            (
                all[0].0.tag.as_ref().unwrap().as_str(),
                all[0].1.accepted_ms
            ),
            ("v1", 5)
        );
        s.journal.insert(b"garbage", b"{not json").unwrap();
        assert_eq!(s.journal_all().unwrap().1, 1);
    }

    /// A flood of unique ids within the hour is cut to the newest `MAX_EVENT_IDS`.
    #[test]
    fn the_id_store_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(dir.path()).unwrap();
        for i in 0..(MAX_EVENT_IDS as u64 + 10) {
            s.event_ids
                .insert(key(&[b"src", i.to_string().as_bytes()]), &i.to_be_bytes())
                .unwrap();
        }
        s.prune_event_ids(MAX_EVENT_IDS as u64 + 10).unwrap();
        assert_eq!(s.event_ids.len(), MAX_EVENT_IDS);
        assert!(!s.event_known("src", "0", 20).unwrap(), "the oldest went");
        assert!(s.event_known("src", "100009", 100_010).unwrap());
    }

    #[tokio::test]
    async fn concurrent_commits_share_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(dir.path()).unwrap();
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let s = s.clone();
                tokio::spawn(async move {
                    s.journal_put(&k(&format!("t{i}")), &JournalEntry::new("src", i))
                        .unwrap();
                    s.commit().await.unwrap();
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(s.journal_all().unwrap().0.len(), 50);
    }
}
