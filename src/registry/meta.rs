//! Reads of manifests and blobs.

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, RANGE};
use reqwest::StatusCode;

use super::http::{read_limited, Http};
use super::{RegistryError, Scope};
use crate::model::{manifest_media_type, Digest, RepoName, MANIFEST_TYPES, MAX_MANIFEST_BYTES};

/// What a HEAD on a manifest tells: enough to diff without downloading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestHead {
    pub digest: Digest,
    pub media_type: Option<String>,
}

/// A manifest with its exact bytes, checked against its digest.
#[derive(Clone, Debug)]
pub struct PulledManifest {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Bytes,
}

/// A blob body as it arrives. `offset` is where it starts: the requested offset when the
/// registry honoured the Range, 0 when it sent the whole blob.
pub struct BlobStream {
    pub offset: u64,
    pub stream: BoxStream<'static, Result<Bytes, RegistryError>>,
}

impl Http {
    fn accept_manifests(req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        req.header(ACCEPT, MANIFEST_TYPES.join(", "))
    }

    /// HEAD a manifest by tag or digest. `None` when it does not exist.
    ///
    /// # Errors
    /// Transport, auth and unexpected status errors.
    pub(super) async fn head_manifest(
        &self,
        repo: &RepoName,
        reference: &str,
        forbidden_is_absent: bool,
    ) -> Result<Option<ManifestHead>, RegistryError> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let rsp = self
            .send("head manifest", &Scope::pull(repo.as_str()), |h| {
                Self::accept_manifests(h.head(url.clone()))
            })
            .await?;
        let forbidden = forbidden_is_absent && rsp.status() == StatusCode::FORBIDDEN;
        if rsp.status() == StatusCode::NOT_FOUND || forbidden {
            return Ok(None);
        }
        let rsp = self.expect("head manifest", rsp, &[StatusCode::OK]).await?;
        let media_type = rsp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        match rsp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|d| d.parse().ok())
        {
            Some(digest) => Ok(Some(ManifestHead { digest, media_type })),
            // Some registries omit the header on HEAD: the body is the only truth then.
            None => Ok(self
                .get_manifest(repo, reference)
                .await?
                .map(|m| ManifestHead {
                    digest: m.digest,
                    media_type: Some(m.media_type),
                })),
        }
    }

    /// GET a manifest with its exact bytes. The digest is computed from the bytes, and must
    /// match the reference when that is a digest, and the registry's header when it sends one.
    ///
    /// # Errors
    /// Transport, auth and status errors; a manifest over 4 MiB; a digest mismatch.
    pub(super) async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &str,
    ) -> Result<Option<PulledManifest>, RegistryError> {
        let op = "get manifest";
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        // Rationed registries count manifest GETs (not HEADs): a HEAD probes while waiting.
        let probe = || async {
            let _ = self
                .send("probe rate limit", &Scope::pull(repo.as_str()), |h| {
                    Self::accept_manifests(h.head(url.clone()))
                })
                .await;
        };
        let rsp = loop {
            let _counted = self.counted(op, probe).await?;
            let rsp = self
                .send(op, &Scope::pull(repo.as_str()), |h| {
                    Self::accept_manifests(h.get(url.clone()))
                })
                .await?;
            if rsp.status() != StatusCode::TOO_MANY_REQUESTS {
                break rsp;
            }
        };
        if rsp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let rsp = self.expect(op, rsp, &[StatusCode::OK]).await?;
        if rsp
            .content_length()
            .is_some_and(|n| n > MAX_MANIFEST_BYTES as u64)
        {
            return Err(self.protocol(
                op,
                format!("{repo}:{reference}: manifest larger than {MAX_MANIFEST_BYTES} bytes"),
            ));
        }
        let header_digest: Option<Digest> = rsp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|d| d.parse().ok());
        let content_type = rsp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = read_limited(rsp, MAX_MANIFEST_BYTES + 1)
            .await
            .map_err(self.transport(op))?;
        if body.len() > MAX_MANIFEST_BYTES {
            return Err(self.protocol(
                op,
                format!("{repo}:{reference}: manifest larger than {MAX_MANIFEST_BYTES} bytes"),
            ));
        }
        let digest = Digest::of(&body);
        let expected = reference.parse::<Digest>().ok().or(header_digest);
        if let Some(expected) = expected.filter(|e| *e != digest) {
            return Err(RegistryError::DigestMismatch {
                registry: self.name.clone(),
                what: "manifest",
                expected,
                actual: digest,
            });
        }
        let media_type = manifest_media_type(&body, content_type.as_deref())
            .map_err(|e| self.protocol(op, format!("{repo}:{reference}: {e}")))?;
        Ok(Some(PulledManifest {
            digest,
            media_type,
            bytes: Bytes::from(body),
        }))
    }

    /// HEAD a blob: its size when present.
    ///
    /// # Errors
    /// Transport, auth and unexpected status errors.
    pub(super) async fn head_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<u64>, RegistryError> {
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"));
        let rsp = self
            .send("head blob", &Scope::pull(repo.as_str()), |h| {
                h.head(url.clone())
            })
            .await?;
        // Blobs are asked of targets only, where a 403 means absent (JF-6, as for manifests).
        if matches!(rsp.status(), StatusCode::NOT_FOUND | StatusCode::FORBIDDEN) {
            return Ok(None);
        }
        let rsp = self.expect("head blob", rsp, &[StatusCode::OK]).await?;
        Ok(Some(
            rsp.headers()
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        ))
    }

    /// A small blob (an image config) in memory, at most `limit` bytes, digest checked.
    ///
    /// # Errors
    /// Transport, auth and status errors; a blob over `limit`; a digest mismatch.
    pub(super) async fn get_small_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        limit: usize,
    ) -> Result<Bytes, RegistryError> {
        let mut body = self.get_blob(repo, digest, 0).await?;
        let mut out = Vec::new();
        while let Some(chunk) = body.stream.next().await {
            out.extend_from_slice(&chunk?);
            if out.len() > limit {
                return Err(self.protocol(
                    "get blob",
                    format!("{repo}@{digest}: larger than {limit} bytes"),
                ));
            }
        }
        let actual = Digest::of(&out);
        if actual != *digest {
            return Err(RegistryError::DigestMismatch {
                registry: self.name.clone(),
                what: "blob",
                expected: digest.clone(),
                actual,
            });
        }
        Ok(Bytes::from(out))
    }

    /// Stream a blob from `offset` (a Range request when `offset > 0`).
    ///
    /// # Errors
    /// Transport, auth and status errors, including 404 for a blob the manifest names but the
    /// registry lacks.
    pub(super) async fn get_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        offset: u64,
    ) -> Result<BlobStream, RegistryError> {
        let op = "get blob";
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"));
        let rsp = self
            .send(op, &Scope::pull(repo.as_str()), |h| {
                // No whole-request timeout on a blob body: it may take hours; the stall guard
                // below catches a peer that stopped or trickles.
                let r = h
                    .get(url.clone())
                    .timeout(std::time::Duration::from_secs(24 * 3600));
                if offset > 0 {
                    r.header(RANGE, format!("bytes={offset}-"))
                } else {
                    r
                }
            })
            .await?;
        let rsp = self
            .expect(op, rsp, &[StatusCode::OK, StatusCode::PARTIAL_CONTENT])
            .await?;
        let start = if rsp.status() == StatusCode::PARTIAL_CONTENT {
            offset
        } else {
            0
        };
        let (name, window) = (self.name.clone(), self.stall_timeout);
        let stalled = move || RegistryError::Stalled {
            registry: name.clone(),
            op,
            detail: format!(
                "less than {} KiB in {}s (stall_timeout)",
                super::stall::STALL_BYTES >> 10,
                window.as_secs()
            ),
        };
        let (name, silent) = (self.name.clone(), stalled.clone());
        let limited = self.download_limit();
        let stream = rsp
            .bytes_stream()
            .map(move |r| {
                // The client's read timeout (stall_timeout too) caught a body that went silent.
                r.map_err(|e| {
                    if e.is_timeout() {
                        silent()
                    } else {
                        RegistryError::Transport {
                            registry: name.clone(),
                            op,
                            source: e.without_url(),
                        }
                    }
                })
            })
            .then(move |r| {
                let limited = limited.clone();
                async move {
                    if let (Ok(b), Some(l)) = (&r, &limited) {
                        l.acquire(b.len()).await;
                    }
                    r
                }
            })
            .boxed();
        let stream = super::stall::guard(stream, window, stalled);
        Ok(BlobStream {
            offset: start,
            stream,
        })
    }
}
