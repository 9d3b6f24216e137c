//! Blob reads and uploads, as each profile's registry answers them: its upload sessions,
//! Locations, chunk rules, mounts and (for `whole_parts`) its atomic parts.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::Request;
use serde_json::json;

use super::knobs::Mount;
use super::wire::*;
use super::State;

pub(super) async fn blob(
    st: &Arc<State>,
    req: Request<Incoming>,
    method: &str,
    name: &str,
    digest: &str,
) -> Reply {
    let k = &st.knobs;
    if method == "GET" && k.blob_redirect {
        let other = st.other.get().cloned().unwrap_or_default();
        return Ok(full(
            307,
            &[(
                "Location",
                format!("{other}/_blob/{name}/blobs/{digest}?X-Amz-Signature=quirks"),
            )],
            "",
        ));
    }
    let rsp = forward(
        st,
        method,
        &format!("/v2/{name}/blobs/{digest}"),
        "",
        &req,
        None,
    )
    .await?;
    let status = rsp.status().as_u16();
    let mut out = relay(st, rsp).await?;
    if method == "HEAD" && status == 404 && k.head_missing_403 {
        *out.status_mut() = hyper::StatusCode::FORBIDDEN;
    }
    Ok(out)
}

/// `Content-Range: a-b` → (a, b); `None` for another form.
pub(super) fn plain_range(v: &str) -> Option<(u64, u64)> {
    let (a, b) = v.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn upload(
    st: &Arc<State>,
    req: Request<Incoming>,
    method: &str,
    name: &str,
    uuid: Option<String>,
    query: &str,
    mount_from: Option<String>,
) -> Reply {
    let k = &st.knobs;
    let path = match &uuid {
        Some(u) => format!("/v2/{name}/blobs/uploads/{u}"),
        None => format!("/v2/{name}/blobs/uploads/"),
    };
    let len: Option<u64> = header(&req, "content-length").and_then(|v| v.parse().ok());
    let range = header(&req, "content-range").map(str::to_owned);
    let chunked_te = header(&req, "transfer-encoding").is_some_and(|v| v.contains("chunked"));
    match (method, uuid) {
        ("POST", _) => {
            let mut q = query.to_owned();
            if let Some(from) = &mount_from {
                match k.mount {
                    Mount::Never => q = strip_mount(query),
                    Mount::StrictFrom if from.split('/').count() > 2 => {
                        return Ok(full(
                            400,
                            &[("Content-Type", "application/json".into())],
                            r#"{"details":"invalid repository name"}"#,
                        ));
                    }
                    Mount::FromMissing401 if !st.created.has(from) => {
                        let project = from.split('/').next().unwrap_or("");
                        let body = json!({"errors":[{"code":"UNAUTHORIZED","message":format!("project {project} not found")}]}).to_string();
                        return Ok(full(401, &[("WWW-Authenticate", String::new())], body));
                    }
                    Mount::Error500 => {
                        return Ok(oci_error(500, "UNKNOWN", "s3aws: RequestFailure"))
                    }
                    _ => {}
                }
            }
            let body = if len.unwrap_or(0) > 0 {
                Some(body_of(st, req, true))
            } else {
                None
            };
            let rsp = forward_req(
                st,
                "POST",
                &path,
                &q,
                body,
                &[("content-length", "0".into())],
            )
            .await?;
            let mut out = relay(st, rsp).await?;
            if k.quay_ranges && out.status() == 202 {
                out.headers_mut()
                    .insert("range", "bytes=0--1".parse().unwrap());
            }
            Ok(out)
        }
        ("PATCH", Some(u)) => {
            let patches = st.uploads.lock().unwrap().get(&u).map_or(0, |e| e.0);
            if k.require_content_length && (len.is_none() || chunked_te) {
                return Ok(oci_error(
                    400,
                    "CONTENT_LENGTH_INVALID",
                    "Content-Length required",
                ));
            }
            if k.monolithic_only && (range.is_some() || patches > 0) {
                return Ok(oci_error(
                    400,
                    "UNSUPPORTED",
                    "chunked uploads are not supported; use a monolithic upload",
                ));
            }
            if let Some(r) = &range {
                if k.strict_content_range && plain_range(r).is_none() {
                    return Ok(oci_error(
                        400,
                        "BLOB_UPLOAD_INVALID",
                        &format!("the Content-Range header format is invalid: {r}"),
                    ));
                }
                if let (true, Some((a, b)), Some(l)) = (k.range_matches_length, plain_range(r), len)
                {
                    if b + 1 - a != l {
                        return Ok(full(416, &[], ""));
                    }
                }
                if let (Some(min), Some(l)) = (k.min_part, len) {
                    if l < min {
                        return Ok(oci_error(
                            400,
                            "SIZE_INVALID",
                            "Layer parts must be at least 5 MiB in size",
                        ));
                    }
                }
            }
            st.stats.patches.fetch_add(1, Ordering::SeqCst);
            let headers: Vec<(&str, String)> =
                range.iter().map(|r| ("content-range", r.clone())).collect();
            let rsp = forward_req(
                st,
                "PATCH",
                &path,
                query,
                Some(body_of(st, req, true)),
                &headers,
            )
            .await?;
            let ok = rsp.status().as_u16() == 202;
            let mut out = relay(st, rsp).await?;
            if ok {
                let got = out
                    .headers()
                    .get("range")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let first = {
                    let mut uploads = st.uploads.lock().unwrap();
                    let e = uploads.entry(u).or_default();
                    e.0 += 1;
                    e.1.get_or_insert_with(|| got.clone().unwrap_or_default())
                        .clone()
                };
                if k.freeze_range {
                    out.headers_mut().insert("range", first.parse().unwrap());
                }
                if let Some(s) = k.patch_status {
                    *out.status_mut() = hyper::StatusCode::from_u16(s).unwrap();
                }
            }
            Ok(out)
        }
        ("PUT", Some(u)) => {
            if chunked_te && k.require_content_length {
                return Ok(oci_error(
                    400,
                    "CONTENT_LENGTH_INVALID",
                    "Content-Length required",
                ));
            }
            if let (Some(max), Some(l)) = (k.put_max_body, len) {
                if l > max {
                    return Ok(full(
                        413,
                        &[("Content-Type", "text/plain".into())],
                        "Request Entity Too Large - AzureContainerRegistry",
                    ));
                }
            }
            let patches = st.uploads.lock().unwrap().get(&u).map_or(0, |e| e.0);
            if k.last_chunk_only && patches > 1 {
                let _ = forward_req(st, "DELETE", &path, query, None, &[]).await;
                return Ok(oci_error(
                    400,
                    "DIGEST_INVALID",
                    "provided digest did not match uploaded content",
                ));
            }
            let body = if len.unwrap_or(0) > 0 {
                Some(body_of(st, req, true))
            } else {
                None
            };
            let rsp = forward_req(
                st,
                "PUT",
                &path,
                query,
                body,
                &[("content-length", len.unwrap_or(0).to_string())],
            )
            .await?;
            let ok = rsp.status().as_u16() == 201;
            let mut out = relay(st, rsp).await?;
            if let (true, Some(s)) = (ok, k.put_status) {
                *out.status_mut() = hyper::StatusCode::from_u16(s).unwrap();
            }
            Ok(out)
        }
        (m, Some(_)) => {
            let rsp = forward_req(st, m, &path, query, None, &[]).await?;
            let mut out = relay(st, rsp).await?;
            if k.quay_ranges && m == "GET" {
                // QUAY-3: the status's end is exclusive, behind `bytes=`.
                let fixed = out
                    .headers()
                    .get("range")
                    .and_then(|v| v.to_str().ok())
                    .and_then(plain_range)
                    .map(|(a, b)| format!("bytes={a}-{}", b + 1));
                if let Some(f) = fixed {
                    out.headers_mut().insert("range", f.parse().unwrap());
                }
            }
            Ok(out)
        }
        _ => Ok(oci_error(405, "UNSUPPORTED", "method not allowed")),
    }
}

pub(super) fn strip_mount(query: &str) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(
            url::form_urlencoded::parse(query.as_bytes())
                .filter(|(k, _)| k != "mount" && k != "from"),
        )
        .finish()
}
