//! The blob upload protocol, step by step: POST (or mount), PATCH chunks, GET status, PUT.
//! The caller drives the state machine and checkpoints between steps; nothing here retries a
//! request whose body streamed, because Distribution appends whatever bytes reach it.

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
}

#[derive(Debug)]
pub enum UploadStart {
    Mounted,
    Session(UploadSession),
}

/// Time allowed to send one chunk: a floor for latency plus a slow-link rate, so a stalled
/// upload is noticed without cutting off a slow but moving one.
fn chunk_timeout(len: u64) -> Duration {
    Duration::from_secs(60) + Duration::from_secs(len / (32 << 10))
}

impl Http {
    fn location(&self, op: &'static str, rsp: &reqwest::Response) -> Result<String, RegistryError> {
        let loc = rsp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| self.protocol(op, "no Location in upload response"))?;
        // Locations may be relative to the registry root.
        let url = self
            .base
            .join(loc)
            .map_err(|e| self.protocol(op, format!("bad upload Location: {e}")))?;
        Ok(url.into())
    }

    fn upload_url(&self, op: &'static str, location: &str) -> Result<url::Url, RegistryError> {
        url::Url::parse(location).map_err(|e| self.protocol(op, format!("bad upload URL: {e}")))
    }

    /// Open an upload session, or mount `digest` from `from` in the same registry. A registry
    /// that cannot mount answers with a fresh session instead, which is used as is.
    ///
    /// # Errors
    /// Transport, auth and status errors.
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
        let rsp = self
            .send(op, &scope, |h| {
                h.post(url.clone()).header(CONTENT_LENGTH, 0)
            })
            .await?;
        let rsp = self
            .expect(op, rsp, &[StatusCode::CREATED, StatusCode::ACCEPTED])
            .await?;
        if rsp.status() == StatusCode::CREATED && mount.is_some() {
            return Ok(UploadStart::Mounted);
        }
        Ok(UploadStart::Session(UploadSession {
            location: self.location(op, &rsp)?,
            offset: 0,
        }))
    }

    /// Ask how many bytes the registry holds for an upload. `None` when it has forgotten or
    /// invalidated the session (Distribution does both after a PATCH body is cut).
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
        let rsp = self
            .expect(op, rsp, &[StatusCode::NO_CONTENT, StatusCode::OK])
            .await?;
        let offset = range_end(&rsp).unwrap_or(0);
        let location = if rsp.headers().contains_key(LOCATION) {
            self.location(op, &rsp)?
        } else {
            location.to_owned()
        };
        Ok(Some(UploadSession { location, offset }))
    }

    /// PATCH one chunk of `len` bytes at `session.offset`. Returns the advanced session.
    /// Sent once: on any failure the caller must ask `upload_status` before sending more.
    ///
    /// # Errors
    /// Transport, auth and status errors; a registry whose acknowledged range disagrees.
    pub(super) async fn patch_chunk(
        &self,
        repo: &RepoName,
        session: &UploadSession,
        body: Body,
        len: u64,
    ) -> Result<UploadSession, RegistryError> {
        let op = "upload chunk";
        let url = self.upload_url(op, &session.location)?;
        let end = session.offset + len - 1;
        let rsp = self
            .send_once(op, &Scope::push(repo.as_str()), |h| {
                h.patch(url)
                    .timeout(chunk_timeout(len))
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_RANGE, format!("{}-{end}", session.offset))
                    .header(CONTENT_LENGTH, len)
                    .body(body)
            })
            .await?;
        let rsp = self
            .expect(op, rsp, &[StatusCode::ACCEPTED, StatusCode::NO_CONTENT])
            .await?;
        let offset = session.offset + len;
        if let Some(acked) = range_end(&rsp).filter(|&a| a != offset) {
            return Err(self.protocol(
                op,
                format!("registry acknowledged {acked} bytes, expected {offset}"),
            ));
        }
        Ok(UploadSession {
            location: self.location(op, &rsp)?,
            offset,
        })
    }

    /// Close the upload with `PUT ?digest=`, optionally carrying the last chunk, so a blob
    /// that fits in one chunk costs a POST and a PUT. The registry checks the digest.
    ///
    /// # Errors
    /// Transport, auth and status errors (`DIGEST_INVALID` when the bytes were wrong).
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
        let rsp = self
            .expect(
                op,
                rsp,
                &[StatusCode::CREATED, StatusCode::NO_CONTENT, StatusCode::OK],
            )
            .await?;
        if let Some(got) = rsp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|d| d.parse::<Digest>().ok())
        {
            if got != *digest {
                return Err(RegistryError::DigestMismatch {
                    registry: self.name.clone(),
                    what: "uploaded blob",
                    expected: digest.clone(),
                    actual: got,
                });
            }
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

/// `Range: 0-1048575` → 1048576 bytes held. `0-0` is how Distribution says "nothing yet".
fn range_end(rsp: &reqwest::Response) -> Option<u64> {
    let v = rsp.headers().get("range")?.to_str().ok()?;
    let (_, end) = v.trim_start_matches("bytes=").split_once('-')?;
    let end: u64 = end.trim().parse().ok()?;
    Some(if end == 0 { 0 } else { end + 1 })
}
