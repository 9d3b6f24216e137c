//! The write rules that differ between registries: deletes (by tag, by digest, or not at
//! all), immutable tags, and repositories that must exist before a push. Each profile is the
//! quirks proxy in front of a real Distribution; outcomes are read from that Distribution.

use crate::compat::registry_entry;
use crate::support::images::{image, layer, Format, Pusher};
use crate::support::quirks::knobs::Profile;
use crate::support::quirks::{Knobs, QuirksProxy};
use crate::support::registry::TestRegistry;
use crate::support::{Ferry, Reader};

/// A source that can delete one tag of several (the dist3 profile), holding `team/app` with
/// `v1` (its own manifest), and `v2` and `v3` sharing one.
struct Source {
    _backend: TestRegistry,
    proxy: QuirksProxy,
    v1: String,
    v2: String,
}

async fn source() -> Source {
    let backend = TestRegistry::start();
    let proxy = QuirksProxy::start(Profile::Dist3, &backend.url);
    let mut p = Pusher::new(&proxy.url());
    let a = image(
        Format::Oci,
        &[&layer(41, 64 << 10)],
        "amd64",
        None,
        "rules v1",
    );
    let b = image(
        Format::Oci,
        &[&layer(42, 64 << 10)],
        "amd64",
        None,
        "rules v2",
    );
    p.image("team/app", "v1", &a).await;
    p.image("team/app", "v2", &b).await;
    p.image("team/app", "v3", &b).await;
    Source {
        _backend: backend,
        proxy,
        v1: a.digest,
        v2: b.digest,
    }
}

impl Source {
    async fn delete(&self, tag: &str) {
        let url = format!("{}/v2/team/app/manifests/{tag}", self.proxy.url());
        let rsp = crate::support::http_client()
            .build()
            .unwrap()
            .delete(url)
            .send()
            .await
            .unwrap();
        assert!(
            rsp.status().is_success(),
            "source delete {tag}: {}",
            rsp.status()
        );
    }
}

fn ferry_for(source: &str, profile: Option<Profile>, target: &str, extra: &str) -> Ferry {
    let (entry, env) = match profile {
        Some(p) => registry_entry("target", p, target),
        None => (
            format!("[registries.target]\nurl = \"{target}\"\n"),
            Vec::new(),
        ),
    };
    let policy = format!(
        "[[policy]]\nname = \"rules\"\nsource = \"source\"\ntargets = [\"target\"]\nrepositories = [\"team/app\"]\n{extra}"
    );
    let mut f = Ferry::new(
        &format!("[registries.source]\nurl = \"{source}\"\n\n{entry}"),
        "1MiB",
        &[("p.toml", &policy)],
    );
    f.env = env;
    f
}

/// Sync, drop `v1` and `v3` from the source, sync again with deletes on; the second run's
/// output and the target's tags.
async fn delete_round(
    profile: Option<Profile>,
    knobs: Knobs,
) -> (crate::support::Run, Vec<String>, Source, TestRegistry) {
    let src = source().await;
    let backend = TestRegistry::start();
    let proxy = QuirksProxy::with(profile, knobs, &backend.url);
    proxy.create("team/app");
    let ferry = ferry_for(
        &src.proxy.url(),
        profile,
        &proxy.url(),
        "delete = true\nmax_delete = \"100%\"\n",
    );
    ferry.run(&["sync"]).assert_code(0);
    src.delete("v1").await;
    src.delete("v3").await;
    let run = ferry.run(&["sync"]);
    let mut tags = Reader::new(&backend.url).tags("team/app").await;
    tags.sort();
    drop(proxy);
    (run, tags, src, backend)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_deletes_tags_loses_exactly_the_gone_ones() {
    for p in [Profile::Quay, Profile::Dist3, Profile::Gitlab] {
        let (run, tags, src, backend) = delete_round(Some(p), p.knobs()).await;
        run.assert_code(0);
        // The backend (2.8) still lists v3: the proxy hides the deleted tag, as the real
        // registry deletes it. What matters is the manifest v2 shares is still there.
        assert!(
            !tags.contains(&"v1".to_owned()),
            "{}: v1 kept: {tags:?}\n{}",
            p.name(),
            run.all()
        );
        let d = Reader::new(&backend.url);
        assert_eq!(
            d.digest("team/app", "v2").await.as_deref(),
            Some(src.v2.as_str()),
            "{}: v2 lost\n{}",
            p.name(),
            run.all()
        );
        assert_eq!(
            d.digest("team/app", &src.v1).await,
            None,
            "{}: v1's manifest is still there",
            p.name()
        );
        assert_eq!(run.summary("deleted"), 2, "{}:\n{}", p.name(), run.all());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_deletes_by_digest_only_keeps_a_shared_manifest() {
    // Distribution 2.8 itself, through a proxy that changes nothing.
    let (run, tags, src, backend) = delete_round(None, Knobs::default()).await;
    run.assert_code(0);
    assert_eq!(
        tags,
        vec!["v2".to_owned(), "v3".to_owned()],
        "{}",
        run.all()
    );
    let d = Reader::new(&backend.url);
    assert_eq!(
        d.digest("team/app", &src.v1).await,
        None,
        "v1's manifest is still there"
    );
    assert_eq!(
        d.digest("team/app", "v2").await.as_deref(),
        Some(src.v2.as_str())
    );
    assert!(
        run.stderr.contains("shared with a kept tag"),
        "no word on the kept v3:\n{}",
        run.all()
    );
    assert_eq!(run.summary("deleted"), 1, "{}", run.all());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_cannot_delete_says_so_once_and_changes_nothing() {
    for p in [Profile::Ghcr, Profile::Hub] {
        let (run, tags, _src, _backend) = delete_round(Some(p), p.knobs()).await;
        run.assert_code(1);
        // One failure for the target, not one per tag (v1 and v3 are both gone).
        assert!(
            run.stderr
                .contains("does not allow deletes through the registry API"),
            "{}:\n{}",
            p.name(),
            run.all()
        );
        assert_eq!(run.summary("failures"), 1, "{}:\n{}", p.name(), run.all());
        assert_eq!(
            tags,
            vec!["v1".to_owned(), "v2".to_owned(), "v3".to_owned()],
            "{}\n{}",
            p.name(),
            run.all()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_immutable_tag_is_a_conflict_not_a_retried_failure() {
    for p in [Profile::Ecr, Profile::Harbor, Profile::Quay] {
        let src = TestRegistry::start();
        let backend = TestRegistry::start();
        let proxy = QuirksProxy::start(p, &backend.url);
        proxy.create("team/app");
        let mut push = Pusher::new(&src.url);
        let a = image(
            Format::Oci,
            &[&layer(51, 32 << 10)],
            "amd64",
            None,
            "immutable a",
        );
        push.image("team/app", "v1", &a).await;
        let ferry = ferry_for(&src.url, Some(p), &proxy.url(), "");
        ferry.run(&["sync"]).assert_code(0);
        // A byte-identical re-sync writes nothing, so the immutable tag is not even asked.
        let before = proxy.stats().count("PUT", "/manifests/v1");
        let again = ferry.run(&["sync", "--verify"]);
        again.assert_code(0);
        assert_eq!(
            proxy.stats().count("PUT", "/manifests/v1"),
            before,
            "{}: an equal digest was PUT again",
            p.name()
        );
        // The tag moves on the source: the target refuses, once, and keeps its digest.
        let b = image(
            Format::Oci,
            &[&layer(52, 32 << 10)],
            "amd64",
            None,
            "immutable b",
        );
        push.image("team/app", "v1", &b).await;
        let moved = ferry.run(&["sync"]);
        moved.assert_code(0);
        assert!(
            moved.stderr.contains("immutable"),
            "{}: no word on the refusal:\n{}",
            p.name(),
            moved.all()
        );
        assert_eq!(
            moved.summary("conflicts"),
            1,
            "{}:\n{}",
            p.name(),
            moved.all()
        );
        assert_eq!(
            proxy.stats().count("PUT", "/manifests/v1"),
            before + 1,
            "{}: the refusal was retried",
            p.name()
        );
        let d = Reader::new(&backend.url);
        assert_eq!(
            d.digest("team/app", "v1").await.as_deref(),
            Some(a.digest.as_str()),
            "{}",
            p.name()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_repository_is_named_once_and_not_retried() {
    for p in [Profile::Ecr, Profile::Gar, Profile::Harbor, Profile::Quay] {
        let src = TestRegistry::start();
        let backend = TestRegistry::start();
        let proxy = QuirksProxy::start(p, &backend.url);
        let mut push = Pusher::new(&src.url);
        let a = image(
            Format::Oci,
            &[&layer(61, 32 << 10)],
            "amd64",
            None,
            "missing",
        );
        push.image("team/app", "v1", &a).await;
        let ferry = ferry_for(&src.url, Some(p), &proxy.url(), "");
        let run = ferry.run(&["sync"]);
        run.assert_code(1);
        assert!(
            run.stderr
                .contains("repository team/app does not exist on target")
                && run.stderr.contains("create it first"),
            "{}:\n{}",
            p.name(),
            run.all()
        );
        // One refused upload per blob at most, and no login loop.
        let posts = proxy.stats().count("POST", "/blobs/uploads/");
        assert!(
            posts <= 2,
            "{}: {posts} upload POSTs:\n{:#?}",
            p.name(),
            proxy.stats().lines()
        );
        let requests = proxy.stats().lines().len();
        assert!(
            requests <= 20,
            "{}: {requests} requests:\n{:#?}",
            p.name(),
            proxy.stats().lines()
        );
        assert_eq!(
            Reader::new(&backend.url).digest("team/app", "v1").await,
            None
        );
        // Once created, the same config goes through.
        proxy.create("team/app");
        ferry.run(&["sync"]).assert_code(0);
        assert_eq!(
            Reader::new(&backend.url)
                .digest("team/app", "v1")
                .await
                .as_deref(),
            Some(a.digest.as_str())
        );
    }
}
