//! The referrers fallback on targets without the OCI 1.1 referrers API (Distribution 2.8 and
//! 3, GHCR, Docker Hub, OCI layouts): the distribution spec asks the client that pushes a
//! manifest with a `subject` to list it in the index tagged `sha256-<subject hex>`, so that
//! `cosign verify` and `oras discover` find it there. The index is the target's own: read
//! (404 is empty), the missing descriptors added once, written back only when it changed.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::recorded::Write;
use super::{Copier, CopyError};
use crate::ledger::Action;
use crate::model::{Digest, RepoName, Tag, MAX_MANIFEST_BYTES, OCI_INDEX};
use crate::plan::{fallback_tag, RepoPlan};
use crate::registry::{PulledManifest, Registry};

/// Most entries one fallback index may grow to: past it the registry's 4 MiB manifest
/// limit is near, and something is wrong with the source.
const MAX_ENTRIES: usize = 10_000;

/// Bring the fallback index of every subject with referrers in `plan` up to date; the number
/// of indexes written.
///
/// # Errors
/// Reads and writes the target refused; an index that is not one.
pub(super) async fn maintain(
    copier: &Copier,
    target: &Registry,
    plan: &RepoPlan,
) -> Result<u64, CopyError> {
    let repo = &plan.target_repository;
    let mut by_subject: BTreeMap<&Digest, Vec<&Digest>> = BTreeMap::new();
    for r in &plan.referrers {
        if let Some(s) = plan.subjects.get(r) {
            by_subject.entry(s).or_default().push(r);
        }
    }
    let Some(first) = by_subject.keys().next() else {
        return Ok(0);
    };
    if !lacks_api(target, repo, first).await? {
        return Ok(0);
    }
    let mut written = 0;
    for (subject, refs) in by_subject {
        let tag = fallback_tag(subject);
        let current = target.get_manifest(repo, &tag).await?;
        let mut index = match &current {
            None => json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [] }),
            Some(m) => serde_json::from_slice::<Value>(&m.bytes)
                .ok()
                .filter(|v| v.get("manifests").is_some_and(Value::is_array))
                .ok_or_else(|| {
                    CopyError::Protocol(format!(
                        "{repo}:{tag} on the target is not an index; its referrers cannot be listed there"
                    ))
                })?,
        };
        let entries = index["manifests"].as_array_mut().expect("checked above");
        let mut changed = false;
        for r in refs {
            let listed = entries.iter().any(|e| e["digest"] == r.as_str());
            if listed {
                continue;
            }
            let Some(m) = plan.manifests.get(r).filter(|m| !m.bytes.is_empty()) else {
                continue;
            };
            if entries.len() >= MAX_ENTRIES {
                return Err(CopyError::Protocol(format!(
                    "{repo}:{tag}: more than {MAX_ENTRIES} referrers"
                )));
            }
            entries.push(descriptor(r, &m.media_type, &m.bytes));
            changed = true;
        }
        if !changed {
            continue;
        }
        let bytes = Bytes::from(serde_json::to_vec(&index).expect("JSON serializes"));
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(CopyError::Protocol(format!(
                "{repo}:{tag}: the fallback index would pass the manifest size limit"
            )));
        }
        let m = PulledManifest {
            digest: Digest::of(&bytes),
            media_type: OCI_INDEX.to_owned(),
            bytes,
        };
        let tag: Tag = tag
            .parse()
            .map_err(|e| CopyError::Protocol(format!("{tag}: {e}")))?;
        let write = Write {
            action: Action::Written,
            target: &plan.target,
            repository: repo,
            tag: Some(&tag),
            digest: &m.digest,
            // Made here, from the referrers: no source manifest has these bytes.
            source: None,
            verified: None,
            reason: Some("referrers fallback index".into()),
        };
        let put = target.put_manifest(repo, tag.as_str(), &m, copier.gate());
        copier.recorded(write, None, put).await?;
        written += 1;
    }
    Ok(written)
}

/// Whether the target has no referrers API: known from earlier answers (a manifest PUT
/// answered with `OCI-Subject`, a referrers request), else asked now. A PUT answer without
/// `OCI-Subject` alone is not taken as proof: Quay has the API and omits the header.
async fn lacks_api(
    target: &Registry,
    repo: &RepoName,
    subject: &Digest,
) -> Result<bool, CopyError> {
    if let Some(has) = target.referrers_api() {
        return Ok(!has);
    }
    target.referrers(repo, subject).await?;
    Ok(target.referrers_api() != Some(true))
}

/// The index entry of a referrer: media type, digest, size, its artifact type (else its
/// config's media type), and its annotations, as the spec's fallback asks.
fn descriptor(digest: &Digest, media_type: &str, bytes: &[u8]) -> Value {
    let m: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    let mut d = Map::new();
    d.insert("mediaType".into(), json!(media_type));
    d.insert("digest".into(), json!(digest.as_str()));
    d.insert("size".into(), json!(bytes.len()));
    let artifact = m
        .get("artifactType")
        .or_else(|| m.pointer("/config/mediaType"))
        .filter(|v| v.is_string());
    if let Some(a) = artifact {
        d.insert("artifactType".into(), a.clone());
    }
    if let Some(a) = m.get("annotations").filter(|a| a.is_object()) {
        d.insert("annotations".into(), a.clone());
    }
    Value::Object(d)
}
