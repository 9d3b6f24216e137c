//! `/healthz`, `/readyz`, `/metrics` and `/status` on `daemon.listen`. A deliberately small
//! HTTP/1.1 responder: GET only, one request per connection, bounded reads with a timeout.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use super::metrics::Metrics;
use crate::app::App;
use crate::state::StateStore;

pub struct Endpoints {
    pub metrics: Arc<Metrics>,
    pub state: StateStore,
    pub app: RwLock<Arc<App>>,
}

impl Endpoints {
    /// The document `/status` serves and `ferry status --json` prints.
    pub fn status(&self) -> serde_json::Value {
        let mut doc = match self.state.status() {
            Ok(s) => serde_json::to_value(s).expect("status serializes"),
            Err(e) => serde_json::json!({ "error": e.to_string() }),
        };
        doc["policies"] = serde_json::to_value(self.metrics.snapshot()).expect("metrics serialize");
        doc
    }

    fn metrics_text(&self) -> String {
        let uploads = self.state.uploads_in_flight().map(|u| u.len()).unwrap_or(0);
        let retries = self.app.read().expect("lock poisoned").registry_retries();
        self.metrics.render(uploads, &retries)
    }
}

pub async fn serve(listener: TcpListener, ep: Arc<Endpoints>, stop: CancellationToken, tasks: TaskTracker) {
    loop {
        let sock = tokio::select! {
            () = stop.cancelled() => return,
            r = listener.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
        };
        let ep = ep.clone();
        tasks.spawn(async move {
            if let Err(e) = handle(sock, &ep).await {
                debug!(error = %e, "http request failed");
            }
        });
    }
}

async fn handle(mut sock: TcpStream, ep: &Endpoints) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let read = async {
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
            let n = sock.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    tokio::time::timeout(Duration::from_secs(5), read).await.map_err(|_| std::io::ErrorKind::TimedOut)??;
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, kind, body) = match (method, path) {
        ("GET", "/healthz") => ("200 OK", "text/plain", "ok\n".to_owned()),
        ("GET", "/readyz") if ep.metrics.ready.load(std::sync::atomic::Ordering::Relaxed) => ("200 OK", "text/plain", "ready\n".to_owned()),
        ("GET", "/readyz") => ("503 Service Unavailable", "text/plain", "not ready\n".to_owned()),
        ("GET", "/metrics") => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", ep.metrics_text()),
        ("GET", "/status") => ("200 OK", "application/json", serde_json::to_string_pretty(&ep.status()).unwrap_or_default()),
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".to_owned()),
        _ => ("405 Method Not Allowed", "text/plain", "GET only\n".to_owned()),
    };
    let rsp = format!("HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    sock.write_all(rsp.as_bytes()).await?;
    sock.shutdown().await
}
