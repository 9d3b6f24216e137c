//! A proxy in front of a real Distribution that behaves like another registry: one profile
//! per registry of the quirks catalogue (`../shared/research/registry-quirks.md` in the
//! workspace this was written in; each knob names its item). It speaks HTTP itself, so it can
//! refuse, rewrite or answer a request the way that registry does; whatever it forwards the
//! backend stores, so digests on it are real.
//!
//! It also listens on a second port (the "other port" of Artifactory and Nexus Locations, the
//! host of presigned blob URLs and of GHCR's off-host referrers redirect).

mod auth;
mod handler;
pub mod knobs;
mod manifests;
mod uploads;
mod wire;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

pub use knobs::{Knobs, Profile};

/// What the proxy saw, for tests that count.
#[derive(Default)]
pub struct Stats {
    pub requests: AtomicU64,
    /// POST, PATCH, PUT and DELETE answered 2xx by the proxy or its backend.
    pub writes: AtomicU64,
    /// Bytes of blob bodies received (PATCH and closing PUT).
    pub blob_bytes: AtomicU64,
    pub manifest_puts: AtomicU64,
    pub patches: AtomicU64,
    /// Requests that reached the second port (the other origin) carrying `Authorization`.
    pub other_port_auth: AtomicU64,
    pub other_port_requests: AtomicU64,
    /// `METHOD path -> status`, one line per request.
    pub log: Mutex<Vec<String>>,
}

impl Stats {
    pub fn lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    pub fn count(&self, method: &str, contains: &str) -> usize {
        let prefix = format!("{method} ");
        self.lines()
            .iter()
            .filter(|l| l.starts_with(&prefix) && l.contains(contains))
            .count()
    }
}

pub struct State {
    pub knobs: Knobs,
    pub profile: Option<Profile>,
    backend: String,
    client: reqwest::Client,
    origin: OnceLock<String>,
    other: OnceLock<String>,
    pub tokens: auth::Tokens,
    pub created: knobs::Created,
    /// PATCHes seen and the first `Range` answered, per upload id.
    uploads: Mutex<HashMap<String, (u32, Option<String>)>>,
    /// Referrer descriptors by (repository, subject digest).
    referrers: Mutex<HashMap<(String, String), Vec<serde_json::Value>>>,
    /// Tags removed by a tag delete the backend (2.8) cannot do itself.
    hidden: Mutex<HashSet<(String, String)>>,
    pulls: AtomicU64,
    pub stats: Stats,
}

/// Each proxy's second origin, by its first: what a registry entry lists in
/// `trusted_origins` for a profile whose uploads move to the other port.
static OTHERS: std::sync::LazyLock<Mutex<HashMap<String, String>>> =
    std::sync::LazyLock::new(Mutex::default);

/// The other origin of the proxy at `url`, if `url` is a quirks proxy.
pub fn other_origin(url: &str) -> Option<String> {
    OTHERS
        .lock()
        .unwrap()
        .get(url.trim_end_matches('/'))
        .cloned()
}

pub struct QuirksProxy {
    pub port: u16,
    pub other_port: u16,
    pub state: Arc<State>,
}

impl QuirksProxy {
    /// A proxy with `profile`'s knobs in front of the registry at `backend` (`http://…`).
    pub fn start(profile: Profile, backend: &str) -> Self {
        Self::with(Some(profile), profile.knobs(), backend)
    }

    pub fn with(profile: Option<Profile>, knobs: Knobs, backend: &str) -> Self {
        let client = crate::support::http_client()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let state = Arc::new(State {
            knobs,
            profile,
            backend: backend.trim_end_matches('/').to_owned(),
            client,
            origin: OnceLock::new(),
            other: OnceLock::new(),
            tokens: auth::Tokens::default(),
            created: knobs::Created::default(),
            uploads: Mutex::default(),
            referrers: Mutex::default(),
            hidden: Mutex::default(),
            pulls: AtomicU64::new(0),
            stats: Stats::default(),
        });
        let serve = |st: Arc<State>| {
            move |listener: tokio::net::TcpListener| async move {
                loop {
                    let Ok((sock, _)) = listener.accept().await else {
                        continue;
                    };
                    tokio::spawn(handler::connection(st.clone(), sock));
                }
            }
        };
        let port = crate::support::serve::on_own_thread(serve(state.clone()));
        let other_port = crate::support::serve::on_own_thread(serve(state.clone()));
        state
            .origin
            .set(format!("http://127.0.0.1:{port}"))
            .unwrap();
        state
            .other
            .set(format!("http://127.0.0.1:{other_port}"))
            .unwrap();
        OTHERS.lock().unwrap().insert(
            format!("http://127.0.0.1:{port}"),
            format!("http://127.0.0.1:{other_port}"),
        );
        QuirksProxy {
            port,
            other_port,
            state,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A repository (or a project, for Harbor) that exists before anything is pushed.
    pub fn create(&self, repo: &str) {
        self.state.created.add(repo);
    }

    pub fn stats(&self) -> &Stats {
        &self.state.stats
    }

    pub fn writes(&self) -> u64 {
        self.state.stats.writes.load(Ordering::SeqCst)
    }

    pub fn blob_bytes(&self) -> u64 {
        self.state.stats.blob_bytes.load(Ordering::SeqCst)
    }
}
