//! Tags, the catalog, manifests, deletes and referrers, as each profile's registry answers
//! them.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use super::knobs::{Catalog, Delete, Immutable, Referrers};
use super::wire::*;
use super::State;

pub(super) async fn catalog(st: &Arc<State>, req: &Request<Incoming>, query: &str) -> Reply {
    match st.knobs.catalog {
        Catalog::Open => {
            relay(
                st,
                forward(st, "GET", "/v2/_catalog", query, req, None).await?,
            )
            .await
        }
        Catalog::Empty => Ok(full(
            200,
            &[("Content-Type", "application/json".into())],
            r#"{"repositories":[]}"#,
        )),
        Catalog::NotFound => Ok(oci_error(404, "NOT_FOUND", "page not found")),
        Catalog::Deny401 => Ok(oci_error(401, "UNAUTHORIZED", "authentication required")),
        Catalog::AdminOnly => Ok(oci_error(
            401,
            "UNAUTHORIZED",
            "unauthorized to list catalog: unauthorized to list catalog",
        )),
    }
}

/// Every tag of `name` on the backend (2.8 ignores `n` and `last`), minus the hidden ones.
pub(super) async fn all_tags(
    st: &State,
    req: &Request<Incoming>,
    name: &str,
) -> Result<Option<Vec<String>>, std::io::Error> {
    let rsp = forward(st, "GET", &format!("/v2/{name}/tags/list"), "", req, None).await?;
    if rsp.status() == 404 {
        return Ok(None);
    }
    let v: Value = rsp.json().await.map_err(std::io::Error::other)?;
    let hidden = st.hidden.lock().unwrap().clone();
    let mut tags: Vec<String> = v["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str())
        .filter(|t| !hidden.contains(&(name.to_owned(), (*t).to_owned())))
        .map(str::to_owned)
        .collect();
    tags.sort();
    Ok(Some(tags))
}

pub(super) async fn head_digest(
    st: &State,
    req: &Request<Incoming>,
    name: &str,
    reference: &str,
) -> Option<String> {
    let url = format!("{}/v2/{name}/manifests/{reference}", st.backend);
    let _ = req;
    let rsp = st
        .client
        .head(url)
        .header("accept", MANIFEST_ACCEPT)
        .send()
        .await
        .ok()?;
    rsp.status()
        .is_success()
        .then(|| {
            rsp.headers()
                .get("docker-content-digest")?
                .to_str()
                .ok()
                .map(str::to_owned)
        })
        .flatten()
}

pub(super) async fn tags(
    st: &Arc<State>,
    req: &Request<Incoming>,
    name: &str,
    query: &str,
) -> Reply {
    let k = &st.knobs;
    if k.tags_require_json
        && header(req, "accept").is_some_and(|a| !a.contains("json") && !a.contains("*/*"))
    {
        return Ok(oci_error(406, "UNSUPPORTED", "not acceptable"));
    }
    let n: Option<usize> = query_param(query, "n").and_then(|n| n.parse().ok());
    if let (Some(max), Some(n)) = (k.tags_max_n, n) {
        if n > max {
            return Ok(oci_error(400, "UNSUPPORTED", &format!("Invalid parameter at 'maxResults' failed to satisfy constraint: 'Member must have value less than or equal to {max}'")));
        }
    }
    let Some(mut tags) = all_tags(st, req, name).await? else {
        return Ok(oci_error(
            404,
            "NAME_UNKNOWN",
            &format!("repository {name} not known"),
        ));
    };
    let mut link = None;
    if let Some(page) = k.tags_page {
        if let Some(last) = query_param(query, "last") {
            tags.retain(|t| *t > last);
        }
        let size = n.unwrap_or(page).min(page).max(1);
        if tags.len() > size {
            tags.truncate(size);
            let last = tags.last().cloned().unwrap_or_default();
            // An absolute Link to the other listener: another origin, which a client must not
            // follow with the credentials of this one.
            let base = if k.tags_link_elsewhere {
                st.other.get().cloned().unwrap_or_default()
            } else {
                String::new()
            };
            link = Some(format!(
                "<{base}/v2/{name}/tags/list?n={size}&last={last}>; rel=\"next\""
            ));
        }
    }
    let mut list: Vec<Value> = tags.iter().map(|t| json!(t)).collect();
    if k.tags_null {
        list.push(Value::Null);
    }
    if k.tags_digest {
        list.push(json!(format!("sha256:{}", "0".repeat(64))));
    }
    let mut doc = json!({ "name": name, "tags": list });
    if k.tags_gcr {
        let mut map = serde_json::Map::new();
        for t in &tags {
            if let Some(d) = head_digest(st, req, name, t).await {
                let entry = map.entry(d).or_insert_with(|| json!({"imageSizeBytes":"0","mediaType":"","tag":[],"timeCreatedMs":"0","timeUploadedMs":"0"}));
                entry["tag"].as_array_mut().unwrap().push(json!(t));
            }
        }
        doc["child"] = json!([]);
        doc["manifest"] = Value::Object(map);
    }
    let mut headers = vec![("Content-Type", "application/json".to_owned())];
    if let Some(l) = link {
        headers.push(("Link", l));
    }
    Ok(full(200, &headers, doc.to_string()))
}

pub(super) fn is_digest(r: &str) -> bool {
    r.starts_with("sha256:")
}

pub(super) async fn manifest(
    st: &Arc<State>,
    req: Request<Incoming>,
    method: &str,
    name: &str,
    reference: &str,
    query: &str,
) -> Reply {
    let k = &st.knobs;
    let hidden = st
        .hidden
        .lock()
        .unwrap()
        .contains(&(name.to_owned(), reference.to_owned()));
    match method {
        "PUT" => {
            if k.require_content_length && header(&req, "content-length").is_none() {
                return Ok(oci_error(
                    411,
                    "MANIFEST_INVALID",
                    "manifest upload requires Content-Length",
                ));
            }
            let media_type = header(&req, "content-type").unwrap_or("").to_owned();
            if k.oci_only && media_type.starts_with("application/vnd.docker.") {
                return Ok(oci_error(400, "MANIFEST_INVALID", "manifest invalid"));
            }
            if let Some(style) = k.immutable.filter(|_| !is_digest(reference)) {
                if !hidden && head_digest(st, &req, name, reference).await.is_some() {
                    return Ok(immutable(style, name, reference));
                }
            }
            let body = req
                .collect()
                .await
                .map_err(std::io::Error::other)?
                .to_bytes();
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if k.index_children_must_exist {
                for c in v["manifests"].as_array().into_iter().flatten() {
                    let d = c["digest"].as_str().unwrap_or("");
                    let url = format!("{}/v2/{name}/manifests/{d}", st.backend);
                    let present = st
                        .client
                        .head(url)
                        .header("accept", MANIFEST_ACCEPT)
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                    if !present {
                        return Ok(oci_error(
                            400,
                            "MANIFEST_BLOB_UNKNOWN",
                            &format!("blob unknown to registry: {d}"),
                        ));
                    }
                }
            }
            let url = format!("{}/v2/{name}/manifests/{reference}", st.backend);
            let rsp = st
                .client
                .put(url)
                .header("content-type", media_type)
                .body(body.clone())
                .send()
                .await
                .map_err(std::io::Error::other)?;
            let ok = rsp.status().is_success();
            st.stats.manifest_puts.fetch_add(1, Ordering::SeqCst);
            if ok {
                st.hidden
                    .lock()
                    .unwrap()
                    .remove(&(name.to_owned(), reference.to_owned()));
            }
            let subject = v["subject"]["digest"].as_str().map(str::to_owned);
            if let (true, Some(subject), Referrers::Api { subject_header }) =
                (ok, subject, k.referrers)
            {
                let digest = format!("sha256:{}", hex::encode(Sha256::digest(&body)));
                let artifact = v["artifactType"]
                    .as_str()
                    .or(v["config"]["mediaType"].as_str())
                    .unwrap_or("")
                    .to_owned();
                let mut d = json!({"mediaType": v["mediaType"], "digest": digest, "size": body.len(), "artifactType": artifact});
                if let Some(a) = v.get("annotations") {
                    d["annotations"] = a.clone();
                }
                {
                    let mut all = st.referrers.lock().unwrap();
                    let list = all.entry((name.to_owned(), subject.clone())).or_default();
                    if !list.iter().any(|x| x["digest"] == d["digest"]) {
                        list.push(d);
                    }
                }
                let mut out = relay(st, rsp).await?;
                if subject_header {
                    out.headers_mut()
                        .insert("oci-subject", subject.parse().unwrap());
                }
                return Ok(out);
            }
            relay(st, rsp).await
        }
        "DELETE" => delete(st, &req, name, reference).await,
        _ => {
            if hidden {
                return Ok(oci_error(404, "MANIFEST_UNKNOWN", "manifest unknown"));
            }
            if method == "GET" {
                if let Some(budget) = k.pull_budget {
                    let used = st.pulls.fetch_add(1, Ordering::SeqCst) + 1;
                    if used > budget {
                        return Ok(oci_error(
                            429,
                            "TOOMANYREQUESTS",
                            "You have reached your pull rate limit.",
                        ));
                    }
                }
            }
            let rsp = forward(
                st,
                method,
                &format!("/v2/{name}/manifests/{reference}"),
                query,
                &req,
                None,
            )
            .await?;
            let status = rsp.status().as_u16();
            let mut out = relay(st, rsp).await?;
            if method == "HEAD" {
                if k.head_strip_digest {
                    out.headers_mut().remove("docker-content-digest");
                }
                if k.head_missing_403 && status == 404 {
                    *out.status_mut() = hyper::StatusCode::FORBIDDEN;
                }
                if k.head_length_differs {
                    let len = out
                        .headers()
                        .get("content-length")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok());
                    if let Some(len) = len {
                        out.headers_mut()
                            .insert("content-length", (len + 13).into());
                    }
                }
            }
            if let Some(budget) = k.pull_budget {
                let left = budget.saturating_sub(st.pulls.load(Ordering::SeqCst));
                out.headers_mut().insert(
                    "ratelimit-limit",
                    format!("{budget};w=21600").parse().unwrap(),
                );
                out.headers_mut().insert(
                    "ratelimit-remaining",
                    format!("{left};w=21600").parse().unwrap(),
                );
            }
            Ok(out)
        }
    }
}

pub(super) fn immutable(style: Immutable, name: &str, tag: &str) -> Response<Body> {
    match style {
        Immutable::Ecr => oci_error(400, "TAG_INVALID", &format!("The image tag '{tag}' already exists in the '{name}' repository and cannot be overwritten because the tag is immutable.")),
        Immutable::Harbor => oci_error(412, "PRECONDITION", &format!("Failed to process request due to '{name}:{tag}' configured as immutable.")),
        Immutable::Quay => oci_error(409, "TAG_IMMUTABLE", "tag is immutable and cannot be overwritten"),
        Immutable::Hub => oci_error(403, "DENIED", "requested access to the resource is denied - This tag is already assigned to an image in this repository and cannot be updated due to immutability settings"),
    }
}

pub(super) async fn delete(
    st: &Arc<State>,
    req: &Request<Incoming>,
    name: &str,
    reference: &str,
) -> Reply {
    let tagged_elsewhere = |digest: String, except: Option<String>| {
        let st = st.clone();
        async move {
            let mut others = Vec::new();
            let tags = all_tags(&st, req, name)
                .await
                .ok()
                .flatten()
                .unwrap_or_default();
            for t in tags.into_iter().filter(|t| Some(t) != except.as_ref()) {
                if head_digest(&st, req, name, &t).await.as_deref() == Some(digest.as_str()) {
                    others.push(t);
                }
            }
            others
        }
    };
    match st.knobs.delete {
        Delete::Spec => {
            relay(
                st,
                forward(
                    st,
                    "DELETE",
                    &format!("/v2/{name}/manifests/{reference}"),
                    "",
                    req,
                    None,
                )
                .await?,
            )
            .await
        }
        Delete::Deny405 => Ok(oci_error(
            405,
            "UNSUPPORTED",
            "The operation is unsupported.",
        )),
        Delete::Hub => {
            if !is_digest(reference) {
                return Ok(oci_error(
                    405,
                    "UNSUPPORTED",
                    "Only digest-based deletion is allowed",
                ));
            }
            if !tagged_elsewhere(reference.to_owned(), None)
                .await
                .is_empty()
            {
                return Ok(oci_error(403, "DENIED", "the manifest is tagged"));
            }
            relay(
                st,
                forward(
                    st,
                    "DELETE",
                    &format!("/v2/{name}/manifests/{reference}"),
                    "",
                    req,
                    None,
                )
                .await?,
            )
            .await
        }
        Delete::Tags => {
            if is_digest(reference) {
                return relay(
                    st,
                    forward(
                        st,
                        "DELETE",
                        &format!("/v2/{name}/manifests/{reference}"),
                        "",
                        req,
                        None,
                    )
                    .await?,
                )
                .await;
            }
            let Some(digest) = head_digest(st, req, name, reference).await else {
                return Ok(oci_error(404, "MANIFEST_UNKNOWN", "manifest unknown"));
            };
            if st
                .hidden
                .lock()
                .unwrap()
                .contains(&(name.to_owned(), reference.to_owned()))
            {
                return Ok(oci_error(404, "MANIFEST_UNKNOWN", "manifest unknown"));
            }
            if tagged_elsewhere(digest.clone(), Some(reference.to_owned()))
                .await
                .is_empty()
            {
                let rsp = forward(
                    st,
                    "DELETE",
                    &format!("/v2/{name}/manifests/{digest}"),
                    "",
                    req,
                    None,
                )
                .await?;
                if !rsp.status().is_success() {
                    return relay(st, rsp).await;
                }
            }
            // 2.8 cannot remove one tag of several: the proxy hides it from then on.
            st.hidden
                .lock()
                .unwrap()
                .insert((name.to_owned(), reference.to_owned()));
            Ok(full(202, &[], ""))
        }
    }
}

pub(super) fn referrers(st: &State, name: &str, digest: &str, query: &str) -> Reply {
    match st.knobs.referrers {
        Referrers::Absent => Ok(full(
            404,
            &[("Content-Type", "text/plain".into())],
            "404 page not found\n",
        )),
        Referrers::Html404 => Ok(full(
            404,
            &[("Content-Type", "text/html".into())],
            "<!DOCTYPE html><html><body>The page you were looking for doesn't exist.</body></html>",
        )),
        Referrers::Redirect303 => {
            let other = st.other.get().cloned().unwrap_or_default();
            let truncated = &digest[..digest.len().min(14)];
            Ok(full(303, &[("Location", format!("{other}/_web/v2/packages/container/package/{name}%2Freferrers%2F{truncated}"))], ""))
        }
        Referrers::Api { .. } => {
            let want = query_param(query, "artifactType");
            let all = st
                .referrers
                .lock()
                .unwrap()
                .get(&(name.to_owned(), digest.to_owned()))
                .cloned()
                .unwrap_or_default();
            let list: Vec<Value> = all
                .into_iter()
                .filter(|d| {
                    want.as_ref()
                        .is_none_or(|w| d["artifactType"] == w.as_str())
                })
                .collect();
            let body = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": list}).to_string();
            let mut headers = vec![(
                "Content-Type",
                "application/vnd.oci.image.index.v1+json".to_owned(),
            )];
            if want.is_some() {
                headers.push(("OCI-Filters-Applied", "artifactType".into()));
            }
            Ok(full(200, &headers, body))
        }
    }
}
