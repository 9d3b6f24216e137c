//! The referrers of an image on the source: through the OCI 1.1 API, and through the
//! fallback tag `sha256-<hex>` (an index of them) that clients keep on registries without
//! it (cosign v3 bundles on Distribution, GHCR, Docker Hub). The fallback tag itself is not
//! copied: the copy keeps the target's own index, the union of what the target holds.

use super::reads::SourceReads;
use super::PlanError;
use crate::model::{manifest_references, Digest, RepoName, Tag, OCI_INDEX};

/// The fallback tag of `subject`.
pub fn fallback_tag(subject: &Digest) -> String {
    format!("sha256-{}", subject.hex())
}

/// `sha256-<64 hex>` exactly: a fallback index tag, whatever its subject.
pub(super) fn is_fallback_tag(tag: &str) -> bool {
    tag.strip_prefix("sha256-")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `sha256-<64 hex>`, with or without `.sig`, `.att` or `.sbom`: a signature or referrer
/// tag, whatever its subject.
pub(super) fn is_referrer_shaped(tag: &str) -> bool {
    let base = [".sig", ".att", ".sbom"]
        .iter()
        .find_map(|s| tag.strip_suffix(s))
        .unwrap_or(tag);
    is_fallback_tag(base)
}

/// Referrers of `subject`: the API's, then the source fallback index's, each once.
///
/// # Errors
/// A source that cannot be read; a fallback tag that is not an index.
pub(super) async fn of(
    source: &SourceReads<'_>,
    repo: &RepoName,
    subject: &Digest,
    src_tags: &[Tag],
) -> Result<Vec<Digest>, PlanError> {
    let mut out = source.referrers(repo, subject).await?;
    let tag = fallback_tag(subject);
    if !src_tags.iter().any(|t| t.as_str() == tag) {
        return Ok(out);
    }
    let Some(m) = source.get_manifest(repo, &tag).await? else {
        return Ok(out);
    };
    if m.media_type != OCI_INDEX {
        return Err(PlanError::Manifest {
            repo: repo.clone(),
            digest: m.digest,
            reason: crate::model::Invalid::new(format!(
                "the fallback tag {tag} is a {}, not an OCI index",
                m.media_type
            )),
        });
    }
    let refs =
        manifest_references(&m.media_type, &m.bytes).map_err(|reason| PlanError::Manifest {
            repo: repo.clone(),
            digest: m.digest.clone(),
            reason,
        })?;
    for (d, _) in refs.manifests {
        if !out.contains(&d) {
            out.push(d);
        }
    }
    Ok(out)
}
