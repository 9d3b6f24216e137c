//! Tag lists and the catalog: paginated by `Link`, bounded in entries, pages and time, and
//! read leniently where registries differ (Nexus's `null`s, Artifactory's digests in tag
//! lists, GCR's extra fields), strictly where it matters (a `Link` to another origin).

use std::collections::HashMap;

use reqwest::header::ACCEPT;
use reqwest::StatusCode;
use serde_json::Value;

use super::http::{read_limited, Http};
use super::{ManifestHead, RegistryError, Scope};
use crate::model::{Digest, RepoName, Tag};

/// One page of a tag list or catalog: 1,000 entries of the longest names fit in well under this.
const MAX_PAGE_BYTES: usize = 16 << 20;
/// Entries asked per page; ECR refuses more than 1,000 (ECR-9), others clamp lower.
const PAGE: usize = 1000;

/// A repository's tags, and the digests the listing itself gave (GCR's `manifest` map), which
/// spare a HEAD per tag.
#[derive(Clone, Debug, Default)]
pub struct TagList {
    pub tags: Vec<Tag>,
    pub heads: HashMap<Tag, ManifestHead>,
}

/// What one paginated listing gathered.
#[derive(Default)]
struct Gathered {
    items: Vec<String>,
    /// GCR: digest → (media type, tags), from every page.
    gcr: Vec<(String, Option<String>, Vec<String>)>,
}

impl Http {
    /// Tags of a repository, following `Link` pagination. `None` when the repository does
    /// not exist.
    ///
    /// # Errors
    /// Transport, auth and unexpected status errors; a `Link` to another origin.
    pub(super) async fn tags(&self, repo: &RepoName) -> Result<Option<TagList>, RegistryError> {
        let first = self.url(&format!("/v2/{repo}/tags/list?n={PAGE}"));
        let pages = self
            .paginate("list tags", &Scope::pull(repo.as_str()), first, "tags")
            .await?;
        let Some(got) = pages else { return Ok(None) };
        let mut tags: Vec<Tag> = got
            .items
            .into_iter()
            .filter_map(|t| tag_entry(repo, &t))
            .collect();
        tags.sort();
        tags.dedup();
        let mut heads = HashMap::new();
        for (digest, media_type, names) in got.gcr {
            let Ok(digest) = digest.parse::<Digest>() else {
                continue;
            };
            for t in names.iter().filter_map(|n| n.parse::<Tag>().ok()) {
                let head = ManifestHead {
                    digest: digest.clone(),
                    media_type: media_type.clone(),
                };
                heads.insert(t, head);
            }
        }
        heads.retain(|t, _| tags.binary_search(t).is_ok());
        Ok(Some(TagList { tags, heads }))
    }

    /// Every repository in the catalog, following `Link` pagination.
    ///
    /// # Errors
    /// A registry that cannot list its repositories: the catalog refused (401 after login,
    /// 403, 404, 405), its token refused (Quay: 400), or an empty list (GAR answers 200 with
    /// none). The error says to name repositories instead of using globs.
    pub(super) async fn catalog(&self) -> Result<Vec<RepoName>, RegistryError> {
        let op = "catalog";
        let first = self.url(&format!("/v2/_catalog?n={PAGE}"));
        let refused = |why: String| {
            self.protocol(
                op,
                format!("this registry does not list its repositories ({why}); name them exactly in `repositories` instead of using globs"),
            )
        };
        let names = match self
            .paginate(op, &Scope::catalog(), first, "repositories")
            .await
        {
            Ok(Some(g)) if g.items.is_empty() => {
                return Err(refused("the catalog came back empty".into()))
            }
            Ok(Some(g)) => g.items,
            Ok(None) => return Err(refused("HTTP 404".into())),
            Err(RegistryError::Unauthorized { .. }) => {
                return Err(refused("refused after login".into()))
            }
            Err(e) => match e.status() {
                Some(s @ (400 | 401 | 403 | 404 | 405)) => {
                    return Err(refused(format!("HTTP {s}")))
                }
                _ => return Err(e),
            },
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
    ) -> Result<Option<Gathered>, RegistryError> {
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
        let mut out = Gathered::default();
        let mut seen = std::collections::HashSet::new();
        let mut next = Some(first);
        while let Some(url) = next.take() {
            let page = tokio::time::timeout_at(started + budget, self.page(op, scope, &url))
                .await
                .map_err(|_| too_slow(out.items.len()))?;
            let Some((page, link)) = page? else {
                if out.items.is_empty() {
                    return Ok(None);
                }
                return Err(self.protocol(op, "a later page is gone (404)"));
            };
            let before = out.items.len();
            let items = entries(&page, field)
                .ok_or_else(|| self.protocol(op, format!("the answer has no `{field}` list")))?;
            out.items
                .extend(items.into_iter().filter(|i| seen.insert(i.clone())));
            out.gcr.extend(gcr_manifests(&page));
            if out.items.len() > limit {
                return Err(self.protocol(
                    op,
                    format!("more than {limit} entries; raise list_limit for this registry if that is real (a registry that never stops paging?)"),
                ));
            }
            if out.items.len() == before {
                break;
            }
            next = match link {
                Some(l) => Some(self.same_origin(op, &url, &l)?),
                None => None,
            };
        }
        Ok(Some(out))
    }

    /// `link` resolved against `from`; one to another origin is refused, since it would take
    /// this registry's credentials elsewhere, and a list cut short there could read as tags
    /// gone from the source.
    pub(super) fn same_origin(
        &self,
        op: &'static str,
        from: &url::Url,
        link: &str,
    ) -> Result<url::Url, RegistryError> {
        let next = from
            .join(link)
            .map_err(|e| self.protocol(op, format!("unreadable Link {link:?}: {e}")))?;
        if next.origin() != from.origin() {
            return Err(self.protocol(
                op,
                format!(
                    "the next page is on another origin ({}); not followed",
                    next.origin().ascii_serialization()
                ),
            ));
        }
        Ok(next)
    }

    /// One page as JSON, with the `Link` to the next. `None` on 404.
    async fn page(
        &self,
        op: &'static str,
        scope: &Scope,
        url: &url::Url,
    ) -> Result<Option<(Value, Option<String>)>, RegistryError> {
        // Artifactory answers a manifest Accept on a tag list with 406 (JF-5).
        let rsp = self
            .send(op, scope, |h| {
                h.get(url.clone()).header(ACCEPT, "application/json")
            })
            .await?;
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
        let page = serde_json::from_slice(&body)
            .map_err(|e| self.protocol(op, format!("not a JSON list: {e}")))?;
        Ok(Some((page, link)))
    }
}

/// The page's list of names. `null` entries (Nexus, NX-4) are dropped, and so is a `null`
/// list (Distribution, for a repository whose tags were all deleted).
fn entries(page: &Value, field: &str) -> Option<Vec<String>> {
    match page.get(field)? {
        Value::Array(a) => Some(
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
        ),
        Value::Null => Some(Vec::new()),
        _ => None,
    }
}

/// A tag list entry as a tag. Digest-shaped entries (Artifactory, JF-4) are not tags and are
/// dropped quietly, as containers/image does; anything else that is no tag is logged.
fn tag_entry(repo: &RepoName, entry: &str) -> Option<Tag> {
    if entry.parse::<Digest>().is_ok() || entry.is_empty() {
        return None;
    }
    entry
        .parse()
        .map_err(|e| tracing::warn!(repo = %repo, error = %e, "skipping tag"))
        .ok()
}

/// GCR's `manifest` map (GCP-2): `{"sha256:…": {"mediaType": …, "tag": […]}}`.
fn gcr_manifests(page: &Value) -> Vec<(String, Option<String>, Vec<String>)> {
    let Some(map) = page.get("manifest").and_then(Value::as_object) else {
        return Vec::new();
    };
    map.iter()
        .map(|(digest, m)| {
            let media_type = m
                .get("mediaType")
                .and_then(Value::as_str)
                .map(str::to_owned);
            let tags = m
                .get("tag")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|t| t.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            (digest.clone(), media_type, tags)
        })
        .collect()
}

/// `Link: </v2/_catalog?last=x&n=100>; rel="next"` → the URL.
pub(super) fn link_next(h: &reqwest::header::HeaderMap) -> Option<String> {
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

    #[test]
    fn odd_tag_lists() {
        let repo: RepoName = "team/app".parse().unwrap();
        let page: Value = serde_json::from_str(
            r#"{"name":"team/app","tags":["v1",null,"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef","v2"],
               "child":[],"manifest":{"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef":
               {"imageSizeBytes":"12","mediaType":"application/vnd.oci.image.manifest.v1+json","tag":["v1"],"timeCreatedMs":"0"}}}"#,
        )
        .unwrap();
        let tags: Vec<Tag> = entries(&page, "tags")
            .unwrap()
            .iter()
            .filter_map(|t| tag_entry(&repo, t))
            .collect();
        assert_eq!(
            tags,
            vec!["v1".parse::<Tag>().unwrap(), "v2".parse().unwrap()]
        );
        let gcr = gcr_manifests(&page);
        assert_eq!(gcr.len(), 1);
        assert_eq!(gcr[0].2, vec!["v1".to_owned()]);
        assert_eq!(
            entries(&serde_json::json!({"tags": null}), "tags"),
            Some(vec![])
        );
        assert_eq!(entries(&serde_json::json!({"tags": 3}), "tags"), None);
    }
}
