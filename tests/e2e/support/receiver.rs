//! A webhook receiver for notification tests: records every request (path, headers, body)
//! and answers 503 to the first `fail_first` of them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};

#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: serde_json::Value,
    /// Whether it was answered 503.
    pub refused: bool,
}

#[derive(Default)]
struct Seen {
    all: Mutex<Vec<Received>>,
    fail_first: AtomicU64,
}

pub struct Receiver {
    pub port: u16,
    seen: Arc<Seen>,
}

impl Receiver {
    pub fn start(fail_first: u64) -> Self {
        let seen = Arc::new(Seen::default());
        seen.fail_first.store(fail_first, Ordering::SeqCst);
        let app = axum::Router::new()
            .fallback(record)
            .with_state(seen.clone());
        let port = super::serve::on_own_thread(|listener| async move {
            axum::serve(listener, app).await.unwrap()
        });
        Receiver { port, seen }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn received(&self) -> Vec<Received> {
        self.seen.all.lock().unwrap().clone()
    }
}

async fn record(
    State(seen): State<Arc<Seen>>,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let refused = seen
        .fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let body = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    seen.all.lock().unwrap().push(Received {
        path: uri.path().to_owned(),
        headers,
        body,
        refused,
    });
    if refused {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::ACCEPTED
    }
}
