//! Deleting target tags gone from the source. By tag where the registry can (only that tag
//! goes: Distribution 3, GitLab, Quay, layouts), else by digest, which takes every tag of the
//! manifest and so is never done for a manifest a kept tag still points at.
//!
//! A registry that takes `DELETE manifests/<tag>` may still delete the manifest rather than
//! the tag. The first such delete of a manifest a kept tag shares is therefore checked, and
//! undone (the kept tag put back from the bytes read before) if the kept tag went too.

use std::collections::HashMap;
use std::sync::Mutex;

use tracing::{info, warn};

use super::recorded::Write;
use super::{add, Copier, CopyError, Failure, RepoReport, Stats};
use crate::ledger::Action;
use crate::model::Tag;
use crate::plan::{RepoPlan, TagAction, TagPlan};
use crate::registry::{Registry, RegistryError, TagDelete};
use crate::state::TagChange;

/// What a run learnt about each target's deletes, so each is found out once per run.
#[derive(Default)]
pub(super) struct DeleteWays(Mutex<HashMap<String, Way>>);

#[derive(Clone, Copy, Default, PartialEq)]
struct Way {
    /// `None`: not tried yet.
    by_tag: Option<bool>,
    /// The registry deletes nothing (reported once).
    none: bool,
}

impl DeleteWays {
    fn get(&self, target: &str) -> Way {
        self.0
            .lock()
            .expect("lock poisoned")
            .get(target)
            .copied()
            .unwrap_or_default()
    }

    fn set(&self, target: &str, f: impl FnOnce(&mut Way)) {
        f(self
            .0
            .lock()
            .expect("lock poisoned")
            .entry(target.to_owned())
            .or_default());
    }
}

enum Done {
    Deleted,
    /// Left in place: its manifest is shared and the registry deletes manifests only.
    Kept,
    /// The registry deletes nothing; already reported this run.
    Refused,
}

impl Copier {
    /// Delete the plan's `Delete` tags, after every copy of the repository.
    pub(super) async fn delete_gone(
        &self,
        plan: &RepoPlan,
        target: &Registry,
        stats: &Stats,
        report: &mut RepoReport,
    ) {
        for t in plan.tags.iter().filter(|t| t.action == TagAction::Delete) {
            if self.cancel.is_cancelled() {
                report.interrupted = true;
                return;
            }
            match self.delete_one(plan, target, t).await {
                Ok(Done::Deleted) => {
                    add(&stats.deleted, 1);
                    info!(repo = %plan.target_repository, tag = %t.tag, digest = %t.source_digest, target = %plan.target, "tag deleted (gone from the source)");
                }
                Ok(Done::Kept) => {
                    let kept = t.shared_with.as_ref().map_or("", |k| k.as_str());
                    warn!(repo = %plan.target_repository, tag = %t.tag, target = %plan.target, kept, "not deleted: its manifest is shared with a kept tag, and this registry deletes manifests, not tags");
                }
                Ok(Done::Refused) => {}
                Err(e @ CopyError::Registry(RegistryError::Fenced { .. })) => {
                    report.interrupted = true;
                    report.errors.push(Failure::new("", e));
                    return;
                }
                Err(e) => {
                    stats.fail(e.kind());
                    let place = format!(
                        "{}:{} → {}: delete",
                        plan.target_repository, t.tag, plan.target
                    );
                    report.errors.push(Failure::new(place, e));
                }
            }
        }
    }

    async fn delete_one(
        &self,
        plan: &RepoPlan,
        target: &Registry,
        t: &TagPlan,
    ) -> Result<Done, CopyError> {
        let (key, repo) = (plan.target.as_str(), &plan.target_repository);
        let way = self.deletes.get(key);
        if way.none {
            return Ok(Done::Refused);
        }
        if way.by_tag != Some(false) {
            // Bytes to put the kept tag back with, should this registry's tag delete turn
            // out to delete the manifest.
            let keep = match (&t.shared_with, way.by_tag) {
                (Some(k), None) => target
                    .get_manifest(repo, t.source_digest.as_str())
                    .await?
                    .map(|m| (k, m)),
                _ => None,
            };
            let delete = target.delete_tag(repo, &t.tag, self.gate());
            let made = |d: &TagDelete| matches!(d, TagDelete::Deleted);
            match self
                .recorded_if(deleted(plan, t, Some(&t.tag)), gone(plan, t), delete, made)
                .await?
            {
                TagDelete::NotByTag => self.deletes.set(key, |w| w.by_tag = Some(false)),
                TagDelete::Deleted => {
                    if let Some((kept, m)) = keep {
                        let still = target.head_target_manifest(repo, kept.as_str()).await?;
                        if still.is_none_or(|h| h.digest != t.source_digest) {
                            let write = Write {
                                action: Action::Written,
                                target: key,
                                repository: repo,
                                tag: Some(kept),
                                digest: &m.digest,
                                source: None,
                                verified: None,
                                reason: Some(format!(
                                    "put back: deleting tag {} deleted its manifest",
                                    t.tag
                                )),
                            };
                            let put = target.put_manifest(repo, kept.as_str(), &m, self.gate());
                            self.recorded(write, None, put).await?;
                            self.deletes.set(key, |w| w.by_tag = Some(false));
                            return Err(CopyError::Protocol(format!(
                                "{key}: deleting tag {} deleted its manifest, and kept tag {kept} with it; {kept} was put back, and this run deletes only by digest on {key}",
                                t.tag
                            )));
                        }
                    }
                    self.deletes.set(key, |w| w.by_tag = Some(true));
                    return Ok(Done::Deleted);
                }
            }
        }
        if t.shared_with.is_some() {
            return Ok(Done::Kept);
        }
        let delete = target.delete_manifest(repo, &t.source_digest, self.gate());
        match self
            .recorded(deleted(plan, t, None), gone(plan, t), delete)
            .await
        {
            Ok(()) => Ok(Done::Deleted),
            Err(e @ CopyError::Registry(RegistryError::NoDeletes { .. })) => {
                // Once per target and run, not once per tag.
                self.deletes.set(key, |w| w.none = true);
                Err(e)
            }
            Err(e) => Err(e),
        }
    }
}

/// What deleting `t` changes in the store: its `written` record and exposure go.
fn gone<'a>(plan: &'a RepoPlan, t: &'a TagPlan) -> Option<TagChange<'a>> {
    Some(TagChange::Deleted {
        target: &plan.target,
        repository: &plan.target_repository,
        tag: &t.tag,
    })
}

/// The ledger's account of deleting `t` (by tag, or its manifest by digest).
fn deleted<'a>(plan: &'a RepoPlan, t: &'a TagPlan, tag: Option<&'a Tag>) -> Write<'a> {
    Write {
        action: Action::Deleted,
        target: &plan.target,
        repository: &plan.target_repository,
        tag,
        digest: &t.source_digest,
        source: None,
        verified: None,
        reason: Some(
            t.reason
                .clone()
                .unwrap_or_else(|| format!("tag {} gone from the source", t.tag)),
        ),
    }
}
