//! The audit ledger: one entry for every manifest ferry writes and every tag or manifest it
//! deletes, on any target, chained by hash so that an edited or removed entry shows.
//!
//! A write is announced before it is sent ([`Ledger::intend`], on disk before the request
//! goes) and becomes an entry once the registry has taken it ([`Ledger::commit`], in one
//! store transaction with the `written` record). An announced write whose outcome is not
//! known (a timeout, a crash) is settled later by asking the target ([`Ledger::settle`] with
//! what the target holds now): recorded if it happened, forgotten if not. A ledger that
//! cannot announce a write stops it: a replicator that cannot account for a write must not
//! make it.

mod chain;
mod exposure;
mod query;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::{Digest, RepoName, Tag};
use crate::state::{StateError, StateStore, TagChange};

pub use chain::Broken;
pub use exposure::{exposure, Exposure};
pub use query::{Asked, Filter, Page, Verified, MAX_PAGE};

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("audit ledger: {0}")]
    Store(#[from] StateError),
    #[error("audit ledger entry {seq}: {detail}")]
    Entry { seq: u64, detail: String },
    #[error("audit ledger archive {path}: {source}")]
    Archive {
        path: String,
        source: std::io::Error,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Written,
    Deleted,
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Action::Written => "written",
            Action::Deleted => "deleted",
        })
    }
}

/// Where a written manifest came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub registry: String,
    pub repository: RepoName,
    pub digest: Digest,
}

/// What an entry says of one write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Draft {
    pub at_ms: u64,
    /// The cluster member, or the host, that made the write.
    pub member: String,
    pub policy: String,
    /// `policy@start` (Unix ms): the run in the run history.
    pub run: String,
    /// `schedule`, `ferry sync`, `request 12`, `event: push team/app:v1`.
    pub trigger: String,
    pub action: Action,
    pub target: String,
    pub repository: RepoName,
    /// None for a manifest written or deleted by digest (an index child, a referrer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<Tag>,
    /// What the target holds now (written) or held (deleted).
    pub digest: Digest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Origin>,
    /// What verified the image (key fingerprint or identity, and the signature).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<String>,
    /// Why a delete was made: gone from the source, pruned, quarantined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A ledger entry: a draft with its place in the chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: u64,
    #[serde(flatten)]
    pub draft: Draft,
    /// Settled after the fact: the write's answer was lost (a crash, a timeout) and the target
    /// was found holding what it wrote.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recovered: bool,
    /// The previous entry's hash (hex SHA-256); the genesis value for the first.
    pub prev: String,
    pub hash: String,
}

/// How long entries are kept and how many.
#[derive(Clone, Debug)]
pub struct Retention {
    pub max_age: Duration,
    pub max_entries: u64,
    /// Entries past either limit are appended here (JSON lines) before they go.
    pub archive: Option<PathBuf>,
}

/// A write announced and not yet an entry.
#[derive(Debug)]
pub struct Intent {
    id: u64,
    draft: Draft,
}

impl Intent {
    pub fn draft(&self) -> &Draft {
        &self.draft
    }
}

pub struct Ledger {
    state: StateStore,
    retention: Retention,
    /// One appender at a time: each entry names the one before it.
    chain: Mutex<()>,
    /// Announcements whose write this process is still making: not for `pending` to settle
    /// (a run of the same policy starting meanwhile would record or drop them under it).
    in_flight: Mutex<std::collections::HashSet<u64>>,
}

impl Ledger {
    pub fn new(state: StateStore, retention: Retention) -> Self {
        Ledger {
            state,
            retention,
            chain: Mutex::new(()),
            in_flight: Mutex::default(),
        }
    }

    /// Announce a write; it may be sent once this returns.
    ///
    /// # Errors
    /// When the announcement cannot be made durable: the write must not be sent.
    pub async fn intend(&self, draft: Draft) -> Result<Intent, LedgerError> {
        let bytes = serde_json::to_vec(&draft).expect("drafts serialize");
        let id = self.state.ledger_intend(&bytes).await?;
        self.in_flight.lock().expect("lock poisoned").insert(id);
        Ok(Intent { id, draft })
    }

    /// The write's outcome is not known (its answer was lost): the next run settles it.
    pub fn left_open(&self, intent: Intent) {
        self.done(&intent);
    }

    fn done(&self, intent: &Intent) {
        self.in_flight
            .lock()
            .expect("lock poisoned")
            .remove(&intent.id);
    }

    /// The registry took the write: it becomes an entry (with the tag's `written` record).
    ///
    /// # Errors
    /// When the store cannot be written; the intent then stays, to be settled later.
    pub fn commit(
        &self,
        intent: Intent,
        change: Option<TagChange<'_>>,
    ) -> Result<Entry, LedgerError> {
        self.append(intent, false, change)
    }

    /// The write certainly did not happen (the registry refused it).
    pub fn abandon(&self, intent: Intent) {
        self.done(&intent);
        if let Err(e) = self.state.ledger_drop_intent(intent.id) {
            tracing::warn!(error = %e, "audit ledger: a refused write's announcement stays; the next run settles it");
        }
    }

    /// The newest entry's seq (0 when there is none): where a run's own entries start after.
    pub fn last_seq(&self) -> u64 {
        self.state
            .ledger_last()
            .ok()
            .flatten()
            .map_or(0, |(s, _)| s)
    }

    /// Writes announced and not settled, oldest first: a crashed run's, or ones whose answer
    /// was lost.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub fn pending(&self) -> Result<Vec<Intent>, LedgerError> {
        let mut out = Vec::new();
        let in_flight = self.in_flight.lock().expect("lock poisoned").clone();
        for (id, bytes) in self.state.ledger_intents()? {
            if in_flight.contains(&id) {
                continue;
            }
            match serde_json::from_slice(&bytes) {
                Ok(draft) => out.push(Intent { id, draft }),
                Err(e) => {
                    return Err(LedgerError::Entry {
                        seq: id,
                        detail: format!("an announced write does not decode: {e}"),
                    })
                }
            }
        }
        Ok(out)
    }

    /// Settle an announced write by what the target holds now: `happened` records it (as
    /// recovered), otherwise it is forgotten.
    ///
    /// # Errors
    /// When the store cannot be written.
    pub fn settle(&self, intent: Intent, happened: bool) -> Result<Option<Entry>, LedgerError> {
        if !happened {
            self.state.ledger_drop_intent(intent.id)?;
            return Ok(None);
        }
        self.append(intent, true, None).map(Some)
    }

    /// The seq the oldest kept entry has and the hash it names: after the pruned front's
    /// anchor, or from the genesis.
    fn start(&self) -> Result<(u64, String), LedgerError> {
        match self.state.ledger_anchor()? {
            Some(a) => chain::anchor(&a),
            None => Ok((1, chain::GENESIS.to_owned())),
        }
    }

    fn append(
        &self,
        intent: Intent,
        recovered: bool,
        change: Option<TagChange<'_>>,
    ) -> Result<Entry, LedgerError> {
        self.done(&intent);
        let _one = self.chain.lock().expect("lock poisoned");
        let (seq, prev) = match self.state.ledger_last()? {
            Some((seq, bytes)) => (seq + 1, chain::stored_hash(seq, &bytes)?),
            None => self.start()?,
        };
        let entry = chain::seal(seq, intent.draft, recovered, prev);
        let bytes = serde_json::to_vec(&entry).expect("entries serialize");
        self.state.ledger_commit(intent.id, seq, &bytes, change)?;
        if let Err(e) = self.retain(seq, entry.draft.at_ms) {
            tracing::warn!(error = %e, "audit ledger: old entries not pruned");
        }
        Ok(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft() -> Draft {
        Draft {
            at_ms: 1,
            member: "m".into(),
            policy: "p".into(),
            run: "p@1".into(),
            trigger: "ferry sync".into(),
            action: Action::Written,
            target: "dst".into(),
            repository: "app".parse().unwrap(),
            tag: Some("v1".parse().unwrap()),
            digest: Digest::of(b"x"),
            source: None,
            verified: None,
            reason: None,
        }
    }

    /// A run starting while another still makes a write must not settle that write under
    /// it; once its answer is lost, the write is the next run's to settle.
    #[tokio::test]
    async fn writes_in_flight_are_not_pending_until_left_open() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::new(
            StateStore::open(dir.path()).unwrap(),
            Retention {
                max_age: Duration::from_secs(3600),
                max_entries: 1000,
                archive: None,
            },
        );
        let a = ledger.intend(draft()).await.unwrap();
        assert!(ledger.pending().unwrap().is_empty());
        ledger.left_open(a);
        let open = ledger.pending().unwrap();
        assert_eq!(open.len(), 1);
        let e = ledger
            .settle(open.into_iter().next().unwrap(), true)
            .unwrap()
            .unwrap();
        assert!(e.recovered && e.seq == 1);
        assert!(ledger.pending().unwrap().is_empty());
        assert_eq!(ledger.verify().unwrap().0, 1);
    }
}
