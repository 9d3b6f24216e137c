//! One repository's copy: for each tag to copy, its blobs, then its child manifests (each
//! after its own blobs), then the tag. Work shared by several tags is done once per run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::future::{join_all, BoxFuture};
use futures_util::{stream, FutureExt, StreamExt};
use tokio::sync::OnceCell;
use tracing::{debug, info, info_span, warn, Instrument};

use super::blob::{BlobJob, BlobOutcome};
use super::recorded::Write;
use super::{add, Copier, CopyError, Failure, Fanout, Shared, Stats, TagOutcome};
use crate::ledger::Action;
use crate::model::Digest;
use crate::plan::{RepoPlan, TagAction, TagPlan};
use crate::registry::{PulledManifest, Registry, RegistryError};
use crate::state::{Conflict, Findings, TagChange, WrittenTag};

/// How one repository copy ended.
#[derive(Debug, Default)]
pub struct RepoReport {
    pub errors: Vec<Failure>,
    /// Tags held back (with the reason), verified and copied (with what verified them), or
    /// in conflict.
    pub findings: Findings,
    pub interrupted: bool,
}

/// What was done once per run for a blob or child manifest, and how it went: every tag that
/// needs it waits for the one copy and shares its outcome.
type Memo = Mutex<HashMap<Digest, Arc<OnceCell<Result<(), Shared>>>>>;

/// One repository's copy in progress.
struct RepoCopy<'a> {
    copier: &'a Copier,
    stats: Arc<Stats>,
    plan: &'a RepoPlan,
    source: &'a Registry,
    target: &'a Registry,
    fan: &'a Arc<Fanout>,
    blobs: Memo,
    manifests: Memo,
}

fn cell(memo: &Memo, d: &Digest) -> Arc<OnceCell<Result<(), Shared>>> {
    memo.lock()
        .expect("lock poisoned")
        .entry(d.clone())
        .or_default()
        .clone()
}

impl Copier {
    /// Copy what `plan` says is missing. A failing tag is reported and the others still copy;
    /// a tag is written only after everything it references is on the target. Blobs other
    /// targets of the run also need are read through `fan`. A plan that failed is counted
    /// and reported with its error, and copies nothing.
    pub async fn copy_repo(
        &self,
        mut plan: RepoPlan,
        source: &Registry,
        target: &Registry,
        fan: &Arc<Fanout>,
    ) -> RepoReport {
        let report = match plan.error.take() {
            Some(e) => {
                self.stats(&plan.target).fail(e.kind());
                let place = format!("{} → {}", plan.source_repository, plan.target);
                RepoReport {
                    errors: vec![Failure::new(place, e)],
                    ..Default::default()
                }
            }
            None => self.copy_plan(&plan, source, target, fan).await,
        };
        fan.leave(&plan.target);
        report
    }

    async fn copy_plan(
        &self,
        plan: &RepoPlan,
        source: &Registry,
        target: &Registry,
        fan: &Arc<Fanout>,
    ) -> RepoReport {
        let mut report = RepoReport::default();
        let stats = self.stats(&plan.target);
        add(&stats.tags_in_sync, plan.count(TagAction::InSync) as u64);
        let rc = RepoCopy {
            copier: self,
            stats: stats.clone(),
            plan,
            source,
            target,
            fan,
            blobs: Memo::default(),
            manifests: Memo::default(),
        };
        for t in &plan.tags {
            match t.action {
                TagAction::Held => {
                    add(&stats.held, 1);
                    let why = t.reason.as_deref().unwrap_or("held");
                    info!(repo = %plan.target_repository, tag = %t.tag, target = %plan.target, reason = why, "tag held back");
                    report.findings.held.push(format!(
                        "{}:{} → {}: {why}",
                        plan.source_repository, t.tag, plan.target
                    ));
                }
                TagAction::Conflict => {
                    add(&stats.conflicts, 1);
                    report.findings.conflicts.push(conflict(plan, t));
                    warn!(repo = %plan.target_repository, tag = %t.tag, target = %plan.target, "tag differs on the target and overwrite = false; left as it is");
                }
                // Deletes go last, after every copy of this repository.
                TagAction::InSync | TagAction::Create | TagAction::Move | TagAction::Delete => {}
            }
        }
        // Tags at once: enough to keep the target's requests busy over a long link; shared
        // blobs and child manifests are still copied once (the memos).
        let width = (target.concurrency().1 / 4).max(1);
        // Futures made up front (they are lazy): a closure in the stream trips the compiler's
        // `Send` inference for the daemon's spawned tasks.
        let copies: Vec<_> = plan
            .tags
            .iter()
            .filter(|t| matches!(t.action, TagAction::Create | TagAction::Move))
            .map(|t| rc.copy_counted(t))
            .collect();
        let outcomes: Vec<(&TagPlan, TagOutcome)> =
            stream::iter(copies).buffer_unordered(width).collect().await;
        for (t, o) in outcomes {
            match o {
                TagOutcome::Interrupted => report.interrupted = true,
                TagOutcome::Copied => {
                    if let Some(e) = &t.verified {
                        report.findings.verified.push(format!(
                            "{}:{} → {}: {e}",
                            plan.source_repository, t.tag, plan.target
                        ));
                    }
                }
                TagOutcome::Conflict => report.findings.conflicts.push(conflict(plan, t)),
                TagOutcome::Failed(e) => {
                    let place = format!(
                        "{}:{} → {}/{}",
                        plan.source_repository, t.tag, plan.target, plan.target_repository
                    );
                    report.errors.push(Failure::new(place, e));
                }
            }
        }
        if report.interrupted {
            return report;
        }
        self.delete_gone(plan, target, &stats, &mut report).await;
        if report.interrupted {
            return report;
        }
        if let Some(r) = &plan.refused_deletes {
            let e = CopyError::DeletesRefused(r.clone());
            stats.fail(e.kind());
            let place = format!(
                "{} → {}/{}",
                plan.source_repository, plan.target, plan.target_repository
            );
            report.errors.push(Failure::new(place, e));
        }
        // Untagged referrers (signatures and the like found through the referrers API), by
        // digest, once the images they refer to are there.
        for d in &plan.referrers {
            if self.cancel.is_cancelled() {
                report.interrupted = true;
                break;
            }
            if let Err(e) = rc.ensure_child(d).await {
                stats.fail(e.kind());
                let place = format!(
                    "{}@{d} → {}/{}: referrer",
                    plan.source_repository, plan.target, plan.target_repository
                );
                report
                    .errors
                    .push(Failure::new(place, CopyError::Shared(e)));
            }
        }
        if !report.interrupted {
            match super::fallback::maintain(self, target, plan).await {
                Ok(n) => add(&stats.manifests_written, n),
                Err(e) => {
                    stats.fail(e.kind());
                    let place = format!(
                        "{} → {}/{}: referrers fallback index",
                        plan.source_repository, plan.target, plan.target_repository
                    );
                    report.errors.push(Failure::new(place, e));
                }
            }
        }
        report
    }
}

impl RepoCopy<'_> {
    /// Copy one tag and count it.
    async fn copy_counted<'t>(&self, t: &'t TagPlan) -> (&'t TagPlan, TagOutcome) {
        let (c, plan, stats) = (self.copier, self.plan, &self.stats);
        if c.cancel.is_cancelled() {
            return (t, TagOutcome::Interrupted);
        }
        let span = info_span!("tag", repo = %plan.target_repository, tag = %t.tag);
        match self.copy_tag(t).instrument(span).await {
            Ok(wrote) => {
                add(&stats.tags_copied, 1);
                add(&c.shared.progress.tags, 1);
                // The next runs trust this tag instead of asking the target (a write keeps
                // its record with its ledger entry).
                if !wrote {
                    c.state.remember_written(
                        &plan.target,
                        &plan.target_repository,
                        &t.tag,
                        &t.original,
                        &t.source_digest,
                    );
                }
                info!(repo = %plan.target_repository, tag = %t.tag, digest = %t.source_digest, target = %plan.target, "tag copied");
                (t, TagOutcome::Copied)
            }
            Err(_) if c.cancel.is_cancelled() => (t, TagOutcome::Interrupted),
            Err(CopyError::Registry(e @ RegistryError::Immutable { .. })) => {
                add(&stats.conflicts, 1);
                warn!(repo = %plan.target_repository, tag = %t.tag, target = %plan.target, error = %e, "the target refused to move an immutable tag; left as it is");
                (t, TagOutcome::Conflict)
            }
            Err(e) => {
                stats.fail(e.kind());
                (t, TagOutcome::Failed(e))
            }
        }
    }

    fn manifest(&self, digest: &Digest) -> Result<PulledManifest, CopyError> {
        let m = self.planned(digest)?;
        Ok(PulledManifest {
            digest: m.digest.clone(),
            media_type: m.media_type.clone(),
            bytes: m.bytes.clone(),
        })
    }

    /// A manifest of the plan; one that is not there is a bug, reported rather than a panic.
    fn planned(&self, digest: &Digest) -> Result<&crate::plan::ManifestPlan, CopyError> {
        self.plan
            .manifests
            .get(digest)
            .ok_or_else(|| CopyError::Protocol(format!("{digest}: not in the plan")))
    }

    /// Copy one tag's image and write the tag; whether a write was needed.
    async fn copy_tag(&self, t: &TagPlan) -> Result<bool, CopyError> {
        let root = &t.source_digest;
        self.ensure_contents(root.clone())
            .await
            .map_err(CopyError::Shared)?;
        let m = self.manifest(root)?;
        let (plan, repo) = (self.plan, &self.plan.target_repository);
        // Asked right before the write, not at planning: an equal digest writes nothing, which
        // is what a registry with immutable tags needs even for a byte-identical re-push.
        if let Some(h) = self
            .target
            .head_target_manifest(repo, t.tag.as_str())
            .await?
        {
            if h.digest == m.digest {
                return Ok(false);
            }
        }
        let write = Write {
            action: Action::Written,
            target: &plan.target,
            repository: repo,
            tag: Some(&t.tag),
            digest: &m.digest,
            source: Some((&plan.source_repository, &t.original)),
            verified: t.verified.as_ref().map(ToString::to_string),
            reason: None,
        };
        let parts = components(plan, root);
        let record = WrittenTag {
            target: &plan.target,
            repository: repo,
            tag: &t.tag,
            source: &t.original,
            target_digest: &t.source_digest,
            components: &parts,
        };
        let put = self
            .target
            .put_manifest(repo, t.tag.as_str(), &m, self.copier.gate());
        self.copier
            .recorded(write, Some(TagChange::Written(record)), put)
            .await?;
        add(&self.stats.manifests_written, 1);
        Ok(true)
    }

    /// Everything `digest` references is on the target: its blobs and child manifests.
    fn ensure_contents(&self, digest: Digest) -> BoxFuture<'_, Result<(), Shared>> {
        async move {
            let m = self.planned(&digest).map_err(Arc::new)?;
            if m.on_target {
                return Ok(());
            }
            let blobs = join_all(m.blobs.iter().map(|b| self.ensure_blob(b)));
            let children = join_all(m.children.iter().map(|c| self.ensure_child(c)));
            let (blobs, children) = futures_util::join!(blobs, children);
            blobs
                .into_iter()
                .chain(children)
                .collect::<Result<Vec<()>, Shared>>()
                .map(drop)
        }
        .boxed()
    }

    /// A child manifest (of an index) is written by digest after its own contents.
    async fn ensure_child(&self, digest: &Digest) -> Result<(), Shared> {
        let on_target = self.plan.manifests.get(digest).is_some_and(|m| m.on_target);
        if on_target {
            return Ok(());
        }
        cell(&self.manifests, digest)
            .get_or_init(|| async {
                self.ensure_contents(digest.clone()).await?;
                let m = self.manifest(digest).map_err(Arc::new)?;
                let repo = &self.plan.target_repository;
                let write = Write {
                    action: Action::Written,
                    target: &self.plan.target,
                    repository: repo,
                    tag: None,
                    digest,
                    source: Some((&self.plan.source_repository, digest)),
                    verified: None,
                    reason: None,
                };
                let put = self.target.put_manifest(repo, digest.as_str(), &m, None);
                self.copier
                    .recorded(write, None, put)
                    .await
                    .map_err(Arc::new)?;
                add(&self.stats.manifests_written, 1);
                Ok(())
            })
            .await
            .clone()
    }

    async fn ensure_blob(&self, digest: &Digest) -> Result<(), Shared> {
        cell(&self.blobs, digest)
            .get_or_init(|| async {
                self.copy_blob(digest).await.map_err(|e| {
                    Arc::new(CopyError::Blob {
                        digest: digest.clone(),
                        source: Arc::new(e),
                    })
                })
            })
            .await
            .clone()
    }

    async fn copy_blob(&self, digest: &Digest) -> Result<(), CopyError> {
        let c = self.copier;
        let (plan, target_key, dst) = (
            self.plan,
            self.plan.target.as_str(),
            &self.plan.target_repository,
        );
        let info = plan
            .blobs
            .get(digest)
            .ok_or_else(|| CopyError::Protocol("not in the plan".into()))?;
        // One copy of a digest per target at a time: a second repository waits, then mounts.
        let _held = self.fan.turn(target_key, digest).await;
        let present = match info.on_target {
            Some(p) => p,
            // The target repository had no tags, so nothing was asked; an earlier, interrupted
            // run may still have finished this blob there.
            None => {
                c.state.blob_in(target_key, dst, digest)
                    && self.target.head_blob(dst, digest).await?.is_some()
            }
        };
        if present {
            self.fan.withdraw(target_key, digest);
            add(&self.stats.blobs_skipped, 1);
            c.state.blob_known(target_key, dst, digest);
            return Ok(());
        }
        if c.cancel.is_cancelled() {
            return Err(CopyError::Interrupted);
        }
        let home = c.state.blob_home(target_key, digest, dst);
        // A mount or a saved upload needs no source read from byte 0: no fan-out for those.
        let resumes = c.state.upload(target_key, dst, digest).is_some();
        let feed = if home.is_none() && !resumes {
            self.fan.join(target_key, digest, info.size).await
        } else {
            self.fan.withdraw(target_key, digest);
            None
        };
        // A group's read holds one slot for all its members.
        let _slot = match feed {
            Some(_) => None,
            None => Some(
                c.shared
                    .blob_slots
                    .acquire()
                    .await
                    .expect("semaphore never closed"),
            ),
        };
        let short = &digest.hex()[..12];
        let bar = c
            .shared
            .progress
            .bar(|| format!("{dst}@{short} → {target_key}"), info.size);
        let job = BlobJob {
            source: self.source,
            target: self.target,
            target_key,
            src_repo: &plan.source_repository,
            dst_repo: dst,
            digest,
            size: info.size,
            chunk_size: c.shared.opts.chunk_size,
            state: &c.state,
            cancel: &c.cancel,
            retries: &self.stats.retries,
            global_limit: c.shared.bandwidth.clone(),
            progress: &c.shared.progress.bytes,
            bar: bar.as_ref().map(|g| &*g.bar),
            feed: std::sync::Mutex::new(feed),
        };
        let span = info_span!("blob", %digest, size = info.size);
        match job.run(home.as_ref()).instrument(span).await {
            Ok(outcome) => {
                match outcome {
                    BlobOutcome::Uploaded { bytes } => {
                        add(&self.stats.blobs_uploaded, 1);
                        add(&c.shared.progress.blobs, 1);
                        add(&self.stats.bytes_sent, bytes);
                        debug!(repo = %dst, %digest, bytes, "blob uploaded");
                    }
                    BlobOutcome::Mounted => {
                        add(&self.stats.blobs_mounted, 1);
                        add(&c.shared.progress.blobs, 1);
                        debug!(repo = %dst, %digest, from = ?home, "blob mounted");
                    }
                    BlobOutcome::AlreadyThere => add(&self.stats.blobs_skipped, 1),
                }
                c.state.blob_known(target_key, dst, digest);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

fn conflict(plan: &RepoPlan, t: &TagPlan) -> Conflict {
    Conflict {
        target: plan.target.clone(),
        repository: plan.target_repository.to_string(),
        tag: t.tag.to_string(),
        source_digest: t.source_digest.to_string(),
        target_digest: t.target_digest.as_ref().map(ToString::to_string),
    }
}

/// Every digest of the image at `root`: its manifests, configs and layers, read from the
/// manifests' own bytes (a manifest already on the target carries no lists in the plan).
/// Children the plan did not fetch (an index already on the target) add only themselves.
fn components(plan: &RepoPlan, root: &Digest) -> Vec<Digest> {
    let mut out = std::collections::BTreeSet::new();
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        if !out.insert(d.clone()) {
            continue;
        }
        let Some(m) = plan.manifests.get(&d).filter(|m| !m.bytes.is_empty()) else {
            continue;
        };
        if let Ok(refs) = crate::model::manifest_references(&m.media_type, &m.bytes) {
            out.extend(refs.blobs.into_iter().map(|(b, _)| b));
            stack.extend(refs.manifests.into_iter().map(|(c, _)| c));
        }
    }
    out.into_iter().collect()
}
