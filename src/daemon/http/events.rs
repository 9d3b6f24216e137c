//! `POST /v1/events/{distribution,harbor}/{registry}`: registry webhooks into the journal.
//!
//! Each event is checked for shape, dropped when it is a redelivery (same id within the
//! hour), and journaled once per policy with `events = true` that covers its repository
//! (deletes only for policies with `delete = true`). The 202 goes out after the journal is
//! flushed; a journal that is full or cannot be written gets 503, so the sender keeps the
//! event and sends it again.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use tracing::{debug, warn};

use super::{json, reply};
use crate::cluster::Handoff;
use crate::daemon::queue::QueueError;
use crate::daemon::Shared;
use crate::events::{parse_distribution, parse_harbor, Action, Parsed};
use crate::model::now_ms;
use crate::state::{JournalAction, JournalKey};

pub async fn distribution(
    state: State<Arc<Shared>>,
    registry: Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    receive(state, registry, &headers, &body, parse_distribution).await
}

pub async fn harbor(
    state: State<Arc<Shared>>,
    registry: Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    receive(state, registry, &headers, &body, parse_harbor).await
}

async fn receive(
    State(s): State<Arc<Shared>>,
    Path(registry): Path<String>,
    headers: &HeaderMap,
    body: &[u8],
    parse: fn(&[u8]) -> Result<Parsed, crate::model::Invalid>,
) -> Response {
    if let Err(why) = s.accepting() {
        return reply(StatusCode::SERVICE_UNAVAILABLE, why);
    }
    let app = s.app();
    if !app.config.registries.contains_key(&registry) || registry.contains("://") {
        return reply(
            StatusCode::NOT_FOUND,
            format!(
                "no registry `{}` in the config",
                registry.chars().take(100).collect::<String>()
            ),
        );
    }
    let kind = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let kind = kind.split(';').next().unwrap_or("").trim();
    if kind != "application/json" && kind != "application/vnd.docker.distribution.events.v1+json" {
        s.metrics.events(&registry, "rejected", 1);
        return reply(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expects application/json or application/vnd.docker.distribution.events.v1+json",
        );
    }
    let parsed = match parse(body) {
        Ok(p) => p,
        Err(e) => {
            s.metrics.events(&registry, "rejected", 1);
            debug!(registry, reason = %e, "webhook refused");
            return reply(StatusCode::BAD_REQUEST, e.to_string());
        }
    };
    let mut counts = Counts {
        ignored: parsed.ignored as u64,
        ..Counts::default()
    };
    let now = now_ms();
    for ev in &parsed.events {
        match s.state.event_known(&registry, &ev.id, now) {
            Ok(true) => {
                counts.duplicate += 1;
                continue;
            }
            Ok(false) => {}
            Err(e) => return refuse(&s, &registry, &counts, QueueError::State(e)),
        }
        let action = match ev.action {
            Action::Push => JournalAction::Push,
            Action::Delete => JournalAction::Delete,
        };
        let policies = app.config.policies.iter().filter(|p| {
            p.events
                && p.source == registry
                && p.repositories.covers(&ev.repository)
                && (ev.action == Action::Push || p.delete)
        });
        let mut any = false;
        for p in policies {
            any = true;
            let key = JournalKey::new(&p.name, Some(ev.repository.clone()), ev.tag.clone(), action);
            let queued = match s.cluster() {
                None => s.queue.enqueue(key, &registry, None, None),
                Some(c) => {
                    // One etcd key per (event, policy): a redelivery to any member finds it.
                    let id = crate::model::Digest::of(
                        format!("{registry}\0{}\0{}", ev.id, p.name).as_bytes(),
                    );
                    let h = Handoff {
                        key,
                        registry: registry.clone(),
                        accepted_ms: now,
                        origin: None,
                        request: None,
                        force_delete: false,
                        verify: false,
                    };
                    c.hand_off(&h, &id.hex()[..32])
                        .await
                        .map(drop)
                        .map_err(QueueError::from)
                }
            };
            if let Err(e) = queued {
                return refuse(&s, &registry, &counts, e);
            }
        }
        if let Err(e) = s.state.remember_event(&registry, &ev.id, now) {
            return refuse(&s, &registry, &counts, QueueError::State(e));
        }
        if any {
            counts.accepted += 1;
        } else {
            counts.ignored += 1;
            let why = passed_over(&app.config.policies, &registry, ev);
            tracing::info!(registry = %registry, repository = %ev.repository, tag = ev.tag.as_ref().map_or("", |t| t.as_str()), why = %why, "event ignored");
        }
    }
    if let Err(e) = s.state.commit().await {
        return refuse(&s, &registry, &counts, QueueError::State(e));
    }
    counts.record(&s, &registry);
    json(StatusCode::ACCEPTED, &counts)
}

#[derive(Default, serde::Serialize)]
struct Counts {
    accepted: u64,
    ignored: u64,
    duplicate: u64,
}

impl Counts {
    fn record(&self, s: &Shared, registry: &str) {
        s.metrics.events(registry, "accepted", self.accepted);
        s.metrics.events(registry, "ignored", self.ignored);
        s.metrics.events(registry, "duplicate", self.duplicate);
    }
}

/// 503: the sender keeps the events and retries; those journaled before the failure are
/// deduplicated then.
fn refuse(s: &Shared, registry: &str, counts: &Counts, e: QueueError) -> Response {
    warn!(registry, error = %e, "webhook refused: cannot journal its events");
    counts.record(s, registry);
    s.metrics.events(registry, "rejected", 1);
    reply(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
}

/// Why no policy took an event: each policy of this source, and what it lacks.
fn passed_over(
    policies: &[crate::config::Policy],
    registry: &str,
    ev: &crate::events::Event,
) -> String {
    let of_source: Vec<String> = policies
        .iter()
        .filter(|p| p.source == registry)
        .map(|p| {
            let lacks = if !p.events {
                "has events = false"
            } else if !p.repositories.covers(&ev.repository) {
                "does not cover the repository"
            } else {
                "has delete = false"
            };
            format!("policy `{}` {lacks}", p.name)
        })
        .collect();
    if of_source.is_empty() {
        format!("no policy has `{registry}` as its source")
    } else {
        of_source.join("; ")
    }
}
