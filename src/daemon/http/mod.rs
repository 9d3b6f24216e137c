//! The daemon's HTTP server on `daemon.listen`: health for anyone who can reach it; metrics
//! and status for anyone, or holders of the read token when one is set; webhooks for each
//! registry's webhook token; runs (`/v1/…`) for the admin token.
//!
//! axum routes on hyper's HTTP/1.1 server, driven connection by connection here so each gets
//! a header read timeout (slow-loris clients are cut after `HEADER_TIMEOUT`), every request a
//! deadline, and the number of open connections a ceiling.

mod audit;
mod deadline;
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
/// A response write that makes no progress for this long ends the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// A request (body included) must be answered within this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Connections open at once; past it new ones are closed at once rather than queued.
const MAX_CONNECTIONS: usize = 4096;
/// Connections one peer address may hold: one client cannot take every slot.
const MAX_PER_PEER: usize = 64;

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
        .route("/v1/audit", get(audit::list))
        .route("/v1/audit/verify", get(audit::verify))
        .route("/v1/where/{digest}", get(audit::exposure))
        .route_layer(middleware::from_fn_with_state(shared.clone(), authorize));
    let reads = Router::new()
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/", get(page))
        .route_layer(middleware::from_fn_with_state(shared.clone(), authorize));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .merge(reads)
        .merge(api)
        .fallback(|| async { reply(StatusCode::NOT_FOUND, "not found") })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn(deadline))
        .layer(middleware::from_fn(hardened))
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

/// Every answer: not sniffed into another type, not cached (status and tokens' answers
/// change and may be private), and a page that may load nothing from anywhere.
async fn hardened(req: Request, next: Next) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_FRAME_OPTIONS,
        header::HeaderValue::from_static("DENY"),
    );
    r
}

async fn deadline(req: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(r) => r,
        Err(_) => reply(StatusCode::REQUEST_TIMEOUT, "request not completed in time"),
    }
}

/// The address a connection came from, for the log of a refused webhook.
#[derive(Clone, Copy, Debug)]
struct Peer(std::net::IpAddr);

/// A webhook refused for its token: the sender retries for ever and events quietly fall
/// back to the reconcile, so it is counted (`outcome="unauthorized"`) and logged, at most
/// once a minute per registry, with the peer's address when a proxy says it.
fn refused_webhook(
    s: &Shared,
    registry: &str,
    peer: Option<Peer>,
    headers: &HeaderMap,
    wrong_scope: bool,
) {
    s.metrics.events(registry, "unauthorized", 1);
    static LAST: std::sync::Mutex<Option<std::collections::HashMap<String, std::time::Instant>>> =
        std::sync::Mutex::new(None);
    let mut last = LAST.lock().expect("lock poisoned");
    let seen = last.get_or_insert_with(Default::default);
    if seen.len() > 1024 {
        seen.clear();
    }
    let due = seen
        .get(registry)
        .is_none_or(|t| t.elapsed() >= Duration::from_secs(60));
    if due {
        seen.insert(registry.to_owned(), std::time::Instant::now());
        let forwarded = headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        let why = if wrong_scope {
            "a token for another route"
        } else if headers.contains_key(header::AUTHORIZATION) {
            "a wrong token"
        } else {
            "no token"
        };
        let peer = peer.map_or_else(|| "-".to_owned(), |p| p.0.to_string());
        tracing::warn!(path = %format!("/v1/events/*/{registry}"), %peer, forwarded_for = forwarded, "webhook refused: {why}; the sender will retry and events wait for the reconcile until its token is fixed (logged at most once a minute)");
    }
}

/// A scope of the API: what a route needs, and what a token opens. The admin token opens
/// every scope; any other token exactly its own.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Access {
    Admin,
    Read,
    /// A webhook sender's: the registry whose `webhook_token` it is.
    Webhook(String),
}

impl Access {
    /// What `req` needs.
    fn needed(req: &Request) -> Self {
        let path = req.uri().path();
        if let Some(rest) = path.strip_prefix("/v1/events/") {
            return Access::Webhook(rest.split('/').nth(1).unwrap_or("").to_owned());
        }
        if req.method() == axum::http::Method::GET {
            Access::Read
        } else {
            Access::Admin
        }
    }

    fn opens(&self, need: &Access) -> bool {
        *self == Access::Admin || self == need
    }
}

/// The token a request carries: `Authorization: Bearer TOKEN`, or HTTP Basic with any user
/// and the token as the password (what a browser asks for on the status page).
fn presented(headers: &HeaderMap) -> Option<String> {
    use base64::Engine as _;
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    if let Some(t) = v.strip_prefix("Bearer ") {
        return Some(t.trim().to_owned());
    }
    let b = v.strip_prefix("Basic ")?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    Some(text.split_once(':')?.1.to_owned())
}

/// A `Host` the status routes answer to: an IP literal, `localhost`, or `public_url`'s
/// host. A DNS-rebinding page reaches the daemon under its own name, which is none of them.
fn host_allowed(headers: &HeaderMap, public: Option<&str>) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return true; // HTTP/1.0 without Host: not a browser
    };
    let name = match host.rsplit_once(':') {
        Some((n, port)) if port.bytes().all(|b| b.is_ascii_digit()) => n,
        _ => host,
    };
    let name = name
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    name.parse::<std::net::IpAddr>().is_ok() || name == "localhost" || public == Some(name.as_str())
}

/// Hashing first makes the comparison constant-time in the length too.
fn same(given: &str, token: &crate::model::Secret) -> bool {
    use sha2::Digest;
    sha2::Sha256::digest(given.as_bytes())
        .ct_eq(&sha2::Sha256::digest(token.expose().as_bytes()))
        .into()
}

/// The `/v1` routes and, with a read token set, the status routes. The admin token
/// (`api_token`) opens everything; `read_token` the reads; a registry's `webhook_token`
/// only `/v1/events/*/NAME`. No token or a wrong one: 401; a right token for another
/// scope: 403. Tokens are compared in constant time and never logged.
async fn authorize(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Response {
    let app = s.app();
    let d = &app.config.daemon;
    let need = Access::needed(&req);
    let status_route = !req.uri().path().starts_with("/v1/");
    if status_route && !host_allowed(&headers, d.public_host.as_deref()) {
        return reply(
            StatusCode::MISDIRECTED_REQUEST,
            "this daemon answers to its IP address, localhost, or daemon.public_url's host",
        );
    }
    if status_route && d.read_token.is_none() {
        drop(app);
        return next.run(req).await;
    }
    let webhook_tokens = app
        .config
        .registries
        .iter()
        .filter_map(|(name, r)| r.webhook_token.as_ref().map(|t| (name, t)));
    let role = presented(&headers).and_then(|g| {
        if d.api_token.as_ref().is_some_and(|t| same(&g, t)) {
            Some(Access::Admin)
        } else if d.read_token.as_ref().is_some_and(|t| same(&g, t)) {
            Some(Access::Read)
        } else {
            webhook_tokens
                .into_iter()
                .find(|(_, t)| same(&g, t))
                .map(|(name, _)| Access::Webhook(name.clone()))
        }
    });
    let any_token = d.api_token.is_some()
        || d.read_token.is_some()
        || app
            .config
            .registries
            .values()
            .any(|r| r.webhook_token.is_some());
    drop(app);
    if let (Access::Webhook(registry), false) =
        (&need, role.as_ref().is_some_and(|r| r.opens(&need)))
    {
        let peer = req.extensions().get::<Peer>().copied();
        refused_webhook(&s, registry, peer, &headers, role.is_some());
    }
    match role {
        Some(r) if r.opens(&need) => next.run(req).await,
        Some(r) => reply(
            StatusCode::FORBIDDEN,
            format!("this token ({}) does not open this route", match r {
                Access::Admin => "admin".to_owned(),
                Access::Read => "read".to_owned(),
                Access::Webhook(reg) => format!("webhooks of {reg}"),
            }),
        ),
        None if !any_token => reply(
            StatusCode::FORBIDDEN,
            "the daemon API is off: set daemon.api_token_env or daemon.api_token_file in the config, then reload",
        ),
        None => {
            let what = if headers.contains_key(header::AUTHORIZATION) {
                "wrong token"
            } else {
                "missing `Authorization: Bearer <token>`"
            };
            let mut r = reply(StatusCode::UNAUTHORIZED, what);
            // Basic, so a browser opening the status page asks for the read token itself.
            let challenge = if status_route { "Basic realm=\"ferry\"" } else { "Bearer realm=\"ferry\"" };
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static(challenge),
            );
            r
        }
    }
}

/// Serve until `stop`; connections are tracked by `tasks` so a stop can wait for them.
/// With `[daemon] tls_*` the handshake comes first (bounded like a header read); the TLS
/// settings are read per connection, so a reload's renewed certificate serves the next one.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    stop: CancellationToken,
    tasks: TaskTracker,
) {
    let router = router(shared.clone());
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let peers = PeerCounts::default();
    loop {
        let (sock, peer) = tokio::select! {
            () = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok((s, a)) => (s, a.ip()),
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
        // A reverse proxy on this host speaks for many clients: it is not capped.
        let capped = ![
            std::net::IpAddr::from(std::net::Ipv4Addr::LOCALHOST),
            std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        ]
        .contains(&peer);
        let Some(peer_slot) = PeerSlot::take(&peers, peer, capped) else {
            debug!(%peer, "connection refused: this peer holds {MAX_PER_PEER} already");
            continue;
        };
        let tls = shared
            .app()
            .config
            .daemon
            .tls
            .as_ref()
            .map(|t| t.server.clone());
        let service = TowerToHyperService::new(router.clone().layer(axum::Extension(Peer(peer))));
        let stop = stop.clone();
        tasks.spawn(async move {
            match tls {
                None => {
                    let io = deadline::WriteDeadline::new(sock, WRITE_TIMEOUT);
                    connection(TokioIo::new(io), service, &stop).await;
                }
                Some(cfg) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
                    match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(sock)).await {
                        Ok(Ok(stream)) => {
                            let io = deadline::WriteDeadline::new(stream, WRITE_TIMEOUT);
                            connection(TokioIo::new(io), service, &stop).await;
                        }
                        Ok(Err(e)) => debug!(error = %e, "TLS handshake failed"),
                        Err(_) => debug!("TLS handshake not completed in time"),
                    }
                }
            }
            drop((slot, peer_slot));
        });
    }
}

/// Open connections by peer address.
type PeerCounts = Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>;

/// One of a peer's connections, given back when the connection ends.
struct PeerSlot {
    peers: PeerCounts,
    peer: std::net::IpAddr,
}

impl PeerSlot {
    fn take(peers: &PeerCounts, peer: std::net::IpAddr, capped: bool) -> Option<Self> {
        let mut m = peers.lock().expect("lock poisoned");
        let n = m.entry(peer).or_default();
        if capped && *n >= MAX_PER_PEER {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            peers: peers.clone(),
            peer,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut m = self.peers.lock().expect("lock poisoned");
        if let Some(n) = m.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.peer);
            }
        }
    }
}

/// One HTTP/1.1 connection, plain or TLS, until it ends or the daemon stops.
async fn connection<I>(io: I, service: TowerToHyperService<Router>, stop: &CancellationToken)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => if let Err(e) = r { debug!(error = %e, "http connection ended") },
        () = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
        }
    }
}
