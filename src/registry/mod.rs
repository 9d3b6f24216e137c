//! One registry endpoint and the distribution API calls ferry makes. Knows nothing of
//! policies or the state store.
//!
//! The endpoint's URL decides its transport once, when the client is built: `http(s)://` is
//! a registry (`http`: auth, retries, limits), `oci:` a folder of OCI image layouts
//! (`layout`). Every call below is the same operation on either; the contract test
//! (`tests/e2e/transports.rs`) runs one sequence over both.

mod auth;
mod budget;
mod capability;
mod challenge;
mod concurrency;
mod error;
mod gate;
mod helper;
mod origin;
pub use helper::keep_from_helpers;
mod http;
mod layout;
mod limit;
mod listing;
mod meta;
mod referrers;
mod retry;
mod stall;
mod upload;
mod writes;

use std::sync::{Arc, Once};
use std::time::Duration;

use bytes::Bytes;
use reqwest::Body;

pub use auth::{AuthFacts, Scope, TokenFacts};
pub use error::RegistryError;
pub use gate::WriteGate;
pub use limit::RateLimiter;
pub use listing::TagList;
pub use meta::{BlobStream, ManifestHead, PulledManifest};
pub use retry::RetryPolicy;
pub use upload::{Patched, UploadSession, UploadStart};
pub use writes::TagDelete;

use crate::model::{Digest, RepoName, Tag, UploadStrategy};

/// Everything needed to talk to one registry; built by the composition root from config.
#[derive(Clone, PartialEq)]
pub struct Endpoint {
    pub name: String,
    pub url: url::Url,
    pub credentials: Option<crate::model::Credentials>,
    pub ca_pem: Option<Vec<u8>>,
    pub max_concurrent: usize,
    /// Bytes per second sent to this registry (blob uploads); `None` = unlimited.
    pub bandwidth_limit: Option<u64>,
    pub retry: RetryPolicy,
    /// Whole-request limit for metadata requests; blob transfers by `stall_timeout`.
    pub request_timeout: Duration,
    /// A blob transfer that moves less than `STALL_BYTES` in this long is dead.
    pub stall_timeout: Duration,
    /// Most entries one tag list or catalog may have, and the longest listing it may take:
    /// a registry that pages forever ends in an error, never a run that never ends.
    pub list_limit: usize,
    pub list_timeout: Duration,
    /// Counted requests left unused in a rationed budget, for other users of the account.
    pub rate_limit_reserve: u64,
    /// Longest a counted request waits for a rationed budget to refill before it fails.
    pub rate_limit_max_wait: Duration,
    /// The upload strategy the config fixes; `None`: learnt from the registry's answers.
    pub upload: Option<UploadStrategy>,
    /// Other origins that get this registry's credentials (a proxy on another port).
    pub trusted_origins: Vec<url::Url>,
    /// An `oci:` folder another account reads: files 0644, folders 0755 (else owner-only).
    pub layout_shared: bool,
}

impl Endpoint {
    pub fn anonymous(name: &str, url: url::Url) -> Self {
        Endpoint {
            name: name.to_owned(),
            url,
            credentials: None,
            ca_pem: None,
            max_concurrent: 32,
            bandwidth_limit: None,
            retry: RetryPolicy::default(),
            request_timeout: Duration::from_secs(60),
            stall_timeout: Duration::from_secs(30),
            list_limit: 100_000,
            list_timeout: Duration::from_secs(600),
            rate_limit_reserve: 0,
            rate_limit_max_wait: Duration::from_secs(600),
            upload: None,
            trusted_origins: Vec::new(),
            layout_shared: false,
        }
    }
}

#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    /// Bytes sent to this registry (`bandwidth_limit`, the sending side): uploads to a
    /// layout folder are limited too. The receiving side is the HTTP transport's.
    upload_limit: Option<Arc<RateLimiter>>,
    transport: Transport,
    /// What it was built from: a reload that leaves it unchanged keeps this client.
    endpoint: Endpoint,
}

/// How the registry is reached; chosen once, from the URL's scheme.
enum Transport {
    // Boxed: the HTTP side holds a client, auth, limits and a budget; a layout, a path.
    Http(Box<http::Http>),
    Layout(layout::Layout),
}

/// One operation over whichever transport the registry has. Layout failures become
/// storage errors naming the registry and the operation.
macro_rules! over {
    ($self:ident, $op:expr, $h:ident => $http:expr, $l:ident => $layout:expr $(,)?) => {
        match &$self.inner.transport {
            Transport::Http($h) => $http,
            Transport::Layout($l) => $layout.map_err(|e| e.into_registry(&$self.inner.name, $op)),
        }
    };
}

fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    // ring rather than aws-lc: no C toolchain step, and half the clean build time.
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

impl Registry {
    /// # Errors
    /// When the CA bundle cannot be parsed or the HTTP client cannot be built.
    pub fn new(ep: Endpoint) -> Result<Self, RegistryError> {
        install_crypto_provider();
        let limiter = || ep.bandwidth_limit.map(|b| Arc::new(RateLimiter::new(b)));
        let transport = if ep.url.scheme() == "oci" {
            Transport::Layout(layout::Layout::new(
                std::path::PathBuf::from(ep.url.path()),
                layout::Modes::new(ep.layout_shared),
            ))
        } else {
            Transport::Http(Box::new(http::Http::new(&ep, limiter())?))
        };
        Ok(Registry {
            inner: Arc::new(Inner {
                name: ep.name.clone(),
                upload_limit: limiter(),
                transport,
                endpoint: ep,
            }),
        })
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Built from exactly the same endpoint as `other` (credentials included).
    pub fn same_endpoint(&self, other: &Registry) -> bool {
        self.inner.endpoint == other.inner.endpoint
    }

    /// The upload strategy the config fixes (`None`: auto).
    pub fn upload_setting(&self) -> Option<UploadStrategy> {
        self.inner.endpoint.upload
    }

    /// The URL the registry was configured with.
    pub fn url(&self) -> &url::Url {
        &self.inner.endpoint.url
    }

    /// Requests this registry gets at once now, and the most it may get (`max_concurrent`).
    /// A layout folder takes `max_concurrent` at once, always.
    pub fn concurrency(&self) -> (usize, usize) {
        match &self.inner.transport {
            Transport::Http(h) => h.concurrency(),
            Transport::Layout(_) => {
                let max = self.inner.endpoint.max_concurrent;
                (max, max)
            }
        }
    }

    /// The rationed budget as last reported: (remaining, limit, seconds paused so far).
    pub fn rate_limit(&self) -> (Option<u64>, Option<u64>, f64) {
        match &self.inner.transport {
            Transport::Http(h) => h.rate_limit(),
            Transport::Layout(_) => (None, None, 0.0),
        }
    }

    /// Requests retried so far (transient failures), for metrics.
    pub fn retries(&self) -> u64 {
        match &self.inner.transport {
            Transport::Http(h) => h.retries(),
            Transport::Layout(_) => 0,
        }
    }

    /// Wait until `n` more bytes may be sent to this registry (`bandwidth_limit`).
    pub async fn throttle(&self, n: usize) {
        if let Some(up) = &self.inner.upload_limit {
            up.acquire(n).await;
        }
    }

    /// Tags of a repository, following `Link` pagination. `None` when the repository does
    /// not exist.
    ///
    /// # Errors
    /// Transport, auth and unexpected status errors.
    pub async fn tags(&self, repo: &RepoName) -> Result<Option<Vec<Tag>>, RegistryError> {
        Ok(self.tag_list(repo).await?.map(|l| l.tags))
    }

    /// Tags of a repository, with the digests the listing gave itself (GCR's).
    ///
    /// # Errors
    /// Transport, auth and unexpected status errors.
    pub async fn tag_list(&self, repo: &RepoName) -> Result<Option<TagList>, RegistryError> {
        over!(self, "list tags",
            h => h.tags(repo).await,
            l => l.tags(repo).await.map(|t| t.map(|tags| TagList { tags, ..Default::default() })))
    }

    /// Every repository in the catalog.
    ///
    /// # Errors
    /// A registry that refuses the catalog (most public ones) gets an error that says to list
    /// repositories by name instead.
    pub async fn catalog(&self) -> Result<Vec<RepoName>, RegistryError> {
        let limit = self.inner.endpoint.list_limit;
        over!(self, "list repositories", h => h.catalog().await, l => l.catalog(limit).await)
    }

    /// HEAD a manifest by tag or digest. `None` when it does not exist.
    ///
    /// # Errors
    /// Transport, auth and unexpected status errors.
    pub async fn head_manifest(
        &self,
        repo: &RepoName,
        reference: &str,
    ) -> Result<Option<ManifestHead>, RegistryError> {
        over!(self, "head manifest",
            h => h.head_manifest(repo, reference, false).await,
            l => l.head_manifest(repo, reference).await)
    }

    /// HEAD a manifest on a target, where a 403 means absent: Artifactory's virtual
    /// repositories answer so for what they do not have (JF-6). Never on a source, where
    /// "absent" can confirm a delete.
    ///
    /// # Errors
    /// Transport, auth and unexpected status errors.
    pub async fn head_target_manifest(
        &self,
        repo: &RepoName,
        reference: &str,
    ) -> Result<Option<ManifestHead>, RegistryError> {
        over!(self, "head manifest",
            h => h.head_manifest(repo, reference, true).await,
            l => l.head_manifest(repo, reference).await)
    }

    /// GET a manifest with its exact bytes, checked against its digest.
    ///
    /// # Errors
    /// Transport, auth and status errors; a manifest over 4 MiB; a digest mismatch.
    pub async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &str,
    ) -> Result<Option<PulledManifest>, RegistryError> {
        over!(self, "get manifest",
            h => h.get_manifest(repo, reference).await,
            l => l.get_manifest(repo, reference).await)
    }

    /// PUT a manifest's exact bytes under a tag or its digest.
    ///
    /// # Errors
    /// Transport, auth and status errors (e.g. `MANIFEST_BLOB_UNKNOWN`), a changed digest.
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &str,
        m: &PulledManifest,
        gate: Option<&dyn WriteGate>,
    ) -> Result<(), RegistryError> {
        self.admitted("put manifest", gate).await?;
        over!(self, "put manifest",
            h => h.put_manifest(repo, reference, m, gate).await,
            l => l.put_manifest(repo, reference, m).await)
    }

    /// Delete a manifest by digest (every tag pointing at it goes with it).
    ///
    /// # Errors
    /// Transport, auth and status errors; a registry that does not allow deletes.
    pub async fn delete_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        gate: Option<&dyn WriteGate>,
    ) -> Result<(), RegistryError> {
        self.admitted("delete manifest", gate).await?;
        over!(self, "delete manifest",
            h => h.delete_manifest(repo, digest, gate).await,
            l => l.delete_manifest(repo, digest).await)
    }

    /// Delete one tag, leaving its manifest to any other tag. A registry that deletes only
    /// manifests says `NotByTag`.
    ///
    /// # Errors
    /// Transport, auth and unexpected status errors.
    pub async fn delete_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
        gate: Option<&dyn WriteGate>,
    ) -> Result<TagDelete, RegistryError> {
        self.admitted("delete tag", gate).await?;
        over!(self, "delete tag",
            h => h.delete_tag(repo, tag.as_str(), gate).await,
            l => l.delete_tag(repo, tag.as_str()).await.map(|()| TagDelete::Deleted))
    }

    /// A layout write has no retries: its gate is asked once, here. (The HTTP transport
    /// asks it again before every attempt.)
    async fn admitted(
        &self,
        op: &'static str,
        gate: Option<&dyn WriteGate>,
    ) -> Result<(), RegistryError> {
        match (gate, &self.inner.transport) {
            (Some(g), Transport::Layout(_)) => {
                g.admit().await.map_err(|detail| RegistryError::Fenced {
                    registry: self.inner.name.clone(),
                    op,
                    detail,
                })
            }
            _ => Ok(()),
        }
    }

    /// HEAD a blob: its size when present.
    ///
    /// # Errors
    /// Transport, auth and unexpected status errors.
    pub async fn head_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<u64>, RegistryError> {
        over!(self, "head blob", h => h.head_blob(repo, digest).await, l => l.head_blob(repo, digest).await)
    }

    /// Referrers of `digest` from the OCI 1.1 referrers API; empty when the registry does not
    /// offer the API. A layout has none: its tagged signatures are tags.
    ///
    /// # Errors
    /// Transport, auth and unexpected status errors.
    pub async fn referrers(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Vec<Digest>, RegistryError> {
        match &self.inner.transport {
            Transport::Http(h) => Ok(h.referrers(repo, digest).await?.unwrap_or_default()),
            Transport::Layout(_) => Ok(Vec::new()),
        }
    }

    /// How the registry authenticates, as seen so far; `None` for a layout.
    pub async fn auth_facts(&self) -> Option<AuthFacts> {
        match &self.inner.transport {
            Transport::Http(h) => Some(h.auth_facts().await),
            Transport::Layout(_) => None,
        }
    }

    /// `GET /v2/`, authenticating as a request would: the status it ends with.
    ///
    /// # Errors
    /// Transport errors; credentials refused.
    pub async fn ping(&self) -> Result<u16, RegistryError> {
        match &self.inner.transport {
            Transport::Http(h) => h.ping().await,
            Transport::Layout(_) => Ok(200),
        }
    }

    /// Whether the registry has the OCI 1.1 referrers API, if found out in the last hour.
    pub fn referrers_api(&self) -> Option<bool> {
        match &self.inner.transport {
            Transport::Http(h) => h.referrers_api.known(),
            Transport::Layout(_) => Some(false),
        }
    }

    /// A small blob (an image config) in memory, at most `limit` bytes, digest checked.
    ///
    /// # Errors
    /// Transport, auth and status errors; a blob over `limit`; a digest mismatch.
    pub async fn get_small_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        limit: usize,
    ) -> Result<Bytes, RegistryError> {
        over!(self, "get blob",
            h => h.get_small_blob(repo, digest, limit).await,
            l => l.get_small_blob(repo, digest, limit).await)
    }

    /// Stream a blob from `offset` (a Range request when `offset > 0`).
    ///
    /// # Errors
    /// Transport, auth and status errors, including 404 for a blob the manifest names but the
    /// registry lacks.
    pub async fn get_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        offset: u64,
    ) -> Result<BlobStream, RegistryError> {
        over!(self, "get blob",
            h => h.get_blob(repo, digest, offset).await,
            l => l.get_blob(&self.inner.name, repo, digest, offset).await)
    }

    /// Open an upload session, or mount `digest` from `from` in the same registry. A registry
    /// that cannot mount answers with a fresh session instead, which is used as is.
    ///
    /// # Errors
    /// Transport, auth and status errors.
    pub async fn start_upload(
        &self,
        repo: &RepoName,
        mount: Option<(&Digest, &RepoName)>,
    ) -> Result<UploadStart, RegistryError> {
        over!(self, "start upload",
            h => h.start_upload(repo, mount).await,
            l => l.start_upload(repo, mount).await)
    }

    /// Ask how many bytes the registry holds for an upload. `None` when it has forgotten or
    /// invalidated the session (Distribution does both after a PATCH body is cut).
    ///
    /// # Errors
    /// Transport, auth and unexpected status errors.
    pub async fn upload_status(
        &self,
        repo: &RepoName,
        location: &str,
    ) -> Result<Option<UploadSession>, RegistryError> {
        over!(self, "upload status",
            h => h.upload_status(repo, location).await,
            l => l.upload_status(location).await)
    }

    /// Send `len` bytes at `session.offset`: a chunk with `Content-Range` (`ranged`), or
    /// the rest of the blob in one stream. Returns the advanced session, and what the
    /// registry's `Range` says when that disagrees. Sent once: on any failure the caller must
    /// ask `upload_status` before sending more.
    ///
    /// # Errors
    /// Transport, auth and status errors.
    pub async fn patch_chunk(
        &self,
        repo: &RepoName,
        session: &UploadSession,
        body: Body,
        len: u64,
        ranged: bool,
    ) -> Result<Patched, RegistryError> {
        over!(self, "upload chunk",
            h => h.patch_chunk(repo, session, body, len, ranged).await,
            l => l.append(session, body, len).await.map(|session| Patched { session, registry_says: None }))
    }

    /// Close the upload, optionally carrying the last chunk, so a blob that fits in one
    /// chunk costs a POST and a PUT. The registry checks the digest.
    ///
    /// # Errors
    /// Transport, auth and status errors (`DIGEST_INVALID` when the bytes were wrong).
    pub async fn finish_upload(
        &self,
        repo: &RepoName,
        session: &UploadSession,
        digest: &Digest,
        last: Option<(Body, u64)>,
    ) -> Result<(), RegistryError> {
        over!(self, "finish upload",
            h => h.finish_upload(repo, session, digest, last).await,
            l => l.finish_with(repo, session, digest, last).await)
    }

    /// Abandon an upload session; best effort, so the registry can free its space early.
    pub async fn cancel_upload(&self, repo: &RepoName, location: &str) {
        match &self.inner.transport {
            Transport::Http(h) => h.cancel_upload(repo, location).await,
            Transport::Layout(l) => l.cancel(location).await,
        }
    }
}
