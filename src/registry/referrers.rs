//! The OCI 1.1 referrers API, and whether a registry has one. Registries without it answer
//! in many ways (a plain or HTML 404, 400, 405, 406, a 200 that is no index, a redirect to a
//! web API on another host: GHCR-1); each means "no API", and the answer is kept for an hour
//! so that a registry is not asked once per tag. Callers then use the `sha256-<hex>` tag
//! fallback.

use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::StatusCode;

use super::error::oci_error;
use super::http::{read_limited, Http};
use super::listing::link_next;
use super::{RegistryError, Scope};
use crate::model::{manifest_references, Digest, RepoName, MAX_MANIFEST_BYTES, OCI_INDEX};

/// Pages of one referrers list: a few hundred referrers per image at most in practice.
const MAX_PAGES: usize = 64;

/// What one referrers request said.
enum Answer {
    Page(Vec<Digest>, Option<String>),
    /// The repository is not there (a 404 with `NAME_UNKNOWN`): the API may well be.
    NoRepository,
    NoApi(String),
}

impl Http {
    /// Referrers of `digest` from the OCI 1.1 referrers API, every page; `None` when the
    /// registry has no such API.
    ///
    /// # Errors
    /// Transport, auth and unexpected status errors; an index that does not parse.
    pub(super) async fn referrers(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<Vec<Digest>>, RegistryError> {
        let op = "referrers";
        if self.referrers_api.known() == Some(false) {
            return Ok(None);
        }
        let mut url = self.url(&format!("/v2/{repo}/referrers/{digest}"));
        let mut out = Vec::new();
        for _ in 0..MAX_PAGES {
            match self.referrers_page(repo, &url).await? {
                Answer::NoRepository => return Ok(Some(Vec::new())),
                Answer::NoApi(why) => {
                    tracing::debug!(registry = %self.name, why, "no referrers API; using the tag fallback");
                    self.referrers_api.learn(false);
                    return Ok(None);
                }
                Answer::Page(refs, next) => {
                    self.referrers_api.learn(true);
                    out.extend(refs);
                    match next {
                        Some(l) => url = self.same_origin(op, &url, &l)?,
                        None => return Ok(Some(out)),
                    }
                }
            }
        }
        Err(self.protocol(
            op,
            format!("{repo}@{digest}: more than {MAX_PAGES} pages of referrers"),
        ))
    }

    async fn referrers_page(
        &self,
        repo: &RepoName,
        url: &url::Url,
    ) -> Result<Answer, RegistryError> {
        let op = "referrers";
        let rsp = self
            .send(op, &Scope::pull(repo.as_str()), |h| {
                h.get(url.clone()).header(ACCEPT, OCI_INDEX)
            })
            .await?;
        let status = rsp.status();
        if status.is_redirection() {
            return Ok(Answer::NoApi(format!(
                "HTTP {} (a redirect, not followed)",
                status.as_u16()
            )));
        }
        if status == StatusCode::NOT_FOUND {
            let body = read_limited(rsp, 16 << 10).await.unwrap_or_default();
            return Ok(match oci_error(&body).0.as_deref() {
                Some("NAME_UNKNOWN") => Answer::NoRepository,
                _ => Answer::NoApi("HTTP 404".into()),
            });
        }
        if matches!(status.as_u16(), 400 | 405 | 406) {
            return Ok(Answer::NoApi(format!("HTTP {}", status.as_u16())));
        }
        let rsp = self.expect(op, rsp, &[StatusCode::OK]).await?;
        let content_type = rsp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        // Parameters (`; charset=…`) aside, the API answers with an OCI index and nothing else.
        let is_index =
            content_type.is_some_and(|c| c.split(';').next().unwrap_or("").trim() == OCI_INDEX);
        if !is_index {
            let got = content_type.unwrap_or("no Content-Type").to_owned();
            return Ok(Answer::NoApi(format!("HTTP 200 with {got}")));
        }
        let next = link_next(rsp.headers());
        let body = read_limited(rsp, MAX_MANIFEST_BYTES)
            .await
            .map_err(self.transport(op))?;
        let refs = manifest_references(OCI_INDEX, &body).map_err(|e| self.protocol(op, e))?;
        Ok(Answer::Page(
            refs.manifests.into_iter().map(|(d, _)| d).collect(),
            next,
        ))
    }
}
