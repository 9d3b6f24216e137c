//! What every answer of the quirks proxy is made of: replies in a registry's shapes, and
//! requests forwarded to the backend with their bodies streamed (throttled, counted) both ways.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use serde_json::{json, Value};

use super::knobs::Location;
use super::State;

pub(super) type Body = BoxBody<Bytes, std::io::Error>;

pub(super) type Reply = Result<Response<Body>, std::io::Error>;

pub(super) const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

pub(super) fn full(
    status: u16,
    headers: &[(&str, String)],
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut r = Response::builder().status(status);
    for (k, v) in headers {
        r = r.header(*k, v.as_str());
    }
    r.body(
        Full::new(body.into())
            .map_err(|never| match never {})
            .boxed(),
    )
    .unwrap()
}

pub(super) fn oci_error(status: u16, code: &str, message: &str) -> Response<Body> {
    let body = json!({ "errors": [{ "code": code, "message": message }] }).to_string();
    full(status, &[("Content-Type", "application/json".into())], body)
}

pub(super) fn header<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

pub(super) fn query_param(query: &str, key: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// Send the request on to the backend, body streamed (and throttled, and counted as blob
/// bytes when `count`).
pub(super) async fn forward(
    st: &State,
    method: &str,
    path: &str,
    query: &str,
    req: &Request<Incoming>,
    body: Option<(reqwest::Body, Option<u64>)>,
) -> Result<reqwest::Response, std::io::Error> {
    let copied: Vec<(&str, String)> = ["content-type", "accept", "range", "content-range"]
        .into_iter()
        .filter_map(|name| header(req, name).map(|v| (name, v.to_owned())))
        .collect();
    to_backend(st, method, path, query, body, &copied).await
}

/// The request's body as a stream to the backend: throttled to `knobs.throttle`, counted.
pub(super) fn body_of(
    st: &Arc<State>,
    req: Request<Incoming>,
    count: bool,
) -> (reqwest::Body, Option<u64>) {
    let len = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let (st, rate, whole) = (st.clone(), st.knobs.throttle, st.knobs.whole_parts);
    let stream = req.into_body().into_data_stream().then(move |chunk| {
        let st = st.clone();
        async move {
            let chunk = chunk.map_err(std::io::Error::other)?;
            if count {
                st.stats
                    .blob_bytes
                    .fetch_add(chunk.len() as u64, Ordering::SeqCst);
            }
            if let Some(rate) = rate {
                tokio::time::sleep(Duration::from_secs_f64(
                    chunk.len() as f64 / rate.max(1) as f64,
                ))
                .await;
            }
            Ok::<_, std::io::Error>(chunk.to_vec())
        }
    });
    if whole {
        // The part reaches the backend only once all of it has arrived: a body cut by the
        // client's death writes nothing, as on storage whose parts are atomic.
        let all = stream.try_concat();
        return (
            reqwest::Body::wrap_stream(futures_util::stream::once(all)),
            len,
        );
    }
    (reqwest::Body::wrap_stream(stream), len)
}

/// The backend's answer, with its Location moved to where the profile points it, and its
/// error bodies in the profile's shape.
pub(super) async fn relay(st: &State, rsp: reqwest::Response) -> Reply {
    let status = rsp.status().as_u16();
    let reshape = status >= 400 && st.knobs.errors_artifactory;
    let mut b = Response::builder().status(status);
    for (name, value) in rsp.headers() {
        if reshape && name == "content-length" {
            continue;
        }
        if name == "location" {
            b = b.header("location", relocate(st, value.to_str().unwrap_or("")));
        } else if name != "transfer-encoding" && name != "connection" {
            b = b.header(name, value);
        }
    }
    if reshape {
        let body = rsp.bytes().await.map_err(std::io::Error::other)?;
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let message = v["errors"][0]["message"]
            .as_str()
            .unwrap_or("request failed")
            .to_owned();
        let shaped = json!({"errors":[{"status": status, "message": message}]}).to_string();
        let b = b.header("content-length", shaped.len());
        return Ok(b
            .body(
                Full::new(Bytes::from(shaped))
                    .map_err(|never| match never {})
                    .boxed(),
            )
            .unwrap());
    }
    let stream = rsp
        .bytes_stream()
        .map_ok(Frame::data)
        .map_err(std::io::Error::other);
    Ok(b.body(BodyExt::boxed(StreamBody::new(stream))).unwrap())
}

pub(super) fn relocate(st: &State, location: &str) -> String {
    let origin = st.origin.get().cloned().unwrap_or_default();
    let at_proxy = location.replacen(&st.backend, &origin, 1);
    match st.knobs.location {
        Location::AsIs => at_proxy,
        Location::Relative => at_proxy
            .strip_prefix(&origin)
            .map_or(at_proxy.clone(), str::to_owned),
        Location::OtherPort => at_proxy.replacen(&origin, st.other.get().unwrap(), 1),
    }
}

/// A request to the backend with explicit headers (an upload step).
pub(super) async fn forward_req(
    st: &State,
    method: &str,
    path: &str,
    query: &str,
    body: Option<(reqwest::Body, Option<u64>)>,
    headers: &[(&str, String)],
) -> Result<reqwest::Response, std::io::Error> {
    let mut all = vec![("content-type", "application/octet-stream".to_owned())];
    all.extend(headers.iter().cloned());
    to_backend(st, method, path, query, body, &all).await
}

/// One request to the backend, with these headers and, when given, this body and length.
async fn to_backend(
    st: &State,
    method: &str,
    path: &str,
    query: &str,
    body: Option<(reqwest::Body, Option<u64>)>,
    headers: &[(&str, String)],
) -> Result<reqwest::Response, std::io::Error> {
    let q = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    let url = format!("{}{path}{q}", st.backend);
    let m = reqwest::Method::from_bytes(method.as_bytes()).map_err(std::io::Error::other)?;
    let mut rb = st.client.request(m, url).timeout(Duration::from_secs(600));
    for (k, v) in headers {
        rb = rb.header(*k, v.as_str());
    }
    if let Some((b, len)) = body {
        if let Some(len) = len {
            rb = rb.header("content-length", len);
        }
        rb = rb.body(b);
    }
    rb.send().await.map_err(std::io::Error::other)
}
