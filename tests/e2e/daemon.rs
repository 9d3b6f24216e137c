//! `ferry daemon` as a real process: triggers, reload, stop and resume, faults and metrics.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::support::faults::FaultProxy;
use crate::support::images::{self, push_corpus, CorpusSpec, Format, Pusher};
use crate::support::proxy::Proxy;
use crate::support::registry::TestRegistry;
use crate::support::{
    assert_same_image, daemon_get, free_port, signal, wait_for, wait_until, Daemon, Ferry, Reader,
};

/// A Ferry folder whose daemon listens on `port`.
fn daemon_ferry(src: &str, dst: &str, port: u16, chunk: &str, policies: &[(&str, &str)]) -> Ferry {
    let f = Ferry::new(
        &format!("[registries.src]\nurl = \"{src}\"\n\n[registries.dst]\nurl = \"{dst}\"\n"),
        chunk,
        policies,
    );
    f.daemon_lines(&format!(
        "listen = \"127.0.0.1:{port}\"\nstop_timeout = \"10s\"\n"
    ));
    f
}

fn policy(name: &str, repos: &str, interval: &str) -> String {
    format!("[[policy]]\nname = \"{name}\"\nsource = \"src\"\ntargets = [\"dst\"]\nrepositories = [{repos}]\ninterval = \"{interval}\"\n")
}

async fn has_tag(r: &Reader, repo: &str, tag: &str) -> bool {
    r.manifest(repo, tag).await.is_some()
}

#[tokio::test]
async fn daemon_mirrors_new_pushes_and_reports_status_and_metrics() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    push_corpus(
        &src.url,
        &CorpusSpec {
            repos: 1,
            tags: 1,
            index_every: 0,
            sign: false,
            ..CorpusSpec::default()
        },
    )
    .await;
    let port = free_port();
    let ferry = daemon_ferry(
        &src.url,
        &dst.url,
        port,
        "1MiB",
        &[("m.toml", &policy("mirror", "\"app-000\"", "1s"))],
    );
    let daemon = Daemon::start(&ferry, port, "daemon.log");
    assert!(daemon.ready().await, "daemon not ready:\n{}", daemon.log());
    assert_eq!(daemon_get(port, "/healthz").await.unwrap().0, 200);
    let d = Reader::new(&dst.url);
    assert!(
        wait_for(20, || has_tag(&d, "app-000", "1.0.0")).await,
        "first sync:\n{}",
        daemon.log()
    );

    // A push after start shows up without a restart.
    let img = images::image(
        Format::Oci,
        &[&images::layer(4711, 80_000)],
        "amd64",
        None,
        "pushed later",
    );
    Pusher::new(&src.url).image("app-000", "2.0.0", &img).await;
    let pushed = std::time::Instant::now();
    assert!(
        wait_for(20, || has_tag(&d, "app-000", "2.0.0")).await,
        "new tag never mirrored:\n{}",
        daemon.log()
    );
    assert!(
        pushed.elapsed() < Duration::from_secs(10),
        "took {:?}",
        pushed.elapsed()
    );
    assert_same_image(&Reader::new(&src.url), &d, "app-000", "app-000", "2.0.0").await;

    // `ferry status --json` works while the daemon holds the state store (via /status).
    let status = ferry.run(&["status", "--json"]);
    status.assert_code(0);
    let v: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    // The same document as the API's own type: what the CLI and the page read.
    let doc: ferry::api::StatusDoc = serde_json::from_str(&status.stdout).unwrap();
    let last = doc.last_run("mirror").expect("a run of mirror");
    assert_eq!(last.outcome, ferry::state::Outcome::Ok);
    assert!(doc
        .policies
        .as_ref()
        .is_some_and(|p| p["mirror"].next_run_ms.is_some()));
    assert_eq!(v["runs"][0]["policy"], "mirror");
    assert_eq!(v["runs"][0]["outcome"], "ok");
    assert!(
        v["runs"][0]["counts"]["tags_in_sync"].as_u64().unwrap() >= 1,
        "{v}"
    );
    assert!(
        v["policies"]["mirror"]["next_run_ms"].as_u64().is_some(),
        "{v}"
    );

    let (code, body) = daemon_get(port, "/metrics").await.unwrap();
    assert_eq!(code, 200);
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
        .expect("valid Prometheus text");
    let value = |name: &str, label: (&str, &str)| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && s.labels.get(label.0) == Some(label.1))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => -1.0,
            })
    };
    assert!(value("ferry_policy_runs_total", ("outcome", "ok")).unwrap() >= 2.0);
    assert!(value("ferry_tags_copied_total", ("target", "dst")).unwrap() >= 2.0);
    assert!(
        value(
            "ferry_policy_last_success_timestamp_seconds",
            ("policy", "mirror")
        )
        .unwrap()
            > 1.7e9
    );
    assert!(value("ferry_blobs_uploaded_total", ("policy", "mirror")).unwrap() >= 3.0);

    let (code, took) = daemon.stop();
    assert_eq!(code, 0);
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[tokio::test]
async fn sighup_adds_a_policy_a_broken_policy_keeps_the_running_set_and_a_storm_ends_on_the_last_set(
) {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    push_corpus(
        &src.url,
        &CorpusSpec {
            repos: 3,
            tags: 1,
            index_every: 0,
            sign: false,
            ..CorpusSpec::default()
        },
    )
    .await;
    let port = free_port();
    let ferry = daemon_ferry(
        &src.url,
        &dst.url,
        port,
        "1MiB",
        &[("a.toml", &policy("a", "\"app-000\"", "1s"))],
    );
    let daemon = Daemon::start(&ferry, port, "daemon.log");
    assert!(daemon.ready().await, "{}", daemon.log());
    let d = Reader::new(&dst.url);
    assert!(wait_for(20, || has_tag(&d, "app-000", "1.0.0")).await);
    assert!(!has_tag(&d, "app-001", "1.0.0").await);

    std::fs::write(
        ferry.path().join("policies/b.toml"),
        policy("b", "\"app-001\"", "1s"),
    )
    .unwrap();
    signal(&daemon.child, "HUP");
    assert!(
        wait_for(20, || has_tag(&d, "app-001", "1.0.0")).await,
        "reload did not add policy b:\n{}",
        daemon.log()
    );

    std::fs::write(
        ferry.path().join("policies/broken.toml"),
        "[[policy]]\nname = \"c\"\nsourse = \"src\"\n",
    )
    .unwrap();
    signal(&daemon.child, "HUP");
    assert!(
        wait_until(10, || daemon.log().contains("config reload failed")),
        "{}",
        daemon.log()
    );
    assert!(
        daemon
            .log()
            .contains("broken.toml:3:1: unknown field `sourse`"),
        "{}",
        daemon.log()
    );
    // Still running the old set: a new push to a repository of policy `a` arrives.
    let img = images::image(
        Format::Docker,
        &[&images::layer(515, 30_000)],
        "amd64",
        None,
        "after broken reload",
    );
    Pusher::new(&src.url).image("app-000", "3.0.0", &img).await;
    assert!(
        wait_for(20, || has_tag(&d, "app-000", "3.0.0")).await,
        "{}",
        daemon.log()
    );
    assert_eq!(daemon_get(port, "/healthz").await.unwrap().0, 200);

    // A SIGHUP storm: 100 in a second while the policy folder flips between two sets (some
    // reloads read it half-written). What runs afterwards is the last set, whole.
    std::fs::remove_file(ferry.path().join("policies/broken.toml")).unwrap();
    let (c_on, c_off) = (
        ferry.path().join("policies/c.toml"),
        ferry.path().join("policies/b.toml"),
    );
    for i in 0..100 {
        if i % 2 == 0 {
            std::fs::write(&c_on, policy("c", "\"app-002\"", "1s")).unwrap();
            let _ = std::fs::remove_file(&c_off);
        } else {
            std::fs::write(&c_off, policy("b", "\"app-001\"", "1s")).unwrap();
            let _ = std::fs::remove_file(&c_on);
        }
        signal(&daemon.child, "HUP");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The last write was odd: {a, b}. One more signal after it, as an operator would send.
    signal(&daemon.child, "HUP");
    let policies = || async {
        let (_, body) = daemon_get(port, "/status").await?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        Some(
            v["policies"]
                .as_object()?
                .keys()
                .cloned()
                .collect::<Vec<_>>(),
        )
    };
    let settled = wait_for(30, || async {
        policies().await.is_some_and(|p| p == ["a", "b"])
    })
    .await;
    assert!(
        settled,
        "running {:?} after the storm:\n{}",
        policies().await,
        daemon.log()
    );
    assert_eq!(daemon_get(port, "/healthz").await.unwrap().0, 200);
    let img = images::image(
        Format::Oci,
        &[&images::layer(516, 30_000)],
        "amd64",
        None,
        "after the storm",
    );
    Pusher::new(&src.url).image("app-001", "4.0.0", &img).await;
    assert!(
        wait_for(20, || has_tag(&d, "app-001", "4.0.0")).await,
        "policy b runs:\n{}",
        daemon.log()
    );
    let (code, _) = daemon.stop();
    assert_eq!(code, 0);
}

#[tokio::test]
async fn sigterm_during_a_large_upload_exits_quickly_and_the_next_start_resumes() {
    const CHUNK: u64 = 1 << 20;
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let big = images::layer(5151, 24 << 20);
    let img = images::image(Format::Oci, &[&big], "amd64", None, "big");
    Pusher::new(&src.url).image("big", "v1", &img).await;
    let proxy = Proxy::start(dst.host());
    proxy.set_rate(4 << 20);
    let port = free_port();
    let ferry = daemon_ferry(
        &src.url,
        &proxy.url(),
        port,
        "1MiB",
        &[("big.toml", &policy("big", "\"big\"", "1h"))],
    );
    let daemon = Daemon::start(&ferry, port, "first.log");
    assert!(
        wait_until(60, || proxy.sent() > 6 << 20),
        "upload did not start:\n{}",
        daemon.log()
    );
    let log = daemon.log.clone();
    let (code, took) = daemon.stop();
    assert_eq!(code, 0, "{}", std::fs::read_to_string(&log).unwrap());
    assert!(took < Duration::from_secs(5), "stop took {took:?}");
    let first = proxy.sent();
    let v: serde_json::Value =
        serde_json::from_str(&ferry.run(&["status", "--json"]).stdout).unwrap();
    let offset = v["uploads_in_flight"][0]["offset"]
        .as_u64()
        .expect("upload checkpointed");
    assert!(offset >= 5 * CHUNK, "{offset}");

    proxy.set_rate(0);
    let daemon = Daemon::start(&ferry, port, "second.log");
    let d = Reader::new(&dst.url);
    assert!(
        wait_for(30, || has_tag(&d, "big", "v1")).await,
        "not resumed:\n{}",
        daemon.log()
    );
    assert!(daemon.log().contains("resuming upload"), "{}", daemon.log());
    let total: u64 = img.blobs.iter().map(|b| b.bytes.len() as u64).sum();
    let resent = proxy.sent().saturating_sub(total);
    assert!(
        resent <= CHUNK,
        "resent {resent} bytes (first daemon {first}, total {})",
        proxy.sent()
    );
    assert_same_image(&Reader::new(&src.url), &d, "big", "big", "v1").await;
    assert_eq!(daemon.stop().0, 0);
}

#[tokio::test]
async fn sigterm_while_runs_retry_an_unreachable_source_exits_at_once() {
    let dst = TestRegistry::start();
    let gone = format!("http://127.0.0.1:{}", free_port());
    let port = free_port();
    // One policy names its repository (planning lists its tags), the other a pattern (the run
    // lists the catalog first): both are retried against a source nobody answers for.
    let policies = [
        ("one.toml", policy("one", "\"app\"", "1h")),
        ("all.toml", policy("all", "\"app-*\"", "1h")),
    ];
    let policies: Vec<(&str, &str)> = policies.iter().map(|(f, p)| (*f, p.as_str())).collect();
    let ferry = daemon_ferry(&gone, &dst.url, port, "1MiB", &policies);
    // Asked to keep trying (a first contact gives up after 5 s otherwise).
    let cfg = std::fs::read_to_string(ferry.config()).unwrap();
    let cfg = cfg.replacen(
        &format!("url = \"{gone}\"\n"),
        &format!("url = \"{gone}\"\nretry_timeout = \"1h\"\n"),
        1,
    );
    std::fs::write(ferry.config(), cfg).unwrap();
    let daemon = Daemon::start(&ferry, port, "daemon.log");
    assert!(
        wait_until(30, || daemon.log().matches("retrying").count() >= 4),
        "no retries:\n{}",
        daemon.log()
    );
    let log = daemon.log.clone();
    let (code, took) = daemon.stop();
    let log = std::fs::read_to_string(&log).unwrap();
    assert_eq!(code, 0, "{log}");
    // The stop deadline is 10 s; runs that only wait between retries must not use it.
    assert!(took < Duration::from_secs(3), "stop took {took:?}:\n{log}");
    assert!(!log.contains("still busy at the stop deadline"), "{log}");
}

#[tokio::test]
async fn faults_are_retried_counted_and_every_digest_matches() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let spec = CorpusSpec {
        repos: 3,
        tags: 2,
        index_every: 3,
        sign: true,
        ..CorpusSpec::default()
    };
    let corpus = push_corpus(&src.url, &spec).await;
    let faults = FaultProxy::start(dst.host());
    faults.faults.every_429.store(23, Ordering::SeqCst);
    faults.faults.every_503.store(11, Ordering::SeqCst);
    faults.faults.every_patch_reset.store(4, Ordering::SeqCst);
    faults.faults.max_resets.store(4, Ordering::SeqCst);
    let port = free_port();
    let ferry = daemon_ferry(
        &src.url,
        &faults.url(),
        port,
        "64KiB",
        &[("m.toml", &policy("m", "\"app-*\"", "1h"))],
    );
    let daemon = Daemon::start(&ferry, port, "daemon.log");
    assert!(daemon.ready().await);
    // One run, through the faults, must end ok.
    let done = wait_for(90, || async {
        daemon_get(port, "/status").await.is_some_and(|(_, b)| {
            serde_json::from_str::<serde_json::Value>(&b)
                .is_ok_and(|v| v["runs"][0]["outcome"] != serde_json::Value::Null)
        })
    })
    .await;
    assert!(done, "no run finished:\n{}", daemon.log());
    let status: serde_json::Value =
        serde_json::from_str(&daemon_get(port, "/status").await.unwrap().1).unwrap();
    assert_eq!(
        status["runs"][0]["outcome"],
        "ok",
        "{status}\n{}",
        daemon.log()
    );
    let f = &faults.faults;
    assert!(
        f.injected_429.load(Ordering::SeqCst) > 0
            && f.injected_503.load(Ordering::SeqCst) > 0
            && f.resets.load(Ordering::SeqCst) > 0,
        "faults injected: {}",
        faults.injected()
    );

    let (s, d) = (Reader::new(&src.url), Reader::new(&dst.url));
    for (repo, tag, _) in &corpus.tags {
        assert_same_image(&s, &d, repo, repo, tag).await;
    }
    let body = daemon_get(port, "/metrics").await.unwrap().1;
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
        .expect("valid Prometheus text");
    let total = |name: &str| {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v) => v,
                _ => 0.0,
            })
            .sum::<f64>()
    };
    assert!(
        total("ferry_registry_retries_total") >= 1.0,
        "request retries in metrics:\n{body}"
    );
    assert!(
        total("ferry_retries_total") >= 1.0,
        "blob retries in metrics:\n{body}"
    );
    assert!(daemon.log().contains("retrying"), "retries logged");
    assert_eq!(daemon.stop().0, 0);
}
