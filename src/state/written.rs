//! What ferry last wrote or saw on each target tag, so an unchanged tag costs no HEAD on the
//! target: the run trusts the record while the source digest is the one recorded and the
//! record is younger than the policy's `verify_interval`.
//!
//!   written : target \0 repository \0 tag -> WrittenRecord
//!
//! One record per target tag; records of tags gone from the target are dropped by the next
//! run of their repository, so the tree stays the size of the targets' tag lists.

use serde::{Deserialize, Serialize};

use super::{key, StateError, StateStore, Versioned, VERSION};

/// What losing these records costs: the tags are asked about again.
const WRITTEN: &str = "what ferry wrote is not remembered: those target tags are asked again";
use crate::model::{Digest, RepoName, Tag};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrittenRecord {
    pub v: u32,
    /// The source tag's digest when the target tag was written or checked.
    pub source: Digest,
    /// What the target tag held then (differs from `source` for a platform-filtered index).
    pub target: Digest,
    /// When the target was last written or asked (Unix ms).
    pub at_ms: u64,
}

impl Versioned for WrittenRecord {
    fn version(&self) -> u32 {
        self.v
    }
}

pub(super) fn written_key(target: &str, repo: &RepoName, tag: &Tag) -> Vec<u8> {
    key(&[
        target.as_bytes(),
        repo.as_str().as_bytes(),
        tag.as_str().as_bytes(),
    ])
}

impl StateStore {
    /// The record for a target tag; a damaged record reads as none (the tag is then asked).
    pub fn written(&self, target: &str, repo: &RepoName, tag: &Tag) -> Option<WrittenRecord> {
        let k = written_key(target, repo, tag);
        let v = self.lost(self.written.get(&k), WRITTEN)?;
        self.read(&self.written, &k, &v, WRITTEN)
    }

    /// Record that `target`'s `repo:tag` holds `target_digest`, for source digest `source`, as
    /// of now. A store that cannot be written costs a HEAD next run (said once, counted).
    pub fn remember_written(
        &self,
        target: &str,
        repo: &RepoName,
        tag: &Tag,
        source: &Digest,
        target_digest: &Digest,
    ) {
        let rec = WrittenRecord {
            v: VERSION,
            source: source.clone(),
            target: target_digest.clone(),
            at_ms: super::now_ms(),
        };
        let saved = self.written.insert(
            written_key(target, repo, tag),
            serde_json::to_vec(&rec).expect("records serialize"),
        );
        self.lost(saved.map(drop), WRITTEN);
    }

    /// Drop the records of `repo` on `target` whose tag `keep` does not hold (gone from the
    /// target); how many went.
    pub fn forget_written_except(
        &self,
        target: &str,
        repo: &RepoName,
        keep: &dyn Fn(&str) -> bool,
    ) -> usize {
        let prefix = key(&[target.as_bytes(), repo.as_str().as_bytes(), b""]);
        let pruned = || -> Result<usize, StateError> {
            let mut gone = 0;
            for kv in self.written.scan_prefix(&prefix) {
                let (k, _) = kv?;
                if !keep(&String::from_utf8_lossy(&k[prefix.len()..])) {
                    self.written.remove(&k)?;
                    // The same key names the tag's tree in the exposure index.
                    self.drop_tree(&k)?;
                    gone += 1;
                }
            }
            Ok(gone)
        };
        self.lost(pruned(), WRITTEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_per_target_tag_and_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(dir.path()).unwrap();
        let repo: RepoName = "team/app".parse().unwrap();
        let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
        for t in ["v1", "v2"] {
            s.remember_written("dst", &repo, &t.parse().unwrap(), &a, &b);
        }
        let rec = s.written("dst", &repo, &"v1".parse().unwrap()).unwrap();
        assert_eq!((rec.source, rec.target), (a, b));
        assert!(s.written("other", &repo, &"v1".parse().unwrap()).is_none());
        assert_eq!(s.forget_written_except("dst", &repo, &|t| t == "v2"), 1);
        assert!(s.written("dst", &repo, &"v1".parse().unwrap()).is_none());
        assert!(s.written("dst", &repo, &"v2".parse().unwrap()).is_some());
    }
}
