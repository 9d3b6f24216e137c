//! What planning remembers between runs, through the state store.

use std::collections::HashSet;

use crate::model::{now_ms, Digest, RepoName, Tag};
use crate::plan::{Evidence, Memory};
use crate::state::StateStore;

/// What planning remembers between runs, kept in the state store.
pub(super) struct StateMemory<'a>(pub(super) &'a StateStore);

impl Memory for StateMemory<'_> {
    fn first_seen(&self, key: &str) -> u64 {
        self.0.first_seen(key, now_ms())
    }
    fn filtered(&self, key: &str) -> Option<Digest> {
        self.0.filtered_index(key)
    }
    fn remember_filtered(&self, key: &str, digest: &Digest) {
        self.0.remember_filtered_index(key, digest);
    }
    fn verified(&self, key: &str) -> Option<(Evidence, u64)> {
        let (at, bytes) = self.0.verification(key)?;
        Some((serde_json::from_slice(&bytes).ok()?, at))
    }
    fn remember_verified(&self, key: &str, evidence: &Evidence) {
        let bytes = serde_json::to_vec(evidence).expect("evidence serializes");
        self.0.remember_verification(key, now_ms(), &bytes);
    }
    fn written(&self, target: &str, repo: &RepoName, tag: &Tag) -> Option<(Digest, Digest, u64)> {
        self.0
            .written(target, repo, tag)
            .map(|r| (r.source, r.target, r.at_ms))
    }
    fn remember_written(
        &self,
        target: &str,
        repo: &RepoName,
        tag: &Tag,
        source: &Digest,
        target_digest: &Digest,
    ) {
        self.0
            .remember_written(target, repo, tag, source, target_digest);
    }
    fn blob_home(&self, target: &str, digest: &Digest, except: &RepoName) -> Option<RepoName> {
        self.0.blob_home(target, digest, except)
    }
    fn forget_written_except(&self, target: &str, repo: &RepoName, keep: &HashSet<Tag>) {
        self.0.forget_written_except(target, repo, &|t| {
            t.parse::<Tag>().is_ok_and(|t| keep.contains(&t))
        });
    }
}
