//! `GET /v1/audit`: the audit ledger, filtered and paged, and `GET /v1/audit/verify`: its
//! chain checked; `GET /v1/where/{digest}`: the target tags holding an image with it. Behind
//! the read or the admin token, like every `/v1` read.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::Response;

use super::{json, reply};
use crate::daemon::Shared;
use crate::ledger::{Asked, MAX_PAGE};
use crate::model::now_ms;

/// The query: `since`, `until`, `policy`, `target`, `repository`, `digest`, `after`, `limit`.
fn query(uri: &Uri) -> Result<(Asked, u64, usize), String> {
    let mut asked = Asked::default();
    let (mut after, mut limit) = (0, MAX_PAGE);
    for (k, v) in url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()) {
        let v = v.into_owned();
        match k.as_ref() {
            "since" => asked.since = Some(v),
            "until" => asked.until = Some(v),
            "policy" => asked.policy = Some(v),
            "target" => asked.target = Some(v),
            "repository" => asked.repository = Some(v),
            "digest" => asked.digest = Some(v),
            "after" => after = v.parse().map_err(|_| format!("after: `{v}` is not a number"))?,
            "limit" => limit = v.parse().map_err(|_| format!("limit: `{v}` is not a number"))?,
            other => {
                return Err(format!(
                    "unknown parameter `{}` (since, until, policy, target, repository, digest, after, limit)",
                    other.chars().take(40).collect::<String>()
                ))
            }
        }
    }
    Ok((asked, after, limit))
}

pub async fn list(State(s): State<Arc<Shared>>, uri: Uri) -> Response {
    let parsed =
        query(&uri).and_then(|(asked, after, limit)| Ok((asked.filter(now_ms())?, after, limit)));
    let (filter, after, limit) = match parsed {
        Ok(q) => q,
        Err(e) => return reply(StatusCode::BAD_REQUEST, e),
    };
    let app = s.app();
    let Some(ledger) = app.ledger() else {
        return reply(StatusCode::SERVICE_UNAVAILABLE, "no audit ledger");
    };
    match ledger.read(&filter, after, limit) {
        Ok(page) => json(StatusCode::OK, &page),
        Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

pub async fn verify(State(s): State<Arc<Shared>>) -> Response {
    let app = s.app();
    let Some(ledger) = app.ledger() else {
        return reply(StatusCode::SERVICE_UNAVAILABLE, "no audit ledger");
    };
    json(StatusCode::OK, &ledger.check())
}

pub async fn exposure(State(s): State<Arc<Shared>>, Path(digest): Path<String>) -> Response {
    let digest: crate::model::Digest = match digest.parse() {
        Ok(d) => d,
        Err(e) => return reply(StatusCode::BAD_REQUEST, format!("digest: {e}")),
    };
    let app = s.app();
    let Some(state) = app.runner().state() else {
        return reply(StatusCode::SERVICE_UNAVAILABLE, "no state store");
    };
    match crate::ledger::exposure(state, &digest) {
        Ok(found) => json(StatusCode::OK, &found),
        Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
