//! Webhooks drive targeted runs: a real Distribution notifies a real `ferry daemon`.
//! Policies here run on a schedule that never comes during a test (1 January), so only
//! events can explain a copy.

use std::time::{Duration, Instant};

use crate::support::faults::FaultProxy;
use crate::support::images::{self, Format, Pusher};
use crate::support::registry::{RegistryOpts, TestRegistry};
use crate::support::{
    assert_same_image, daemon_get, daemon_post, free_port, metric, wait_for, Daemon, Ferry, Reader,
};

const TOKEN: &str = "test-token-0123456789abcdef";
const NEVER: &str = "0 0 1 1 *";
const DIST: &str = "application/vnd.docker.distribution.events.v1+json";

/// A ferry folder whose daemon listens on `port` with the API token, and `extra` lines in [daemon].
fn ferry(src: &str, dst: &str, port: u16, extra: &str, policies: &[(&str, &str)]) -> Ferry {
    let f = Ferry::new(
        &format!("[registries.src]\nurl = \"{src}\"\n\n[registries.dst]\nurl = \"{dst}\"\n"),
        "1MiB",
        policies,
    );
    std::fs::write(f.path().join("token"), format!("{TOKEN}\n")).unwrap();
    f.daemon_lines(&format!(
        "listen = \"127.0.0.1:{port}\"\napi_token_file = \"token\"\n{extra}"
    ));
    f
}

fn policy(name: &str, repos: &str, extra: &str) -> String {
    format!(
        "[[policy]]\nname = \"{name}\"\nsource = \"src\"\ntargets = [\"dst\"]\nrepositories = [{repos}]\nschedule = \"{NEVER}\"\nevents = true\n{extra}"
    )
}

/// A source registry that notifies the daemon on `port`.
fn notifying_source(port: u16) -> TestRegistry {
    let url = format!("http://127.0.0.1:{port}/v1/events/distribution/src");
    TestRegistry::start_with(RegistryOpts {
        notify: Some((url, TOKEN.into())),
        ..RegistryOpts::default()
    })
}

fn small_image(seed: u64, note: &str) -> images::Image {
    images::image(
        Format::Oci,
        &[&images::layer(seed, 20_000)],
        "amd64",
        None,
        note,
    )
}

/// A Distribution envelope with one push event for `repo:tag`.
fn push_event(id: &str, repo: &str, tag: &str) -> Vec<u8> {
    serde_json::json!({ "events": [{
        "id": id, "timestamp": "2026-11-25T00:00:00Z", "action": "push",
        "target": { "mediaType": "application/vnd.oci.image.manifest.v1+json", "repository": repo, "tag": tag,
                    "digest": "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" },
        "request": { "method": "PUT" }, "source": { "addr": "registry" } }] })
    .to_string()
    .into_bytes()
}

fn tag_lists(r: &TestRegistry, repo: &str) -> usize {
    let needle = format!("\"GET /v2/{repo}/tags/list");
    std::fs::read_to_string(r.dir.path().join("access.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&needle))
        .count()
}

async fn journal_empty(port: u16) -> bool {
    metric(port, "ferry_journal_pending", ("", "")).await == Some(0.0)
}

#[tokio::test]
async fn a_push_is_replicated_in_seconds_without_a_scheduled_run() {
    let port = free_port();
    let (src, dst) = (notifying_source(port), TestRegistry::start());
    let ferry = ferry(
        &src.url,
        &dst.url,
        port,
        "",
        &[("e.toml", &policy("edge", "\"team/app\"", ""))],
    );
    let daemon = Daemon::start(&ferry, port, "daemon.log");
    assert!(daemon.ready().await, "{}", daemon.log());
    let (s, d) = (Reader::new(&src.url), Reader::new(&dst.url));
    for (i, tag) in ["v1", "v2", "v3"].iter().enumerate() {
        Pusher::new(&src.url)
            .image("team/app", tag, &small_image(100 + i as u64, tag))
            .await;
        let pushed = Instant::now();
        assert!(
            wait_for(15, || async { d.manifest("team/app", tag).await.is_some() }).await,
            "{tag} never arrived:\n{}",
            daemon.log()
        );
        assert!(
            pushed.elapsed() < Duration::from_secs(5),
            "{tag} took {:?}",
            pushed.elapsed()
        );
        assert_same_image(&s, &d, "team/app", "team/app", tag).await;
    }
    assert!(
        metric(port, "ferry_events_received_total", ("outcome", "accepted"))
            .await
            .unwrap()
            >= 3.0
    );
    assert!(
        metric(
            port,
            "ferry_event_to_replicated_seconds_count",
            ("policy", "edge")
        )
        .await
        .unwrap()
            >= 3.0
    );
    assert!(wait_for(10, || journal_empty(port)).await);
    // The targeted runs count in the run and copy metrics like any other.
    assert!(
        metric(port, "ferry_policy_runs_total", ("outcome", "ok"))
            .await
            .unwrap()
            >= 3.0
    );
    assert_eq!(
        metric(port, "ferry_tags_copied_total", ("policy", "edge")).await,
        Some(3.0)
    );
    // No full run happened (the schedule is months away): every run in the history is a
    // targeted one, with its scope.
    let (_, status) = daemon_get(port, "/status").await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    let runs = v["runs"].as_array().unwrap();
    assert!(!runs.is_empty());
    for r in runs {
        assert!(
            r["scope"]
                .as_str()
                .unwrap_or("")
                .starts_with("push team/app:v"),
            "{v}"
        );
    }
    assert!(
        v["policies"]["edge"]["runs_ok"].as_u64().unwrap() >= 3,
        "{v}"
    );
    assert_eq!(daemon.stop().0, 0);
}

#[tokio::test]
async fn a_burst_for_one_tag_is_coalesced_and_duplicates_are_dropped() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    Pusher::new(&src.url)
        .image("app", "v1", &small_image(7, "burst"))
        .await;
    let port = free_port();
    let ferry = ferry(
        &src.url,
        &dst.url,
        port,
        "",
        &[("e.toml", &policy("burst", "\"app\"", ""))],
    );
    let daemon = Daemon::start(&ferry, port, "daemon.log");
    assert!(daemon.ready().await, "{}", daemon.log());
    let before = tag_lists(&src, "app");
    let posts = (0..30).map(|i| {
        daemon_post(
            port,
            "/v1/events/distribution/src",
            Some(TOKEN),
            DIST,
            push_event(&format!("ev-{i}"), "app", "v1"),
        )
    });
    for (code, body) in futures_util::future::join_all(posts).await {
        assert_eq!(code, 202, "{body}");
    }
    // The same delivery again (a sender that missed our 202) is a duplicate.
    let (code, body) = daemon_post(
        port,
        "/v1/events/distribution/src",
        Some(TOKEN),
        DIST,
        push_event("ev-0", "app", "v1"),
    )
    .await;
    assert_eq!(code, 202);
    assert!(body.contains("\"duplicate\": 1"), "{body}");
    let d = Reader::new(&dst.url);
    assert!(
        wait_for(15, || async { d.manifest("app", "v1").await.is_some() }).await,
        "{}",
        daemon.log()
    );
    assert!(wait_for(10, || journal_empty(port)).await);
    let runs = tag_lists(&src, "app") - before;
    assert!(
        (1..=2).contains(&runs),
        "30 events for one tag cost {runs} targeted runs (source tag lists)"
    );
    assert_eq!(
        metric(
            port,
            "ferry_events_received_total",
            ("outcome", "duplicate")
        )
        .await,
        Some(1.0)
    );
    assert_eq!(
        metric(port, "ferry_events_received_total", ("outcome", "accepted")).await,
        Some(30.0)
    );
    // An event for a repository no policy covers is acknowledged and counted as ignored.
    let (code, _) = daemon_post(
        port,
        "/v1/events/distribution/src",
        Some(TOKEN),
        DIST,
        push_event("other", "elsewhere", "v1"),
    )
    .await;
    assert_eq!(code, 202);
    assert_eq!(
        metric(port, "ferry_events_received_total", ("outcome", "ignored")).await,
        Some(1.0)
    );
    assert_eq!(daemon.stop().0, 0);
}

#[tokio::test]
async fn a_harbor_webhook_replicates_the_tag_through_the_policy_rules() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let mut p = Pusher::new(&src.url);
    p.image("library/app", "1.2.0", &small_image(21, "release"))
        .await;
    p.image("library/app", "dev-build", &small_image(22, "dev"))
        .await;
    let port = free_port();
    let rules = "target_repository = \"mirror/{repository}\"\n[policy.tags]\nsemver = \">=1.0\"\n";
    let ferry = ferry(
        &src.url,
        &dst.url,
        port,
        "",
        &[("h.toml", &policy("harbor", "\"library/*\"", rules))],
    );
    let daemon = Daemon::start(&ferry, port, "daemon.log");
    assert!(daemon.ready().await, "{}", daemon.log());
    let harbor = |tag: &str| {
        serde_json::json!({ "type": "PUSH_ARTIFACT", "occur_at": 1764028800, "operator": "admin",
            "event_data": { "resources": [{ "digest": "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "tag": tag,
                "resource_url": format!("harbor.example/library/app:{tag}") }],
                "repository": { "date_created": 1764028800, "name": "app", "namespace": "library", "repo_full_name": "library/app", "repo_type": "private" } } })
        .to_string()
        .into_bytes()
    };
    for tag in ["1.2.0", "dev-build"] {
        let (code, body) = daemon_post(
            port,
            "/v1/events/harbor/src",
            Some(TOKEN),
            "application/json",
            harbor(tag),
        )
        .await;
        assert_eq!(code, 202, "{body}");
    }
    let d = Reader::new(&dst.url);
    assert!(
        wait_for(15, || async {
            d.manifest("mirror/library/app", "1.2.0").await.is_some()
        })
        .await,
        "{}",
        daemon.log()
    );
    assert_same_image(
        &Reader::new(&src.url),
        &d,
        "library/app",
        "mirror/library/app",
        "1.2.0",
    )
    .await;
    assert!(wait_for(10, || journal_empty(port)).await);
    // dev-build is not semver: the event ran through the rules and copied nothing.
    assert_eq!(d.tags("mirror/library/app").await, vec!["1.2.0".to_owned()]);
    assert_eq!(daemon.stop().0, 0);
}

#[tokio::test]
async fn a_forged_delete_deletes_nothing_and_a_real_delete_propagates() {
    let port = free_port();
    let (src, dst) = (notifying_source(port), TestRegistry::start());
    let ferry = ferry(
        &src.url,
        &dst.url,
        port,
        "",
        &[("d.toml", &policy("dr", "\"app\"", "delete = true\n"))],
    );
    let daemon = Daemon::start(&ferry, port, "daemon.log");
    assert!(daemon.ready().await, "{}", daemon.log());
    let d = Reader::new(&dst.url);
    let (v1, v2) = (small_image(31, "one"), small_image(32, "two"));
    Pusher::new(&src.url).image("app", "v1", &v1).await;
    Pusher::new(&src.url).image("app", "v2", &v2).await;
    assert!(
        wait_for(15, || async { d.tags("app").await.len() == 2 }).await,
        "{}",
        daemon.log()
    );

    // Forged: a delete for v1, which the source still has.
    let forged = serde_json::json!({ "events": [{ "id": "forged-1", "action": "delete", "target": { "repository": "app", "tag": "v1", "digest": v1.digest } }] });
    let (code, body) = daemon_post(
        port,
        "/v1/events/distribution/src",
        Some(TOKEN),
        DIST,
        forged.to_string().into_bytes(),
    )
    .await;
    assert_eq!(code, 202, "{body}");
    assert!(wait_for(10, || journal_empty(port)).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        d.tags("app").await,
        vec!["v1", "v2"],
        "a forged delete removed a tag:\n{}",
        daemon.log()
    );

    // Real: v2's manifest deleted on the source; Distribution notifies a delete by digest.
    let rsp = crate::support::http_client()
        .build()
        .unwrap()
        .delete(format!("{}/v2/app/manifests/{}", src.url, v2.digest))
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 202);
    assert!(
        wait_for(15, || async {
            d.tags("app").await == vec!["v1".to_owned()]
        })
        .await,
        "v2 not deleted:\n{}",
        daemon.log()
    );
    assert!(d.manifest("app", "v1").await.is_some());
    assert_eq!(daemon.stop().0, 0);
}

#[tokio::test]
async fn bad_requests_are_refused_with_a_reason_and_the_daemon_stays_up() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let port = free_port();
    let ferry = ferry(
        &src.url,
        &dst.url,
        port,
        "",
        &[("e.toml", &policy("p", "\"app\"", ""))],
    );
    let daemon = Daemon::start(&ferry, port, "daemon.log");
    assert!(daemon.ready().await, "{}", daemon.log());
    let path = "/v1/events/distribution/src";
    let ok = push_event("x", "app", "v1");
    // (token, path, content type, body, expected status, expected reason)
    type Case<'a> = (Option<&'a str>, &'a str, &'a str, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (None, path, DIST, ok.clone(), 401, "missing"),
        (Some("wrong-token-0123456789"), path, DIST, ok.clone(), 401, "wrong token"),
        (Some(TOKEN), "/v1/events/distribution/nosuch", DIST, ok.clone(), 404, "no registry `nosuch`"),
        (Some(TOKEN), path, DIST, b"{garbage".to_vec(), 400, "not JSON"),
        (
            Some(TOKEN),
            path,
            DIST,
            br#"{"events":[{"id":"1","action":"push","target":{"repository":"../../etc","tag":"v1"}}]}"#.to_vec(),
            400,
            "repository",
        ),
        (Some(TOKEN), path, "text/plain", ok.clone(), 415, "expects application/json"),
        (Some(TOKEN), path, DIST, vec![b' '; 2 << 20], 413, ""),
        (Some(TOKEN), "/v1/runs", "application/json", br#"{"policy":"nosuch"}"#.to_vec(), 404, "no policy named"),
    ];
    for (token, p, kind, body, want, reason) in cases {
        let (code, text) = daemon_post(port, p, token, kind, body).await;
        assert_eq!(code, want, "{p} {token:?}: {text}");
        assert!(text.contains(reason), "{p}: {text}");
        assert!(text.trim().lines().count() <= 1, "one line: {text}");
    }
    assert_eq!(daemon_get(port, "/healthz").await.unwrap().0, 200);
    assert_eq!(
        metric(port, "ferry_events_received_total", ("outcome", "rejected")).await,
        Some(3.0)
    );

    // 1,000 connections at once: slow-loris clients (a request head started, never finished),
    // idle ones, raw garbage, 100 KiB URLs. /healthz still answers within a second, garbage
    // and long URLs get a 4xx or a closed socket, and overdue heads are dropped.
    let long_url = format!(
        "GET /healthz?{} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(100 << 10)
    );
    let mut loris = Vec::new();
    let mut rude = Vec::new();
    for i in 0..1000 {
        let mut c = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let bytes: &[u8] = match i % 4 {
            0 => b"POST /v1/events/distribution/src HTTP/1.1\r\nHost: x\r\n",
            1 => b"",
            2 => b"\x00\xffGARBAGE / \x01\r\n\r\n",
            _ => long_url.as_bytes(),
        };
        // A server that has answered and closed may refuse the rest of a long write.
        let _ = tokio::io::AsyncWriteExt::write_all(&mut c, bytes).await;
        if i % 4 >= 2 {
            rude.push(c)
        } else {
            loris.push(c)
        }
    }
    let t = Instant::now();
    assert_eq!(daemon_get(port, "/healthz").await.unwrap().0, 200);
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "/healthz took {:?} beside 1,000 bad clients",
        t.elapsed()
    );
    for mut c in rude {
        let mut head = [0u8; 12];
        let got = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::io::AsyncReadExt::read(&mut c, &mut head),
        )
        .await;
        match got {
            Ok(Ok(0)) | Ok(Err(_)) => {} // closed
            Ok(Ok(n)) => assert!(
                head[..n].starts_with(b"HTTP/1.1 4"),
                "{}",
                String::from_utf8_lossy(&head[..n])
            ),
            Err(_) => panic!("a malformed request was neither answered nor closed"),
        }
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    let mut buf = [0u8; 512];
    let closed = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut loris[0], &mut buf),
    )
    .await;
    assert!(
        matches!(closed, Ok(Ok(_)) | Ok(Err(_))),
        "a slow client was never cut off"
    );
    drop(loris);
    assert!(!daemon.log().contains(TOKEN), "the token reached the log");
    assert_eq!(daemon.stop().0, 0);

    // Without a token the API is off, and validate says how to turn it on.
    let path = ferry.config();
    std::fs::write(
        &path,
        std::fs::read_to_string(&path)
            .unwrap()
            .replace("api_token_file = \"token\"\n", ""),
    )
    .unwrap();
    let out = ferry.run(&["validate"]);
    out.assert_code(0);
    assert!(
        out.all()
            .contains("set daemon.api_token_env or daemon.api_token_file"),
        "{}",
        out.all()
    );
    let daemon = Daemon::start(&ferry, port, "second.log");
    assert!(daemon.ready().await, "{}", daemon.log());
    let (code, text) = daemon_post(
        port,
        "/v1/events/distribution/src",
        Some(TOKEN),
        DIST,
        push_event("y", "app", "v1"),
    )
    .await;
    assert_eq!(
        (code, text.contains("api_token_env")),
        (403, true),
        "{text}"
    );
    assert_eq!(daemon.stop().0, 0);
}

#[tokio::test]
async fn events_accepted_while_the_target_is_down_survive_kill9_and_are_replayed() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    Pusher::new(&src.url)
        .image("app", "v1", &small_image(41, "survivor"))
        .await;
    let proxy = FaultProxy::start(dst.host());
    proxy
        .faults
        .every_503
        .store(1, std::sync::atomic::Ordering::SeqCst); // the target answers 503 to everything
    let port = free_port();
    let ferry = ferry(
        &src.url,
        &proxy.url(),
        port,
        "max_pending_events = 1\n",
        &[("e.toml", &policy("p", "\"app\"", ""))],
    );
    let mut daemon = Daemon::start(&ferry, port, "first.log");
    assert!(daemon.ready().await, "{}", daemon.log());
    let (code, body) = daemon_post(
        port,
        "/v1/events/distribution/src",
        Some(TOKEN),
        DIST,
        push_event("keep-me", "app", "v1"),
    )
    .await;
    assert_eq!(code, 202, "{body}");
    // The journal holds one event, its limit: the next one is refused, not dropped.
    let (code, body) = daemon_post(
        port,
        "/v1/events/distribution/src",
        Some(TOKEN),
        DIST,
        push_event("too-many", "app", "v2"),
    )
    .await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("journal full"), "{body}");
    let (_, status) = daemon_get(port, "/status").await.unwrap();
    assert!(status.contains("\"pending_events_total\": 1"), "{status}");
    daemon.child.kill().unwrap(); // kill -9, mid-retry
    daemon.child.wait().unwrap();
    drop(daemon);

    proxy
        .faults
        .every_503
        .store(0, std::sync::atomic::Ordering::SeqCst);
    let out = ferry.run(&["status"]);
    assert!(
        out.stdout.contains("events pending (1 in all)") && out.stdout.contains("p push app:v1"),
        "{}",
        out.all()
    );
    let daemon = Daemon::start(&ferry, port, "second.log");
    assert!(daemon.ready().await, "{}", daemon.log());
    let d = Reader::new(&dst.url);
    assert!(
        wait_for(20, || async { d.manifest("app", "v1").await.is_some() }).await,
        "not replayed:\n{}",
        daemon.log()
    );
    assert_same_image(&Reader::new(&src.url), &d, "app", "app", "v1").await;
    assert_eq!(
        metric(port, "ferry_events_replayed_total", ("", "")).await,
        Some(1.0)
    );
    assert!(wait_for(10, || journal_empty(port)).await);
    assert_eq!(daemon.stop().0, 0);
}

#[tokio::test]
async fn sync_and_status_beside_a_running_daemon_go_through_its_api() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    Pusher::new(&src.url)
        .image("app", "v1", &small_image(51, "manual"))
        .await;
    Pusher::new(&src.url)
        .image("app", "v2", &small_image(52, "manual"))
        .await;
    let port = free_port();
    let manual = "[[policy]]\nname = \"manual\"\nsource = \"src\"\ntargets = [\"dst\"]\nrepositories = [\"app\"]\n";
    let ferry = ferry(
        &src.url,
        &dst.url,
        port,
        "",
        &[
            ("m.toml", manual),
            ("broken-src.toml", &policy("gone", "\"missing\"", "")),
        ],
    );
    let daemon = Daemon::start(&ferry, port, "daemon.log");
    assert!(daemon.ready().await, "{}", daemon.log());

    let out = ferry.run(&["sync", "--policy", "manual"]);
    out.assert_code(0);
    assert!(
        out.stderr.contains("asking it to run manual"),
        "{}",
        out.all()
    );
    assert_eq!(out.summary("copied"), 2);
    assert_same_image(
        &Reader::new(&src.url),
        &Reader::new(&dst.url),
        "app",
        "app",
        "v2",
    )
    .await;
    let again = ferry.run(&["sync", "--policy", "manual"]);
    again.assert_code(0);
    assert_eq!((again.summary("copied"), again.summary("in")), (0, 2));
    // A failing policy keeps its exit code through the daemon.
    let failed = ferry.run(&["sync", "--policy", "gone"]);
    failed.assert_code(1);
    assert!(
        failed.stderr.contains("failed: gone:") && failed.stderr.contains("missing"),
        "{}",
        failed.all()
    );
    ferry.run(&["sync", "--policy", "nosuch"]).assert_code(2);

    let status = ferry.run(&["status"]);
    status.assert_code(0);
    assert!(
        status
            .stdout
            .lines()
            .any(|l| l.starts_with("manual") && l.contains(" ok ")),
        "{}",
        status.stdout
    );
    // A targeted run on request: one tag.
    let (code, body) = daemon_post(
        port,
        "/v1/runs",
        Some(TOKEN),
        "application/json",
        br#"{"policy":"manual","repository":"app","tag":"v1"}"#.to_vec(),
    )
    .await;
    assert_eq!(code, 202, "{body}");
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"]
        .as_u64()
        .unwrap();
    let client = crate::support::http_client().build().unwrap();
    let done = wait_for(15, || async {
        let rsp = client
            .get(format!("http://127.0.0.1:{port}/v1/runs/{id}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        let text = rsp.text().await.unwrap();
        let view: ferry::api::RunView = serde_json::from_str(&text).unwrap();
        text.contains("\"state\": \"done\"") && view.state == ferry::api::RunState::Done
    })
    .await;
    assert!(done, "{}", daemon.log());
    assert_eq!(daemon.stop().0, 0);
}

/// A push no policy takes, and a pushed tag the rules leave out, each leave a reason in the
/// log (before, the push seemed lost).
#[tokio::test]
async fn an_event_nothing_copies_says_why_in_the_log() {
    let port = free_port();
    let (src, dst) = (notifying_source(port), TestRegistry::start());
    let p = policy("edge", "\"team/app\"", "[policy.tags]\ninclude = ['^v']\n");
    let ferry = ferry(&src.url, &dst.url, port, "", &[("e.toml", &p)]);
    let daemon = Daemon::start(&ferry, port, "daemon.log");
    assert!(daemon.ready().await, "{}", daemon.log());
    let mut push = Pusher::new(&src.url);
    push.image("other/app", "v1", &small_image(501, "other"))
        .await;
    push.image("team/app", "nightly", &small_image(502, "nightly"))
        .await;
    assert!(
        wait_for(15, || async {
            let log = daemon.log();
            log.contains("event ignored") && log.contains("pushed tag not copied")
        })
        .await,
        "{}",
        daemon.log()
    );
    let log = daemon.log();
    let ignored = log.lines().find(|l| l.contains("event ignored")).unwrap();
    assert!(
        ignored.contains("repository=other/app")
            && ignored.contains("policy `edge` does not cover the repository"),
        "{ignored}"
    );
    let skipped = log
        .lines()
        .find(|l| l.contains("pushed tag not copied"))
        .unwrap();
    assert!(
        skipped.contains("tag=nightly") && skipped.contains("matches no tags.include"),
        "{skipped}"
    );
    assert!(Reader::new(&dst.url)
        .manifest("team/app", "nightly")
        .await
        .is_none());
    assert_eq!(daemon.stop().0, 0);
}
