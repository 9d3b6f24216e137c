//! Failure notifications: after a run that failed, held tags back or met a conflict (as each
//! `[[notify]]` asks), POST a CloudEvents 1.0 document (structured mode) to its URL. Delivery
//! runs beside replication, never in its way: retried with backoff a bounded number of times,
//! then given up with a log line. `ferry sync` waits a bounded time for deliveries before it
//! exits; the daemon lets them finish in the background.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::config::{NotifyOn, NotifySpec};
use crate::ledger::{Action, Entry};
use crate::state::{Outcome, RunRecord};

/// Attempts per notification, and the wait before each retry (doubling).
const ATTEMPTS: u32 = 5;
const FIRST_RETRY: Duration = Duration::from_secs(1);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

struct Inner {
    specs: Vec<NotifySpec>,
    http: reqwest::Client,
    tasks: TaskTracker,
    /// Where events come from (`source` in CloudEvents): this host.
    source: String,
    delivered: AtomicU64,
    given_up: AtomicU64,
}

impl Notifier {
    pub fn new(specs: Vec<NotifySpec>) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        // Custom headers carry secrets (a bearer token, an API key): a redirect may go on
        // within the endpoint's own origin only, never hand them to another host.
        let same_origin = reqwest::redirect::Policy::custom(|a| {
            let first = a.previous().first().map(url::Url::origin);
            if a.previous().len() > 5 || first.as_ref() != Some(&a.url().origin()) {
                a.stop()
            } else {
                a.follow()
            }
        });
        let http = reqwest::Client::builder()
            .user_agent(concat!("ferry/", env!("CARGO_PKG_VERSION")))
            .redirect(same_origin)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .unwrap_or_default();
        let source = format!("ferry://{}", crate::model::hostname());
        Notifier {
            inner: Arc::new(Inner {
                specs,
                http,
                tasks: TaskTracker::new(),
                source,
                delivered: AtomicU64::new(0),
                given_up: AtomicU64::new(0),
            }),
        }
    }

    /// Send what `run` calls for to every `[[notify]]` that wants it, in the background.
    pub fn after_run(&self, run: &RunRecord) {
        let kinds = outcomes(run);
        for (i, spec) in self.inner.specs.iter().enumerate() {
            for kind in kinds.iter().filter(|k| spec.on.contains(k)) {
                self.send(i, document(run, *kind, &self.inner.source));
            }
        }
    }

    /// Stream a run's ledger entries to every `[[notify]]` with `on = ["written"]` or
    /// `["deleted"]`: batched, at most [`ENTRIES_PER_EVENT`] per CloudEvent, delivered in
    /// the background like every notification (a slow sink never holds a run).
    pub fn entries(&self, entries: &[Entry]) {
        for (i, spec) in self.inner.specs.iter().enumerate() {
            for (kind, action) in [
                (NotifyOn::Written, Action::Written),
                (NotifyOn::Deleted, Action::Deleted),
            ] {
                if !spec.on.contains(&kind) {
                    continue;
                }
                let mine: Vec<&Entry> = entries
                    .iter()
                    .filter(|e| e.draft.action == action)
                    .collect();
                for batch in mine.chunks(ENTRIES_PER_EVENT) {
                    self.send(i, entries_document(batch, kind, &self.inner.source));
                }
            }
        }
    }

    /// Deliver `doc` to the `i`th `[[notify]]` in the background, and count how it ended.
    fn send(&self, i: usize, doc: serde_json::Value) {
        let inner = self.inner.clone();
        self.inner.tasks.spawn(async move {
            let counter = if deliver(&inner.http, &inner.specs[i], &doc).await {
                &inner.delivered
            } else {
                &inner.given_up
            };
            counter.fetch_add(1, Ordering::Relaxed);
        });
    }

    /// Whether any `[[notify]]` streams ledger entries.
    pub fn wants_entries(&self) -> bool {
        self.inner
            .specs
            .iter()
            .any(|s| s.on.contains(&NotifyOn::Written) || s.on.contains(&NotifyOn::Deleted))
    }

    /// Notifications delivered and given up since start.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.inner.delivered.load(Ordering::Relaxed),
            self.inner.given_up.load(Ordering::Relaxed),
        )
    }

    /// Wait up to `bound` for deliveries in flight (what `ferry sync` does before it exits).
    pub async fn settle(&self, bound: Duration) {
        self.inner.tasks.close();
        if tokio::time::timeout(bound, self.inner.tasks.wait())
            .await
            .is_err()
        {
            warn!(waited = ?bound, "notifications still being retried at exit; given up");
        }
        self.inner.tasks.reopen();
    }
}

/// Most ledger entries one CloudEvent carries (a SIEM's request size limits).
pub const ENTRIES_PER_EVENT: usize = 500;

/// A batch of ledger entries as one CloudEvent: `data.entries`, in order.
fn entries_document(batch: &[&Entry], kind: NotifyOn, source: &str) -> serde_json::Value {
    let (first, last) = (batch[0], batch[batch.len() - 1]);
    let time = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(last.draft.at_ms as i64)
        .unwrap_or_default();
    json!({
        "specversion": "1.0",
        "id": format!("{}-{}-{}-{}", first.draft.member, kind.as_str(), first.seq, last.seq),
        "source": source,
        "type": format!("dev.ferry.audit.{}", kind.as_str()),
        "subject": first.draft.policy,
        "time": time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "datacontenttype": "application/json",
        "data": { "entries": batch },
        "text": format!("ferry: policy `{}` {} {} manifest(s) (audit entries {}–{})",
            first.draft.policy, kind.as_str(), batch.len(), first.seq, last.seq),
    })
}

/// What a run is worth a notification for.
fn outcomes(run: &RunRecord) -> Vec<NotifyOn> {
    let mut out = Vec::new();
    match run.outcome {
        Outcome::Failed => out.push(NotifyOn::Failed),
        Outcome::Ok => out.push(NotifyOn::Succeeded),
        Outcome::Interrupted => {}
    }
    if run.counts.held > 0 {
        out.push(NotifyOn::Held);
    }
    if run.counts.conflicts > 0 {
        out.push(NotifyOn::Conflict);
    }
    out
}

/// A CloudEvents 1.0 document, with a `text` line for chat webhooks (Slack, Mattermost).
fn document(run: &RunRecord, kind: NotifyOn, source: &str) -> serde_json::Value {
    let c = &run.counts;
    let what = match kind {
        NotifyOn::Failed => format!(
            "failed: {} failure(s){}",
            c.failures,
            run.errors
                .first()
                .map(|e| format!("; first: {e}"))
                .unwrap_or_default()
        ),
        NotifyOn::Held => format!(
            "held back {} tag(s){}",
            c.held,
            run.findings
                .held
                .first()
                .map(|h| format!("; first: {h}"))
                .unwrap_or_default()
        ),
        NotifyOn::Conflict => format!(
            "met {} conflict(s) (target tags at another digest, left as they are){}",
            c.conflicts,
            run.findings
                .conflicts
                .first()
                .map(|x| format!("; first: {x}"))
                .unwrap_or_default()
        ),
        NotifyOn::Succeeded | NotifyOn::Written | NotifyOn::Deleted => format!(
            "succeeded: {} tag(s) copied, {} in sync",
            c.tags_copied, c.tags_in_sync
        ),
    };
    let scope = run
        .scope
        .as_ref()
        .map(|s| format!(" ({s})"))
        .unwrap_or_default();
    let time = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(run.ended_ms as i64)
        .unwrap_or_default();
    json!({
        "specversion": "1.0",
        "id": format!("{}-{}-{}", run.policy, run.started_ms, kind.as_str()),
        "source": source,
        "type": format!("dev.ferry.run.{}", kind.as_str()),
        "subject": run.policy,
        "time": time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "datacontenttype": "application/json",
        "data": run,
        "text": format!("ferry: policy `{}`{scope} {what}", run.policy),
    })
}

/// Whether the receiver took it.
async fn deliver(http: &reqwest::Client, spec: &NotifySpec, doc: &serde_json::Value) -> bool {
    let body = doc.to_string();
    let mut wait = FIRST_RETRY;
    for attempt in 1..=ATTEMPTS {
        let mut req = http
            .post(spec.url.clone())
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/cloudevents+json",
            )
            .body(body.clone());
        if let Some(t) = &spec.bearer_token {
            req = req.bearer_auth(t.expose());
        }
        for (k, v) in &spec.headers {
            req = req.header(k, v.expose());
        }
        // Only the host is logged: a webhook URL often carries its secret in the path.
        let host = spec.url.host_str().unwrap_or("");
        match req.send().await {
            Ok(r) if r.status().is_success() => {
                debug!(host, kind = %doc["type"], "notification delivered");
                return true;
            }
            Ok(r)
                if r.status().is_client_error()
                    && r.status() != reqwest::StatusCode::TOO_MANY_REQUESTS =>
            {
                warn!(
                    host,
                    status = r.status().as_u16(),
                    "notification refused; not retried"
                );
                return false;
            }
            Ok(r) => debug!(
                host,
                status = r.status().as_u16(),
                attempt,
                "notification not taken; retrying"
            ),
            Err(e) => {
                debug!(host, error = %e.without_url(), attempt, "notification not delivered; retrying")
            }
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
    }
    warn!(host = spec.url.host_str().unwrap_or(""), attempts = ATTEMPTS, kind = %doc["type"], "notification given up");
    false
}
