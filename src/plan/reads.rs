//! One source read for many targets: while a repository is planned for every target of a
//! policy, each tag list, manifest HEAD, manifest GET and referrers list is asked of the
//! source once, whoever asks first, the others waiting for that answer. Rationed sources
//! count manifest GETs, so a policy with three targets must not pull three times.
//!
//! Only answers are kept, never errors: a planner that sees an error lets the next one ask
//! again. The cache lives as long as one repository's planning, so it holds no more than
//! the plans themselves (manifest bodies are shared `Bytes`).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::OnceCell;

use crate::model::{Digest, RepoName, Tag};
use crate::registry::{ManifestHead, PulledManifest, Registry, RegistryError};

type Cache<K, T> = Mutex<HashMap<K, Arc<OnceCell<T>>>>;

/// The source of one planning pass, read through a cache.
pub struct SourceReads<'a> {
    registry: &'a Registry,
    tags: Cache<RepoName, Option<Vec<Tag>>>,
    heads: Cache<(RepoName, String), Option<ManifestHead>>,
    manifests: Cache<(RepoName, String), Option<PulledManifest>>,
    referrers: Cache<(RepoName, Digest), Vec<Digest>>,
}

async fn once<K, T, F, Fut>(cache: &Cache<K, T>, key: K, ask: F) -> Result<T, RegistryError>
where
    K: Eq + Hash,
    T: Clone,
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<T, RegistryError>>,
{
    let cell = cache
        .lock()
        .expect("lock poisoned")
        .entry(key)
        .or_default()
        .clone();
    cell.get_or_try_init(ask).await.cloned()
}

impl<'a> SourceReads<'a> {
    pub fn new(registry: &'a Registry) -> Self {
        SourceReads {
            registry,
            tags: Mutex::default(),
            heads: Mutex::default(),
            manifests: Mutex::default(),
            referrers: Mutex::default(),
        }
    }

    /// The registry itself, for a read that must not be answered from the cache (waiting
    /// for a pushed tag to appear).
    pub fn registry(&self) -> &'a Registry {
        self.registry
    }

    pub fn name(&self) -> &str {
        self.registry.name()
    }

    /// The repository's tags. Digests the listing gave (GCR's) answer the HEADs of those
    /// tags later.
    pub async fn tags(&self, repo: &RepoName) -> Result<Option<Vec<Tag>>, RegistryError> {
        once(&self.tags, repo.clone(), || async {
            let Some(list) = self.registry.tag_list(repo).await? else {
                return Ok(None);
            };
            let mut heads = self.heads.lock().expect("lock poisoned");
            for (tag, head) in list.heads {
                let cell = heads
                    .entry((repo.clone(), tag.as_str().to_owned()))
                    .or_default();
                let _ = cell.set(Some(head));
            }
            Ok(Some(list.tags))
        })
        .await
    }

    pub async fn head_manifest(
        &self,
        repo: &RepoName,
        reference: &str,
    ) -> Result<Option<ManifestHead>, RegistryError> {
        // Another target's planner already pulled it: that answers the HEAD too.
        let key = (repo.clone(), reference.to_owned());
        let pulled = self
            .manifests
            .lock()
            .expect("lock poisoned")
            .get(&key)
            .and_then(|c| c.get().cloned());
        if let Some(m) = pulled {
            return Ok(m.map(|m| ManifestHead {
                digest: m.digest,
                media_type: Some(m.media_type),
            }));
        }
        once(&self.heads, (repo.clone(), reference.to_owned()), || {
            self.registry.head_manifest(repo, reference)
        })
        .await
    }

    pub async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &str,
    ) -> Result<Option<PulledManifest>, RegistryError> {
        once(
            &self.manifests,
            (repo.clone(), reference.to_owned()),
            || self.registry.get_manifest(repo, reference),
        )
        .await
    }

    pub async fn referrers(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Vec<Digest>, RegistryError> {
        once(&self.referrers, (repo.clone(), digest.clone()), || {
            self.registry.referrers(repo, digest)
        })
        .await
    }

    /// Not cached: image configs are read only by gates and `latest` over build times.
    pub async fn get_small_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        limit: usize,
    ) -> Result<Bytes, RegistryError> {
        self.registry.get_small_blob(repo, digest, limit).await
    }
}
