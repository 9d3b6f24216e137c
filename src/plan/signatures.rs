//! The signature gate's reads: the signature manifests of the exact digest a source tag
//! points at, and their payloads (each at most `verify::MAX_SIGNATURE_BLOB`), handed to
//! `verify` to judge. A tag is promoted only when one of them verifies; what verified is
//! the evidence, what did not is the held reason.

use serde_json::Value;

use super::reads::SourceReads;
use super::referrers;
use super::PlanError;
use crate::model::{Digest, RepoName, Tag};
use crate::registry::{PulledManifest, RegistryError};
use crate::verify::dsse::Statement;
use crate::verify::{
    bundle, legacy, sig_tag, Evidence, Finding, Tally, Trust, Verifier, MAX_SIGNATURE_BLOB,
};

/// The evidence that `subject` is signed as `trust` asks, or why not. Every format
/// counts alike: the legacy `.sig` tag, cosign v3 bundles and cosign v2 OCI 1.1 signatures
/// among the referrers (API or fallback tag).
///
/// # Errors
/// A source that cannot be read (transport, auth, 5xx): the repository fails rather than
/// holding the tag for a reason that is not about its signatures.
pub(super) async fn verified(
    source: &SourceReads<'_>,
    repo: &RepoName,
    src_tags: &[Tag],
    subject: &Digest,
    trust: &Trust,
) -> Result<Result<Evidence, String>, PlanError> {
    let mut tally = Tally::default();
    let tag = sig_tag(subject);
    if src_tags.iter().any(|t| t.as_str() == tag) {
        if let Some(m) = source.get_manifest(repo, &tag).await? {
            if let Some(by) = simple_signing(source, repo, &m, subject, trust, &mut tally).await? {
                return Ok(Ok(Evidence {
                    by,
                    signature: m.digest,
                }));
            }
        }
    }
    for r in referrers::of(source, repo, subject, src_tags).await? {
        let Some(m) = source.get_manifest(repo, r.as_str()).await? else {
            continue;
        };
        let Ok(v) = serde_json::from_slice::<Value>(&m.bytes) else {
            continue;
        };
        // A referrer counts only when its manifest says it is about this image.
        if v.pointer("/subject/digest").and_then(Value::as_str) != Some(subject.as_str()) {
            continue;
        }
        let found = match v.get("artifactType").and_then(Value::as_str) {
            Some(bundle::BUNDLE) => bundled(source, repo, &v, subject, trust, &mut tally).await?,
            Some(COSIGN_V2_SIG) => {
                simple_signing(source, repo, &m, subject, trust, &mut tally).await?
            }
            _ => continue, // an SBOM, a scan: not a signature, and not counted as one
        };
        if let Some(by) = found {
            return Ok(Ok(Evidence {
                by,
                signature: m.digest,
            }));
        }
    }
    Ok(Err(tally.reason("signature", trust.under())))
}

/// cosign v2's signature referrers (`--registry-referrers-mode=oci-1-1`): the legacy layers.
const COSIGN_V2_SIG: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";

/// A manifest of simple-signing layers (a `.sig` tag, a cosign v2 referrer): who made the
/// first of them that verifies.
async fn simple_signing(
    source: &SourceReads<'_>,
    repo: &RepoName,
    m: &PulledManifest,
    subject: &Digest,
    trust: &Trust,
    tally: &mut Tally,
) -> Result<Option<Verifier>, PlanError> {
    let layers = match legacy::layers(&m.bytes) {
        Ok(l) => l,
        Err(why) => {
            tally.add(&Finding::NotSignature(why));
            return Ok(None);
        }
    };
    for l in layers {
        let f = match l {
            Err(why) => Finding::NotSignature(why),
            Ok(l) => match payload(source, repo, &l.digest, l.size).await? {
                Err(why) => Finding::NotSignature(why),
                Ok(p) => legacy::check(&l, &p, subject, trust),
            },
        };
        if let Finding::Verified(by) = f {
            return Ok(Some(by));
        }
        tally.add(&f);
    }
    Ok(None)
}

/// A cosign v3 bundle referrer: its one bundle layer, a message signature over the image
/// manifest or a DSSE statement of `cosign sign`'s predicate type: who made it.
async fn bundled(
    source: &SourceReads<'_>,
    repo: &RepoName,
    manifest: &Value,
    subject: &Digest,
    trust: &Trust,
    tally: &mut Tally,
) -> Result<Option<Verifier>, PlanError> {
    match bundle_check(source, repo, manifest, subject, trust).await? {
        Ok((_, Some(st))) if st.predicate_type != bundle::COSIGN_SIGN => {
            // An attestation: evidence for `require.attestation`, not a signature.
            tally.add(&Finding::NotSignature(format!(
                "an attestation of {}, not a signature",
                st.predicate_type
            )));
            Ok(None)
        }
        Ok((by, _)) => Ok(Some(by)),
        Err(f) => {
            tally.add(&f);
            Ok(None)
        }
    }
}

/// Read a bundle referrer's one layer (bounded) and check it: who made it, and the
/// statement when it is DSSE.
pub(super) async fn bundle_check(
    source: &SourceReads<'_>,
    repo: &RepoName,
    manifest: &Value,
    subject: &Digest,
    trust: &Trust,
) -> Result<Result<(Verifier, Option<Statement>), Finding>, PlanError> {
    let Some((digest, size)) = manifest.pointer("/layers/0").and_then(digest_and_size) else {
        return Ok(Err(Finding::NotSignature(
            "a bundle manifest without a layer".into(),
        )));
    };
    let body = match payload(source, repo, &digest, size).await? {
        Ok(b) => b,
        Err(why) => return Ok(Err(Finding::NotSignature(why))),
    };
    let Some(image) = source.get_manifest(repo, subject.as_str()).await? else {
        return Ok(Err(Finding::NotSignature("its subject is gone".into())));
    };
    Ok(bundle::check(&body, subject, &image.bytes, trust))
}

/// A descriptor's digest and size, when it has both and the digest is one.
pub(super) fn digest_and_size(d: &Value) -> Option<(Digest, u64)> {
    let digest = d.get("digest")?.as_str()?.parse().ok()?;
    Some((digest, d.get("size")?.as_u64()?))
}

/// A signature's payload, bounded; a blob that is missing, too large or not what its
/// digest says is a bad signature, not a failed read.
pub(super) async fn payload(
    source: &SourceReads<'_>,
    repo: &RepoName,
    digest: &Digest,
    size: u64,
) -> Result<Result<bytes::Bytes, String>, PlanError> {
    if size > MAX_SIGNATURE_BLOB {
        return Ok(Err(format!(
            "a payload of {size} bytes; signatures are at most {MAX_SIGNATURE_BLOB}"
        )));
    }
    match source
        .get_small_blob(repo, digest, MAX_SIGNATURE_BLOB as usize)
        .await
    {
        Ok(b) => Ok(Ok(b)),
        Err(
            e @ (RegistryError::Status { status: 404, .. }
            | RegistryError::Protocol { .. }
            | RegistryError::DigestMismatch { .. }),
        ) => Ok(Err(format!("its payload: {e}"))),
        Err(e) => Err(e.into()),
    }
}
