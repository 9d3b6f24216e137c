//! The audit ledger's storage: entries in order, and the writes announced but not yet
//! settled. What an entry says, its hash chain and its reading belong to the ledger module;
//! here are bytes, kept so that no write ferry makes is ever without its entry.
//!
//!   ledger  : seq (u64 BE)   -> entry (JSON)   appended in seq order, pruned from the front
//!   intents : id (u64 BE)    -> draft (JSON)   a write about to be made, flushed before it is
//!   ledger_meta : "anchor"   -> JSON           the last pruned entry's seq and hash
//!
//! A write is announced (an intent, flushed to disk) before its request is sent. Once the
//! registry has taken it, the entry is appended and the intent removed in one sled
//! transaction, together with the `written` record of a tag write: a crash leaves either the
//! intent (settled later by asking the target whether the write happened) or the entry,
//! never a write with neither, and never an entry for a write that did not happen.

use sled::transaction::{ConflictableTransactionError, Transactional};

use super::exposure::{set_tree, tree_key};
use super::written::{written_key, WrittenRecord};
use super::{tx_error, StateError, StateStore, VERSION};
use crate::model::{Digest, RepoName, Tag};

const ANCHOR: &[u8] = b"anchor";

/// The `written` record a tag write's entry carries along.
pub struct WrittenTag<'a> {
    pub target: &'a str,
    pub repository: &'a RepoName,
    pub tag: &'a Tag,
    pub source: &'a Digest,
    pub target_digest: &'a Digest,
    /// Every manifest, config and layer of the image written, for `ferry where`.
    pub components: &'a [Digest],
}

/// What a ledger entry changes about one target tag, in the same step.
pub enum TagChange<'a> {
    Written(WrittenTag<'a>),
    Deleted {
        target: &'a str,
        repository: &'a RepoName,
        tag: &'a Tag,
    },
}

impl StateStore {
    /// Announce a write, durably: it returns once the intent is on disk.
    ///
    /// # Errors
    /// When the store cannot be written or flushed (a full disk): the write must not be made.
    pub async fn ledger_intend(&self, draft: &[u8]) -> Result<u64, StateError> {
        let id = self.db.generate_id()?;
        self.intents.insert(id.to_be_bytes(), draft)?;
        self.flush().await?;
        Ok(id)
    }

    /// The writes announced and not settled, oldest first.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub fn ledger_intents(&self) -> Result<Vec<(u64, Vec<u8>)>, StateError> {
        self.intents
            .iter()
            .map(|r| {
                let (k, v) = r?;
                Ok((be(&k), v.to_vec()))
            })
            .collect()
    }

    /// Forget an intent whose write did not happen.
    ///
    /// # Errors
    /// When the store cannot be written.
    pub fn ledger_drop_intent(&self, id: u64) -> Result<(), StateError> {
        self.intents.remove(id.to_be_bytes())?;
        Ok(())
    }

    /// The newest entry.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub fn ledger_last(&self) -> Result<Option<(u64, Vec<u8>)>, StateError> {
        Ok(self.ledger.last()?.map(|(k, v)| (be(&k), v.to_vec())))
    }

    /// Append entry `seq`, settle intent `id` and apply what it changes about a tag (its
    /// `written` record and its place in the exposure index): one step.
    ///
    /// # Errors
    /// When the store cannot be written.
    pub fn ledger_commit(
        &self,
        id: u64,
        seq: u64,
        entry: &[u8],
        change: Option<TagChange<'_>>,
    ) -> Result<(), StateError> {
        // (written key, its new record or none, the tree's key, the image and its parts)
        let applied = change.map(|c| match c {
            TagChange::Written(w) => {
                let rec = WrittenRecord {
                    v: VERSION,
                    source: w.source.clone(),
                    target: w.target_digest.clone(),
                    at_ms: super::now_ms(),
                };
                (
                    written_key(w.target, w.repository, w.tag),
                    Some(serde_json::to_vec(&rec).expect("records serialize")),
                    tree_key(w.target, w.repository, w.tag),
                    Some((w.target_digest.clone(), w.components.to_vec())),
                )
            }
            TagChange::Deleted {
                target,
                repository,
                tag,
            } => (
                written_key(target, repository, tag),
                None,
                tree_key(target, repository, tag),
                None,
            ),
        });
        (
            &self.ledger,
            &self.intents,
            &self.written,
            &self.exposure,
            &self.trees,
        )
            .transaction(|(ledger, intents, written, exposure, trees)| {
                ledger.insert(&seq.to_be_bytes(), entry)?;
                intents.remove(&id.to_be_bytes())?;
                if let Some((wk, rec, tk, image)) = &applied {
                    match rec {
                        Some(v) => written.insert(wk.as_slice(), v.as_slice())?,
                        None => written.remove(wk.as_slice())?,
                    };
                    let now = image.as_ref().map(|(root, parts)| (root, parts.as_slice()));
                    set_tree(exposure, trees, tk, now)?;
                }
                Ok::<(), ConflictableTransactionError<sled::Error>>(())
            })
            .map_err(tx_error)
    }

    /// Entries from `seq` on, in order.
    pub fn ledger_scan(
        &self,
        from: u64,
    ) -> impl Iterator<Item = Result<(u64, Vec<u8>), StateError>> + '_ {
        self.ledger.range(from.to_be_bytes()..).map(|r| {
            r.map(|(k, v)| (be(&k), v.to_vec()))
                .map_err(StateError::from)
        })
    }

    /// What the chain starts from once its front is pruned.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub fn ledger_anchor(&self) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.ledger_meta.get(ANCHOR)?.map(|v| v.to_vec()))
    }

    /// Remove the entries `seqs` (the oldest) and set the anchor they leave, in one step.
    ///
    /// # Errors
    /// When the store cannot be written.
    pub fn ledger_prune(&self, seqs: &[u64], anchor: &[u8]) -> Result<(), StateError> {
        (&self.ledger, &self.ledger_meta)
            .transaction(|(ledger, meta)| {
                for s in seqs {
                    ledger.remove(&s.to_be_bytes())?;
                }
                meta.insert(ANCHOR, anchor)?;
                Ok::<(), ConflictableTransactionError<sled::Error>>(())
            })
            .map_err(tx_error)
    }

    /// Overwrite an entry's bytes: for tests of the chain check only.
    #[doc(hidden)]
    pub fn ledger_overwrite(&self, seq: u64, entry: &[u8]) -> Result<(), StateError> {
        self.ledger.insert(seq.to_be_bytes(), entry)?;
        Ok(())
    }
}

fn be(k: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&k[..8]);
    u64::from_be_bytes(b)
}
