//! Profiles as sources: reading tag lists (pages, GCR's manifest map, odd entries), blobs
//! behind presigned redirects, and registries that cannot list their repositories.

use crate::compat::{push, registry_entry};
use crate::support::images::{image, layer, Format, Pusher};
use crate::support::quirks::knobs::Profile;
use crate::support::quirks::{Knobs, QuirksProxy};
use crate::support::registry::TestRegistry;
use crate::support::{assert_same_image, Ferry, Reader};

fn ferry_from(profile: Option<Profile>, source: &str, target: &str, repos: &str) -> Ferry {
    let (entry, env) = match profile {
        Some(p) => registry_entry("source", p, source),
        None => (
            format!("[registries.source]\nurl = \"{source}\"\n"),
            Vec::new(),
        ),
    };
    let policy = format!(
        "[[policy]]\nname = \"from\"\nsource = \"source\"\ntargets = [\"target\"]\nrepositories = [{repos}]\nreferrers = true\n"
    );
    let mut f = Ferry::new(
        &format!("{entry}\n[registries.target]\nurl = \"{target}\"\n"),
        "1MiB",
        &[("p.toml", &policy)],
    );
    f.env = env;
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_profile_serves_the_corpus_as_a_source() {
    let profiles = [
        Profile::Hub,
        Profile::Gar,
        Profile::Ghcr,
        Profile::Quay,
        Profile::Harbor,
        Profile::Artifactory,
        Profile::Nexus,
        Profile::Ecr,
    ];
    for p in profiles {
        let backend = TestRegistry::start();
        let pushed = push(&backend.url).await;
        let proxy = QuirksProxy::start(p, &backend.url);
        let target = TestRegistry::start();
        let ferry = ferry_from(
            Some(p),
            &proxy.url(),
            &target.url,
            "\"team/app\", \"team/lib\"",
        );
        let run = ferry.run(&["sync"]);
        run.assert_code(0);
        let (s, d) = (Reader::new(&backend.url), Reader::new(&target.url));
        for (repo, tag, digest) in &pushed.tags {
            assert_eq!(
                d.digest(repo, tag).await.as_deref(),
                Some(digest.as_str()),
                "{}: {repo}:{tag}\n{}",
                p.name(),
                run.all()
            );
            assert_same_image(&s, &d, repo, repo, tag).await;
        }
        if p == Profile::Gar {
            // GCP-2: the tag list's manifest map gives every digest; no HEAD per tag.
            let heads = proxy.stats().count("HEAD", "/manifests/");
            assert_eq!(
                heads,
                0,
                "gar: {heads} manifest HEADs:\n{:#?}",
                proxy.stats().lines()
            );
        }
        if p == Profile::Hub {
            // blobs came through the presigned redirect, without our credentials.
            assert!(
                proxy.stats().count("GET", "/_blob/") > 0,
                "hub: no redirected blob GET"
            );
        }
        let again = ferry.run(&["sync"]);
        again.assert_code(0);
        assert_eq!(
            again.summary("copied"),
            0,
            "{}: second run copied:\n{}",
            p.name(),
            again.all()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_cannot_list_repositories_says_to_name_them() {
    for p in [Profile::Hub, Profile::Gar, Profile::Ghcr, Profile::Harbor] {
        let backend = TestRegistry::start();
        let mut push = Pusher::new(&backend.url);
        push.image(
            "team/app",
            "v1",
            &image(Format::Oci, &[&layer(71, 4096)], "amd64", None, "list"),
        )
        .await;
        let proxy = QuirksProxy::start(p, &backend.url);
        let target = TestRegistry::start();
        let ferry = ferry_from(Some(p), &proxy.url(), &target.url, "\"team/*\"");
        let plan = ferry.run(&["plan"]);
        plan.assert_code(1);
        let said: Vec<&str> = plan
            .stdout
            .lines()
            .filter(|l| l.contains("does not list its repositories"))
            .collect();
        assert_eq!(
            said.len(),
            1,
            "{}: not said in one line:\n{}",
            p.name(),
            plan.all()
        );
        assert!(
            said[0].contains("name them exactly in `repositories`"),
            "{}: {}",
            p.name(),
            said[0]
        );
        // Named exactly, the same source works.
        let named = ferry_from(Some(p), &proxy.url(), &target.url, "\"team/app\"");
        named.run(&["sync"]).assert_code(0);
    }
}

async fn paged(knobs: Knobs, tags: usize) -> (TestRegistry, QuirksProxy, TestRegistry) {
    let backend = TestRegistry::start();
    let mut push = Pusher::new(&backend.url);
    let img = image(Format::Oci, &[&layer(81, 4096)], "amd64", None, "paged");
    for i in 0..tags {
        push.image("team/app", &format!("t{i:02}"), &img).await;
    }
    let proxy = QuirksProxy::with(None, knobs, &backend.url);
    (backend, proxy, TestRegistry::start())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_lists_are_followed_through_every_link() {
    let (_backend, proxy, target) = paged(
        Knobs {
            tags_page: Some(2),
            tags_max_n: Some(1000),
            ..Knobs::default()
        },
        7,
    )
    .await;
    let ferry = ferry_from(None, &proxy.url(), &target.url, "\"team/app\"");
    let run = ferry.run(&["sync"]);
    run.assert_code(0);
    assert_eq!(
        Reader::new(&target.url).tags("team/app").await.len(),
        7,
        "{}",
        run.all()
    );
    // 7 tags in pages of 2: four pages, each asked once, none for more than 1,000.
    let pages = proxy.stats().count("GET", "/tags/list");
    assert_eq!(pages, 4, "{:#?}", proxy.stats().lines());
    assert!(proxy.stats().lines().iter().all(|l| !l.contains("n=1001")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_to_another_origin_is_not_followed_and_nothing_is_deleted() {
    let knobs = Knobs {
        tags_page: Some(2),
        tags_link_elsewhere: true,
        ..Knobs::default()
    };
    let (backend, proxy, target) = paged(knobs, 5).await;
    // The target already has all five, copied straight from the backend.
    ferry_from(None, &backend.url, &target.url, "\"team/app\"")
        .run(&["sync"])
        .assert_code(0);
    // Through the proxy every page points elsewhere: a short list must not read as tags
    // gone, and the other origin gets no request.
    let mut ferry = ferry_from(None, &proxy.url(), &target.url, "\"team/app\"");
    let policy = "[[policy]]\nname = \"from\"\nsource = \"source\"\ntargets = [\"target\"]\nrepositories = [\"team/app\"]\ndelete = true\nmax_delete = \"100%\"\n";
    std::fs::write(ferry.path().join("policies/p.toml"), policy).unwrap();
    ferry.env.clear();
    let run = ferry.run(&["sync"]);
    run.assert_code(1);
    assert!(run.stderr.contains("another origin"), "{}", run.all());
    assert_eq!(
        proxy.stats().count("GET", "/tags/list"),
        1,
        "{:#?}",
        proxy.stats().lines()
    );
    assert_eq!(
        Reader::new(&target.url).tags("team/app").await.len(),
        5,
        "{}",
        run.all()
    );
}
