//! `ferry where DIGEST`: the target tags ferry wrote, still current, whose image is DIGEST or
//! contains it (a child manifest, a config, a layer). From the state store's index alone, so
//! it answers in milliseconds; `--check` asks the targets too (in the CLI, which has them).

use serde::{Deserialize, Serialize};

use crate::model::{Digest, RepoName, Tag};
use crate::state::{StateError, StateStore};

/// One target tag holding the digest asked about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exposure {
    pub target: String,
    pub repository: RepoName,
    pub tag: Tag,
    /// The image the tag holds; equal to the digest asked for when it is the image itself.
    pub image: Digest,
    /// When ferry wrote it (Unix ms).
    pub written_ms: u64,
    /// When ferry last wrote the tag or found it holding the image (Unix ms).
    pub seen_ms: u64,
    /// Set by `--check`: whether the target holds the image under the tag now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holds_now: Option<bool>,
}

/// Where `digest` is, as far as ferry's own writes tell: tags moved or deleted since (by
/// ferry, or found so by a run) are not listed.
///
/// # Errors
/// When the store cannot be read.
pub fn exposure(state: &StateStore, digest: &Digest) -> Result<Vec<Exposure>, StateError> {
    let mut out = Vec::new();
    for e in state.exposed(digest)? {
        let Some(rec) = state.written(&e.target, &e.repository, &e.tag) else {
            continue;
        };
        if rec.target != e.root {
            continue;
        }
        out.push(Exposure {
            target: e.target,
            repository: e.repository,
            tag: e.tag,
            image: e.root,
            written_ms: e.written_ms,
            seen_ms: rec.at_ms,
            holds_now: None,
        });
    }
    out.sort_by(|a, b| (&a.target, &a.repository, &a.tag).cmp(&(&b.target, &b.repository, &b.tag)));
    Ok(out)
}
