//! What a sync would do, as pure data: per policy, target and repository, each tag's action
//! and the manifests and blobs missing on the target. Printable as text and JSON.

mod attestations;
mod diff;
mod error;
mod inventory;
mod reads;
mod referrers;
mod rules;
mod signatures;

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
pub use diff::{filter_index, filter_tags, keep_latest, needs_created, tag_action, DroppedTag};
pub use error::PlanError;
pub use inventory::{is_referrer_tag, plan_repo, select_repositories};
pub use reads::SourceReads;
pub use referrers::fallback_tag;
use serde::Serialize;

use crate::model::{ByteSize, Digest, RepoName, Tag};
pub use crate::verify::Evidence;

/// What a run may do beyond the policy: delete past `max_delete`, ask the target about
/// every tag instead of trusting what ferry remembers writing.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunOptions {
    pub force_delete: bool,
    pub verify: bool,
}

/// How much of a repository a run looks at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Scope {
    /// Every tag: a full run.
    #[default]
    All,
    /// One tag (and its referrers), through every rule of the policy: a push event.
    Tag(Tag),
    /// Deletes only: this tag, or every target tag gone from the source; each confirmed gone
    /// by a HEAD on the source first. A delete event.
    Deleted(Option<Tag>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TagAction {
    /// Not on the target yet.
    Create,
    /// On the target at another digest; will be moved.
    Move,
    /// Same digest on both sides: nothing to do.
    InSync,
    /// On the target at another digest, and the policy forbids moving tags.
    Conflict,
    /// Held back by a promotion gate (`[policy.require]`); the reason says which.
    Held,
    /// On the target but gone from the source, and the policy deletes such tags.
    Delete,
}

impl TagAction {
    pub fn copies(self) -> bool {
        matches!(self, TagAction::Create | TagAction::Move)
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct TagPlan {
    pub tag: Tag,
    pub action: TagAction,
    pub source_digest: Digest,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_digest: Option<Digest>,
    /// Why a tag is held, or what platform filtering made of an index.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What verified the signature a gate required: the key and the signature manifest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified: Option<Evidence>,
    /// The digest the source tag points at (differs from `source_digest` for a filtered index).
    #[serde(skip)]
    pub original: Digest,
    /// A delete whose manifest a kept tag also points at: only a registry that deletes tags
    /// can remove it; elsewhere it stays (a digest delete would take the kept tag too).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared_with: Option<Tag>,
}

/// What planning remembers between runs; the state store provides it (see `app`).
pub trait Memory: Sync {
    /// When ferry first saw `key` (Unix ms), recording now if never before.
    fn first_seen(&self, key: &str) -> u64;
    /// The filtered index made from a source index before (key: digest and platforms).
    fn filtered(&self, key: &str) -> Option<Digest>;
    fn remember_filtered(&self, key: &str, digest: &Digest);
    /// What verified `key` (a source digest under one gate fingerprint), and when (Unix ms).
    fn verified(&self, key: &str) -> Option<(Evidence, u64)>;
    fn remember_verified(&self, key: &str, evidence: &Evidence);
    /// What `target`'s `repo:tag` was last written or seen as: (source digest, target digest,
    /// when in Unix ms).
    fn written(&self, target: &str, repo: &RepoName, tag: &Tag) -> Option<(Digest, Digest, u64)>;
    fn remember_written(
        &self,
        target: &str,
        repo: &RepoName,
        tag: &Tag,
        source: &Digest,
        target_digest: &Digest,
    );
    /// Forget the records of `repo`'s tags on `target` that are no longer there.
    fn forget_written_except(
        &self,
        target: &str,
        repo: &RepoName,
        keep: &std::collections::HashSet<Tag>,
    );
    /// Another repository of `target` known to hold `digest`, to mount it from.
    fn blob_home(&self, target: &str, digest: &Digest, except: &RepoName) -> Option<RepoName>;
}

/// No memory (the state store is held by a running daemon): every tag counts as first seen
/// now, and filtered indexes are recomputed.
pub struct NoMemory;

impl Memory for NoMemory {
    fn first_seen(&self, _: &str) -> u64 {
        crate::model::now_ms()
    }
    fn filtered(&self, _: &str) -> Option<Digest> {
        None
    }
    fn remember_filtered(&self, _: &str, _: &Digest) {}
    fn verified(&self, _: &str) -> Option<(Evidence, u64)> {
        None
    }
    fn remember_verified(&self, _: &str, _: &Evidence) {}
    fn written(&self, _: &str, _: &RepoName, _: &Tag) -> Option<(Digest, Digest, u64)> {
        None
    }
    fn remember_written(&self, _: &str, _: &RepoName, _: &Tag, _: &Digest, _: &Digest) {}
    fn forget_written_except(&self, _: &str, _: &RepoName, _: &std::collections::HashSet<Tag>) {}
    fn blob_home(&self, _: &str, _: &Digest, _: &RepoName) -> Option<RepoName> {
        None
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ManifestPlan {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    /// Child manifests first: a parent is only written after its children.
    pub children: Vec<Digest>,
    pub blobs: Vec<Digest>,
    pub on_target: bool,
    #[serde(skip)]
    pub bytes: Bytes,
}

#[derive(Clone, Debug, Serialize)]
pub struct BlobPlan {
    pub size: u64,
    /// `Some(true)` after a HEAD found it; `None` when the target repository has no tags and
    /// nothing was asked (the copy checks what it knows before sending).
    pub on_target: Option<bool>,
    /// Another repository of the target the state store knows holds it: a missing blob
    /// the copy will try to mount from there rather than send.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mount_from: Option<RepoName>,
}

#[derive(Debug, Serialize)]
pub struct RepoPlan {
    pub policy: String,
    pub target: String,
    pub source_repository: RepoName,
    pub target_repository: RepoName,
    pub tags: Vec<TagPlan>,
    /// Source tags the policy's rules leave out, each with the rule that did.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dropped: Vec<DroppedTag>,
    /// Untagged referrers (OCI 1.1 referrers API) of the images copied, written by digest.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub referrers: Vec<Digest>,
    /// The subject of each referrer: where a target without the referrers API lists it (the
    /// fallback tag `sha256-<hex>` of the subject).
    #[serde(skip)]
    pub subjects: BTreeMap<Digest, Digest>,
    /// Every manifest the tags to copy need, by digest.
    pub manifests: BTreeMap<Digest, ManifestPlan>,
    pub blobs: BTreeMap<Digest, BlobPlan>,
    /// Deletes the policy wanted but its safety limits refused, with the reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused_deletes: Option<String>,
    /// Set when the repository could not be planned; the other fields are then empty.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "as_text")]
    pub error: Option<PlanError>,
}

/// An error as its message: `plan --json` is read by people and scripts alike.
fn as_text<S: serde::Serializer>(e: &Option<PlanError>, s: S) -> Result<S::Ok, S::Error> {
    match e {
        Some(e) => s.serialize_str(&e.to_string()),
        None => s.serialize_none(),
    }
}

impl RepoPlan {
    pub fn empty(policy: &str, target: &str, source: RepoName, dest: RepoName) -> Self {
        RepoPlan {
            policy: policy.into(),
            target: target.into(),
            source_repository: source,
            target_repository: dest,
            tags: vec![],
            dropped: vec![],
            referrers: vec![],
            subjects: BTreeMap::new(),
            manifests: BTreeMap::new(),
            blobs: BTreeMap::new(),
            refused_deletes: None,
            error: None,
        }
    }

    pub fn count(&self, action: TagAction) -> usize {
        self.tags.iter().filter(|t| t.action == action).count()
    }

    pub fn missing_manifests(&self) -> usize {
        self.manifests.values().filter(|m| !m.on_target).count()
    }

    pub fn missing_blobs(&self) -> impl Iterator<Item = (&Digest, &BlobPlan)> {
        self.blobs.iter().filter(|(_, b)| b.on_target != Some(true))
    }

    /// Missing blobs another repository of the target holds: mounted, not sent.
    pub fn blobs_to_mount(&self) -> usize {
        self.missing_blobs()
            .filter(|(_, b)| b.mount_from.is_some())
            .count()
    }

    pub fn bytes_to_send(&self) -> u64 {
        self.missing_blobs()
            .filter(|(_, b)| b.mount_from.is_none())
            .map(|(_, b)| b.size)
            .sum()
    }
}

/// What `plans` together would send, and how many blobs they would mount instead: a blob
/// that several repositories of one target lack is uploaded once and mounted into the rest.
pub fn sending(plans: &[RepoPlan]) -> (u64, usize) {
    let mut sent = std::collections::HashSet::new();
    let (mut bytes, mut mounts) = (0, 0);
    for p in plans {
        for (d, b) in p.missing_blobs() {
            if b.mount_from.is_some() || !sent.insert((p.target.as_str(), d)) {
                mounts += 1;
            } else {
                bytes += b.size;
            }
        }
    }
    (bytes, mounts)
}

impl fmt::Display for RepoPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // No repository was found to plan: the source itself could not be listed.
        if let Some(e @ PlanError::Listing(_)) = &self.error {
            return writeln!(f, "listing repositories for {}: error: {e}", self.target);
        }
        write!(
            f,
            "{} → {}/{}:",
            self.source_repository, self.target, self.target_repository
        )?;
        if let Some(e) = &self.error {
            return writeln!(f, " error: {e}");
        }
        let missing_blobs = self.missing_blobs().count();
        writeln!(
            f,
            " {} to create, {} to move, {} in sync, {} conflicts, {} held, {} to delete; {} manifests and {} blobs missing ({} to send{})",
            self.count(TagAction::Create),
            self.count(TagAction::Move),
            self.count(TagAction::InSync),
            self.count(TagAction::Conflict),
            self.count(TagAction::Held),
            self.count(TagAction::Delete),
            self.missing_manifests(),
            missing_blobs,
            ByteSize(self.bytes_to_send()),
            match self.blobs_to_mount() {
                0 => String::new(),
                n => format!(", {n} to mount"),
            }
        )?;
        for t in self.tags.iter().filter(|t| t.action != TagAction::InSync) {
            let what = match t.action {
                TagAction::Create => "create",
                TagAction::Move => "move",
                TagAction::Conflict => "conflict (overwrite = false)",
                TagAction::Held => "held",
                TagAction::Delete => "delete",
                TagAction::InSync => unreachable!(),
            };
            let digest = if t.action == TagAction::Delete {
                t.target_digest.as_ref().unwrap_or(&t.source_digest)
            } else {
                &t.source_digest
            };
            writeln!(
                f,
                "    {:<12} {:<30} {} {}",
                what,
                t.tag.as_str(),
                digest,
                t.reason.as_deref().unwrap_or("")
            )?;
        }
        if let Some(r) = &self.refused_deletes {
            writeln!(f, "    deletes refused: {r}")?;
        }
        const SHOWN: usize = 20;
        for d in self.dropped.iter().take(SHOWN) {
            writeln!(f, "    {:<12} {:<30} {}", "skip", d.tag.as_str(), d.reason)?;
        }
        if self.dropped.len() > SHOWN {
            writeln!(
                f,
                "    ... and {} more skipped (plan --json lists them all)",
                self.dropped.len() - SHOWN
            )?;
        }
        Ok(())
    }
}
