//! Read both sides of one repository and build its plan. The only I/O in `plan`.
//!
//! Request budget: an unchanged tag costs one HEAD per side. A tag missing on the target
//! costs one GET on the source (its digest comes from the body) and nothing on the target
//! when the target repository has no tags at all.

use std::collections::{BTreeSet, HashMap, HashSet};

use futures_util::{stream, StreamExt, TryStreamExt};

use super::reads::SourceReads;
use super::referrers;
use super::rules::{self, Ctx, Resolved};
use super::{
    filter_tags, keep_latest, needs_created, tag_action, BlobPlan, DroppedTag, ManifestPlan,
    Memory, PlanError, RepoPlan, RunOptions, Scope, TagAction, TagPlan,
};
use crate::config::Policy;
use crate::model::{manifest_references, Digest, RepoName, Tag};
use crate::registry::{PulledManifest, Registry, RegistryError};
use crate::verify::Evidence;

/// Requests in flight per repository while planning: as many as the registries asked may
/// take at once (each one's adaptive limit then decides how many really go).
fn width(registries: &[&Registry]) -> usize {
    registries
        .iter()
        .map(|r| r.concurrency().1)
        .max()
        .unwrap_or(1)
}
/// Manifests one repository plan may hold; a bound against a hostile index of indexes.
const MAX_MANIFESTS: usize = 20_000;
/// Index levels below a tag: real images have one (an index of platform manifests) or two
/// (attestations); the copy walks them recursively, so depth must be bounded.
const MAX_DEPTH: usize = 8;
/// Children of one index: a multi-platform image has a few dozen at most (platforms and their
/// attestations); thousands are a hostile index, refused before any of them is fetched.
const MAX_CHILDREN: usize = 1024;

/// The source repositories a policy names: exact names, plus catalog entries matching a glob.
///
/// # Errors
/// When the catalog is needed and the source refuses it.
pub async fn select_repositories(
    policy: &Policy,
    source: &Registry,
) -> Result<Vec<RepoName>, RegistryError> {
    let sel = &policy.repositories;
    let mut out: BTreeSet<RepoName> = sel
        .exact
        .iter()
        .filter(|r| !sel.excluded(r.as_str()))
        .cloned()
        .collect();
    if sel.needs_catalog() {
        out.extend(
            source
                .catalog()
                .await?
                .into_iter()
                .filter(|r| sel.matches_glob(r.as_str())),
        );
    }
    Ok(out.into_iter().collect())
}

/// Plan one repository for one target, within `scope`. Never fails: a repository that
/// cannot be read gets a plan with `error` set, so the other repositories still run.
#[allow(clippy::too_many_arguments)]
pub async fn plan_repo(
    policy: &Policy,
    target_key: &str,
    source: &SourceReads<'_>,
    target: &Registry,
    repo: &RepoName,
    memory: &dyn Memory,
    opts: RunOptions,
    scope: &Scope,
) -> RepoPlan {
    let dest = match policy.target_repo(repo) {
        Ok(d) => d,
        Err(e) => {
            let mut p = RepoPlan::empty(&policy.name, target_key, repo.clone(), repo.clone());
            p.error = Some(PlanError::Template(e));
            return p;
        }
    };
    let mut plan = RepoPlan::empty(&policy.name, target_key, repo.clone(), dest.clone());
    let ctx = Ctx {
        policy,
        source,
        target,
        src: repo.clone(),
        dest,
        memory,
        target_key,
        opts,
        scope,
    };
    if let Err(e) = fill(&mut plan, &ctx).await {
        plan.tags.clear();
        plan.manifests.clear();
        plan.blobs.clear();
        plan.error = Some(e);
    }
    plan
}

async fn fill(plan: &mut RepoPlan, ctx: &Ctx<'_>) -> Result<(), PlanError> {
    let (policy, source, target) = (ctx.policy, ctx.source, ctx.target);
    let (src, dest) = (
        plan.source_repository.clone(),
        plan.target_repository.clone(),
    );
    let listed = source.tags(&src).await?;
    let src_tags = match (listed, ctx.scope) {
        // The listing may be ahead of the tag (its folder is there, its link not yet) or
        // behind it: ask for the tag itself.
        (listed, Scope::Tag(t)) => {
            let mut tags: Vec<Tag> = listed
                .unwrap_or_default()
                .into_iter()
                .filter(|l| l != t)
                .collect();
            if pushed_tag_appears(source.registry(), &src, t).await? {
                tags.push(t.clone());
            }
            tags
        }
        (listed, _) => listed.ok_or_else(|| PlanError::NotFound {
            repo: src.clone(),
            registry: source.name().to_owned(),
        })?,
    };
    let (kept, mut dropped) = filter_tags(&src_tags, &policy.tags);
    let created = if needs_created(&kept, &policy.tags) {
        creation_times(source, &src, &kept).await
    } else {
        Default::default()
    };
    let (mut wanted, older) = keep_latest(kept, &policy.tags, &created);
    dropped.extend(older);
    // A targeted run: the whole tag list still went through the rules above (latest N needs
    // it), and only the one tag goes on.
    match &ctx.scope {
        Scope::All => {}
        Scope::Tag(t) => {
            wanted.retain(|w| w == t);
            dropped.retain(|d| &d.tag == t);
        }
        Scope::Deleted(_) => {
            wanted.clear();
            dropped.clear();
        }
    }
    // What `prune` removes from the target: tags the rules leave out (a targeted run
    // prunes nothing: `Scope::Tag` never reaches the deletes).
    let prunable: HashMap<Tag, String> = if policy.prune {
        dropped
            .iter()
            .map(|d| (d.tag.clone(), d.reason.clone()))
            .collect()
    } else {
        HashMap::new()
    };
    plan.dropped = dropped;
    let dst_tags: HashSet<Tag> = target
        .tags(&dest)
        .await?
        .unwrap_or_default()
        .into_iter()
        .collect();
    let repo_absent = dst_tags.is_empty();
    if ctx.scope == &Scope::All {
        // A tag gone from the target (deleted, or the target wiped) is never trusted again.
        ctx.memory
            .forget_written_except(ctx.target_key, &dest, &dst_tags);
    }

    if policy.require.any() {
        // Under a gate, signature and referrer tags are not images to promote: they travel
        // only with the images they belong to (below).
        wanted.retain(|t| !referrers::is_referrer_shaped(t.as_str()));
    } else if policy.referrers {
        // A fallback index is the target's own to keep (the copy does), never the source's
        // bytes.
        wanted.retain(|t| !referrers::is_fallback_tag(t.as_str()));
    }
    let mut resolved = resolve(ctx, &dst_tags, wanted).await?;
    if !policy.platforms.is_empty() {
        let mut kept = Vec::new();
        for mut r in resolved {
            match rules::filter_platforms(ctx, &mut r).await? {
                None => kept.push(r),
                Some(reason) => plan.dropped.push(DroppedTag { tag: r.tag, reason }),
            }
        }
        resolved = kept;
    }
    let mut held: HashMap<Tag, String> = HashMap::new();
    let mut verified: HashMap<Tag, Evidence> = HashMap::new();
    if policy.require.any() {
        for r in &resolved {
            if tag_action(&r.source, r.target.as_ref(), policy.overwrite).copies() {
                match rules::gate(ctx, &src_tags, r).await? {
                    Err(reason) => drop(held.insert(r.tag.clone(), reason)),
                    Ok(Some(e)) => drop(verified.insert(r.tag.clone(), e)),
                    Ok(None) => {}
                }
            }
        }
    }
    // Under a gate, signatures come along with the images promoted (their tags were set
    // aside above).
    if policy.referrers || policy.require.any() {
        // Signatures, SBOMs and attestations of every image copied come along, whatever the
        // tag rules say: tag schemes first (all registries), then the OCI 1.1 API.
        // Only images the target gets (or has): never those held back or in conflict.
        let mut subjects: Vec<Digest> = Vec::new();
        for r in resolved.iter().filter(|r| {
            !held.contains_key(&r.tag)
                && tag_action(&r.source, r.target.as_ref(), policy.overwrite) != TagAction::Conflict
        }) {
            subjects.push(r.original.clone());
            // A filtered index is a new digest nobody signed; its kept children are the
            // source's own images, so their signatures (`cosign sign --recursive`) come
            // along for consumers verifying on the target. A dropped child's do not.
            if let Some(m) = r.pulled.as_ref().filter(|_| r.source != r.original) {
                if let Ok(refs) = manifest_references(&m.media_type, &m.bytes) {
                    subjects.extend(refs.manifests.into_iter().map(|(d, _)| d));
                }
            }
        }
        let have: HashSet<Tag> = resolved.iter().map(|r| r.tag.clone()).collect();
        let extra: Vec<Tag> = src_tags
            .iter()
            .filter(|t| {
                !have.contains(*t)
                    && !referrers::is_fallback_tag(t.as_str())
                    && subjects.iter().any(|d| is_referrer_tag(t.as_str(), d))
            })
            .cloned()
            .collect();
        plan.dropped.retain(|d| !extra.contains(&d.tag));
        resolved.extend(resolve(ctx, &dst_tags, extra).await?);
        for d in &subjects {
            for r in referrers::of(source, &src, d, &src_tags).await? {
                if !plan.referrers.contains(&r) {
                    plan.subjects.insert(r.clone(), d.clone());
                    plan.referrers.push(r);
                }
            }
        }
    }
    resolved.sort_by(|a, b| a.tag.cmp(&b.tag));
    let known: HashMap<Tag, Digest> = resolved
        .iter()
        .filter_map(|r| r.target.clone().map(|d| (r.tag.clone(), d)))
        .collect();
    for r in resolved {
        let mut action = tag_action(&r.source, r.target.as_ref(), policy.overwrite);
        let mut reason = r.note;
        let verified = verified.remove(&r.tag);
        if let Some(why) = held.remove(&r.tag) {
            action = TagAction::Held;
            reason = Some(why);
        }
        if action.copies() {
            add_tree(
                plan,
                source,
                target,
                repo_absent,
                r.source.clone(),
                r.pulled,
            )
            .await?;
        }
        plan.tags.push(TagPlan {
            tag: r.tag,
            action,
            source_digest: r.source,
            target_digest: r.target,
            reason,
            verified,
            original: r.original,
            shared_with: None,
        });
    }
    if (policy.delete || policy.prune) && !matches!(ctx.scope, Scope::Tag(_)) {
        rules::plan_deletes(ctx, plan, &src_tags, &dst_tags, &known, &prunable).await?;
    }
    for d in plan.referrers.clone() {
        add_tree(plan, source, target, repo_absent, d, None).await?;
    }

    if !repo_absent {
        let unknown: Vec<Digest> = plan
            .blobs
            .iter()
            .filter(|(_, b)| b.on_target.is_none())
            .map(|(d, _)| d.clone())
            .collect();
        let found: Vec<(Digest, bool)> = stream::iter(unknown)
            .map(|d| {
                let dest = &dest;
                async move { target.head_blob(dest, &d).await.map(|s| (d, s.is_some())) }
            })
            .buffer_unordered(width(&[target]))
            .try_collect()
            .await?;
        for (d, present) in found {
            plan.blobs.get_mut(&d).expect("planned").on_target = Some(present);
        }
    }
    for (d, b) in plan.blobs.iter_mut() {
        if b.on_target != Some(true) {
            b.mount_from = ctx.memory.blob_home(ctx.target_key, d, &dest);
        }
    }
    Ok(())
}

/// Distribution sends a push event before it links the tag (manifest stored, event queued,
/// then the tag's folder and link written), so a targeted run can come a moment too early.
/// Ask for the tag itself a few times, about a second and a half in all; a tag that never
/// shows up (a forged event, or deleted at once) is not there to copy.
async fn pushed_tag_appears(
    source: &Registry,
    repo: &RepoName,
    tag: &Tag,
) -> Result<bool, PlanError> {
    for wait_ms in [0, 50, 100, 200, 400, 800] {
        tokio::time::sleep(std::time::Duration::from_millis(wait_ms)).await;
        if source.head_manifest(repo, tag.as_str()).await?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Resolve tags to digests on both sides. A tag on both costs one HEAD on the source, and
/// one on the target unless ferry wrote or checked that target tag, for the same source
/// digest, less than `verify_interval` ago. A tag the target lacks costs one GET on the
/// source (its digest comes from the body). A tag gone from the source since the listing is
/// left out.
async fn resolve(
    ctx: &Ctx<'_>,
    dst_tags: &HashSet<Tag>,
    tags: Vec<Tag>,
) -> Result<Vec<Resolved>, PlanError> {
    let (source, target, src, dest) = (ctx.source, ctx.target, &ctx.src, &ctx.dest);
    let fresh_ms = if ctx.opts.verify {
        0
    } else {
        ctx.policy.verify_interval.as_millis() as u64
    };
    let now = crate::model::now_ms();
    let resolved: Vec<Option<Resolved>> = stream::iter(tags)
        .map(|tag| async move {
            let found =
                |source: Digest, target: Option<Digest>, pulled: Option<PulledManifest>| Resolved {
                    tag: tag.clone(),
                    original: source.clone(),
                    source,
                    target,
                    pulled,
                    note: None,
                };
            if !dst_tags.contains(&tag) {
                let m = source.get_manifest(src, tag.as_str()).await?;
                return Ok::<_, RegistryError>(m.map(|m| found(m.digest.clone(), None, Some(m))));
            }
            let trusted = ctx
                .memory
                .written(ctx.target_key, dest, &tag)
                .filter(|(_, _, at)| now.saturating_sub(*at) < fresh_ms);
            let (s, t) = match trusted {
                Some((was, wrote, _)) => {
                    let Some(s) = source.head_manifest(src, tag.as_str()).await? else {
                        return Ok(None);
                    };
                    if s.digest == was {
                        return Ok(Some(found(s.digest, Some(wrote), None)));
                    }
                    (
                        Some(s),
                        target.head_target_manifest(dest, tag.as_str()).await?,
                    )
                }
                None => {
                    let (s, t) = tokio::join!(
                        source.head_manifest(src, tag.as_str()),
                        target.head_target_manifest(dest, tag.as_str())
                    );
                    (s?, t?)
                }
            };
            let Some(s) = s else { return Ok(None) };
            if let Some(t) = &t {
                ctx.memory
                    .remember_written(ctx.target_key, dest, &tag, &s.digest, &t.digest);
            }
            Ok(Some(found(s.digest, t.map(|t| t.digest), None)))
        })
        .buffered(width(&[source.registry(), target]))
        .try_collect()
        .await?;
    Ok(resolved.into_iter().flatten().collect())
}

/// `sha256-<hex>` (the OCI referrers tag schema) and cosign's `sha256-<hex>.sig`, `.att`
/// and `.sbom` name artifacts about the image with digest `d`.
pub fn is_referrer_tag(tag: &str, d: &Digest) -> bool {
    let base = format!("sha256-{}", d.hex());
    tag == base
        || [".sig", ".att", ".sbom"]
            .iter()
            .any(|s| tag.strip_prefix(base.as_str()) == Some(s))
}

/// When each tag's image was built (its config's `created`), for `tags.latest` over
/// non-semver tags. A tag whose time cannot be read counts as oldest.
async fn creation_times(
    source: &SourceReads<'_>,
    repo: &RepoName,
    tags: &[Tag],
) -> std::collections::HashMap<Tag, i64> {
    stream::iter(tags.iter().cloned())
        .map(|tag| async move {
            let created = image_created(source, repo, tag.as_str()).await;
            created.map(|c| (tag, c))
        })
        .buffer_unordered(width(&[source.registry()]))
        .filter_map(|x| async move { x })
        .collect()
        .await
}

async fn image_created(source: &SourceReads<'_>, repo: &RepoName, reference: &str) -> Option<i64> {
    let mut m = source.get_manifest(repo, reference).await.ok()??;
    if let Ok(refs) = manifest_references(&m.media_type, &m.bytes) {
        if let Some((child, _)) = refs.manifests.first() {
            m = source.get_manifest(repo, child.as_str()).await.ok()??; // an index: its first image
        }
    }
    let config = manifest_references(&m.media_type, &m.bytes)
        .ok()?
        .blobs
        .into_iter()
        .next()?
        .0;
    let body = source.get_small_blob(repo, &config, 1 << 20).await.ok()?;
    let created = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()?
        .get("created")?
        .as_str()?
        .to_owned();
    chrono::DateTime::parse_from_rfc3339(&created)
        .ok()
        .map(|t| t.timestamp())
}

/// Add a manifest and everything below it to the plan. A manifest already on the target
/// (by digest) is not descended into: the registry checked its references when it took it.
async fn add_tree(
    plan: &mut RepoPlan,
    source: &SourceReads<'_>,
    target: &Registry,
    repo_absent: bool,
    root: Digest,
    pulled: Option<PulledManifest>,
) -> Result<(), PlanError> {
    let (src, dest) = (
        plan.source_repository.clone(),
        plan.target_repository.clone(),
    );
    let mut queue = vec![(root, pulled, 0usize)];
    while let Some((digest, pulled, depth)) = queue.pop() {
        let is_root = depth == 0;
        if plan.manifests.contains_key(&digest) {
            continue;
        }
        if depth > MAX_DEPTH {
            return Err(PlanError::TooLarge {
                repo: src,
                digest,
                what: format!("indexes nested more than {MAX_DEPTH} deep"),
            });
        }
        if plan.manifests.len() >= MAX_MANIFESTS {
            return Err(PlanError::TooManyManifests(MAX_MANIFESTS));
        }
        let on_target = !repo_absent
            && target
                .head_target_manifest(&dest, digest.as_str())
                .await?
                .is_some();
        if on_target && !is_root {
            plan.manifests.insert(
                digest.clone(),
                ManifestPlan {
                    digest,
                    media_type: String::new(),
                    size: 0,
                    children: vec![],
                    blobs: vec![],
                    on_target,
                    bytes: Default::default(),
                },
            );
            continue;
        }
        // The root's bytes are needed even when it is on the target: the tag is written with them.
        let m = match pulled {
            Some(m) => m,
            None => source
                .get_manifest(&src, digest.as_str())
                .await?
                .ok_or_else(|| PlanError::Missing {
                    repo: src.clone(),
                    digest: digest.clone(),
                    registry: source.name().to_owned(),
                })?,
        };
        let refs = if on_target {
            Default::default()
        } else {
            manifest_references(&m.media_type, &m.bytes).map_err(|reason| PlanError::Manifest {
                repo: src.clone(),
                digest: digest.clone(),
                reason,
            })?
        };
        if refs.manifests.len() > MAX_CHILDREN {
            return Err(PlanError::TooLarge {
                what: format!(
                    "index lists {} manifests, more than {MAX_CHILDREN}",
                    refs.manifests.len()
                ),
                repo: src,
                digest,
            });
        }
        for (child, _) in &refs.manifests {
            queue.push((child.clone(), None, depth + 1));
        }
        for (blob, size) in &refs.blobs {
            plan.blobs.entry(blob.clone()).or_insert(BlobPlan {
                size: *size,
                on_target: None,
                mount_from: None,
            });
        }
        plan.manifests.insert(
            digest.clone(),
            ManifestPlan {
                digest,
                size: m.bytes.len() as u64,
                media_type: m.media_type,
                children: refs.manifests.into_iter().map(|(d, _)| d).collect(),
                blobs: refs.blobs.into_iter().map(|(d, _)| d).collect(),
                on_target,
                bytes: m.bytes,
            },
        );
    }
    Ok(())
}
