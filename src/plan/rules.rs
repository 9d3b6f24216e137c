//! Policy rules that need to read registries: platform filtering of indexes, promotion
//! gates, and which target tags to delete (within the safety limits).

use std::collections::{HashMap, HashSet};

use super::attestations;
use super::reads::SourceReads;
use super::signatures;
use super::{filter_index, Memory, PlanError, RepoPlan, RunOptions, Scope, TagAction, TagPlan};
use crate::config::Policy;
use crate::model::{
    manifest_kind, manifest_references, now_ms, Digest, ManifestKind, RepoName, Tag,
};
use crate::registry::{PulledManifest, Registry};
use crate::verify::Evidence;

/// What planning one repository works with.
pub(super) struct Ctx<'a> {
    pub policy: &'a Policy,
    pub source: &'a SourceReads<'a>,
    pub target: &'a Registry,
    pub src: RepoName,
    pub dest: RepoName,
    pub memory: &'a dyn Memory,
    /// The target's key in the config (state records are kept per target).
    pub target_key: &'a str,
    pub opts: RunOptions,
    pub scope: &'a Scope,
}

/// A source tag resolved to its digest on both sides.
pub(super) struct Resolved {
    pub tag: Tag,
    /// What the target should hold: the source digest, or the filtered index's.
    pub source: Digest,
    /// The digest the source tag points at (signatures and gates refer to it).
    pub original: Digest,
    pub target: Option<Digest>,
    pub pulled: Option<PulledManifest>,
    pub note: Option<String>,
}

/// A manifest of `ctx.src` whose content cannot be read as one.
fn bad(ctx: &Ctx<'_>, digest: &Digest) -> impl Fn(crate::model::Invalid) -> PlanError {
    let (repo, digest) = (ctx.src.clone(), digest.clone());
    move |reason| PlanError::Manifest {
        repo: repo.clone(),
        digest: digest.clone(),
        reason,
    }
}

/// Replace a multi-arch index by one holding only the wanted platforms. The filtered digest
/// is remembered, so a tag already in sync costs no GET on later runs.
pub(super) async fn filter_platforms(
    ctx: &Ctx<'_>,
    r: &mut Resolved,
) -> Result<Option<String>, PlanError> {
    let wanted = &ctx.policy.platforms;
    let names: Vec<String> = wanted.iter().map(ToString::to_string).collect();
    let key = format!("{}|{}", r.original, names.join(","));
    if r.pulled.is_none() {
        if r.target.as_ref() == Some(&r.source) {
            return Ok(None); // the target holds exactly the source's index
        }
        if let Some(f) = ctx.memory.filtered(&key) {
            if r.target.as_ref() == Some(&f) {
                r.note = Some(format!(
                    "index filtered to {} from {}",
                    names.join(", "),
                    r.original
                ));
                r.source = f;
                return Ok(None);
            }
        }
        r.pulled = ctx
            .source
            .get_manifest(&ctx.src, r.original.as_str())
            .await?;
    }
    let Some(m) = r.pulled.as_ref() else {
        return Ok(None);
    };
    if manifest_kind(&m.media_type).map_err(bad(ctx, &m.digest))? != ManifestKind::Index {
        return Ok(None);
    }
    match filter_index(&m.bytes, wanted) {
        Ok(None) => Ok(None),
        Ok(Some(bytes)) => {
            let digest = Digest::of(&bytes);
            ctx.memory.remember_filtered(&key, &digest);
            r.note = Some(format!(
                "index filtered to {} from {}",
                names.join(", "),
                r.original
            ));
            r.pulled = Some(PulledManifest {
                digest: digest.clone(),
                media_type: m.media_type.clone(),
                bytes: bytes.into(),
            });
            r.source = digest;
            Ok(None)
        }
        Err(e) => Ok(Some(e)),
    }
}

/// The first promotion gate `r` fails, as a reason (`Err`); else what verified its
/// signature, if a signature was required. `min_age` is checked first, so the time a tag is
/// first seen is recorded on every run.
pub(super) async fn gate(
    ctx: &Ctx<'_>,
    src_tags: &[Tag],
    r: &Resolved,
) -> Result<Result<Option<Evidence>, String>, PlanError> {
    let req = &ctx.policy.require;
    if let Some(min) = req.min_age {
        let seen = ctx.memory.first_seen(&format!(
            "{}/{}:{}@{}",
            ctx.source.name(),
            ctx.src,
            r.tag,
            r.original
        ));
        let age = now_ms().saturating_sub(seen) / 1000;
        if age < min.as_secs() {
            return Ok(Err(format!(
                "first seen {age}s ago at this digest; require.min_age is {}s",
                min.as_secs()
            )));
        }
    }
    let evidence = match signed(ctx, src_tags, r).await? {
        Ok(e) => e,
        Err(reason) => return Ok(Err(reason)),
    };
    if !req.annotations.is_empty() {
        let found = annotations(ctx, r).await?;
        for (k, want) in &req.annotations {
            match found.get(k) {
                Some(v) if v == want => {}
                Some(v) => {
                    return Ok(Err(format!(
                        "annotation {k} is {v:?}, require.annotations wants {want:?}"
                    )))
                }
                None => return Ok(Err(format!("no annotation {k} (require.annotations)"))),
            }
        }
    }
    Ok(Ok(evidence))
}

/// The signature and attestation gates: what verified `r.original`, read from the record of
/// an earlier verification under the same trust when it is younger than `verify_interval`
/// (a no-op run reads no signatures; a changed key, signer or root re-verifies).
async fn signed(
    ctx: &Ctx<'_>,
    src_tags: &[Tag],
    r: &Resolved,
) -> Result<Result<Option<Evidence>, String>, PlanError> {
    let req = &ctx.policy.require;
    if !req.signature.any() && req.attestations.is_empty() {
        return Ok(Ok(None));
    }
    let key = format!(
        "{}/{}@{}#{}",
        ctx.source.name(),
        ctx.src,
        r.original,
        req.fingerprint()
    );
    if let Some((e, at)) = ctx.memory.verified(&key) {
        if now_ms().saturating_sub(at) < ctx.policy.verify_interval.as_millis() as u64 {
            return Ok(Ok(Some(e)));
        }
    }
    let mut evidence = None;
    if req.signature.any() {
        // The digest the source tag points at: for a filtered index, the original.
        let trust = &req.signature;
        match signatures::verified(ctx.source, &ctx.src, src_tags, &r.original, trust).await? {
            Ok(e) => evidence = Some(e),
            Err(reason) => return Ok(Err(reason)),
        }
    }
    for rule in &req.attestations {
        let found =
            attestations::attested(ctx.source, &ctx.src, src_tags, &r.original, rule).await?;
        match found {
            Ok(e) => {
                evidence.get_or_insert(e);
            }
            Err(reason) => return Ok(Err(reason)),
        }
    }
    if let Some(e) = &evidence {
        ctx.memory.remember_verified(&key, e);
    }
    Ok(Ok(evidence))
}

/// The manifest's annotations; for an image, its config's labels fill in the rest (builders
/// put `org.opencontainers.image.*` in either place).
async fn annotations(ctx: &Ctx<'_>, r: &Resolved) -> Result<HashMap<String, String>, PlanError> {
    // The bytes resolved for a tag missing on the target are the source's own (unless a
    // platform filter replaced them): no second GET for those.
    let m = match r.pulled.as_ref().filter(|m| m.digest == r.original) {
        Some(m) => m.clone(),
        None => match ctx
            .source
            .get_manifest(&ctx.src, r.original.as_str())
            .await?
        {
            Some(m) => m,
            None => return Ok(HashMap::new()),
        },
    };
    let unreadable = |what: &str, e: serde_json::Error| {
        PlanError::Gate(format!("{}@{}: {what}: {e}", ctx.src, m.digest))
    };
    let json: serde_json::Value =
        serde_json::from_slice(&m.bytes).map_err(|e| unreadable("manifest", e))?;
    let strings = |v: Option<&serde_json::Value>| -> HashMap<String, String> {
        v.and_then(|v| v.as_object())
            .map(|o| {
                o.iter()
                    .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned())))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = strings(json.get("annotations"));
    if manifest_kind(&m.media_type).map_err(bad(ctx, &m.digest))? == ManifestKind::Image {
        if let Some((config, _)) = manifest_references(&m.media_type, &m.bytes)
            .map_err(bad(ctx, &m.digest))?
            .blobs
            .first()
        {
            let body = ctx.source.get_small_blob(&ctx.src, config, 1 << 20).await?;
            let cfg: serde_json::Value =
                serde_json::from_slice(&body).map_err(|e| unreadable("image config", e))?;
            for (k, v) in strings(cfg.pointer("/config/Labels")) {
                out.entry(k).or_insert(v);
            }
        }
    }
    Ok(out)
}

/// Plan deleting target tags gone from the source (`delete`) and those the tag rules exclude
/// (`prune`; `prunable` holds the source's, with why): never when the source listed nothing,
/// never more than `max_delete` together unless forced. Signature and referrer tags are never
/// pruned: they travel with their images, not by the rules. A tag whose manifest a kept tag
/// shares is marked so: the copy deletes it only where the registry deletes tags, not manifests.
pub(super) async fn plan_deletes(
    ctx: &Ctx<'_>,
    plan: &mut RepoPlan,
    src_tags: &[Tag],
    dst_tags: &HashSet<Tag>,
    known: &HashMap<Tag, Digest>,
    prunable: &HashMap<Tag, String>,
) -> Result<(), PlanError> {
    let src: HashSet<&Tag> = src_tags.iter().collect();
    let mut gone: Vec<Tag> = dst_tags
        .iter()
        .filter(|t| ctx.policy.delete && !src.contains(t))
        .cloned()
        .collect();
    gone.sort();
    if let Scope::Deleted(only) = ctx.scope {
        // A delete event: only tags the source itself says are gone, asked now, one by one.
        // A forged event for a tag still on the source deletes nothing.
        gone.retain(|t| only.as_ref().is_none_or(|o| o == t));
        let mut confirmed = Vec::new();
        for t in gone {
            if ctx
                .source
                .head_manifest(&ctx.src, t.as_str())
                .await?
                .is_none()
            {
                confirmed.push(t);
            }
        }
        gone = confirmed;
    }
    let mut pruned: Vec<(Tag, String)> = dst_tags
        .iter()
        .filter(|t| !gone.contains(t) && !super::referrers::is_referrer_shaped(t.as_str()))
        .filter_map(|t| {
            let why = prunable.get(t).cloned().or_else(|| {
                // A target tag the source does not have: the rules judge its name alone.
                (ctx.policy.prune && !src.contains(t))
                    .then(|| ctx.policy.tags.dropped(t.as_str()))
                    .flatten()
            })?;
            Some((t.clone(), why))
        })
        .collect();
    pruned.sort();
    let count = gone.len() + pruned.len();
    if count == 0 {
        return Ok(());
    }
    if src_tags.is_empty() {
        plan.refused_deletes = Some(format!(
            "the source listed no tags; not deleting the target's {count}"
        ));
        return Ok(());
    }
    if !ctx.opts.force_delete && !ctx.policy.max_delete.allows(count, dst_tags.len()) {
        plan.refused_deletes = Some(format!(
            "{count} of the target's {} tags would go (gone from the source or pruned), more than max_delete allows in one run; check the source, then run `ferry sync --force-delete`",
            dst_tags.len()
        ));
        return Ok(());
    }
    let mut digests = known.clone();
    for t in dst_tags
        .iter()
        .filter(|t| !digests.contains_key(*t))
        .cloned()
        .collect::<Vec<_>>()
    {
        if let Some(h) = ctx
            .target
            .head_target_manifest(&ctx.dest, t.as_str())
            .await?
        {
            digests.insert(t, h.digest);
        }
    }
    let why_pruned: HashMap<Tag, String> = pruned.iter().cloned().collect();
    for t in gone.into_iter().chain(pruned.into_iter().map(|(t, _)| t)) {
        let Some(d) = digests.get(&t).cloned() else {
            continue;
        };
        let pruned = why_pruned.get(&t).map(|w| format!("pruned: {w}"));
        let shared_with = digests
            .iter()
            .filter(|(other, od)| {
                // Kept: on the source and not pruned itself.
                **od == d && *other != &t && src.contains(other) && !why_pruned.contains_key(*other)
            })
            .map(|(o, _)| o.clone())
            .min();
        plan.tags.push(TagPlan {
            tag: t,
            action: TagAction::Delete,
            source_digest: d.clone(),
            target_digest: Some(d.clone()),
            reason: [
                pruned,
                shared_with.as_ref().map(|o| format!("shares its manifest with kept tag {o}: deleted only where the registry deletes tags")),
            ]
            .into_iter()
            .flatten()
            .reduce(|a, b| format!("{a}; {b}")),
            verified: None,
            original: d,
            shared_with,
        });
    }
    Ok(())
}
