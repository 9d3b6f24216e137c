//! A registry whose token endpoint never stops talking: every `/v2/` request is challenged
//! for a bearer token, and the realm answers with a 200 MiB body that starts like a token
//! response. It counts the bytes it managed to send, which shows how much a client read.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::StreamExt as _;

pub const BODY: u64 = 200 << 20;
const PIECE: usize = 64 << 10;

pub struct BloatedToken {
    pub port: u16,
    /// Body bytes the token endpoint handed to its socket.
    pub sent: Arc<AtomicU64>,
}

impl BloatedToken {
    pub fn start() -> Self {
        let sent = Arc::new(AtomicU64::new(0));
        let counted = sent.clone();
        let port = super::serve::on_own_thread(move |listener| async move {
            let realm = format!(
                "Bearer realm=\"http://{}/token\",service=\"bloat\"",
                listener.local_addr().unwrap()
            );
            let app = axum::Router::new()
                .route("/token", get(move || token(counted.clone())))
                .fallback(move || {
                    let realm = realm.clone();
                    async move {
                        (
                            StatusCode::UNAUTHORIZED,
                            [(header::WWW_AUTHENTICATE, realm)],
                        )
                            .into_response()
                    }
                });
            axum::serve(listener, app).await.unwrap()
        });
        BloatedToken { port, sent }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

async fn token(sent: Arc<AtomicU64>) -> Response {
    let head = bytes::Bytes::from_static(b"{\"token\":\"");
    let pieces = (BODY as usize - head.len()) / PIECE;
    let filler = bytes::Bytes::from(vec![b'a'; PIECE]);
    let body = futures_util::stream::iter(
        std::iter::once(head).chain(std::iter::repeat_n(filler, pieces)),
    )
    .map(move |b| {
        sent.fetch_add(b.len() as u64, Ordering::Relaxed);
        Ok::<_, std::io::Error>(b)
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(body),
    )
        .into_response()
}
