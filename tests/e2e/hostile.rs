//! A source that lies: each hostile repository fails alone, in bounded time, with a reason
//! naming the registry, the repository and what went wrong, and nothing of it reaches the
//! target, while the honest repositories and policies of the same run complete.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::support::hostile::Hostile;
use crate::support::images::{push_corpus, CorpusSpec};
use crate::support::registry::TestRegistry;
use crate::support::{assert_same_image, Ferry, Reader};

fn config(hostile: &Hostile, src: &TestRegistry, dst: &TestRegistry, evil_bounds: &str) -> String {
    format!(
        "[registries.evil]\nurl = \"{}\"\nusername = \"u\"\npassword_env = \"HOSTILE_PASSWORD\"\n{evil_bounds}\n[registries.src]\nurl = \"{}\"\n[registries.dst]\nurl = \"{}\"\n",
        hostile.url(),
        src.url,
        dst.url
    )
}

const POLICIES: &str = r#"
[[policy]]
name = "lies"
source = "evil"
targets = ["dst"]
repositories = ["endless", "deep", "evil", "notjson", "liar", "huge", "wide", "trickle", "badjson", "wrongtype", "fine", "slow", "moved", "looping"]

[[policy]]
name = "honest"
source = "src"
targets = ["dst"]
repositories = ["app-000"]
"#;

#[tokio::test]
async fn every_lie_ends_its_repository_alone_and_the_rest_of_the_run_completes() {
    let hostile = Hostile::start();
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
    // Short clocks: a request may take 3 s, a blob body may not stand still for 2 s, yet the
    // 8-second `slow` layer keeps moving and must arrive.
    let bounds = "list_limit = 500\nrequest_timeout = \"3s\"\nstall_timeout = \"2s\"\n";
    let mut ferry = Ferry::new(
        &config(&hostile, &src, &dst, bounds),
        "1MiB",
        &[("p.toml", POLICIES)],
    );
    ferry
        .env
        .push(("HOSTILE_PASSWORD".into(), "hostile-pa55word".into()));
    let started = Instant::now();
    let run = ferry.run(&["sync"]);
    let took = started.elapsed();
    run.assert_code(1);
    let err = run.all();
    for (repo, why) in [
        ("endless", "evil: list tags: more than 500 entries"),
        ("deep", "indexes nested more than 8 deep"),
        ("evil", "malformed digest `sha256:../../x`"),
        ("notjson", "evil: list tags: not a JSON list"),
        ("liar", "evil: manifest sha256:e7b0c7ca59efa17fc92e5aafb66a8109dd8bac6baf3db6e56c926dfa263ec1ea: got content with digest"),
        ("huge", "evil: get manifest: huge:1.0: manifest larger than 4194304 bytes"),
        ("wide", "index lists 5000 manifests, more than 1024"),
        ("trickle", "evil: get blob: stalled: less than 64 KiB in 2s (stall_timeout)"),
        ("badjson", "evil: get manifest: badjson:1.0: manifest is not JSON"),
        ("wrongtype", "unsupported manifest media type `application/vnd.evil+json`"),
    ] {
        assert!(err.lines().any(|l| l.contains(repo) && l.contains(why)), "{repo}: `{why}` not in:\n{err}");
    }
    assert_eq!(run.summary("failures"), 10, "{err}");
    // The trickle is retried from where the target stands, a bounded number of times.
    assert!(took < Duration::from_secs(75), "took {took:?}");
    assert!(
        hostile.pages.load(Ordering::SeqCst) <= 501,
        "listing went on past the limit"
    );
    let d = Reader::new(&dst.url);
    for repo in [
        "endless",
        "deep",
        "evil",
        "notjson",
        "liar",
        "huge",
        "wide",
        "trickle",
        "badjson",
        "wrongtype",
    ] {
        assert!(d.tags(repo).await.is_empty(), "{repo} reached the target");
    }
    // Honest repositories of the same source: plain, slow but moving (8 s with 3 s request
    // and 2 s stall bounds), served from object storage after a redirect that got no
    // credentials (the registry itself challenged every request that had none), and listed by
    // pages that link back to themselves (a page with nothing new ends the list).
    for repo in ["fine", "slow", "moved", "looping"] {
        assert_eq!(d.tags(repo).await, ["1.0"], "{repo}");
    }
    assert!(
        hostile.store_gets.load(Ordering::SeqCst) >= 1,
        "the redirect was followed"
    );
    assert_eq!(
        hostile.store_auth.load(Ordering::SeqCst),
        0,
        "credentials went to another host"
    );
    assert_same_image(&Reader::new(&src.url), &d, "app-000", "app-000", "1.0.0").await;

    // A listing that is slow rather than long ends on its clock.
    let endless_only = POLICIES.replacen(
        "repositories = [\"endless\", ",
        "repositories = [\"endless\"]\n# ",
        1,
    );
    let mut ferry = Ferry::new(
        &config(&hostile, &src, &dst, "list_timeout = \"2s\"\n"),
        "1MiB",
        &[("p.toml", &endless_only)],
    );
    ferry
        .env
        .push(("HOSTILE_PASSWORD".into(), "hostile-pa55word".into()));
    let started = Instant::now();
    let run = ferry.run(&["sync", "--policy", "lies"]);
    run.assert_code(1);
    assert!(
        run.all()
            .lines()
            .any(|l| l.contains("endless") && l.contains("still listing after 2s")),
        "{}",
        run.all()
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}
