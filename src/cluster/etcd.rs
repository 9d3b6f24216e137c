//! The connection to etcd: options, a deadline on every request, and which failures are
//! worth retrying (etcd away) and which are not (credentials or TLS refused).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, GetOptions, KeyValue, TlsOptions};

use crate::config::ClusterSettings;

/// No single etcd request may take longer; a slower etcd is treated as away.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// CAs used for https:// etcd URLs when `cluster.ca_file` is not given.
const SYSTEM_CAS: &str = "/etc/ssl/certs/ca-certificates.crt";

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// etcd cannot be reached or did not answer in time: retry.
    #[error("etcd at {endpoints}: {reason}")]
    Away { endpoints: String, reason: String },
    /// etcd answered and refused us (credentials, permissions, TLS): retrying will not help.
    #[error("etcd at {endpoints}: {reason}")]
    Refused { endpoints: String, reason: String },
}

impl EtcdError {
    pub fn is_fatal(&self) -> bool {
        matches!(self, Self::Refused { .. })
    }

    /// Sort an etcd-client error. Its text (with the causes under it) is what the operator
    /// reads; it carries no secret: the password is only ever sent, never echoed.
    pub fn from_client(endpoints: &str, e: &etcd_client::Error) -> Self {
        let mut reason = match e {
            etcd_client::Error::GRpcStatus(s) => s.message().to_owned(),
            other => other.to_string(),
        };
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            let text = s.to_string();
            if !reason.contains(&text) {
                reason.push_str(": ");
                reason.push_str(&text);
            }
            source = s.source();
        }
        let lower = reason.to_ascii_lowercase();
        let tls = ["certificate", "handshake", "unknownissuer", "tls"]
            .iter()
            .any(|w| lower.contains(w));
        if tls {
            reason.push_str(" (TLS: is cluster.ca_file the CA that signed etcd's certificate, and the URL's host in it?)");
        }
        let refused = tls
            || match e {
                etcd_client::Error::GRpcStatus(s) => {
                    use tonic::Code;
                    matches!(s.code(), Code::Unauthenticated | Code::PermissionDenied)
                        || (s.code() == Code::InvalidArgument && lower.contains("authentication"))
                        || (s.code() == Code::FailedPrecondition && lower.contains("user"))
                }
                _ => false,
            };
        let endpoints = endpoints.to_owned();
        if refused {
            Self::Refused { endpoints, reason }
        } else {
            Self::Away { endpoints, reason }
        }
    }

    fn timeout(endpoints: &str, what: &str, limit: Duration) -> Self {
        Self::Away {
            endpoints: endpoints.to_owned(),
            reason: format!("{what}: no answer within {}s", limit.as_secs()),
        }
    }
}

/// Connect (etcd-client authenticates at once when a user is given, so wrong credentials
/// fail here). `keepalive`: how often HTTP/2 pings check the connection.
/// Keys read per request when scanning a range.
const PAGE: i64 = 500;
/// Most keys one scan reads: far beyond any real cluster, a bound against a polluted prefix.
const MAX_SCAN: usize = 200_000;

/// The etcd connection as the cluster uses it: every request under one deadline and
/// counted, ranges read page by page, keys created only if absent.
pub struct Etcd {
    client: Client,
    endpoints: String,
    requests: AtomicU64,
}

/// What a create-if-absent write found.
pub enum Created {
    /// Written, at this revision (the key's create revision).
    Now(i64),
    /// The key was there already: what it holds, when the read came back.
    Exists(Option<KeyValue>),
}

impl Etcd {
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The endpoints, as messages name them.
    pub fn endpoints(&self) -> &str {
        &self.endpoints
    }

    /// Requests sent so far, for `/metrics`.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Count a request sent outside [`Etcd::call`] (the lease keepalive stream).
    pub fn counted(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Run one etcd request with the deadline every request gets.
    pub async fn call<T>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, EtcdError> {
        self.counted();
        within(&self.endpoints, what, REQUEST_TIMEOUT, f).await
    }

    /// Every key under `prefix`, page by page, all at one revision (`rev`, or the first
    /// page's). Returns that revision.
    pub async fn scan(
        &self,
        prefix: &str,
        rev: Option<i64>,
        mut each: impl FnMut(&KeyValue),
    ) -> Result<i64, EtcdError> {
        let end = prefix_end(prefix);
        let (mut start, mut rev, mut seen) = (prefix.as_bytes().to_vec(), rev, 0);
        loop {
            let mut opts = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
            if let Some(r) = rev {
                opts = opts.with_revision(r);
            }
            let resp = self
                .call(
                    "read the cluster",
                    self.client().get(start.clone(), Some(opts)),
                )
                .await?;
            let at = *rev.get_or_insert(resp.header().map_or(0, |h| h.revision()));
            resp.kvs().iter().for_each(&mut each);
            seen += resp.kvs().len();
            match resp.kvs().last() {
                Some(kv) if resp.more() && seen < MAX_SCAN => {
                    start = kv.key().to_vec();
                    start.push(0);
                }
                _ => return Ok(at),
            }
        }
    }

    /// Write `value` at `key` (on `lease`, if given) only if no such key exists, in one
    /// transaction that otherwise reads what is there.
    pub async fn create(
        &self,
        what: &str,
        key: String,
        value: Vec<u8>,
        lease: Option<i64>,
    ) -> Result<Created, EtcdError> {
        use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.clone(),
                value,
                lease.map(|l| PutOptions::new().with_lease(l)),
            )])
            .or_else([TxnOp::get(key, None)]);
        let resp = self.call(what, self.client().txn(txn)).await?;
        if resp.succeeded() {
            return Ok(Created::Now(resp.header().map_or(0, |h| h.revision())));
        }
        Ok(Created::Exists(resp.op_responses().into_iter().find_map(
            |r| match r {
                TxnOpResponse::Get(g) => g.kvs().first().cloned(),
                _ => None,
            },
        )))
    }
}

/// The first key after every key starting with `prefix` (which ends in `/`).
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

pub async fn connect(s: &ClusterSettings) -> Result<Etcd, EtcdError> {
    let endpoints = s.etcd.join(",");
    let mut opts = ConnectOptions::new()
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_timeout(REQUEST_TIMEOUT)
        .with_keep_alive(
            (s.lease_ttl / 3).max(Duration::from_secs(1)),
            CONNECT_TIMEOUT,
        )
        .with_keep_alive_while_idle(true)
        .with_require_leader(true);
    if let Some((user, password)) = &s.login {
        // etcd's tokens expire (`--auth-token-ttl`) and die with a restart (simple tokens):
        // authenticate again rather than fail every request from then on.
        opts = opts
            .with_user(user.clone(), password.expose().to_owned())
            .with_auto_token_refresh(true);
    }
    if s.etcd.iter().any(|u| u.starts_with("https:")) {
        let pem = match &s.ca_pem {
            Some(p) => p.clone(),
            None => std::fs::read(SYSTEM_CAS).map_err(|e| EtcdError::Refused {
                endpoints: endpoints.clone(),
                reason: format!("https:// without cluster.ca_file, and the system CAs ({SYSTEM_CAS}) cannot be read: {e}"),
            })?,
        };
        opts = opts
            .with_tls(TlsOptions::new().ca_certificate(etcd_client::Certificate::from_pem(pem)));
    }
    let client = within(
        &endpoints,
        "connect",
        REQUEST_TIMEOUT + CONNECT_TIMEOUT,
        Client::connect(&s.etcd, Some(opts)),
    )
    .await?;
    Ok(Etcd {
        client,
        endpoints,
        requests: AtomicU64::new(0),
    })
}

async fn within<T>(
    endpoints: &str,
    what: &str,
    limit: Duration,
    f: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, EtcdError> {
    match tokio::time::timeout(limit, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(EtcdError::from_client(endpoints, &e)),
        Err(_) => Err(EtcdError::timeout(endpoints, what, limit)),
    }
}
