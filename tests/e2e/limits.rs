//! Rationed registries: a source that counts manifest GETs the way Docker Hub does (the
//! fault proxy in front of a real registry), and ferry keeping within the budget.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::support::faults::FaultProxy;
use crate::support::images::{push_corpus, CorpusSpec};
use crate::support::registry::TestRegistry;
use crate::support::{
    assert_same_image, daemon_get, free_port, metric, wait_for, Daemon, Ferry, Reader,
};

const MIRROR_ALL: &str =
    "[[policy]]\nname = \"mirror\"\nsource = \"src\"\ntargets = [\"dst\"]\nrepositories = [\"app-000\", \"app-001\", \"app-002\"]\n";

fn ferry(src: &str, dst: &str, src_extra: &str) -> Ferry {
    Ferry::new(
        &format!(
            "[registries.src]\nurl = \"{src}\"\n{src_extra}\n[registries.dst]\nurl = \"{dst}\"\n"
        ),
        "1MiB",
        &[("m.toml", MIRROR_ALL)],
    )
}

#[tokio::test]
async fn a_rationed_source_is_paced_to_its_budget_instead_of_refusing() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let spec = CorpusSpec {
        repos: 3,
        tags: 3,
        index_every: 0,
        sign: false,
        ..CorpusSpec::default()
    };
    let corpus = push_corpus(&src.url, &spec).await;
    let proxy = FaultProxy::start(src.host());
    let (budget, window) = (5u64, 3u64);
    proxy
        .faults
        .pull_window_secs
        .store(window, Ordering::SeqCst);
    proxy.faults.pull_budget.store(budget, Ordering::SeqCst);
    let ferry = ferry(&proxy.url(), &dst.url, "");
    let started = Instant::now();
    let run = ferry.run(&["sync"]);
    let took = started.elapsed();
    run.assert_code(0);
    let (s, d) = (Reader::new(&src.url), Reader::new(&dst.url));
    for (repo, tag, _) in &corpus.tags {
        assert_same_image(&s, &d, repo, repo, tag).await;
    }
    let (counted, refused) = (
        proxy.faults.pulls_counted.load(Ordering::SeqCst),
        proxy.faults.pulls_refused.load(Ordering::SeqCst),
    );
    assert!(
        refused <= 3,
        "{refused} refusals for {counted} counted pulls:\n{}",
        run.all()
    );
    // The floor: counted pulls ÷ budget × window; within one window of it.
    let floor = Duration::from_secs(((counted - 1) / budget) * window);
    assert!(
        took >= floor,
        "faster than the budget allows? {took:?} < {floor:?}"
    );
    assert!(
        took <= floor + Duration::from_secs(window + 3),
        "{took:?} for a floor of {floor:?}:\n{}",
        run.all()
    );
    assert!(
        run.stderr.contains("rate limit: pausing"),
        "the pause is logged:\n{}",
        run.stderr
    );
}

#[tokio::test]
async fn a_spent_budget_that_does_not_refill_in_time_fails_with_when_it_resumes() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let spec = CorpusSpec {
        repos: 3,
        tags: 2,
        index_every: 0,
        sign: false,
        ..CorpusSpec::default()
    };
    push_corpus(&src.url, &spec).await;
    let proxy = FaultProxy::start(src.host());
    proxy.faults.pull_window_secs.store(3600, Ordering::SeqCst);
    proxy.faults.pull_budget.store(2, Ordering::SeqCst);
    let ferry = ferry(&proxy.url(), &dst.url, "rate_limit_max_wait = \"2s\"\n");
    let started = Instant::now();
    let run = ferry.run(&["sync"]);
    run.assert_code(1);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        run.summary("failures"),
        3,
        "each repository ends with the reason: {}",
        run.all()
    );
    assert!(
        run.stderr
            .contains("rate limit: budget spent (0 of 2 left); resumes at"),
        "{}",
        run.stderr
    );
    assert!(proxy.faults.pulls_refused.load(Ordering::SeqCst) <= 3);

    // The daemon says so in /metrics and /status, and its runs end instead of hanging.
    let port = free_port();
    let path = ferry.config();
    let text = std::fs::read_to_string(&path).unwrap();
    // Long enough for one pause (15 s until the next probe of a 1 h window), too short for more.
    let text = text
        .replacen(
            "[daemon]\n",
            &format!("[daemon]\nlisten = \"127.0.0.1:{port}\"\n"),
            1,
        )
        .replace("\"2s\"", "\"20s\"");
    std::fs::write(&path, text).unwrap();
    std::fs::write(
        ferry.path().join("policies/m.toml"),
        format!("{MIRROR_ALL}interval = \"1h\"\n"),
    )
    .unwrap();
    let daemon = Daemon::start(&ferry, port, "daemon.log");
    assert!(daemon.ready().await, "{}", daemon.log());
    let paused = || async {
        metric(
            port,
            "ferry_registry_rate_limit_paused_seconds_total",
            ("registry", "src"),
        )
        .await
        .unwrap_or(0.0)
            >= 15.0
    };
    assert!(wait_for(30, paused).await, "{}", daemon.log());
    assert_eq!(
        metric(
            port,
            "ferry_registry_rate_limit_remaining",
            ("registry", "src")
        )
        .await,
        Some(0.0)
    );
    let (_, status) = daemon_get(port, "/status").await.unwrap();
    let doc: serde_json::Value = serde_json::from_str(&status).unwrap();
    let limits = &doc["rate_limits"][0];
    assert_eq!(
        (
            limits["registry"].as_str(),
            limits["remaining"].as_u64(),
            limits["limit"].as_u64()
        ),
        (Some("src"), Some(0), Some(2)),
        "{status}"
    );
    assert!(
        daemon
            .log()
            .contains("rate limit: pausing counted requests"),
        "{}",
        daemon.log()
    );
    assert!(
        proxy.faults.pulls_refused.load(Ordering::SeqCst) <= 3,
        "the daemon waits instead of drawing refusals"
    );
    // A reload that leaves the registry alone keeps what its client learnt: the budget is
    // still known to be spent, so the new config's runs do not draw refusals either.
    crate::support::signal(&daemon.child, "HUP");
    assert!(
        wait_for(10, || async { daemon.log().contains("config reloaded") }).await,
        "{}",
        daemon.log()
    );
    let (_, status) = daemon_get(port, "/status").await.unwrap();
    let doc: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(
        doc["rate_limits"][0]["remaining"].as_u64(),
        Some(0),
        "budget forgotten by the reload: {status}"
    );
    assert!(
        metric(
            port,
            "ferry_registry_rate_limit_paused_seconds_total",
            ("registry", "src")
        )
        .await
        .unwrap_or(0.0)
            >= 15.0
    );
}
