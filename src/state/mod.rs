//! The state store: sled behind a typed API. No sled type leaves this module.
//!
//! It is a cache of progress, never the source of truth: registries are asked before any
//! saved offset is trusted, and a lost or corrupt store costs re-sent bytes, never a wrong image.
//!
//! Trees and keys (fields joined by `\0`, which no registry name, repository or digest holds):
//!   uploads : target \0 repo \0 digest     -> UploadRecord  one per blob upload in flight
//!   blobs   : target \0 digest \0 repo     -> ()            repositories known to hold a blob (mount sources)
//!   memo    : "seen:" key | "filtered:" key -> bytes      first-seen times (u64 BE ms) for
//!             require.min_age, and the filtered index digest made from a source index
//!   journal, event_ids: see `journal.rs`; runs: see `runs.rs`; written: see `written.rs`;
//!   habits: see `habits.rs`; ledger, intents, ledger_meta: see `ledger.rs`; exposure, trees: see `exposure.rs`
//! Values are JSON with a `v` field; a record that does not decode is dropped and counted
//! (`damage.rs`). The format of the whole store is in `state.format`, beside sled's files.

use std::path::Path;
use std::time::Duration;

mod damage;
mod exposure;
mod habits;
mod journal;
mod ledger;
mod runs;
mod written;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::{de::DeserializeOwned, Deserialize, Serialize};

pub use exposure::Exposed;
pub use habits::Habits;
pub use journal::{JournalAction, JournalEntry, JournalKey};
pub use ledger::{TagChange, WrittenTag};
pub use runs::{Conflict, Counts, Findings, Outcome, RunRecord};
pub use written::WrittenRecord;

use crate::model::{Digest, RepoName};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state store {path}: {source}")]
    Open { path: String, source: sled::Error },
    #[error("state store: {0}")]
    Sled(#[from] sled::Error),
    #[error("state store {path} is locked by another ferry process (is the daemon running?)")]
    Locked { path: String },
    #[error("state store record {key}: {detail}")]
    Record { key: String, detail: String },
    #[error(
        "state store {path} was written by a newer ferry (format {found}; this one reads {VERSION}): run that version, or move the directory aside to start empty"
    )]
    Newer { path: String, found: u32 },
}

const VERSION: u32 = 1;

const CHECKPOINTS: &str =
    "upload checkpoints are not saved or read: an interrupted upload restarts from zero";
const MOUNTS: &str = "mount sources are not remembered: blobs are uploaded where a cross-repository mount would have done";
const FIRST_SEEN: &str =
    "require.min_age first-seen times are not kept: gated images count their age from now";
const FILTERED: &str =
    "platform-filtered indexes are not remembered: they are rebuilt from their source index";
const VERIFIED: &str =
    "signature verifications are not remembered: gated tags are verified again on every run";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    pub v: u32,
    pub location: String,
    pub offset: u64,
    pub size: u64,
    pub started_ms: u64,
}

/// A journal entry, as `status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingEvent {
    #[serde(flatten)]
    pub key: JournalKey,
    pub registry: String,
    pub accepted_ms: u64,
    pub events: u64,
    pub attempts: u32,
    /// Handed to this cluster member through etcd, which keeps it (not in the local journal).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub through_etcd: bool,
}

impl PendingEvent {
    pub fn new(key: JournalKey, e: &JournalEntry, through_etcd: bool) -> Self {
        PendingEvent {
            key,
            registry: e.registry.clone(),
            accepted_ms: e.accepted_ms,
            events: e.events,
            attempts: e.attempts,
            through_etcd,
        }
    }
}

/// An upload in flight, as `status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InFlight {
    pub target: String,
    pub repository: String,
    pub digest: String,
    pub offset: u64,
    pub size: u64,
}

#[derive(Clone)]
pub struct StateStore {
    db: sled::Db,
    uploads: sled::Tree,
    blobs: sled::Tree,
    runs: sled::Tree,
    memo: sled::Tree,
    journal: sled::Tree,
    event_ids: sled::Tree,
    written: sled::Tree,
    habits: sled::Tree,
    ledger: sled::Tree,
    intents: sled::Tree,
    ledger_meta: sled::Tree,
    exposure: sled::Tree,
    trees: sled::Tree,
    commit: Arc<journal::Commit>,
    damage: Arc<damage::Damage>,
    flushes: Arc<Flushes>,
}

/// Flush requests and the last one a finished flush covered (see [`StateStore::flush`]).
#[derive(Default)]
struct Flushes {
    requested: std::sync::atomic::AtomicU64,
    done: tokio::sync::Mutex<u64>,
}

/// A failed sled transaction as the store's error (nothing here aborts one on purpose).
fn tx_error(e: sled::transaction::TransactionError<sled::Error>) -> StateError {
    match e {
        sled::transaction::TransactionError::Abort(e)
        | sled::transaction::TransactionError::Storage(e) => StateError::Sled(e),
    }
}

fn key(parts: &[&[u8]]) -> Vec<u8> {
    parts.join(&b'\0')
}

pub use crate::model::now_ms;

impl StateStore {
    /// Open (or create) the store. A lock held by a process that just died is retried for a
    /// moment; a store sled calls corrupt is moved aside and replaced by an empty one.
    ///
    /// # Errors
    /// When the directory cannot be created, or another ferry holds the store.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        Self::open_waiting(dir, 10)
    }

    /// Open the store, or fail at once when another process holds it: for commands that
    /// then ask that process (the daemon) instead, where a second of waiting buys nothing.
    ///
    /// # Errors
    /// As [`StateStore::open`].
    pub fn try_open(dir: &Path) -> Result<Self, StateError> {
        Self::open_waiting(dir, 0)
    }

    /// `tries`: how many more times a held lock is tried, 100 ms apart.
    fn open_waiting(dir: &Path, tries: u32) -> Result<Self, StateError> {
        damage::check_format(dir)?;
        let path = dir.join("state.sled");
        let open = || {
            sled::Config::new()
                .path(&path)
                .flush_every_ms(Some(1000))
                .open()
        };
        let mut attempt = 0;
        let db = loop {
            match open() {
                Ok(db) => break db,
                Err(sled::Error::Corruption { .. }) => {
                    let aside = dir.join(format!("state.sled.corrupt-{}", now_ms()));
                    tracing::error!(path = %path.display(), aside = %aside.display(), "state store corrupt; moved aside, starting empty: lost {}", damage::LOST_WHEN_EMPTY);
                    std::fs::rename(&path, &aside).map_err(|e| StateError::Open {
                        path: path.display().to_string(),
                        source: e.into(),
                    })?;
                }
                Err(sled::Error::Io(e)) if locked(&e) && attempt < tries => {
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(sled::Error::Io(e)) if locked(&e) => {
                    return Err(StateError::Locked {
                        path: path.display().to_string(),
                    })
                }
                Err(e) => {
                    return Err(StateError::Open {
                        path: path.display().to_string(),
                        source: e,
                    })
                }
            }
        };
        damage::stamp_format(dir);
        // Upload URLs (with their registry state), run history and the event journal are
        // nobody else's business, whatever the umask: the store is its owner's only.
        {
            use std::os::unix::fs::PermissionsExt as _;
            for p in [dir, path.as_path()] {
                if let Err(e) = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700))
                {
                    tracing::warn!(path = %p.display(), error = %e, "cannot make the state store private (0700)");
                }
            }
        }
        Ok(StateStore {
            uploads: db.open_tree("uploads")?,
            blobs: db.open_tree("blobs")?,
            runs: db.open_tree("runs")?,
            memo: db.open_tree("memo")?,
            journal: db.open_tree("journal")?,
            event_ids: db.open_tree("event_ids")?,
            written: db.open_tree("written")?,
            habits: db.open_tree("habits")?,
            ledger: db.open_tree("ledger")?,
            intents: db.open_tree("intents")?,
            ledger_meta: db.open_tree("ledger_meta")?,
            exposure: db.open_tree("exposure")?,
            trees: db.open_tree("trees")?,
            commit: Arc::default(),
            damage: Arc::default(),
            flushes: Arc::default(),
            db,
        })
    }

    /// Make everything written so far survive a crash.
    ///
    /// # Errors
    /// When sled cannot write or fsync.
    pub async fn flush(&self) -> Result<(), StateError> {
        // Callers that come while a flush runs share the next one: each flush costs sled a
        // partly filled write buffer on disk, so one per tag write (the ledger's
        // announcements) grew a 10,000-tag store tenfold. A ticket is taken after the
        // caller's writes; a flush that began after it covers them.
        let ticket = self.flushes.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let mut done = self.flushes.done.lock().await;
        if *done >= ticket {
            return Ok(());
        }
        let upto = self.flushes.requested.load(Ordering::SeqCst);
        // Not sled's `flush_async`: futures of several flushes polled at about the same time
        // are never woken (sled#1241, sled#1308); three targets checkpointing at once hung a run.
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| sled::Error::Io(std::io::Error::other(e)))??;
        *done = upto;
        Ok(())
    }

    fn decode<T: DeserializeOwned + Versioned>(k: &[u8], v: &[u8]) -> Result<T, StateError> {
        let err = |detail: String| StateError::Record {
            key: String::from_utf8_lossy(k).replace('\0', "/"),
            detail,
        };
        let rec: T = serde_json::from_slice(v).map_err(|e| err(e.to_string()))?;
        if rec.version() != VERSION {
            return Err(err(format!("unknown record version {}", rec.version())));
        }
        Ok(rec)
    }

    // Upload checkpoints and mount sources only save work: when the store fails, the copy goes
    // on without them (`lost` says what that costs, once).

    pub fn upload(&self, target: &str, repo: &RepoName, digest: &Digest) -> Option<UploadRecord> {
        let k = key(&[
            target.as_bytes(),
            repo.as_str().as_bytes(),
            digest.as_str().as_bytes(),
        ]);
        let v = self.lost(self.uploads.get(&k), CHECKPOINTS)?;
        self.read(&self.uploads, &k, &v, CHECKPOINTS)
    }

    /// Record upload progress and flush before returning, so a crash right after the
    /// registry acknowledged a chunk still resumes after that chunk.
    pub async fn save_upload(
        &self,
        target: &str,
        repo: &RepoName,
        digest: &Digest,
        rec: &UploadRecord,
    ) {
        let k = key(&[
            target.as_bytes(),
            repo.as_str().as_bytes(),
            digest.as_str().as_bytes(),
        ]);
        let saved = match self
            .uploads
            .insert(k, serde_json::to_vec(rec).expect("records serialize"))
        {
            Ok(_) => self.flush().await,
            Err(e) => Err(e.into()),
        };
        self.lost(saved, CHECKPOINTS);
    }

    pub fn forget_upload(&self, target: &str, repo: &RepoName, digest: &Digest) {
        let k = key(&[
            target.as_bytes(),
            repo.as_str().as_bytes(),
            digest.as_str().as_bytes(),
        ]);
        self.lost(self.uploads.remove(k).map(drop), CHECKPOINTS);
    }

    pub fn uploads_in_flight(&self) -> Result<Vec<InFlight>, StateError> {
        let mut out = Vec::new();
        for kv in self.uploads.iter() {
            let (k, v) = kv?;
            let Some(rec) = self.read::<UploadRecord>(&self.uploads, &k, &v, CHECKPOINTS) else {
                continue;
            };
            let parts: Vec<String> = k
                .split(|&b| b == 0)
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect();
            if let Ok([target, repository, digest]) = <[String; 3]>::try_from(parts) {
                out.push(InFlight {
                    target,
                    repository,
                    digest,
                    offset: rec.offset,
                    size: rec.size,
                });
            }
        }
        Ok(out)
    }

    /// Remember that `repo` on `target` holds `digest`, so later copies can mount it.
    pub fn blob_known(&self, target: &str, repo: &RepoName, digest: &Digest) {
        let k = key(&[
            target.as_bytes(),
            digest.as_str().as_bytes(),
            repo.as_str().as_bytes(),
        ]);
        self.lost(self.blobs.insert(k, &[]).map(drop), MOUNTS);
    }

    /// A repository on `target` other than `except` known to hold `digest`.
    pub fn blob_home(&self, target: &str, digest: &Digest, except: &RepoName) -> Option<RepoName> {
        let prefix = key(&[target.as_bytes(), digest.as_str().as_bytes(), b""]);
        let found = self
            .blobs
            .scan_prefix(&prefix)
            .keys()
            .find_map(|k| match k {
                Ok(k) => std::str::from_utf8(&k[prefix.len()..])
                    .ok()
                    .filter(|r| *r != except.as_str())
                    .and_then(|r| r.parse().ok())
                    .map(Ok),
                Err(e) => Some(Err(e)),
            });
        self.lost(found.transpose(), MOUNTS)
    }

    /// Whether the store believes `repo` on `target` holds `digest`.
    pub fn blob_in(&self, target: &str, repo: &RepoName, digest: &Digest) -> bool {
        let k = key(&[
            target.as_bytes(),
            digest.as_str().as_bytes(),
            repo.as_str().as_bytes(),
        ]);
        self.lost(self.blobs.contains_key(k), MOUNTS)
    }

    /// A mount source turned out not to hold the blob (garbage-collected): stop offering it.
    pub fn blob_gone(&self, target: &str, repo: &RepoName, digest: &Digest) {
        let k = key(&[
            target.as_bytes(),
            digest.as_str().as_bytes(),
            repo.as_str().as_bytes(),
        ]);
        self.lost(self.blobs.remove(k).map(drop), MOUNTS);
    }

    /// When `key` was first seen (Unix ms), recording `now` if it never was.
    pub fn first_seen(&self, key: &str, now: u64) -> u64 {
        let k = format!("seen:{key}");
        let seen = self
            .memo
            .compare_and_swap(&k, None as Option<&[u8]>, Some(&now.to_be_bytes()[..]))
            .map(|swapped| match swapped {
                Ok(()) => now,
                Err(current) => current
                    .current
                    .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
                    .map_or(now, u64::from_be_bytes),
            });
        // Unknown reads as first seen now: a gated image waits its min_age again, never less.
        self.lost(seen.map(Some), FIRST_SEEN).unwrap_or(now)
    }

    pub fn filtered_index(&self, key: &str) -> Option<Digest> {
        let v = self.lost(self.memo.get(format!("filtered:{key}")), FILTERED)?;
        String::from_utf8(v.to_vec()).ok()?.parse().ok()
    }

    /// A gate's verification of a digest, as the caller wrote it, and when (Unix ms).
    pub fn verification(&self, key: &str) -> Option<(u64, Vec<u8>)> {
        let v = self.lost(self.memo.get(format!("verified:{key}")), VERIFIED)?;
        let (at, rest) = v.split_first_chunk::<8>()?;
        Some((u64::from_be_bytes(*at), rest.to_vec()))
    }

    pub fn remember_verification(&self, key: &str, at_ms: u64, record: &[u8]) {
        let mut v = at_ms.to_be_bytes().to_vec();
        v.extend_from_slice(record);
        let saved = self.memo.insert(format!("verified:{key}"), v);
        self.lost(saved.map(drop), VERIFIED);
    }

    pub fn remember_filtered_index(&self, key: &str, digest: &Digest) {
        let saved = self
            .memo
            .insert(format!("filtered:{key}"), digest.as_str().as_bytes());
        self.lost(saved.map(drop), FILTERED);
    }
}

/// sled reports a held lock as an `Other` error whose text carries the `WouldBlock` cause.
fn locked(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("could not acquire lock")
}

trait Versioned {
    fn version(&self) -> u32;
}
impl Versioned for UploadRecord {
    fn version(&self) -> u32 {
        self.v
    }
}
impl UploadRecord {
    pub fn new(location: String, offset: u64, size: u64) -> Self {
        UploadRecord {
            v: VERSION,
            location,
            offset,
            size,
            started_ms: now_ms(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_store_is_waited_for_by_open_but_not_by_try_open() {
        let dir = tempfile::tempdir().unwrap();
        let _held = StateStore::open(dir.path()).unwrap();
        let at = std::time::Instant::now();
        let got = StateStore::try_open(dir.path());
        assert!(
            matches!(got, Err(StateError::Locked { .. })),
            "{:?}",
            got.err()
        );
        assert!(
            at.elapsed() < Duration::from_millis(500),
            "{:?}",
            at.elapsed()
        );
        let at = std::time::Instant::now();
        assert!(matches!(
            StateStore::open(dir.path()),
            Err(StateError::Locked { .. })
        ));
        assert!(
            at.elapsed() >= Duration::from_millis(1000),
            "{:?}",
            at.elapsed()
        );
    }

    #[tokio::test]
    async fn records_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let repo: RepoName = "app".parse().unwrap();
        let d = Digest::of(b"x");
        {
            let s = StateStore::open(dir.path()).unwrap();
            s.save_upload(
                "t",
                &repo,
                &d,
                &UploadRecord::new("http://x/u".into(), 42, 100),
            )
            .await;
            s.blob_known("t", &"other".parse().unwrap(), &d);
            s.record_run(
                &RunRecord::new(
                    "p",
                    1,
                    Outcome::Ok,
                    Default::default(),
                    vec![],
                    Default::default(),
                ),
                50,
            )
            .unwrap();
            s.record_run(
                &RunRecord::new(
                    "p",
                    2,
                    Outcome::Failed,
                    Default::default(),
                    vec![],
                    Default::default(),
                ),
                50,
            )
            .unwrap();
        }
        let s = StateStore::open(dir.path()).unwrap();
        assert_eq!(s.upload("t", &repo, &d).unwrap().offset, 42);
        assert_eq!(s.blob_home("t", &d, &repo).unwrap().as_str(), "other");
        assert_eq!(s.blob_home("t", &d, &"other".parse().unwrap()), None);
        let runs = s.last_runs().unwrap();
        assert_eq!((runs.len(), runs[0].outcome), (1, Outcome::Failed));
        assert_eq!(s.uploads_in_flight().unwrap()[0].digest, d.as_str());
    }
}
