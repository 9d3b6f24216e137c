//! One request through the quirks proxy: routed, checked against the profile's knobs,
//! answered by the proxy or forwarded to the backend (bodies streamed both ways), and the
//! answer rewritten as the profile's registry would send it.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::Request;
use serde_json::json;

use super::auth::{self, Need, Verdict};
use super::knobs::MissingRepo;
use super::manifests;
use super::uploads;
use super::wire::*;
use super::State;

pub async fn connection(st: Arc<State>, sock: tokio::net::TcpStream) {
    let port = sock.local_addr().map(|a| a.port()).unwrap_or(0);
    let other = st
        .other
        .get()
        .is_some_and(|o| o.ends_with(&format!(":{port}")));
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let st = st.clone();
        if other {
            st.stats.other_port_requests.fetch_add(1, Ordering::Relaxed);
            if req.headers().contains_key("authorization") {
                st.stats.other_port_auth.fetch_add(1, Ordering::Relaxed);
            }
        }
        async move { handle(st, req).await }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(sock), service)
        .await;
}

/// Where a `/v2/` path goes.
#[derive(Debug)]
enum Route {
    Ping,
    Catalog,
    Tags(String),
    Manifest(String, String),
    Blob(String, String),
    Upload(String, Option<String>),
    Referrers(String, String),
    Other,
}

fn route(path: &str) -> Route {
    let Some(rest) = path.strip_prefix("/v2/") else {
        return Route::Other;
    };
    if rest.is_empty() {
        return Route::Ping;
    }
    if rest.starts_with("_catalog") {
        return Route::Catalog;
    }
    let split = |marker: &str| {
        rest.rfind(marker)
            .map(|i| (rest[..i].to_owned(), rest[i + marker.len()..].to_owned()))
    };
    if let Some((name, _)) = split("/tags/list") {
        return Route::Tags(name);
    }
    if let Some((name, uuid)) = split("/blobs/uploads") {
        let uuid = uuid.trim_start_matches('/');
        return Route::Upload(name, (!uuid.is_empty()).then(|| uuid.to_owned()));
    }
    if let Some((name, r)) = split("/manifests/") {
        return Route::Manifest(name, r);
    }
    if let Some((name, d)) = split("/referrers/") {
        return Route::Referrers(name, d);
    }
    if let Some((name, d)) = split("/blobs/") {
        return Route::Blob(name, d);
    }
    Route::Other
}

async fn handle(st: Arc<State>, req: Request<Incoming>) -> Reply {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    st.stats.requests.fetch_add(1, Ordering::SeqCst);
    let reply = answer(&st, req, &method, &path, &query).await;
    let status = reply.as_ref().map_or(0, |r| r.status().as_u16());
    st.stats
        .log
        .lock()
        .unwrap()
        .push(format!("{method} {path}?{query} -> {status}"));
    let registry_write =
        path.starts_with("/v2/") && matches!(method.as_str(), "POST" | "PATCH" | "PUT" | "DELETE");
    if (200..300).contains(&status) && registry_write {
        st.stats.writes.fetch_add(1, Ordering::SeqCst);
    }
    reply
}

async fn answer(
    st: &Arc<State>,
    req: Request<Incoming>,
    method: &str,
    path: &str,
    query: &str,
) -> Reply {
    let k = &st.knobs;
    let origin = st.origin.get().cloned().unwrap_or_default();
    if path == "/token" || path == "/oauth2/token" {
        let authorization = header(&req, "authorization").map(str::to_owned);
        let form = String::from_utf8_lossy(
            &req.into_body()
                .collect()
                .await
                .map_err(std::io::Error::other)?
                .to_bytes(),
        )
        .into_owned();
        let (status, body) = auth::token_endpoint(
            k,
            &st.tokens,
            method,
            query,
            &form,
            authorization.as_deref(),
        );
        return Ok(full(
            status,
            &[("Content-Type", "application/json".into())],
            body,
        ));
    }
    if let Some(rest) = path.strip_prefix("/_blob/") {
        // A presigned URL: a second auth mechanism is refused, as S3 does.
        if header(&req, "authorization").is_some() {
            return Ok(full(400, &[("Content-Type", "application/xml".into())], "<Error><Code>InvalidArgument</Code><Message>Only one auth mechanism allowed</Message></Error>"));
        }
        let rsp = forward(st, "GET", &format!("/v2/{rest}"), "", &req, None).await?;
        return relay(st, rsp).await;
    }
    if path.starts_with("/_web/") {
        return Ok(full(
            429,
            &[("Content-Type", "text/html".into())],
            "<html>rate limited</html>",
        ));
    }
    let r = route(path);
    let carried = header(&req, "authorization").is_some();
    let mut needs = match &r {
        Route::Ping | Route::Other => vec![],
        Route::Catalog => vec![Need {
            resource: "registry:catalog".into(),
            action: "*",
        }],
        Route::Tags(n)
        | Route::Manifest(n, _)
        | Route::Blob(n, _)
        | Route::Upload(n, _)
        | Route::Referrers(n, _) => {
            let action = if matches!(method, "GET" | "HEAD") {
                "pull"
            } else {
                "push"
            };
            vec![Need {
                resource: format!("repository:{n}"),
                action,
            }]
        }
    };
    let mount_from = query_param(query, "from").filter(|_| query_param(query, "mount").is_some());
    if let (Some(from), Route::Upload(_, None)) = (&mount_from, &r) {
        needs.push(Need {
            resource: format!("repository:{from}"),
            action: "pull",
        });
    }
    // Missing repositories come first: Harbor answers them before looking at credentials.
    let pushing = matches!(
        (&r, method),
        (Route::Upload(_, None), "POST") | (Route::Manifest(..), "PUT")
    );
    if let (Some(missing), true, Route::Upload(name, _) | Route::Manifest(name, _)) =
        (k.missing_repo, pushing, &r)
    {
        if !st.created.has(name) {
            match missing {
                MissingRepo::EcrEof if method == "POST" => {
                    return Err(std::io::Error::other(
                        "ECR hangs up on a push to a missing repository",
                    ))
                }
                MissingRepo::Harbor401 => {
                    let project = name.split('/').next().unwrap_or("");
                    let body = json!({"errors":[{"code":"UNAUTHORIZED","message":format!("project {project} not found")}]}).to_string();
                    return Ok(full(
                        401,
                        &[
                            ("WWW-Authenticate", String::new()),
                            ("Content-Type", "application/json".into()),
                        ],
                        body,
                    ));
                }
                _ => {
                    return Ok(oci_error(
                        404,
                        "NAME_UNKNOWN",
                        &format!("repository {name} not found"),
                    ))
                }
            }
        }
    }
    match &r {
        Route::Ping if k.auth == super::knobs::Auth::None => {}
        Route::Other => return Ok(full(404, &[], "404 page not found\n")),
        _ => {
            let ping = matches!(r, Route::Ping) && method == "GET";
            let verdict = if matches!(r, Route::Ping) && !carried {
                Verdict::Refused {
                    insufficient: false,
                }
            } else {
                auth::verify(k, &st.tokens, header(&req, "authorization"), &needs)
            };
            if let Verdict::Refused { insufficient } = verdict {
                let mut headers = vec![("Content-Type", "application/json".to_owned())];
                if let Some(c) = auth::challenge(k, &origin, ping, carried, &needs, insufficient) {
                    headers.push(("WWW-Authenticate", c));
                }
                let body =
                    json!({"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]})
                        .to_string();
                return Ok(full(401, &headers, body));
            }
        }
    }
    match r {
        Route::Ping => Ok(full(
            200,
            &[("Docker-Distribution-API-Version", "registry/2.0".into())],
            "{}",
        )),
        Route::Catalog => manifests::catalog(st, &req, query).await,
        Route::Tags(name) => manifests::tags(st, &req, &name, query).await,
        Route::Manifest(name, reference) => {
            manifests::manifest(st, req, method, &name, &reference, query).await
        }
        Route::Blob(name, digest) => uploads::blob(st, req, method, &name, &digest).await,
        Route::Upload(name, uuid) => {
            uploads::upload(st, req, method, &name, uuid, query, mount_from).await
        }
        Route::Referrers(name, digest) => manifests::referrers(st, &name, &digest, query),
        Route::Other => unreachable!("answered above"),
    }
}
