//! Talking to a running daemon over its HTTP API, for the commands that cannot open the
//! state store while the daemon holds it: `ferry sync` asks it to run and waits, `ferry
//! status` reads its `/status`.

use std::time::Duration;

use serde_json::Value;

use crate::config::Config;

pub struct DaemonClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl DaemonClient {
    /// A client for the daemon `cfg` describes (`daemon.listen`, `daemon.api_token_*`).
    pub fn new(cfg: &Config) -> Result<Self, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(DaemonClient {
            base: format!("http://{}", cfg.daemon.listen),
            token: cfg.daemon.api_token.as_ref().map(|t| t.expose().to_owned()),
            http,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    async fn call(&self, req: reqwest::RequestBuilder, what: &str) -> Result<Value, String> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let rsp = req
            .send()
            .await
            .map_err(|e| format!("{what} on the daemon at {}: {e}", self.base))?;
        let status = rsp.status();
        let body = rsp
            .text()
            .await
            .map_err(|e| format!("{what} on the daemon at {}: {e}", self.base))?;
        if !status.is_success() {
            return Err(format!(
                "{what}: the daemon at {} answered {status}: {}",
                self.base,
                body.trim()
            ));
        }
        serde_json::from_str(&body)
            .map_err(|e| format!("{what}: the daemon at {} sent no JSON: {e}", self.base))
    }

    pub async fn status(&self) -> Result<Value, String> {
        self.call(
            self.http.get(format!("{}/status", self.base)),
            "GET /status",
        )
        .await
    }

    /// Ask for a run; returns its id.
    pub async fn start_run(&self, body: &Value) -> Result<u64, String> {
        if self.token.is_none() {
            return Err("the daemon holds the state store, and ferry can ask it to run only through its API: set daemon.api_token_env or daemon.api_token_file (the daemon needs it too)".into());
        }
        let v = self
            .call(
                self.http.post(format!("{}/v1/runs", self.base)).json(body),
                "POST /v1/runs",
            )
            .await?;
        v["id"]
            .as_u64()
            .ok_or_else(|| format!("POST /v1/runs: the daemon at {} sent no run id", self.base))
    }

    /// Poll the run until it is done; returns its final document.
    pub async fn wait_run(&self, id: u64) -> Result<Value, String> {
        loop {
            let v = self
                .call(
                    self.http.get(format!("{}/v1/runs/{id}", self.base)),
                    "GET /v1/runs",
                )
                .await?;
            if v["state"] == "done" {
                return Ok(v);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
