//! `POST /v1/runs` and `GET /v1/runs/{id}`: run a policy now, or one repository or tag of it,
//! and follow the run. What `ferry sync` uses while a daemon holds the state store.

use std::sync::Arc;

use super::{json, reply};
use crate::api::{RunAccepted, RunRequest};
use crate::cluster::Handoff;
use crate::config::Policy;
use crate::daemon::Shared;
use crate::model::Invalid;
use crate::model::RepoName;
use crate::model::Tag;
use crate::plan::RunOptions;
use crate::state::{JournalAction, JournalKey};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;

pub async fn create(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let req: RunRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return reply(
                StatusCode::BAD_REQUEST,
                format!("expects {{\"policy\": NAME, \"repository\"?: R, \"tag\"?: T}}: {e}"),
            )
        }
    };
    if let Err(why) = s.accepting() {
        return reply(StatusCode::SERVICE_UNAVAILABLE, why);
    }
    let app = s.app();
    let Some(policy) = app.policy(&req.policy) else {
        return reply(
            StatusCode::NOT_FOUND,
            format!(
                "no policy named `{}`",
                req.policy.chars().take(100).collect::<String>()
            ),
        );
    };
    let key = match run_key(policy, req.repository.as_deref(), req.tag.as_deref()) {
        Ok(k) => k,
        Err(e) => return reply(StatusCode::BAD_REQUEST, e.to_string()),
    };
    if let Some(c) = s.cluster() {
        return hand_off(&s, c, policy, key, &req).await;
    }
    let id = s.runs.create(&key);
    if key.repository.is_none() {
        return match s.request_full_run(
            &policy.name,
            id,
            RunOptions {
                force_delete: req.force_delete,
                verify: req.verify,
            },
        ) {
            Ok(()) => json(StatusCode::ACCEPTED, &RunAccepted { id }),
            Err(why) => {
                let why = why.to_string();
                s.runs.abandoned(&[id], &why);
                reply(StatusCode::SERVICE_UNAVAILABLE, why)
            }
        };
    }
    let queued = s
        .queue
        .enqueue(key, &policy.source, Some(id), None)
        .map_err(|e| e.to_string());
    match queued {
        Ok(()) => match s.state.commit().await {
            Ok(()) => json(StatusCode::ACCEPTED, &RunAccepted { id }),
            Err(e) => reply(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        },
        Err(e) => {
            s.runs.abandoned(&[id], &e);
            reply(StatusCode::SERVICE_UNAVAILABLE, e)
        }
    }
}

/// The journal key of a run request: the whole policy, a repository, or one tag of it,
/// checked against the policy.
fn run_key(policy: &Policy, repo: Option<&str>, tag: Option<&str>) -> Result<JournalKey, Invalid> {
    let (repository, tag) = match (repo, tag) {
        (None, Some(_)) => return Err(Invalid::new("a tag needs its repository")),
        (None, None) => (None, None),
        (Some(r), t) => {
            let repo: RepoName = r.parse()?;
            if !policy.repositories.covers(&repo) {
                return Err(Invalid::new(format!(
                    "policy `{}` does not replicate repository `{repo}`",
                    policy.name
                )));
            }
            let tag: Option<Tag> = t.map(str::parse).transpose()?;
            (Some(repo), tag)
        }
    };
    Ok(JournalKey::new(
        &policy.name,
        repository,
        tag,
        JournalAction::Run,
    ))
}

/// In a cluster: the request goes to the policy's owner through etcd (which may be this
/// member); its result comes back the same way and `GET /v1/runs/{id}` here shows it.
async fn hand_off(
    s: &Shared,
    c: &crate::cluster::Cluster,
    policy: &Policy,
    key: JournalKey,
    req: &RunRequest,
) -> Response {
    let id = s.runs.create(&key);
    let h = Handoff {
        key,
        registry: policy.source.clone(),
        accepted_ms: crate::model::now_ms(),
        origin: Some(c.member().to_owned()),
        request: Some(id),
        force_delete: req.force_delete,
        verify: req.verify,
    };
    // Unique per member and process start: ids restart at 1 when a daemon restarts.
    let key = format!("run-{}-{}-{id}", c.member(), s.started_ms);
    match c.hand_off(&h, &key).await {
        Ok(_) => json(StatusCode::ACCEPTED, &RunAccepted { id }),
        Err(e) => {
            s.runs.abandoned(&[id], &e.to_string());
            reply(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
    }
}

pub async fn show(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    match id.parse().ok().and_then(|id| s.runs.get(id)) {
        Some(v) => json(StatusCode::OK, &v),
        None => reply(
            StatusCode::NOT_FOUND,
            "no such run (runs are kept in memory: a restarted daemon forgets them)",
        ),
    }
}
