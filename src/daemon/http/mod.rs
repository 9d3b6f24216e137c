//! The daemon's HTTP server on `daemon.listen`: health, metrics and status for anyone who
//! can reach it; webhooks and runs on request (`/v1/…`) for holders of the API token.
//!
//! axum routes on hyper's HTTP/1.1 server, driven connection by connection here so each gets
//! a header read timeout (slow-loris clients are cut after `HEADER_TIMEOUT`), every request a
//! deadline, and the number of open connections a ceiling.

mod events;
mod page;
mod runs;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use super::Shared;

/// Largest request body: webhook envelopes are a few KiB.
const MAX_BODY: usize = 1 << 20;
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// A request (body included) must be answered within this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Connections open at once; past it new ones are closed at once rather than queued.
const MAX_CONNECTIONS: usize = 4096;

/// A one-line plain-text answer: every refusal says why.
pub(super) fn reply(status: StatusCode, msg: impl Into<String>) -> Response {
    let mut body = msg.into();
    body.push('\n');
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

pub(super) fn json(status: StatusCode, v: &impl serde::Serialize) -> Response {
    let body = serde_json::to_vec_pretty(v).expect("documents serialize");
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn router(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route(
            "/v1/events/distribution/{registry}",
            post(events::distribution),
        )
        .route("/v1/events/harbor/{registry}", post(events::harbor))
        .route("/v1/runs", post(runs::create))
        .route("/v1/runs/{id}", get(runs::show))
        .route_layer(middleware::from_fn_with_state(shared.clone(), authorize));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/", get(page))
        .merge(api)
        .fallback(|| async { reply(StatusCode::NOT_FOUND, "not found") })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn(deadline))
        .with_state(shared)
}

async fn readyz(State(s): State<Arc<Shared>>) -> Response {
    if s.metrics.ready.load(std::sync::atomic::Ordering::Relaxed) {
        reply(StatusCode::OK, "ready")
    } else {
        reply(StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics_text(),
    )
        .into_response()
}

async fn page(State(s): State<Arc<Shared>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        page::render(&s.status().await),
    )
        .into_response()
}

async fn status(State(s): State<Arc<Shared>>) -> Response {
    json(StatusCode::OK, &s.status().await)
}

async fn deadline(req: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(r) => r,
        Err(_) => reply(StatusCode::REQUEST_TIMEOUT, "request not completed in time"),
    }
}

/// The `/v1` routes need `Authorization: Bearer <daemon API token>`. The token is compared
/// in constant time and never logged; with none configured they are off (403).
async fn authorize(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Response {
    let app = s.app();
    let Some(token) = app.config.daemon.api_token.as_ref() else {
        return reply(
            StatusCode::FORBIDDEN,
            "the daemon API is off: set daemon.api_token_env or daemon.api_token_file in the config, then reload",
        );
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // Hashing first makes the comparison constant-time in the length too.
    let ok = given.is_some_and(|g| {
        use sha2::Digest;
        sha2::Sha256::digest(g.trim().as_bytes())
            .ct_eq(&sha2::Sha256::digest(token.expose().as_bytes()))
            .into()
    });
    if !ok {
        let what = if given.is_some() {
            "wrong API token"
        } else {
            "missing `Authorization: Bearer <API token>`"
        };
        let mut r = reply(StatusCode::UNAUTHORIZED, what);
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"ferry\""),
        );
        return r;
    }
    drop(app);
    next.run(req).await
}

/// Serve until `stop`; connections are tracked by `tasks` so a stop can wait for them.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    stop: CancellationToken,
    tasks: TaskTracker,
) {
    let router = router(shared);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let sock = tokio::select! {
            () = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of file descriptors, most likely: let connections close first.
                    debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let service = TowerToHyperService::new(router.clone());
        let stop = stop.clone();
        tasks.spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(sock), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => if let Err(e) = r { debug!(error = %e, "http connection ended") },
                () = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
                }
            }
            drop(slot);
        });
    }
}
