//! A registry that lies, for the hardening tests: each repository's answers are built to
//! break a client in one way. `fine` is an honest one-tag repository beside them.
//!
//! - `endless`: every tag-list page holds a new tag and a `Link` to the next, forever;
//! - `deep`: tag `1.0` is an index whose only child is an index, 64 levels down;
//! - `evil`: tag `1.0` is a manifest naming a layer `sha256:../../x`;
//! - `notjson`: the tag list is not JSON;
//! - `liar`: every manifest answer names another digest in `Docker-Content-Digest`;
//! - `huge`: tag `1.0` is a 5 MiB manifest;
//! - `wide`: tag `1.0` is an index of 5,000 children;
//! - `trickle`: the layer of tag `1.0` comes one byte every 3 seconds;
//! - `slow`: a 2 MiB layer at 256 KiB/s: slow but moving;
//! - `looping`: every tag-list page links back to itself (the fine image under `1.0`);
//! - `badjson`: tag `1.0` is not JSON; `wrongtype`: tag `1.0` has a media type nobody knows;
//! - `moved`: blob GETs are redirected (307) to an "object store" on another port, which
//!   counts requests that carry an `Authorization` header (none should).
//!
//! Every request without `Authorization` is challenged (Basic), so a client with credentials
//! sends them here, and a leak to the object store would show.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::images::{self, Format};

pub struct Hostile {
    pub port: u16,
    /// Tag-list pages served for `endless`.
    pub pages: Arc<AtomicU64>,
    /// Blob GETs the object store served, and how many of them carried `Authorization`.
    pub store_gets: Arc<AtomicU64>,
    pub store_auth: Arc<AtomicU64>,
}

struct Served {
    /// (repository, reference) → (media type, bytes); blobs by digest.
    manifests: HashMap<(String, String), (&'static str, Vec<u8>)>,
    blobs: HashMap<String, Vec<u8>>,
    pages: Arc<AtomicU64>,
    /// Where `moved` sends blob GETs.
    store: String,
}

/// An image of one layer of `size` bytes in `repo` under tag `1.0`.
fn one_layer(s: &mut Served, repo: &str, seed: u64, size: usize) {
    let img = images::image(
        Format::Oci,
        &[&images::layer(seed, size)],
        "amd64",
        None,
        repo,
    );
    for b in &img.blobs {
        s.blobs.insert(b.digest.clone(), b.bytes.clone());
    }
    s.add(repo, "1.0", img.media_type, img.manifest.clone());
    s.add(repo, &img.digest, img.media_type, img.manifest);
}

impl Hostile {
    pub fn start() -> Self {
        let (store_port, store_gets, store_auth) = object_store();
        let store = format!("http://127.0.0.1:{store_port}");
        let mut s = Served {
            manifests: HashMap::new(),
            blobs: HashMap::new(),
            pages: Arc::default(),
            store,
        };
        let fine = images::image(
            Format::Oci,
            &[&images::layer(71, 20_000)],
            "amd64",
            None,
            "fine",
        );
        for b in &fine.blobs {
            s.blobs.insert(b.digest.clone(), b.bytes.clone());
        }
        s.add("fine", "1.0", fine.media_type, fine.manifest.clone());
        s.add("fine", &fine.digest, fine.media_type, fine.manifest.clone());
        // Built from the bottom up: each level names the digest of the one below.
        let (mut media_type, mut bytes) = (fine.media_type, fine.manifest.clone());
        for _ in 0..64 {
            s.add("deep", &images::sha256(&bytes), media_type, bytes.clone());
            let child = serde_json::json!({ "mediaType": media_type, "digest": images::sha256(&bytes), "size": bytes.len() });
            bytes = serde_json::to_vec(&serde_json::json!({ "schemaVersion": 2, "mediaType": Format::Oci.index(), "manifests": [child] }))
                .unwrap();
            media_type = Format::Oci.index();
        }
        s.add("deep", "1.0", media_type, bytes);
        let evil = serde_json::json!({
            "schemaVersion": 2, "mediaType": Format::Oci.manifest(),
            "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": fine.blobs[0].digest, "size": fine.blobs[0].bytes.len() },
            "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:../../x", "size": 10 }],
        });
        s.add(
            "evil",
            "1.0",
            Format::Oci.manifest(),
            serde_json::to_vec(&evil).unwrap(),
        );
        s.add("liar", "1.0", fine.media_type, fine.manifest.clone());
        s.add("looping", "1.0", fine.media_type, fine.manifest.clone());
        s.add(
            "looping",
            &fine.digest,
            fine.media_type,
            fine.manifest.clone(),
        );
        s.add(
            "badjson",
            "1.0",
            Format::Oci.manifest(),
            b"{\"schemaVersion\": 2, \"layers\": [".to_vec(),
        );
        s.add(
            "wrongtype",
            "1.0",
            "application/vnd.evil+json",
            br#"{"schemaVersion":2,"mediaType":"application/vnd.evil+json"}"#.to_vec(),
        );
        let mut huge = serde_json::from_slice::<serde_json::Value>(&fine.manifest).unwrap();
        huge["annotations"] = serde_json::json!({ "padding": "x".repeat(5 << 20) });
        s.add(
            "huge",
            "1.0",
            fine.media_type,
            serde_json::to_vec(&huge).unwrap(),
        );
        let child = serde_json::json!({ "mediaType": fine.media_type, "digest": fine.digest, "size": fine.manifest.len(),
                                        "platform": { "os": "linux", "architecture": "amd64" } });
        let wide = serde_json::json!({ "schemaVersion": 2, "mediaType": Format::Oci.index(), "manifests": vec![child; 5000] });
        s.add(
            "wide",
            "1.0",
            Format::Oci.index(),
            serde_json::to_vec(&wide).unwrap(),
        );
        one_layer(&mut s, "trickle", 72, 10_000);
        one_layer(&mut s, "slow", 73, 2 << 20);
        one_layer(&mut s, "moved", 74, 300_000);
        let pages = s.pages.clone();
        let app = axum::Router::new()
            .route("/v2/", get(|| async { "{}" }))
            .route("/v2/{repo}/tags/list", get(tags))
            .route("/v2/{repo}/manifests/{reference}", get(manifest))
            .route("/v2/{repo}/blobs/{digest}", get(blob))
            .layer(axum::middleware::from_fn(challenge))
            .with_state(Arc::new(s));
        let port = super::serve::on_own_thread(|listener| async move {
            axum::serve(listener, app).await.unwrap()
        });
        Hostile {
            port,
            pages,
            store_gets,
            store_auth,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Served {
    fn add(&mut self, repo: &str, reference: &str, media_type: &'static str, bytes: Vec<u8>) {
        self.manifests
            .insert((repo.to_owned(), reference.to_owned()), (media_type, bytes));
    }
}

async fn tags(State(s): State<Arc<Served>>, Path(repo): Path<String>, uri: Uri) -> Response {
    match repo.as_str() {
        "endless" => {
            let last = uri
                .query()
                .unwrap_or("")
                .split('&')
                .find_map(|kv| kv.strip_prefix("last=t"));
            let n = last
                .and_then(|l| l.parse::<u64>().ok())
                .map_or(0, |n| n + 1);
            s.pages.fetch_add(1, Ordering::SeqCst);
            let mut h = HeaderMap::new();
            let link = format!("</v2/endless/tags/list?n=1&last=t{n}>; rel=\"next\"");
            h.insert(header::LINK, HeaderValue::from_str(&link).unwrap());
            (h, format!("{{\"name\":\"endless\",\"tags\":[\"t{n}\"]}}")).into_response()
        }
        "notjson" => "<html>this is not a tag list</html>".into_response(),
        "looping" => {
            let mut h = HeaderMap::new();
            h.insert(
                header::LINK,
                HeaderValue::from_static("</v2/looping/tags/list?n=1&last=0>; rel=\"next\""),
            );
            (h, "{\"name\":\"looping\",\"tags\":[\"1.0\"]}").into_response()
        }
        _ if s.manifests.contains_key(&(repo.clone(), "1.0".to_owned())) => {
            format!("{{\"name\":\"{repo}\",\"tags\":[\"1.0\"]}}").into_response()
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn manifest(
    State(s): State<Arc<Served>>,
    Path((repo, reference)): Path<(String, String)>,
) -> Response {
    let found = if repo == "liar" {
        s.manifests.get(&(repo.clone(), "1.0".to_owned()))
    } else {
        s.manifests.get(&(repo.clone(), reference))
    };
    match found {
        Some((media_type, bytes)) => {
            // The liar names the digest of another manifest, whatever was asked.
            let digest = if repo == "liar" {
                images::sha256(b"another manifest")
            } else {
                images::sha256(bytes)
            };
            (
                [
                    (header::CONTENT_TYPE, media_type.to_string()),
                    (
                        header::HeaderName::from_static("docker-content-digest"),
                        digest,
                    ),
                ],
                bytes.clone(),
            )
                .into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn blob(
    State(s): State<Arc<Served>>,
    Path((repo, digest)): Path<(String, String)>,
) -> Response {
    let Some(bytes) = s.blobs.get(&digest).cloned() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let layer = bytes.len() > 5_000; // configs are small; only layers misbehave
    match repo.as_str() {
        "moved" if layer => (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, format!("{}/store/{digest}", s.store))],
        )
            .into_response(),
        "trickle" if layer => paced(bytes, 1, Duration::from_secs(3)),
        "slow" if layer => paced(bytes, 64 << 10, Duration::from_millis(250)),
        _ => bytes.into_response(),
    }
}

/// `bytes` in pieces of `piece`, one every `every`, with the full length announced up front.
fn paced(bytes: Vec<u8>, piece: usize, every: Duration) -> Response {
    let len = bytes.len();
    let pieces: Vec<Vec<u8>> = bytes.chunks(piece).map(<[u8]>::to_vec).collect();
    let stream = futures_util::stream::iter(pieces).then(move |p| async move {
        tokio::time::sleep(every).await;
        Ok::<_, std::io::Error>(p)
    });
    (
        [(header::CONTENT_LENGTH, len.to_string())],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

/// 401 with a Basic challenge to anything sent without credentials (the object store is a
/// different server and never challenges).
async fn challenge(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    if req.headers().contains_key(header::AUTHORIZATION) {
        return next.run(req).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Basic realm=\"hostile\"")],
    )
        .into_response()
}

/// A plain file server standing in for object storage: `/store/{digest}` → the blob's bytes,
/// which it gets from the same generated images. Returns (port, GETs, GETs with Authorization).
fn object_store() -> (u16, Arc<AtomicU64>, Arc<AtomicU64>) {
    let mut blobs = HashMap::new();
    let img = images::image(
        Format::Oci,
        &[&images::layer(74, 300_000)],
        "amd64",
        None,
        "moved",
    );
    for b in &img.blobs {
        blobs.insert(b.digest.clone(), b.bytes.clone());
    }
    let (gets, auth) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (g, a) = (gets.clone(), auth.clone());
    let blobs = Arc::new(blobs);
    let app = axum::Router::new().route(
        "/store/{digest}",
        get(move |Path(digest): Path<String>, headers: HeaderMap| {
            let (g, a, blobs) = (g.clone(), a.clone(), blobs.clone());
            async move {
                g.fetch_add(1, Ordering::SeqCst);
                if headers.contains_key(header::AUTHORIZATION) {
                    a.fetch_add(1, Ordering::SeqCst);
                }
                blobs.get(&digest).cloned().map_or_else(
                    || StatusCode::NOT_FOUND.into_response(),
                    IntoResponse::into_response,
                )
            }
        }),
    );
    let port =
        super::serve::on_own_thread(
            |listener| async move { axum::serve(listener, app).await.unwrap() },
        );
    (port, gets, auth)
}
