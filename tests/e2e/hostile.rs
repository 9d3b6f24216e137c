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
        "[registries.evil]\nurl = \"{}\"\n{evil_bounds}\n[registries.src]\nurl = \"{}\"\n[registries.dst]\nurl = \"{}\"\n",
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
repositories = ["endless", "deep", "evil", "notjson", "fine"]

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
    push_corpus(&src.url, &CorpusSpec { repos: 1, tags: 1, index_every: 0, sign: false, ..CorpusSpec::default() }).await;
    let ferry = Ferry::new(&config(&hostile, &src, &dst, "list_limit = 500\n"), "1MiB", &[("p.toml", POLICIES)]);
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
    ] {
        assert!(err.lines().any(|l| l.contains(repo) && l.contains(why)), "{repo}: `{why}` not in:\n{err}");
    }
    assert_eq!(run.summary("failures"), 4, "{err}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert!(hostile.pages.load(Ordering::SeqCst) <= 501, "listing went on past the limit");
    let d = Reader::new(&dst.url);
    for repo in ["endless", "deep", "evil", "notjson"] {
        assert!(d.tags(repo).await.is_empty(), "{repo} reached the target");
    }
    assert_eq!(d.tags("fine").await, ["1.0"], "the honest repository of the same source");
    assert_same_image(&Reader::new(&src.url), &d, "app-000", "app-000", "1.0.0").await;

    // A listing that is slow rather than long ends on its clock.
    let ferry = Ferry::new(&config(&hostile, &src, &dst, "list_timeout = \"2s\"\n"), "1MiB", &[("p.toml", POLICIES)]);
    let started = Instant::now();
    let run = ferry.run(&["sync", "--policy", "lies"]);
    run.assert_code(1);
    assert!(run.all().lines().any(|l| l.contains("endless") && l.contains("still listing after 2s")), "{}", run.all());
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
}
