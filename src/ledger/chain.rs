//! The hash chain: each entry's hash covers its own fields and the hash before it, so an
//! entry edited, removed or inserted breaks every check after it. Tamper-evident against
//! edits of the store, not against someone who rewrites the whole chain from the edit on:
//! for that, export the head hash (`ferry audit --verify` prints it) somewhere else.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::{Draft, Entry, LedgerError};

/// What the first entry names as the one before it.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The fields a hash covers, in a fixed order (serde_json writes struct fields in order).
#[derive(Serialize)]
struct Covered<'a> {
    seq: u64,
    prev: &'a str,
    recovered: bool,
    draft: &'a Draft,
}

pub(super) fn hash(seq: u64, prev: &str, recovered: bool, draft: &Draft) -> String {
    let covered = serde_json::to_vec(&Covered {
        seq,
        prev,
        recovered,
        draft,
    })
    .expect("entries serialize");
    hex(&Sha256::digest(&covered))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn seal(seq: u64, draft: Draft, recovered: bool, prev: String) -> Entry {
    let hash = hash(seq, &prev, recovered, &draft);
    Entry {
        seq,
        draft,
        recovered,
        prev,
        hash,
    }
}

pub(super) fn decode(seq: u64, bytes: &[u8]) -> Result<Entry, LedgerError> {
    serde_json::from_slice(bytes).map_err(|e| LedgerError::Entry {
        seq,
        detail: format!("does not decode: {e}"),
    })
}

/// The hash an entry carries (for the next one to name), read as stored.
pub(super) fn stored_hash(seq: u64, bytes: &[u8]) -> Result<String, LedgerError> {
    Ok(decode(seq, bytes)?.hash)
}

/// The last pruned entry: where the chain goes on from.
#[derive(Serialize, Deserialize)]
pub(super) struct Anchor {
    pub seq: u64,
    pub hash: String,
}

/// The next seq and the hash it names, after a pruned front.
pub(super) fn anchor(bytes: &[u8]) -> Result<(u64, String), LedgerError> {
    let a: Anchor = serde_json::from_slice(bytes).map_err(|e| LedgerError::Entry {
        seq: 0,
        detail: format!("the chain's anchor does not decode: {e}"),
    })?;
    Ok((a.seq + 1, a.hash))
}

/// The first place the chain does not hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Broken {
    pub seq: u64,
    pub why: String,
}

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "entry {}: {}", self.seq, self.why)
    }
}

/// Walk entries in order from `start` (the seq and hash the first should follow): the
/// number checked and the head hash, or the first break.
pub(super) fn check(
    start: (u64, String),
    entries: impl Iterator<Item = Result<(u64, Vec<u8>), LedgerError>>,
) -> Result<(u64, String), Broken> {
    let (mut want_seq, mut prev) = start;
    let mut n = 0;
    for item in entries {
        let (seq, bytes) = item.map_err(|e| Broken {
            seq: want_seq,
            why: e.to_string(),
        })?;
        let e = decode(seq, &bytes).map_err(|e| Broken {
            seq,
            why: e.to_string(),
        })?;
        if seq != want_seq || e.seq != seq {
            return Err(Broken {
                seq: want_seq,
                why: format!("missing: the next entry is {seq}"),
            });
        }
        if e.prev != prev {
            return Err(Broken {
                seq,
                why: "does not name the hash of the entry before it".into(),
            });
        }
        if hash(e.seq, &e.prev, e.recovered, &e.draft) != e.hash {
            return Err(Broken {
                seq,
                why: "its content does not match its hash (edited)".into(),
            });
        }
        prev = e.hash;
        want_seq = seq + 1;
        n += 1;
    }
    Ok((n, prev))
}
