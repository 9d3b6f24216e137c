//! Reads (tags, catalog, manifests, blobs) and manifest writes.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, RANGE};
use reqwest::StatusCode;

use super::http::{read_limited, Http};
use super::{RegistryError, Scope};
use crate::model::{
    manifest_media_type, Digest, RepoName, Tag, MANIFEST_TYPES, MAX_MANIFEST_BYTES,
};

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

/// One page of a tag list or catalog: 1,000 entries of the longest names fit in well under this.
const MAX_PAGE_BYTES: usize = 16 << 20;

impl Http {
    fn accept_manifests(req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        req.header(ACCEPT, MANIFEST_TYPES.join(", "))
    }

    /// Tags of a repository, following `Link` pagination. `None` when the repository does not exist.
    ///
    /// # Errors
    /// Transport, auth and unexpected status errors.
    pub(super) async fn tags(&self, repo: &RepoName) -> Result<Option<Vec<Tag>>, RegistryError> {
        let first = self.url(&format!("/v2/{repo}/tags/list?n=1000"));
        let pages = self
            .paginate("list tags", &Scope::pull(repo.as_str()), first, "tags")
            .await?;
        let Some(names) = pages else { return Ok(None) };
        let mut tags: Vec<Tag> = names
            .into_iter()
            .filter_map(|t| {
                t.parse()
                    .map_err(|e| tracing::warn!(repo = %repo, error = %e, "skipping tag"))
                    .ok()
            })
            .collect();
        tags.sort();
        tags.dedup();
        Ok(Some(tags))
    }

    /// Every repository in the catalog, following `Link` pagination.
    ///
    /// # Errors
    /// A registry that refuses the catalog (most public ones) gets an error that says to list
    /// repositories by name instead.
    pub(super) async fn catalog(&self) -> Result<Vec<RepoName>, RegistryError> {
        let first = self.url("/v2/_catalog?n=1000");
        let refused = |detail: String| {
            self.protocol(
                "catalog",
                format!(
                    "{detail}; this registry does not list its repositories, so name them exactly in `repositories` instead of using globs"
                ),
            )
        };
        let names = match self
            .paginate("catalog", &Scope::catalog(), first, "repositories")
            .await
        {
            Ok(Some(n)) => n,
            Ok(None) => return Err(refused("catalog not found (404)".into())),
            Err(e @ RegistryError::Unauthorized { .. }) => return Err(refused(e.to_string())),
            Err(e) if matches!(e.status(), Some(401 | 403 | 404 | 405)) => {
                return Err(refused(e.to_string()))
            }
            Err(e) => return Err(e),
        };
        Ok(names.into_iter().filter_map(|n| n.parse().ok()).collect())
    }

    /// Every entry of a paginated list, bounded: more than `list_limit` entries, or still
    /// listing after `list_timeout`, is an error (a registry that pages forever must end a
    /// repository, never a run); a page with nothing new ends the list.
    async fn paginate(
        &self,
        op: &'static str,
        scope: &Scope,
        first: url::Url,
        field: &str,
    ) -> Result<Option<Vec<String>>, RegistryError> {
        let (limit, budget) = (self.list_limit, self.list_timeout);
        let started = tokio::time::Instant::now();
        let too_slow = |n: usize| {
            self.protocol(
                op,
                format!(
                    "still listing after {}s ({n} entries so far); raise list_timeout for this registry if that is real",
                    budget.as_secs()
                ),
            )
        };
        let mut out: Vec<String> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut next = Some(first);
        while let Some(url) = next.take() {
            let page = tokio::time::timeout_at(started + budget, self.page(op, scope, &url, field))
                .await
                .map_err(|_| too_slow(out.len()))?;
            let Some((items, link)) = page? else {
                if out.is_empty() {
                    return Ok(None);
                }
                return Err(self.protocol(op, "a later page is gone (404)"));
            };
            let before = out.len();
            out.extend(items.into_iter().filter(|i| seen.insert(i.clone())));
            if out.len() > limit {
                return Err(self.protocol(
                    op,
                    format!("more than {limit} entries; raise list_limit for this registry if that is real (a registry that never stops paging?)"),
                ));
            }
            if out.len() == before {
                break;
            }
            next = link.and_then(|l| url.join(&l).ok());
        }
        Ok(Some(out))
    }

    /// One page: its entries and the `Link` to the next. `None` on 404.
    async fn page(
        &self,
        op: &'static str,
        scope: &Scope,
        url: &url::Url,
        field: &str,
    ) -> Result<Option<(Vec<String>, Option<String>)>, RegistryError> {
        let rsp = self.send(op, scope, |h| h.get(url.clone())).await?;
        if rsp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let rsp = self.expect(op, rsp, &[StatusCode::OK]).await?;
        let link = link_next(rsp.headers());
        let body = read_limited(rsp, MAX_PAGE_BYTES)
            .await
            .map_err(self.transport(op))?;
        if body.len() >= MAX_PAGE_BYTES {
            return Err(self.protocol(op, format!("a page over {} MiB", MAX_PAGE_BYTES >> 20)));
        }
        let page: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| self.protocol(op, format!("not a JSON list: {e}")))?;
        let items = match page.get(field) {
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            // Distribution answers `"tags": null` for a repository whose tags were all deleted.
            Some(serde_json::Value::Null) => Vec::new(),
            _ => return Err(self.protocol(op, format!("the answer has no `{field}` list"))),
        };
        Ok(Some((items, link)))
    }

    /// HEAD a manifest by tag or digest. `None` when it does not exist.
    ///
    /// # Errors
    /// Transport, auth and unexpected status errors.
    pub(super) async fn head_manifest(
        &self,
        repo: &RepoName,
        reference: &str,
    ) -> Result<Option<ManifestHead>, RegistryError> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let rsp = self
            .send("head manifest", &Scope::pull(repo.as_str()), |h| {
                Self::accept_manifests(h.head(url.clone()))
            })
            .await?;
        if rsp.status() == StatusCode::NOT_FOUND {
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

    /// PUT a manifest's exact bytes under a tag or its digest; checks the registry kept the digest.
    ///
    /// # Errors
    /// Transport, auth and status errors (e.g. `MANIFEST_BLOB_UNKNOWN`), a changed digest.
    pub(super) async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &str,
        m: &PulledManifest,
    ) -> Result<(), RegistryError> {
        let op = "put manifest";
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let rsp = self
            .send(op, &Scope::push(repo.as_str()), |h| {
                h.put(url.clone())
                    .header(CONTENT_TYPE, &m.media_type)
                    .body(m.bytes.clone())
            })
            .await?;
        let rsp = self
            .expect(op, rsp, &[StatusCode::CREATED, StatusCode::OK])
            .await?;
        if let Some(got) = rsp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|d| d.parse::<Digest>().ok())
        {
            if got != m.digest {
                return Err(RegistryError::DigestMismatch {
                    registry: self.name.clone(),
                    what: "stored manifest",
                    expected: m.digest.clone(),
                    actual: got,
                });
            }
        }
        Ok(())
    }

    /// Delete a manifest by digest (every tag pointing at it goes with it).
    ///
    /// # Errors
    /// Transport, auth and status errors; 405 when the registry does not allow deletes.
    pub(super) async fn delete_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<(), RegistryError> {
        let op = "delete manifest";
        let url = self.url(&format!("/v2/{repo}/manifests/{digest}"));
        let rsp = self
            .send(op, &Scope::push(repo.as_str()), |h| h.delete(url.clone()))
            .await?;
        if rsp.status() == StatusCode::METHOD_NOT_ALLOWED {
            return Err(self.protocol(
                op,
                "the registry does not allow deletes (Distribution: storage.delete.enabled = true)",
            ));
        }
        self.expect(
            op,
            rsp,
            &[
                StatusCode::ACCEPTED,
                StatusCode::OK,
                StatusCode::NO_CONTENT,
                StatusCode::NOT_FOUND,
            ],
        )
        .await
        .map(drop)
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
        if rsp.status() == StatusCode::NOT_FOUND {
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

    /// Referrers of `digest` from the OCI 1.1 referrers API; empty when the registry does not
    /// offer the API (Distribution 2.x answers 404).
    ///
    /// # Errors
    /// Transport, auth and unexpected status errors.
    pub(super) async fn referrers(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Vec<Digest>, RegistryError> {
        let op = "referrers";
        if self.no_referrers_api.load(Ordering::Relaxed) {
            return Ok(Vec::new());
        }
        let url = self.url(&format!("/v2/{repo}/referrers/{digest}"));
        let rsp = self
            .send(op, &Scope::pull(repo.as_str()), |h| {
                h.get(url.clone()).header(ACCEPT, crate::model::OCI_INDEX)
            })
            .await?;
        if matches!(
            rsp.status(),
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED | StatusCode::BAD_REQUEST
        ) {
            // A registry with the API answers 200 even when there are no referrers, so this
            // one has none: stop asking (one request per registry and process, not per tag).
            self.no_referrers_api.store(true, Ordering::Relaxed);
            return Ok(Vec::new());
        }
        let rsp = self.expect(op, rsp, &[StatusCode::OK]).await?;
        let body = read_limited(rsp, MAX_MANIFEST_BYTES)
            .await
            .map_err(self.transport(op))?;
        let refs = crate::model::manifest_references(crate::model::OCI_INDEX, &body)
            .map_err(|e| self.protocol(op, e))?;
        Ok(refs.manifests.into_iter().map(|(d, _)| d).collect())
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

/// `Link: </v2/_catalog?last=x&n=100>; rel="next"` → the URL.
fn link_next(h: &reqwest::header::HeaderMap) -> Option<String> {
    h.get_all("link")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|part| {
            let (target, params) = part.split_once(';')?;
            params.contains("rel=\"next\"").then(|| {
                target
                    .trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_owned()
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_headers() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            "link",
            r#"</v2/_catalog?last=b&n=2>; rel="next""#.parse().unwrap(),
        );
        assert_eq!(link_next(&h).as_deref(), Some("/v2/_catalog?last=b&n=2"));
        assert_eq!(link_next(&reqwest::header::HeaderMap::new()), None);
    }
}
