//! Which target tags ferry wrote hold an image containing a digest: the index `ferry where`
//! reads, kept beside the ledger and changed in the same step as a tag's write or delete.
//!
//!   exposure : component \0 target \0 repo \0 tag -> root \0 written ms   every manifest, config
//!              and layer of the image the tag was written with, the root included
//!   trees    : target \0 repo \0 tag -> JSON [component]            what to remove when the
//!              tag moves or goes
//!
//! Bounded by what ferry keeps on its targets: one tree per target tag it wrote, each at most
//! the plan's own limits; a tag moved or deleted takes its old tree's entries with it.

use sled::transaction::{TransactionalTree, UnabortableTransactionError};

use super::{key, StateError, StateStore};
use crate::model::{Digest, RepoName, Tag};

/// A target tag ferry wrote whose image contains the digest asked about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exposed {
    pub target: String,
    pub repository: RepoName,
    pub tag: Tag,
    /// The image the tag was written with.
    pub root: Digest,
    /// When (Unix ms).
    pub written_ms: u64,
}

pub(super) fn tree_key(target: &str, repo: &RepoName, tag: &Tag) -> Vec<u8> {
    key(&[
        target.as_bytes(),
        repo.as_str().as_bytes(),
        tag.as_str().as_bytes(),
    ])
}

fn exposure_key(component: &Digest, tree: &[u8]) -> Vec<u8> {
    key(&[component.as_str().as_bytes(), tree])
}

/// Inside a transaction: replace the tree of `tree` (a [`tree_key`]) with `components` of
/// `root`, or drop it (`None`).
pub(super) fn set_tree(
    exposure: &TransactionalTree,
    trees: &TransactionalTree,
    tree: &[u8],
    now: Option<(&Digest, &[Digest])>,
) -> Result<(), UnabortableTransactionError> {
    if let Some(old) = trees.get(tree)? {
        for c in serde_json::from_slice::<Vec<Digest>>(&old).unwrap_or_default() {
            exposure.remove(exposure_key(&c, tree))?;
        }
    }
    match now {
        Some((root, components)) => {
            for c in components {
                let value = format!("{root}\0{}", super::now_ms());
                exposure.insert(exposure_key(c, tree), value.as_bytes())?;
            }
            let list = serde_json::to_vec(components).expect("digests serialize");
            trees.insert(tree, list)?;
        }
        None => {
            trees.remove(tree)?;
        }
    }
    Ok(())
}

impl StateStore {
    /// Forget the tree of a target tag that is gone (`tree`: its [`tree_key`]).
    pub(super) fn drop_tree(&self, tree: &[u8]) -> Result<(), StateError> {
        use sled::transaction::{ConflictableTransactionError, Transactional};
        (&self.exposure, &self.trees)
            .transaction(|(exposure, trees)| {
                set_tree(exposure, trees, tree, None)?;
                Ok::<(), ConflictableTransactionError<sled::Error>>(())
            })
            .map_err(super::tx_error)
    }

    /// The target tags ferry wrote with an image containing `digest`, as indexed.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub fn exposed(&self, digest: &Digest) -> Result<Vec<Exposed>, StateError> {
        let prefix = key(&[digest.as_str().as_bytes(), b""]);
        let mut out = Vec::new();
        for kv in self.exposure.scan_prefix(&prefix) {
            let (k, v) = kv?;
            let rest = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            let mut parts = rest.split('\0');
            let (Some(target), Some(repo), Some(tag)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let value = String::from_utf8_lossy(&v);
            let (root, at) = value.split_once('\0').unwrap_or((&value, "0"));
            let (Ok(repository), Ok(tag), Ok(root)) = (repo.parse(), tag.parse(), root.parse())
            else {
                continue;
            };
            out.push(Exposed {
                target: target.to_owned(),
                repository,
                tag,
                root,
                written_ms: at.parse().unwrap_or(0),
            });
        }
        Ok(out)
    }
}
