//! Manifest writes and deletes, with the refusals registries use classified: an immutable tag
//! (ECR, Harbor, Quay, Docker Hub) is a conflict, a missing repository a missing repository,
//! a Docker v2 manifest a target will not take a message saying how to let it, and a registry
//! that deletes nothing says so.

use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::StatusCode;

use super::http::Http;
use super::{PulledManifest, RegistryError, Scope, WriteGate};
use crate::model::{Digest, RepoName};

/// How a delete by tag went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TagDelete {
    /// The tag is gone, and nothing else with it.
    Deleted,
    /// The registry deletes manifests, not tags (Distribution 2.8, Docker Hub, ECR).
    NotByTag,
}

/// Does this refusal of a tag PUT say the tag is immutable?
fn immutable(status: u16, code: Option<&str>, message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    match (status, code) {
        (409, Some("TAG_IMMUTABLE")) | (412, _) => true,
        (400, Some("TAG_INVALID")) | (403, _) => {
            lower.contains("immutab") || lower.contains("cannot be overwritten")
        }
        _ => false,
    }
}

impl Http {
    /// PUT a manifest's exact bytes under a tag or its digest; checks the registry kept the
    /// digest.
    ///
    /// # Errors
    /// Transport, auth and status errors (e.g. `MANIFEST_BLOB_UNKNOWN`), a changed digest, an
    /// immutable tag, a missing repository.
    pub(super) async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &str,
        m: &PulledManifest,
        gate: Option<&dyn WriteGate>,
    ) -> Result<(), RegistryError> {
        let op = "put manifest";
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let rsp = self
            .send_gated(
                op,
                &Scope::push(repo.as_str()),
                |h| {
                    // Nexus wants the length said (NX-1); a body of Bytes always has it.
                    h.put(url.clone())
                        .header(CONTENT_TYPE, &m.media_type)
                        .header(CONTENT_LENGTH, m.bytes.len())
                        .body(m.bytes.clone())
                },
                gate,
            )
            .await?;
        if !rsp.status().is_success() {
            return Err(self.refused_manifest(repo, reference, m, rsp).await);
        }
        let got = rsp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|d| d.parse::<Digest>().ok());
        if let Some(got) = got.filter(|g| *g != m.digest) {
            return Err(RegistryError::DigestMismatch {
                registry: self.name.clone(),
                what: "stored manifest",
                expected: m.digest.clone(),
                actual: got,
            });
        }
        // The spec's sign of the referrers API. Its absence proves less (Quay omits it).
        if rsp.headers().contains_key("oci-subject") {
            self.referrers_api.learn(true);
        }
        Ok(())
    }

    async fn refused_manifest(
        &self,
        repo: &RepoName,
        reference: &str,
        m: &PulledManifest,
        rsp: reqwest::Response,
    ) -> RegistryError {
        let op = "put manifest";
        let e = self.status_error(op, rsp).await;
        let RegistryError::Status {
            status,
            code,
            message,
            ..
        } = &e
        else {
            return e;
        };
        let is_tag = reference.parse::<Digest>().is_err();
        if is_tag && immutable(*status, code.as_deref(), message) {
            return RegistryError::Immutable {
                registry: self.name.clone(),
                op,
                tag: reference.to_owned(),
                status: *status,
                code: code.clone(),
                message: message.clone(),
            };
        }
        if *status == 404 && code.as_deref() == Some("NAME_UNKNOWN") {
            return RegistryError::MissingRepository {
                registry: self.name.clone(),
                op,
                repo: repo.to_string(),
                detail: e.to_string(),
            };
        }
        let docker = m.media_type.starts_with("application/vnd.docker.");
        if docker
            && matches!(status, 400 | 415)
            && code.as_deref().is_none_or(|c| c == "MANIFEST_INVALID")
        {
            return self.protocol(
                op,
                format!(
                    "{e}: the registry refuses Docker v2 manifests ({}); ferry copies manifests byte for byte and does not convert them, since that changes their digest and breaks signatures: let the registry take them (zot: http.compat = [\"docker2s2\"]), or leave such repositories out",
                    m.media_type
                ),
            );
        }
        e
    }

    /// Delete one tag, leaving the manifest and its other tags (Distribution 3, GitLab 16.4+,
    /// Quay). A registry that deletes only manifests says so (`NotByTag`).
    ///
    /// # Errors
    /// Transport, auth and unexpected status errors.
    pub(super) async fn delete_tag(
        &self,
        repo: &RepoName,
        tag: &str,
        gate: Option<&dyn WriteGate>,
    ) -> Result<TagDelete, RegistryError> {
        let op = "delete tag";
        let url = self.url(&format!("/v2/{repo}/manifests/{tag}"));
        let rsp = self
            .send_gated(
                op,
                &Scope::push(repo.as_str()),
                |h| h.delete(url.clone()),
                gate,
            )
            .await?;
        match rsp.status().as_u16() {
            200..=299 => Ok(TagDelete::Deleted),
            // 2.8 reads the tag as a digest that does not parse (DIST-4): 400 DIGEST_INVALID.
            400 | 405 | 403 => Ok(TagDelete::NotByTag),
            _ => Err(self.status_error(op, rsp).await),
        }
    }

    /// Delete a manifest by digest (every tag pointing at it goes with it).
    ///
    /// # Errors
    /// Transport, auth and status errors; a registry that deletes nothing this way.
    pub(super) async fn delete_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        gate: Option<&dyn WriteGate>,
    ) -> Result<(), RegistryError> {
        let op = "delete manifest";
        let url = self.url(&format!("/v2/{repo}/manifests/{digest}"));
        let rsp = self
            .send_gated(
                op,
                &Scope::push(repo.as_str()),
                |h| h.delete(url.clone()),
                gate,
            )
            .await?;
        let status = rsp.status();
        if status.is_success() || status == StatusCode::NOT_FOUND {
            return Ok(());
        }
        if matches!(status.as_u16(), 403 | 405) {
            let e = self.status_error(op, rsp).await;
            let RegistryError::Status {
                status,
                code,
                message,
                ..
            } = e
            else {
                return Err(e);
            };
            let hint = if status == 405 {
                " (GHCR never does; Distribution needs storage.delete.enabled = true)"
            } else {
                " (Docker Hub deletes only untagged manifests)"
            };
            return Err(RegistryError::NoDeletes {
                registry: self.name.clone(),
                op,
                status,
                code,
                message,
                hint,
            });
        }
        Err(self.status_error(op, rsp).await)
    }
}
