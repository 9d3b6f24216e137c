//! The blob upload protocol, step by step: POST (or mount), PATCH (chunks, or one stream),
//! GET status, PUT. The caller drives the state machine and checkpoints between steps;
//! nothing here retries a request whose body streamed, because Distribution appends whatever
//! bytes reach it.
//!
//! Read leniently, as registries answer (the quirks catalogue, rule 1 and 2): any 2xx is
//! success; a `Range` is the registry's word, which the caller checks against its own count
//! rather than obeys; a Location is resolved against the request that returned it.

use std::time::Duration;

use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION};
use reqwest::{Body, StatusCode};
use serde::{Deserialize, Serialize};

use super::http::Http;
use super::{RegistryError, Scope};
use crate::model::{Digest, RepoName};

/// Where an upload stands: the newest Location (it changes after every PATCH) and how many
/// bytes the registry has acknowledged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadSession {
    pub location: String,
    pub offset: u64,
    /// The smallest PATCH the registry takes (`OCI-Chunk-Min-Length` on the POST).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_chunk: Option<u64>,
}

impl UploadSession {
    pub fn at(location: String, offset: u64) -> Self {
        UploadSession {
            location,
            offset,
            min_chunk: None,
        }
    }
}

#[derive(Debug)]
pub enum UploadStart {
    Mounted,
    Session(UploadSession),
}

/// A PATCH the registry took: the session advanced by what was sent, and the offset the
/// registry's `Range` claims when it says something else (ECR's goes stale: ECR-2).
pub struct Patched {
    pub session: UploadSession,
    pub registry_says: Option<u64>,
}

/// The largest `OCI-Chunk-Min-Length` honoured: a registry asking for more is asking for one
/// request per blob, which the stream strategy is.
const MAX_MIN_CHUNK: u64 = 1 << 30;

/// Time allowed to send one chunk: a floor for latency plus a slow-link rate, so a stalled
/// upload is noticed without cutting off a slow but moving one.
fn chunk_timeout(len: u64) -> Duration {
    Duration::from_secs(60) + Duration::from_secs(len / (32 << 10))
}

impl Http {
    /// The response's Location, resolved against the URL that answered (it may be relative).
    fn location(
        &self,
        op: &'static str,
        asked: &url::Url,
        rsp: &reqwest::Response,
    ) -> Result<String, RegistryError> {
        let loc = rsp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| self.protocol(op, "no Location in upload response"))?;
        let url = asked
            .join(loc)
            .map_err(|e| self.protocol(op, format!("bad upload Location: {e}")))?;
        Ok(url.into())
    }

    fn upload_url(&self, op: &'static str, location: &str) -> Result<url::Url, RegistryError> {
        url::Url::parse(location).map_err(|e| self.protocol(op, format!("bad upload URL: {e}")))
    }

    fn missing(&self, op: &'static str, repo: &RepoName, detail: &str) -> RegistryError {
        RegistryError::MissingRepository {
            registry: self.name.clone(),
            op,
            repo: repo.to_string(),
            detail: detail.to_owned(),
        }
    }

    /// Open an upload session, or mount `digest` from `from` in the same registry. Any answer
    /// to a mount but 201 means "upload normally" (the quirks catalogue, rule 10): a 202's
    /// session is used as is, and a refusal (Docker Hub's 400 or 401 for a `from` it does not
    /// like, Harbor's 401 for a project it lacks, GitLab's 500) opens a plain session.
    ///
    /// # Errors
    /// Transport, auth and status errors; a repository that must be created first.
    pub(super) async fn start_upload(
        &self,
        repo: &RepoName,
        mount: Option<(&Digest, &RepoName)>,
    ) -> Result<UploadStart, RegistryError> {
        let op = "start upload";
        let mut url = self.url(&format!("/v2/{repo}/blobs/uploads/"));
        let scope = match mount {
            Some((digest, from)) => {
                url.query_pairs_mut()
                    .append_pair("mount", digest.as_str())
                    .append_pair("from", from.as_str());
                Scope::mount(repo.as_str(), from.as_str())
            }
            None => Scope::push(repo.as_str()),
        };
        // ECR hangs up on a push into a repository that does not exist (ECR-7): no answer at
        // all, which a retry would only repeat.
        let hung_up = |e: RegistryError| match e {
            RegistryError::Transport { ref source, .. } if super::error::hung_up(source) => self
                .missing(
                    op,
                    repo,
                    "the registry closed the connection on the upload POST",
                ),
            e => e,
        };
        let sent = self
            .send_mapped(
                op,
                &scope,
                |h| h.post(url.clone()).header(CONTENT_LENGTH, 0),
                hung_up,
            )
            .await;
        let rsp = match sent {
            Ok(r) if r.status().is_success() => r,
            Ok(r) if mount.is_some() && r.status() != StatusCode::NOT_FOUND => {
                tracing::debug!(status = r.status().as_u16(), "mount refused; uploading");
                return Box::pin(self.start_upload(repo, None)).await;
            }
            Err(RegistryError::Unauthorized { .. } | RegistryError::Status { .. })
                if mount.is_some() =>
            {
                tracing::debug!("mount refused; uploading");
                return Box::pin(self.start_upload(repo, None)).await;
            }
            Ok(r) if r.status() == StatusCode::NOT_FOUND => {
                let e = self.status_error(op, r).await;
                return Err(self.missing(op, repo, &e.to_string()));
            }
            Ok(r) => return Err(self.status_error(op, r).await),
            Err(e) => return Err(e),
        };
        let location = self.location(op, &url, &rsp)?;
        if rsp.status() == StatusCode::CREATED && mount.is_some() && !location.contains("/uploads/")
        {
            return Ok(UploadStart::Mounted);
        }
        let min_chunk = rsp
            .headers()
            .get("oci-chunk-min-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|n| n.min(MAX_MIN_CHUNK));
        Ok(UploadStart::Session(UploadSession {
            location,
            offset: 0,
            min_chunk,
        }))
    }

    /// Ask how many bytes the registry holds for an upload. `None` when it has forgotten or
    /// invalidated the session (Distribution 2.8 does both after a PATCH body is cut).
    ///
    /// # Errors
    /// Transport, auth and unexpected status errors.
    pub(super) async fn upload_status(
        &self,
        repo: &RepoName,
        location: &str,
    ) -> Result<Option<UploadSession>, RegistryError> {
        let op = "upload status";
        let url = self.upload_url(op, location)?;
        let rsp = self
            .send(op, &Scope::push(repo.as_str()), |h| h.get(url.clone()))
            .await?;
        if matches!(
            rsp.status(),
            StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST | StatusCode::RANGE_NOT_SATISFIABLE
        ) {
            return Ok(None);
        }
        if !rsp.status().is_success() {
            return Err(self.status_error(op, rsp).await);
        }
        let offset = range_end(&rsp).unwrap_or(0);
        let location = if rsp.headers().contains_key(LOCATION) {
            self.location(op, &url, &rsp)?
        } else {
            location.to_owned()
        };
        Ok(Some(UploadSession::at(location, offset)))
    }

    /// PATCH `len` bytes at `session.offset`: a chunk with `Content-Range` (`ranged`), or the
    /// whole blob in one stream without it, as docker sends it (for registries that refuse
    /// chunks: GCP-1). Sent once: on any failure the caller must ask `upload_status` before
    /// sending more.
    ///
    /// # Errors
    /// Transport, auth and status errors.
    pub(super) async fn patch_chunk(
        &self,
        repo: &RepoName,
        session: &UploadSession,
        body: Body,
        len: u64,
        ranged: bool,
    ) -> Result<Patched, RegistryError> {
        let op = "upload chunk";
        let url = self.upload_url(op, &session.location)?;
        let end = session.offset + len.max(1) - 1;
        let asked = url.clone();
        let rsp = self
            .send_once(op, &Scope::push(repo.as_str()), |h| {
                let req = h
                    .patch(url)
                    .timeout(chunk_timeout(len))
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_LENGTH, len);
                let req = if ranged {
                    // `a-b`, no unit and no total: what ACR and Quay take (ACR-2, QUAY-4).
                    req.header(CONTENT_RANGE, format!("{}-{end}", session.offset))
                } else {
                    req
                };
                req.body(body)
            })
            .await?;
        if !rsp.status().is_success() {
            return Err(self.status_error(op, rsp).await);
        }
        let offset = session.offset + len;
        let registry_says = range_end(&rsp).filter(|&r| r != offset);
        let location = self.location(op, &asked, &rsp)?;
        Ok(Patched {
            session: UploadSession::at(location, offset),
            registry_says,
        })
    }

    /// Close the upload with `PUT ?digest=`, optionally carrying the last chunk (or, for a
    /// monolithic upload, the whole blob). The registry checks the digest.
    ///
    /// # Errors
    /// Transport, auth and status errors (`DIGEST_INVALID` when the bytes were wrong; 413
    /// when the registry takes no body this large: ACR-1).
    pub(super) async fn finish_upload(
        &self,
        repo: &RepoName,
        session: &UploadSession,
        digest: &Digest,
        last: Option<(Body, u64)>,
    ) -> Result<(), RegistryError> {
        let op = "finish upload";
        let mut url = self.upload_url(op, &session.location)?;
        url.query_pairs_mut().append_pair("digest", digest.as_str());
        let scope = Scope::push(repo.as_str());
        let rsp = match last {
            Some((body, len)) => {
                self.send_once(op, &scope, |h| {
                    h.put(url)
                        .timeout(chunk_timeout(len))
                        .header(CONTENT_TYPE, "application/octet-stream")
                        .header(CONTENT_LENGTH, len)
                        .body(body)
                })
                .await?
            }
            None => {
                self.send(op, &scope, |h| h.put(url.clone()).header(CONTENT_LENGTH, 0))
                    .await?
            }
        };
        if !rsp.status().is_success() {
            return Err(self.status_error(op, rsp).await);
        }
        let got = rsp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|d| d.parse::<Digest>().ok());
        if let Some(got) = got.filter(|g| g != digest) {
            return Err(RegistryError::DigestMismatch {
                registry: self.name.clone(),
                what: "uploaded blob",
                expected: digest.clone(),
                actual: got,
            });
        }
        Ok(())
    }

    /// Abandon an upload session; best effort, so the registry can free its space early.
    pub(super) async fn cancel_upload(&self, repo: &RepoName, location: &str) {
        if let Ok(url) = self.upload_url("cancel upload", location) {
            let _ = self
                .send_once("cancel upload", &Scope::push(repo.as_str()), |h| {
                    h.delete(url).timeout(Duration::from_secs(30))
                })
                .await;
        }
    }
}

/// `Range: 0-1048575` → 1048576 bytes held. `0-0` is how Distribution says "nothing yet";
/// Quay's `bytes=0--1` (QUAY-3) reads as nothing either.
fn range_end(rsp: &reqwest::Response) -> Option<u64> {
    let v = rsp.headers().get("range")?.to_str().ok()?;
    let (_, end) = v.trim().trim_start_matches("bytes=").split_once('-')?;
    if end.starts_with('-') {
        return Some(0);
    }
    let end: u64 = end.trim().parse().ok()?;
    Some(if end == 0 { 0 } else { end.checked_add(1)? })
}
