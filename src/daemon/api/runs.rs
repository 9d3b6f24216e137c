//! `POST /v1/runs` and `GET /v1/runs/{id}`: run a policy now, or one repository or tag of it,
//! and follow the run. What `ferry sync` uses while a daemon holds the state store.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::{json, reply};
use crate::daemon::Shared;
use crate::model::RepoName;
use crate::model::Tag;
use crate::plan::RunOptions;
use crate::state::JournalKey;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunRequest {
    policy: String,
    repository: Option<String>,
    tag: Option<String>,
    #[serde(default)]
    force_delete: bool,
    #[serde(default)]
    verify: bool,
}

pub async fn create(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let req: RunRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return reply(StatusCode::BAD_REQUEST, format!("expects {{\"policy\": NAME, \"repository\"?: R, \"tag\"?: T}}: {e}")),
    };
    let app = s.app();
    let Some(policy) = app.config.policies.iter().find(|p| p.name == req.policy) else {
        return reply(StatusCode::NOT_FOUND, format!("no policy named `{}`", req.policy.chars().take(100).collect::<String>()));
    };
    let Some(repo) = req.repository.as_deref() else {
        if req.tag.is_some() {
            return reply(StatusCode::BAD_REQUEST, "a tag needs its repository");
        }
        let id = s.runs.create(&policy.name, None, None);
        return match s.request_full_run(&policy.name, id, RunOptions { force_delete: req.force_delete, verify: req.verify }) {
            Ok(()) => json(StatusCode::ACCEPTED, &serde_json::json!({ "id": id })),
            Err(why) => {
                s.runs.abandoned(&[id], &why);
                reply(StatusCode::SERVICE_UNAVAILABLE, why)
            }
        };
    };
    let repo: RepoName = match repo.parse() {
        Ok(r) => r,
        Err(e) => return reply(StatusCode::BAD_REQUEST, e),
    };
    if !policy.repositories.covers(&repo) {
        return reply(StatusCode::BAD_REQUEST, format!("policy `{}` does not replicate repository `{repo}`", policy.name));
    }
    let tag: Option<Tag> = match req.tag.as_deref().map(str::parse).transpose() {
        Ok(t) => t,
        Err(e) => return reply(StatusCode::BAD_REQUEST, e),
    };
    let id = s.runs.create(&policy.name, Some(repo.as_str()), tag.as_ref().map(Tag::as_str));
    let key = JournalKey {
        policy: policy.name.clone(),
        repository: repo.to_string(),
        tag: tag.map(String::from).unwrap_or_default(),
        action: "run".into(),
    };
    let queued = s.queue.enqueue(key, &policy.source, Some(id)).map_err(|e| e.to_string());
    match queued {
        Ok(()) => match s.state.commit().await {
            Ok(()) => json(StatusCode::ACCEPTED, &serde_json::json!({ "id": id })),
            Err(e) => reply(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        },
        Err(e) => {
            s.runs.abandoned(&[id], &e);
            reply(StatusCode::SERVICE_UNAVAILABLE, e)
        }
    }
}

pub async fn show(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    match id.parse().ok().and_then(|id| s.runs.get(id)) {
        Some(v) => json(StatusCode::OK, &v),
        None => reply(StatusCode::NOT_FOUND, "no such run (runs are kept in memory: a restarted daemon forgets them)"),
    }
}
