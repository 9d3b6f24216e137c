//! The HTTP transport: one reqwest client per registry (TLS, timeouts), authentication,
//! retries, the adaptive request limit and a rationed pull budget. Everything here exists
//! only for registries reached over HTTP; an OCI layout folder has none of it.
//!
//! Every request goes through [`Http::send`] (rebuildable requests: auth challenge and
//! retries handled) or [`Http::send_once`] (streaming bodies, which cannot be replayed).
//! oci-client supplies the manifest types; its own client is not used for requests because
//! it drops response headers (`Retry-After`, `Link`, `Range`, `Location`), never retries, and
//! keeps upload sessions private, and ferry wants one auth path for every request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, WWW_AUTHENTICATE};
use reqwest::{RequestBuilder, Response, StatusCode};

use super::error::{self, oci_error};
use super::{auth, budget, concurrency, retry, Endpoint, RateLimiter, RegistryError, Scope};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

pub(super) struct Http {
    pub(super) name: String,
    pub(super) base: url::Url,
    /// Origins besides `base`'s that get this registry's credentials (`trusted_origins`).
    pub(super) trusted: Vec<url::Origin>,
    client: reqwest::Client,
    auth: auth::Auth,
    limit: concurrency::Concurrency,
    /// Bytes read from this registry (`bandwidth_limit`, the receiving side).
    download: Option<Arc<RateLimiter>>,
    retry: retry::RetryPolicy,
    retries: AtomicU64,
    /// Whether the registry has the OCI 1.1 referrers API, as last found out.
    pub(super) referrers_api: super::capability::Capability,
    timeout: Duration,
    pub(super) stall_timeout: Duration,
    pub(super) list_limit: usize,
    pub(super) list_timeout: Duration,
    budget: budget::Budget,
    budget_max_wait: Duration,
    /// The registry has answered at least once in this process.
    reached: std::sync::atomic::AtomicBool,
    /// Found unreachable (never answered), when, and why: other requests fail at once.
    down: std::sync::Mutex<Option<(std::time::Instant, String)>>,
}

/// How long "unreachable" stands before it is tried again (the next daemon run).
const DOWN_FOR: Duration = Duration::from_secs(10);

impl Http {
    /// # Errors
    /// When the CA bundle cannot be parsed or the HTTP client cannot be built.
    pub(super) fn new(
        ep: &Endpoint,
        download: Option<Arc<RateLimiter>>,
    ) -> Result<Self, RegistryError> {
        let protocol = |detail: String| RegistryError::Protocol {
            registry: ep.name.clone(),
            op: "setup",
            detail,
        };
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("ferry/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(ep.stall_timeout)
            .pool_max_idle_per_host(ep.max_concurrent.max(4))
            // Idle connections hold buffers: a daemon between runs keeps none for long.
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .redirect(redirects());
        if let Some(pem) = &ep.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| protocol(format!("ca_file: {e}")))?;
            builder = builder.tls_certs_merge(certs);
        }
        let client = builder
            .build()
            .map_err(|e| protocol(format!("HTTP client: {e}")))?;
        Ok(Http {
            budget: budget::Budget::new(&ep.name, ep.rate_limit_reserve),
            auth: auth::Auth::new(&ep.name, ep.url.scheme() == "https", ep.credentials.clone()),
            name: ep.name.clone(),
            base: ep.url.clone(),
            trusted: ep.trusted_origins.iter().map(url::Url::origin).collect(),
            reached: std::sync::atomic::AtomicBool::new(false),
            down: std::sync::Mutex::new(None),
            client,
            limit: concurrency::Concurrency::new(ep.max_concurrent),
            download,
            retry: ep.retry,
            retries: AtomicU64::new(0),
            referrers_api: super::capability::Capability::default(),
            timeout: ep.request_timeout,
            stall_timeout: ep.stall_timeout,
            list_limit: ep.list_limit,
            list_timeout: ep.list_timeout,
            budget_max_wait: ep.rate_limit_max_wait,
        })
    }

    /// Requests this registry gets at once now, and the most it may get.
    pub(super) fn concurrency(&self) -> (usize, usize) {
        (self.limit.limit(), self.limit.max())
    }

    /// The rationed budget as last reported: (remaining, limit, seconds paused so far).
    pub(super) fn rate_limit(&self) -> (Option<u64>, Option<u64>, f64) {
        self.budget.snapshot()
    }

    /// Wait until a counted request (a manifest GET) fits in the registry's rationed budget;
    /// `probe` is a free request (a HEAD) that refreshes the budget's headers while waiting.
    /// The returned guard gives the place back when the request is done.
    ///
    /// # Errors
    /// When the budget would not refill within `rate_limit_max_wait`.
    pub(super) async fn counted<F, Fut>(
        &self,
        op: &'static str,
        probe: F,
    ) -> Result<BudgetGuard<'_>, RegistryError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let started = std::time::Instant::now();
        loop {
            let wait = match self.budget.decide() {
                budget::Decision::Go(ticket) => return Ok(BudgetGuard(&self.budget, ticket)),
                budget::Decision::Queue => {
                    tokio::time::sleep(budget::QUEUE_WAIT).await;
                    continue;
                }
                budget::Decision::Wait(w) => w,
            };
            let (remaining, limit, _) = self.budget.snapshot();
            let left = format!(
                "{} of {} left",
                remaining.unwrap_or(0),
                limit.map_or("?".into(), |l| l.to_string())
            );
            if started.elapsed() + wait > self.budget_max_wait {
                let resumes =
                    chrono::Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
                return Err(RegistryError::RateLimited {
                    registry: self.name.clone(),
                    op,
                    detail: format!(
                        "budget spent ({left}); resumes at {} UTC at the earliest; the next run continues (rate_limit_max_wait is {}s)",
                        resumes.format("%Y-%m-%d %H:%M:%S"),
                        self.budget_max_wait.as_secs()
                    ),
                });
            }
            if self.budget.announce() {
                tracing::warn!(registry = %self.name, %left, wait = ?wait, "rate limit: pausing counted requests until the budget refills");
            }
            tokio::time::sleep(wait).await;
            self.budget.paused(wait);
            probe().await;
        }
    }

    pub(super) async fn auth_facts(&self) -> auth::AuthFacts {
        self.auth.facts().await
    }

    pub(super) async fn ping(&self) -> Result<u16, RegistryError> {
        let url = self.url("/v2/");
        let rsp = self
            .send("ping", &Scope::none(), |h| h.get(url.clone()))
            .await?;
        Ok(rsp.status().as_u16())
    }

    /// Requests retried so far (transient failures), for metrics.
    pub(super) fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// The limit on bytes read from this registry (`bandwidth_limit`), for blob bodies.
    pub(super) fn download_limit(&self) -> Option<Arc<RateLimiter>> {
        self.download.clone()
    }

    pub(super) fn url(&self, path: &str) -> url::Url {
        self.base
            .join(path)
            .expect("registry paths are valid relative URLs")
    }

    pub(super) fn transport(
        &self,
        op: &'static str,
    ) -> impl Fn(reqwest::Error) -> RegistryError + '_ {
        // without_url: upload URLs and redirect targets can carry signed credentials.
        move |e| RegistryError::Transport {
            registry: self.name.clone(),
            op,
            source: e.without_url(),
        }
    }

    pub(super) fn protocol(
        &self,
        op: &'static str,
        detail: impl std::fmt::Display,
    ) -> RegistryError {
        RegistryError::Protocol {
            registry: self.name.clone(),
            op,
            detail: detail.to_string(),
        }
    }

    /// Send a request that can be rebuilt: answers a 401 challenge once, then retries
    /// transient failures. Returns any response that is not a 401 or retryable status.
    pub(super) async fn send(
        &self,
        op: &'static str,
        scope: &Scope,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<Response, RegistryError> {
        self.send_mapped(op, scope, build, std::convert::identity)
            .await
    }

    /// `send` for a write that must not land once its writer lost the right to it: the
    /// `gate` is asked before every attempt, and may end a wait.
    pub(super) async fn send_gated(
        &self,
        op: &'static str,
        scope: &Scope,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
        gate: Option<&dyn super::WriteGate>,
    ) -> Result<Response, RegistryError> {
        self.send_with(op, scope, build, std::convert::identity, gate)
            .await
    }

    /// `send`, with each attempt's error first read by `map`, which may say what it really
    /// means before the retry decision (a hang-up that means a missing repository).
    pub(super) async fn send_mapped(
        &self,
        op: &'static str,
        scope: &Scope,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
        map: impl Fn(RegistryError) -> RegistryError,
    ) -> Result<Response, RegistryError> {
        self.send_with(op, scope, build, map, None).await
    }

    async fn send_with(
        &self,
        op: &'static str,
        scope: &Scope,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
        map: impl Fn(RegistryError) -> RegistryError,
        gate: Option<&dyn super::WriteGate>,
    ) -> Result<Response, RegistryError> {
        let reached = self.reached.load(Ordering::Relaxed);
        if !reached {
            if let Some((at, why)) = self.down.lock().expect("lock poisoned").as_ref() {
                if at.elapsed() < DOWN_FOR {
                    return Err(self.unreachable(op, why.clone()));
                }
            }
        }
        let mut policy = self.retry;
        if !reached {
            // Retries of a short first contact end in one error that says it all; a budget
            // the config asked for is worth seeing spent.
            policy.quiet = policy.first_contact < policy.deadline;
            policy.deadline = policy.deadline.min(policy.first_contact);
        }
        let result = retry::with_retry(policy, &self.name, op, &self.retries, gate, || async {
            let rsp = self.attempt(op, scope, &build).await.map_err(&map)?;
            self.reached.store(true, Ordering::Relaxed);
            if rsp.status() == StatusCode::TOO_MANY_REQUESTS && self.budget.spent() {
                return Ok(rsp); // a rationed budget: the caller waits for it to refill, bounded
            }
            if rsp.status().is_server_error() || rsp.status() == StatusCode::TOO_MANY_REQUESTS {
                return Err(self.status_error(op, rsp).await);
            }
            Ok(rsp)
        })
        .await;
        match result {
            Err(RegistryError::Transport { source, .. })
                if source.is_connect()
                    && !error::is_tls_failure(&source)
                    && !self.reached.load(Ordering::Relaxed) =>
            {
                let why = format!(
                    "{} (nothing answered at {} for {} s; set retry_timeout in its [registries] entry to keep trying longer)",
                    error::chain(&source),
                    self.base.origin().ascii_serialization(),
                    self.retry.first_contact.min(self.retry.deadline).as_secs(),
                );
                *self.down.lock().expect("lock poisoned") =
                    Some((std::time::Instant::now(), why.clone()));
                Err(self.unreachable(op, why))
            }
            other => other,
        }
    }

    fn unreachable(&self, op: &'static str, detail: String) -> RegistryError {
        RegistryError::Unreachable {
            registry: self.name.clone(),
            op,
            detail,
        }
    }

    async fn attempt(
        &self,
        op: &'static str,
        scope: &Scope,
        build: &impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<Response, RegistryError> {
        let permit = self.limit.acquire().await;
        let rsp = self.attempt_with_auth(op, scope, build).await;
        permit.done(self.load_sample(&rsp, concurrency::Sample::Light));
        rsp
    }

    /// What an answer says about the registry's load, for the concurrency limit.
    fn load_sample(
        &self,
        rsp: &Result<Response, RegistryError>,
        answered: concurrency::Sample,
    ) -> concurrency::Sample {
        match rsp {
            Ok(r) if r.status() == StatusCode::TOO_MANY_REQUESTS && !self.budget.spent() => {
                concurrency::Sample::Overload
            }
            Ok(r) if matches!(r.status().as_u16(), 502..=504) => concurrency::Sample::Overload,
            Ok(_) => answered,
            Err(RegistryError::Transport { source, .. }) if source.is_timeout() => {
                concurrency::Sample::Overload
            }
            Err(_) => concurrency::Sample::Answered,
        }
    }

    async fn attempt_with_auth(
        &self,
        op: &'static str,
        scope: &Scope,
        build: &impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<Response, RegistryError> {
        let http = &self.client;
        let header = self.auth.header(http, scope).await?;
        let ticket = self.budget.ticket();
        let (req, foreign) = self
            .authorized(build(http), header.clone())
            .map_err(self.transport(op))?;
        let rsp = self.bounded(req).await.map_err(self.transport(op))?;
        self.budget.observe(ticket, rsp.headers());
        if rsp.status() != StatusCode::UNAUTHORIZED {
            if rsp.status().is_success() && foreign.is_none() {
                self.auth.anonymous_ok().await;
            }
            return Ok(rsp);
        }
        if let Some(origin) = foreign {
            return Err(self.foreign_401(op, &origin));
        }
        let challenge = self.challenge_of(op, scope, rsp).await?;
        self.auth
            .challenged(http, scope, header.as_deref(), challenge.as_deref(), op)
            .await?;
        let header = self.auth.header(http, scope).await?;
        let ticket = self.budget.ticket();
        let (req, _) = self
            .authorized(build(http), header)
            .map_err(self.transport(op))?;
        let rsp = self.bounded(req).await.map_err(self.transport(op))?;
        self.budget.observe(ticket, rsp.headers());
        if rsp.status() == StatusCode::UNAUTHORIZED {
            return Err(RegistryError::Unauthorized {
                registry: self.name.clone(),
                op,
                detail: "credentials rejected".into(),
            });
        }
        Ok(rsp)
    }

    /// The challenge a 401 means: its own `WWW-Authenticate`, else (GCR has sent bare 401s,
    /// GCP-3) the one the registry's `/v2/` sends, unless the scheme is known already. A 401
    /// saying the project does not exist (Harbor's, HBR-3, with an empty challenge) is no
    /// credentials problem: re-authenticating would loop.
    async fn challenge_of(
        &self,
        op: &'static str,
        scope: &Scope,
        rsp: Response,
    ) -> Result<Option<String>, RegistryError> {
        if let Some(c) = www_authenticate(rsp.headers()).filter(|c| !c.trim().is_empty()) {
            return Ok(Some(c));
        }
        let body = read_limited(rsp, 16 << 10).await.unwrap_or_default();
        let (_, message) = oci_error(&body);
        if let Some(repo) = scope.repository().filter(|_| message.contains("not found")) {
            return Err(RegistryError::MissingRepository {
                registry: self.name.clone(),
                op,
                repo: repo.to_owned(),
                detail: format!("HTTP 401: {message}"),
            });
        }
        if self.auth.scheme_known().await {
            return Ok(None);
        }
        let ping = self
            .client
            .get(self.url("/v2/"))
            .timeout(self.timeout)
            .send()
            .await;
        Ok(ping.ok().and_then(|p| www_authenticate(p.headers())))
    }

    /// Send with `request_timeout` as the whole-request bound, unless the request set its own
    /// (blob bodies: bounded by the stall guard instead).
    async fn bounded(&self, mut req: reqwest::Request) -> reqwest::Result<Response> {
        if req.timeout().is_none() {
            *req.timeout_mut() = Some(self.timeout);
        }
        self.client.execute(req).await
    }

    /// Send a request whose body streams and cannot be replayed: the caller owns recovery.
    /// Auth must already be known for `scope` (an earlier `send` on it learnt the scheme).
    pub(super) async fn send_once(
        &self,
        op: &'static str,
        scope: &Scope,
        req: impl FnOnce(&reqwest::Client) -> RequestBuilder,
    ) -> Result<Response, RegistryError> {
        let http = &self.client;
        let permit = self.limit.acquire().await;
        let sent = match self.auth.header(http, scope).await {
            Ok(h) => h,
            Err(e) => {
                permit.done(concurrency::Sample::Answered);
                return Err(e);
            }
        };
        let (request, foreign) = match self.authorized(req(http), sent.clone()) {
            Ok(r) => r,
            Err(e) => {
                permit.done(concurrency::Sample::Answered);
                return Err(self.transport(op)(e));
            }
        };
        let rsp = http.execute(request).await.map_err(self.transport(op));
        // The time includes sending the body: no measure of the registry's queue.
        permit.done(self.load_sample(&rsp, concurrency::Sample::Answered));
        let rsp = rsp?;
        if rsp.status() != StatusCode::UNAUTHORIZED {
            return Ok(rsp);
        }
        if let Some(origin) = foreign {
            return Err(self.foreign_401(op, &origin));
        }
        // Credentials ran out mid-upload (GitLab's tokens last 5 minutes): renew them; the
        // caller asks where the upload stands and goes on. Refused credentials stay an error.
        let challenge = self.challenge_of(op, scope, rsp).await?;
        self.auth
            .challenged(http, scope, sent.as_deref(), challenge.as_deref(), op)
            .await?;
        Err(RegistryError::Reauthenticated {
            registry: self.name.clone(),
            op,
        })
    }

    /// Turn an unexpected response into an error, keeping the OCI error code and `Retry-After`.
    pub(super) async fn status_error(&self, op: &'static str, rsp: Response) -> RegistryError {
        let status = rsp.status().as_u16();
        let retry_after = rsp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(retry::parse_retry_after);
        if status == 401 {
            return RegistryError::Unauthorized {
                registry: self.name.clone(),
                op,
                detail: "credentials rejected".into(),
            };
        }
        let body = read_limited(rsp, 16 << 10).await.unwrap_or_default();
        let (code, message) = oci_error(&body);
        RegistryError::Status {
            registry: self.name.clone(),
            op,
            status,
            code,
            message,
            retry_after,
        }
    }

    /// Check the status is one of `ok`, else turn the response into an error.
    pub(super) async fn expect(
        &self,
        op: &'static str,
        rsp: Response,
        ok: &[StatusCode],
    ) -> Result<Response, RegistryError> {
        if ok.contains(&rsp.status()) {
            Ok(rsp)
        } else {
            Err(self.status_error(op, rsp).await)
        }
    }
}

/// A place in the rationed budget, given back when the counted request is done.
pub(super) struct BudgetGuard<'a>(&'a budget::Budget, u64);

impl Drop for BudgetGuard<'_> {
    fn drop(&mut self) {
        self.0.done(self.1);
    }
}

fn www_authenticate(h: &HeaderMap) -> Option<String> {
    h.get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.to_ascii_lowercase().starts_with("bearer"))
        .or_else(|| h.get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()))
        .map(str::to_owned)
}

/// Read at most `limit` bytes of a body; a longer body is an error, never a large allocation.
/// Redirects followed: blob reads to storage (S3, a CDN), and any on the same origin. Another
/// origin for anything else is answered to the caller as the 3xx it is: GHCR sends its
/// referrers to a web API on another host (GHCR-1), which means "no API", not a place to
/// send this registry's requests. reqwest drops `Authorization` when the origin changes.
fn redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let first = attempt.previous().first().cloned();
        let blob = first.as_ref().is_some_and(|u| u.path().contains("/blobs/"));
        let same = first
            .as_ref()
            .is_some_and(|u| u.origin() == attempt.url().origin());
        if attempt.previous().len() > 10 {
            attempt.error("more than 10 redirects")
        } else if blob || same {
            attempt.follow()
        } else {
            attempt.stop()
        }
    })
}

pub(super) async fn read_limited(
    mut rsp: Response,
    limit: usize,
) -> Result<Vec<u8>, reqwest::Error> {
    let mut out = Vec::with_capacity(
        rsp.content_length()
            .map_or(1024, |n| (n as usize).min(limit)),
    );
    while let Some(chunk) = rsp.chunk().await? {
        if out.len() + chunk.len() > limit {
            out.extend_from_slice(&chunk[..limit - out.len()]);
            break;
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}
