//! A damaged store, or one that cannot be written (full disk, read-only mount, I/O errors).
//!
//! The store is a cache of progress, so neither stops replication: a record that cannot be
//! read is dropped, a write that fails costs the progress it would have saved, and each kind
//! of loss is said once in the log with what it costs and counted for metrics. The one thing
//! refused is a store written by a newer ferry: this one cannot know what it would throw away,
//! and rewriting it would spoil it for the version that wrote it.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::de::DeserializeOwned;

use super::{StateError, StateStore, Versioned, VERSION};

/// The store's format, in a file beside sled's (sled writes to its files as it opens them, so a
/// newer store must be recognised before sled touches it).
const FORMAT_FILE: &str = "state.format";

/// What is lost with an empty store (a corrupt one moved aside), for the log line that says so.
pub(super) const LOST_WHEN_EMPTY: &str = "upload progress (uploads restart from zero), run history, pending events (the next \
     full runs cover them), require.min_age first-seen times (they restart from now) and what ferry wrote (target tags are asked again)";

/// Refuse a store from a newer ferry, before anything opens it.
pub(super) fn check_format(dir: &Path) -> Result<(), StateError> {
    let path = dir.join(FORMAT_FILE);
    let found = match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse::<u32>().ok(),
        Err(_) => None, // a new store, or one from before the stamp: this version's format
    };
    match found {
        Some(v) if v > VERSION => Err(StateError::Newer {
            path: dir.join("state.sled").display().to_string(),
            found: v,
        }),
        _ => Ok(()),
    }
}

/// Stamp an opened store with this ferry's format.
pub(super) fn stamp_format(dir: &Path) {
    let path = dir.join(FORMAT_FILE);
    if std::fs::read_to_string(&path).is_ok_and(|t| t.trim() == VERSION.to_string()) {
        return;
    }
    if let Err(e) = std::fs::write(&path, format!("{VERSION}\n")) {
        tracing::warn!(path = %path.display(), error = %e, "cannot stamp the state store's format; a later ferry cannot tell this store's version");
    }
}

/// What the store has lost since it was opened.
#[derive(Default)]
pub(super) struct Damage {
    /// Records that could not be decoded and were removed.
    dropped: AtomicU64,
    /// Reads and writes that failed.
    failed: AtomicU64,
    /// Kinds of loss already said in the log.
    said: Mutex<HashSet<&'static str>>,
}

impl Damage {
    fn first_time(&self, what: &'static str) -> bool {
        self.said
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(what)
    }
}

impl StateStore {
    /// Records dropped as unreadable and operations that failed, since the store was opened.
    pub fn damage(&self) -> (u64, u64) {
        (
            self.damage.dropped.load(Ordering::Relaxed),
            self.damage.failed.load(Ordering::Relaxed),
        )
    }

    /// A failed store operation whose only cost is `cost`: said once per kind, counted always.
    pub(super) fn lost<T: Default, E: Into<StateError>>(
        &self,
        r: Result<T, E>,
        cost: &'static str,
    ) -> T {
        r.unwrap_or_else(|e| {
            let e: StateError = e.into();
            self.damage.failed.fetch_add(1, Ordering::Relaxed);
            if self.damage.first_time(cost) {
                tracing::warn!(error = %e, "state store failing; {cost} (replication goes on)");
            }
            T::default()
        })
    }

    /// Decode a record of `tree`; one that cannot be (damaged bytes, a record version this
    /// ferry does not know) is removed and counted, and reads as none.
    pub(super) fn read<T: DeserializeOwned + Versioned>(
        &self,
        tree: &sled::Tree,
        k: &[u8],
        v: &[u8],
        cost: &'static str,
    ) -> Option<T> {
        match Self::decode(k, v) {
            Ok(rec) => Some(rec),
            Err(e) => {
                self.damage.dropped.fetch_add(1, Ordering::Relaxed);
                if self.damage.first_time(cost) {
                    tracing::warn!(error = %e, "unreadable state record dropped; {cost}");
                }
                let _ = tree.remove(k);
                None
            }
        }
    }
}
