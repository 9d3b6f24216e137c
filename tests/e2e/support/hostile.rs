//! A registry that lies, for the hardening tests: each repository's answers are built to
//! break a client in one way. `fine` is an honest one-tag repository beside them.
//!
//! - `endless`: every tag-list page holds a new tag and a `Link` to the next, forever;
//! - `deep`: tag `1.0` is an index whose only child is an index, 64 levels down;
//! - `evil`: tag `1.0` is a manifest naming a layer `sha256:../../x`;
//! - `notjson`: the tag list is not JSON.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::images::{self, Format};

pub struct Hostile {
    pub port: u16,
    /// Tag-list pages served for `endless`.
    pub pages: Arc<AtomicU64>,
}

struct Served {
    /// (repository, reference) → (media type, bytes); blobs by digest.
    manifests: HashMap<(String, String), (&'static str, Vec<u8>)>,
    blobs: HashMap<String, Vec<u8>>,
    pages: Arc<AtomicU64>,
}

impl Hostile {
    pub fn start() -> Self {
        let mut s = Served { manifests: HashMap::new(), blobs: HashMap::new(), pages: Arc::default() };
        let fine = images::image(Format::Oci, &[&images::layer(71, 20_000)], "amd64", None, "fine");
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
        s.add("evil", "1.0", Format::Oci.manifest(), serde_json::to_vec(&evil).unwrap());
        let pages = s.pages.clone();
        let app = axum::Router::new()
            .route("/v2/", get(|| async { "{}" }))
            .route("/v2/{repo}/tags/list", get(tags))
            .route("/v2/{repo}/manifests/{reference}", get(manifest))
            .route("/v2/{repo}/blobs/{digest}", get(blob))
            .with_state(Arc::new(s));
        let port = super::serve::on_own_thread(|listener| async move { axum::serve(listener, app).await.unwrap() });
        Hostile { port, pages }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Served {
    fn add(&mut self, repo: &str, reference: &str, media_type: &'static str, bytes: Vec<u8>) {
        self.manifests.insert((repo.to_owned(), reference.to_owned()), (media_type, bytes));
    }
}

async fn tags(State(s): State<Arc<Served>>, Path(repo): Path<String>, uri: Uri) -> Response {
    match repo.as_str() {
        "endless" => {
            let last = uri.query().unwrap_or("").split('&').find_map(|kv| kv.strip_prefix("last=t"));
            let n = last.and_then(|l| l.parse::<u64>().ok()).map_or(0, |n| n + 1);
            s.pages.fetch_add(1, Ordering::SeqCst);
            let mut h = HeaderMap::new();
            let link = format!("</v2/endless/tags/list?n=1&last=t{n}>; rel=\"next\"");
            h.insert(header::LINK, HeaderValue::from_str(&link).unwrap());
            (h, format!("{{\"name\":\"endless\",\"tags\":[\"t{n}\"]}}")).into_response()
        }
        "notjson" => "<html>this is not a tag list</html>".into_response(),
        "deep" | "evil" | "fine" => format!("{{\"name\":\"{repo}\",\"tags\":[\"1.0\"]}}").into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn manifest(State(s): State<Arc<Served>>, Path((repo, reference)): Path<(String, String)>) -> Response {
    match s.manifests.get(&(repo, reference)) {
        Some((media_type, bytes)) => {
            let digest = images::sha256(bytes);
            (
                [(header::CONTENT_TYPE, media_type.to_string()), (header::HeaderName::from_static("docker-content-digest"), digest)],
                bytes.clone(),
            )
                .into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn blob(State(s): State<Arc<Served>>, Path((_, digest)): Path<(String, String)>) -> Response {
    match s.blobs.get(&digest) {
        Some(bytes) => bytes.clone().into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
