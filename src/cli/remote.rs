//! Talking to a running daemon over its HTTP API, for the commands that cannot open the
//! state store while the daemon holds it: `ferry sync` asks it to run and waits, `ferry
//! status` reads its `/status`. Every answer is read into the API's own types.

use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::api::{RunAccepted, RunRequest, RunState, RunView, StatusDoc};
use crate::config::Config;

/// Why talking to the daemon failed, as the CLI prints it.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("HTTP client: {0}")]
    Client(reqwest::Error),
    #[error("{what} on the daemon at {base}: {source}")]
    Transport {
        what: &'static str,
        base: String,
        source: reqwest::Error,
    },
    #[error("{what}: the daemon at {base} answered {status}: {body}")]
    Refused {
        what: &'static str,
        base: String,
        status: reqwest::StatusCode,
        body: String,
    },
    #[error("{what}: the daemon at {base} sent no {expected}: {source}")]
    Unreadable {
        what: &'static str,
        base: String,
        expected: &'static str,
        source: serde_json::Error,
    },
    #[error("the daemon holds the state store, and ferry can ask it to run only through its API: set daemon.api_token_env or daemon.api_token_file (the daemon needs it too)")]
    NoToken,
}

pub struct DaemonClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl DaemonClient {
    /// A client for the daemon `cfg` describes (`daemon.listen`, `daemon.api_token_*`).
    /// Over TLS when the daemon's listener has it, trusting `tls_ca_file` (else the
    /// listener's own certificate) only, not the system's roots, and presenting
    /// `tls_client_cert_file` to a mutual-TLS daemon.
    pub fn new(cfg: &Config) -> Result<Self, RemoteError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut b = reqwest::Client::builder().timeout(Duration::from_secs(10));
        let scheme = match &cfg.daemon.tls {
            None => "http",
            Some(tls) => {
                let roots = tls
                    .client_roots
                    .iter()
                    .map(|c| reqwest::Certificate::from_der(c))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(RemoteError::Client)?;
                b = b.tls_certs_only(roots);
                if let Some(pem) = &tls.client_identity {
                    b = b.identity(reqwest::Identity::from_pem(pem).map_err(RemoteError::Client)?);
                }
                "https"
            }
        };
        let http = b.build().map_err(RemoteError::Client)?;
        // The admin token opens runs and reads; the read token is enough for `status`.
        let token = cfg
            .daemon
            .api_token
            .as_ref()
            .or(cfg.daemon.read_token.as_ref());
        Ok(DaemonClient {
            base: format!("{scheme}://{}", cfg.daemon.listen),
            token: token.map(|t| t.expose().to_owned()),
            http,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    async fn call<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        what: &'static str,
        expected: &'static str,
    ) -> Result<T, RemoteError> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let transport = |source| RemoteError::Transport {
            what,
            base: self.base.clone(),
            source,
        };
        let rsp = req.send().await.map_err(transport)?;
        let status = rsp.status();
        let body = rsp.bytes().await.map_err(transport)?;
        if !status.is_success() {
            let body = String::from_utf8_lossy(&body).trim().to_owned();
            return Err(RemoteError::Refused {
                what,
                base: self.base.clone(),
                status,
                body,
            });
        }
        serde_json::from_slice(&body).map_err(|source| RemoteError::Unreadable {
            what,
            base: self.base.clone(),
            expected,
            source,
        })
    }

    /// One page of the audit ledger; `query` is already URL-encoded.
    pub async fn audit(&self, query: &str) -> Result<crate::ledger::Page, RemoteError> {
        let url = format!("{}/v1/audit?{query}", self.base);
        self.call(self.http.get(url), "GET /v1/audit", "audit page")
            .await
    }

    pub async fn exposure(
        &self,
        digest: &str,
    ) -> Result<Vec<crate::ledger::Exposure>, RemoteError> {
        let url = format!("{}/v1/where/{digest}", self.base);
        self.call(self.http.get(url), "GET /v1/where", "exposure list")
            .await
    }

    pub async fn audit_verify(&self) -> Result<crate::ledger::Verified, RemoteError> {
        let url = format!("{}/v1/audit/verify", self.base);
        self.call(self.http.get(url), "GET /v1/audit/verify", "chain check")
            .await
    }

    pub async fn status(&self) -> Result<StatusDoc, RemoteError> {
        let url = format!("{}/status", self.base);
        self.call(self.http.get(url), "GET /status", "status document")
            .await
    }

    /// Ask for a run; returns its id.
    pub async fn start_run(&self, body: &RunRequest) -> Result<u64, RemoteError> {
        if self.token.is_none() {
            return Err(RemoteError::NoToken);
        }
        let req = self.http.post(format!("{}/v1/runs", self.base)).json(body);
        let accepted: RunAccepted = self.call(req, "POST /v1/runs", "run id").await?;
        Ok(accepted.id)
    }

    /// Poll the run until it is done; returns its final view.
    pub async fn wait_run(&self, id: u64) -> Result<RunView, RemoteError> {
        loop {
            let url = format!("{}/v1/runs/{id}", self.base);
            let v: RunView = self
                .call(self.http.get(url), "GET /v1/runs", "run view")
                .await?;
            if v.state == RunState::Done {
                return Ok(v);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
