//! Policy rules on real registries: tag selection (semver, latest), platform filtering,
//! referrers, promotion gates, deletes and their safety limits, and a dev → test → prod chain
//! with the shipped example policy.

use std::sync::atomic::Ordering;

use crate::support::cosign::Signer;
use crate::support::faults::FaultProxy;
use crate::support::images::{self, push_corpus, signature_tag, CorpusSpec, Format, Image, Pusher};
use crate::support::registry::TestRegistry;
use crate::support::{assert_same_image, Ferry, Reader};

fn regs(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(n, u)| format!("[registries.{n}]\nurl = \"{u}\"\n\n"))
        .collect()
}

fn policy(repos: &str, extra: &str) -> String {
    format!("[[policy]]\nname = \"p\"\nsource = \"src\"\ntargets = [\"dst\"]\nrepositories = [{repos}]\n{extra}")
}

/// A small single-platform image, distinct per `seed`.
fn small(seed: u64, format: Format) -> Image {
    images::image(
        format,
        &[&images::layer(seed, 20_000 + seed as usize % 1000)],
        "amd64",
        None,
        &format!("img-{seed}"),
    )
}

async fn push_tags(url: &str, repo: &str, tags: &[&str]) -> Vec<Image> {
    let mut p = Pusher::new(url);
    let mut out = Vec::new();
    for (i, t) in tags.iter().enumerate() {
        let img = small(1000 + i as u64, Format::Oci);
        p.image(repo, t, &img).await;
        out.push(img);
    }
    out
}

/// The release key of these tests: what signs, and what `signed_by` names.
fn release() -> &'static Signer {
    static KEY: std::sync::OnceLock<Signer> = std::sync::OnceLock::new();
    KEY.get_or_init(Signer::new)
}

/// Sign `subject` with the release key, as cosign does (a `.sig` tag).
async fn sign(url: &str, repo: &str, subject: &str) {
    Pusher::new(url)
        .image(repo, &signature_tag(subject), &release().legacy(subject))
        .await;
}

/// Put the release public key at `policies/<rel>`.
fn trust(f: &Ferry, rel: &str) {
    let path = f.path().join("policies").join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, &release().pem).unwrap();
}

#[tokio::test]
async fn semver_ranges_and_latest_keep_exactly_the_right_tags_and_plan_says_why() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    push_tags(
        &src.url,
        "app",
        &[
            "1.0.0",
            "1.1.0",
            "1.2.0-rc.1",
            "1.2.0",
            "2.0.0",
            "v2.1.0",
            "latest",
            "nightly",
        ],
    )
    .await;
    let p = policy(
        "\"app\"",
        "[policy.tags]\nsemver = \">=1.1.0\"\nlatest = 3\n",
    );
    let ferry = Ferry::new(
        &regs(&[("src", &src.url), ("dst", &dst.url)]),
        "1MiB",
        &[("p.toml", &p)],
    );

    let plan = ferry.run(&["plan", "--json"]);
    plan.assert_code(0);
    let v: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    let reason = |tag: &str| {
        v[0]["dropped"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["tag"] == tag)
            .map(|d| d["reason"].as_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    assert!(
        reason("1.0.0").contains("outside tags.semver"),
        "{}",
        reason("1.0.0")
    );
    assert!(
        reason("1.2.0-rc.1").contains("outside tags.semver"),
        "prereleases only when the range asks"
    );
    assert!(reason("latest").contains("not a semver tag"));
    assert!(reason("1.1.0").contains("not among the newest 3"));
    let text = ferry.run(&["plan"]);
    assert!(
        text.stdout.contains("skip") && text.stdout.contains("not a semver tag"),
        "{}",
        text.stdout
    );

    ferry.run(&["sync"]).assert_code(0);
    assert_eq!(
        Reader::new(&dst.url).tags("app").await,
        ["1.2.0", "2.0.0", "v2.1.0"]
    );

    // latest over tags that are not semver: by image creation time.
    let mut pusher = Pusher::new(&src.url);
    for (tag, created) in [
        ("build-a", "2026-03-01T00:00:00Z"),
        ("build-b", "2026-05-01T00:00:00Z"),
        ("build-c", "2026-04-01T00:00:00Z"),
    ] {
        let img = images::image_at(
            Format::Docker,
            &[&images::layer(
                created.len() as u64 + tag.len() as u64 * 7,
                10_000,
            )],
            "amd64",
            None,
            tag,
            created,
        );
        pusher.image("builds", tag, &img).await;
    }
    let p = policy(
        "\"builds\"",
        "[policy.tags]\ninclude = ['^build-']\nlatest = 2\n",
    );
    let ferry = Ferry::new(
        &regs(&[("src", &src.url), ("dst", &dst.url)]),
        "1MiB",
        &[("p.toml", &p)],
    );
    ferry.run(&["sync"]).assert_code(0);
    assert_eq!(
        Reader::new(&dst.url).tags("builds").await,
        ["build-b", "build-c"]
    );
}

#[tokio::test]
async fn platform_filtering_writes_a_stable_filtered_index_or_copies_it_byte_exact() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    // Every repository multi-arch: amd64, arm64, arm/v7.
    let spec = CorpusSpec {
        repos: 2,
        tags: 1,
        index_every: 1,
        sign: false,
        ..CorpusSpec::default()
    };
    push_corpus(&src.url, &spec).await;
    let p = policy(
        "\"app-000\"",
        "platforms = [\"linux/amd64\", \"linux/arm/v7\"]\n",
    );
    let all = policy(
        "\"app-001\"",
        "platforms = [\"linux/amd64\", \"linux/arm64\", \"linux/arm\"]\n",
    )
    .replace("name = \"p\"", "name = \"all\"");
    let ferry = Ferry::new(
        &regs(&[("src", &src.url), ("dst", &dst.url)]),
        "1MiB",
        &[("p.toml", &p), ("all.toml", &all)],
    );
    let run = ferry.run(&["sync"]);
    run.assert_code(0);
    let (s, d) = (Reader::new(&src.url), Reader::new(&dst.url));

    let src_index: serde_json::Value =
        serde_json::from_slice(&s.manifest("app-000", "1.0.0").await.unwrap()).unwrap();
    let dst_bytes = d.manifest("app-000", "1.0.0").await.unwrap();
    let dst_index: serde_json::Value = serde_json::from_slice(&dst_bytes).unwrap();
    let children = dst_index["manifests"].as_array().unwrap();
    let arches: Vec<&str> = children
        .iter()
        .map(|c| c["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(arches, ["amd64", "arm"]);
    assert_eq!(dst_index["mediaType"], src_index["mediaType"]);
    for c in children {
        let digest = c["digest"].as_str().unwrap();
        assert!(
            src_index["manifests"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x["digest"] == digest),
            "child copied as is"
        );
        assert_eq!(
            images::sha256(&d.manifest("app-000", digest).await.unwrap()),
            digest
        );
    }
    assert!(
        d.manifest(
            "app-000",
            src_index["manifests"][1]["digest"].as_str().unwrap()
        )
        .await
        .is_none(),
        "arm64 child not copied"
    );
    // Every platform wanted: the index is copied byte-exact.
    assert_same_image(&s, &d, "app-001", "app-001", "1.0.0").await;

    // The next run sees the filtered index as in sync: nothing written.
    let plan: serde_json::Value =
        serde_json::from_str(&ferry.run(&["plan", "--json"]).stdout).unwrap();
    let t = plan
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["source_repository"] == "app-000")
        .unwrap()["tags"][0]
        .clone();
    assert_eq!(t["action"], "in_sync", "{t}");
    assert_eq!(
        t["source_digest"].as_str().unwrap(),
        images::sha256(&dst_bytes)
    );
    let again = ferry.run(&["sync"]);
    again.assert_code(0);
    assert_eq!((again.summary("copied"), again.summary("written")), (0, 0));
}

#[tokio::test]
async fn referrers_follow_their_images_whatever_the_tag_filters_say() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let imgs = push_tags(&src.url, "app", &["1.0.0", "1.1.0"]).await;
    sign(&src.url, "app", &imgs[0].digest).await;
    sign(&src.url, "app", &imgs[1].digest).await;
    let only_110 = "[policy.tags]\ninclude = ['^1\\.1\\.0$']\n";
    let with = Ferry::new(
        &regs(&[("src", &src.url), ("dst", &dst.url)]),
        "1MiB",
        &[(
            "p.toml",
            &policy("\"app\"", &format!("referrers = true\n{only_110}")),
        )],
    );
    with.run(&["sync"]).assert_code(0);
    let d = Reader::new(&dst.url);
    assert_eq!(
        d.tags("app").await,
        vec!["1.1.0".to_owned(), signature_tag(&imgs[1].digest)]
    );
    assert_same_image(
        &Reader::new(&src.url),
        &d,
        "app",
        "app",
        &signature_tag(&imgs[1].digest),
    )
    .await;
    // Distribution has no referrers API: a no-op re-sync of two signed images asks it once
    // per process, not once per image.
    let dst3 = TestRegistry::start();
    let both = Ferry::new(
        &regs(&[("src", &src.url), ("dst", &dst3.url)]),
        "1MiB",
        &[("p.toml", &policy("\"app\"", "referrers = true\n"))],
    );
    both.run(&["sync"]).assert_code(0);
    assert_eq!(
        Reader::new(&dst3.url).tags("app").await.len(),
        4,
        "two images and two signatures"
    );
    let asked = || src.log().matches("\"GET /v2/app/referrers/").count();
    let before = asked();
    let again = both.run(&["sync"]);
    again.assert_code(0);
    assert_eq!(again.summary("copied"), 0);
    assert!(
        asked() - before <= 1,
        "referrers API asked {} times",
        asked() - before
    );

    let dst2 = TestRegistry::start();
    let without = Ferry::new(
        &regs(&[("src", &src.url), ("dst", &dst2.url)]),
        "1MiB",
        &[("p.toml", &policy("\"app\"", only_110))],
    );
    without.run(&["sync"]).assert_code(0);
    assert_eq!(Reader::new(&dst2.url).tags("app").await, ["1.1.0"]);
}

#[tokio::test]
async fn promotion_gates_hold_back_unsigned_unannotated_and_too_young_images() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let imgs = push_tags(&src.url, "app", &["1.0.0", "1.1.0"]).await;
    sign(&src.url, "app", &imgs[1].digest).await;
    let docker = small(77, Format::Docker); // Docker v2: no annotations
    let mut p = Pusher::new(&src.url);
    p.image("app", "1.2.0", &docker).await;
    sign(&src.url, "app", &docker.digest).await;

    let gates = format!(
        "[policy.tags]\ninclude = ['^1\\.']\n[policy.require]\nsigned_by = [\"release.pub\"]\nmin_age = \"2s\"\nannotations = {{ \"{}\" = \"{}\" }}\n",
        images::SOURCE_ANNOTATION.0,
        images::SOURCE_ANNOTATION.1
    );
    let ferry = Ferry::new(
        &regs(&[("src", &src.url), ("dst", &dst.url)]),
        "1MiB",
        &[("p.toml", &policy("\"app\"", &gates))],
    );
    trust(&ferry, "release.pub");
    // First sight: everything is too young.
    let first = ferry.run(&["sync"]);
    first.assert_code(0);
    assert_eq!(first.summary("held"), 3);
    assert!(first.stderr.contains("require.min_age"), "{}", first.stderr);
    assert!(Reader::new(&dst.url).tags("app").await.is_empty());

    std::thread::sleep(std::time::Duration::from_millis(2200));
    let plan: serde_json::Value =
        serde_json::from_str(&ferry.run(&["plan", "--json"]).stdout).unwrap();
    let reason = |tag: &str| {
        plan[0]["tags"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["tag"] == tag)
            .unwrap()["reason"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    assert!(
        reason("1.0.0").contains("no signature"),
        "{}",
        reason("1.0.0")
    );
    assert!(
        reason("1.2.0").contains("no annotation org.opencontainers.image.source"),
        "{}",
        reason("1.2.0")
    );
    let second = ferry.run(&["sync"]);
    second.assert_code(0);
    // 1.1.0, and its signature with it (what verified it travels along).
    assert_eq!((second.summary("copied"), second.summary("held")), (2, 2));
    let mut want = vec!["1.1.0".to_owned(), signature_tag(&imgs[1].digest)];
    want.sort();
    assert_eq!(Reader::new(&dst.url).tags("app").await, want);
    let status = ferry.run(&["status"]);
    assert!(
        status.stdout.contains("held: app:1.0.0") && status.stdout.contains("no signature"),
        "{}",
        status.stdout
    );
}

#[tokio::test]
async fn delete_removes_vanished_tags_within_its_safety_limits() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let names: Vec<String> = (0..12).map(|i| format!("1.{i}.0")).collect();
    let tags: Vec<&str> = names.iter().map(String::as_str).collect();
    let imgs = push_tags(&src.url, "app", &tags).await;
    let p = policy("\"app\"", "delete = true\n");
    let ferry = Ferry::new(
        &regs(&[("src", &src.url), ("dst", &dst.url)]),
        "1MiB",
        &[("p.toml", &p)],
    );
    ferry.run(&["sync"]).assert_code(0);
    let d = Reader::new(&dst.url);
    assert_eq!(d.tags("app").await.len(), 12);
    let delete_on_source = |i: usize| {
        let url = format!("{}/v2/app/manifests/{}", src.url, imgs[i].digest);
        async move {
            assert_eq!(
                crate::support::http_client()
                    .build()
                    .unwrap()
                    .delete(url)
                    .send()
                    .await
                    .unwrap()
                    .status(),
                202
            )
        }
    };

    // One of twelve (within 10%): deleted on the target too.
    delete_on_source(0).await;
    let run = ferry.run(&["sync"]);
    run.assert_code(0);
    assert_eq!(run.summary("deleted"), 1);
    assert!(!d.tags("app").await.contains(&"1.0.0".to_owned()));

    // Three more at once (over 10% of 11): refused, reported, nothing deleted.
    for i in 1..4 {
        delete_on_source(i).await;
    }
    let refused = ferry.run(&["sync"]);
    refused.assert_code(1);
    assert!(
        refused.stderr.contains("more than max_delete allows")
            && refused.stderr.contains("--force-delete"),
        "{}",
        refused.stderr
    );
    assert_eq!(d.tags("app").await.len(), 11);
    let forced = ferry.run(&["sync", "--force-delete"]);
    forced.assert_code(0);
    assert_eq!(forced.summary("deleted"), 3);
    assert_eq!(d.tags("app").await.len(), 8);

    // A source that lists no tags at all never empties the target.
    for i in 4..12 {
        delete_on_source(i).await;
    }
    let empty = ferry.run(&["sync", "--force-delete"]);
    assert_eq!(empty.code, 1, "{}", empty.all());
    assert_eq!(
        d.tags("app").await.len(),
        8,
        "target emptied by a source that listed nothing"
    );
}

#[tokio::test]
async fn a_refused_catalog_says_to_name_repositories() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let proxy = FaultProxy::start(src.host());
    proxy.faults.deny_catalog.store(true, Ordering::SeqCst);
    let ferry = Ferry::new(
        &regs(&[("src", &proxy.url()), ("dst", &dst.url)]),
        "1MiB",
        &[("p.toml", &policy("\"apps/*\"", ""))],
    );
    let run = ferry.run(&["sync"]);
    run.assert_code(1);
    assert!(
        run.stderr
            .contains("name them exactly in `repositories` instead of using globs"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn dev_test_prod_chain_promotes_only_signed_releases_and_never_moves_prod_tags() {
    let (dev, test, prod) = (
        TestRegistry::start(),
        TestRegistry::start(),
        TestRegistry::start(),
    );
    let repo = "apps/web";
    // dev: v1.0.0 signed, v1.1.0 unsigned, v1.2.0-rc.1 signed, v1.3.0 signed, latest.
    let imgs = push_tags(
        &dev.url,
        repo,
        &["v1.0.0", "v1.1.0", "v1.2.0-rc.1", "v1.3.0", "latest"],
    )
    .await;
    for i in [0, 2, 3] {
        sign(&dev.url, repo, &imgs[i].digest).await;
    }
    // prod already has v0.9.0, and a v1.0.0 of its own that must never be replaced.
    let prod_own = push_tags(&prod.url, repo, &["v0.9.0"]).await;
    let other = small(4242, Format::Oci);
    Pusher::new(&prod.url).image(repo, "v1.0.0", &other).await;

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let shipped = std::fs::read_to_string(root.join("policies/promote-release.toml")).unwrap();
    // The shipped policy, with a min_age short enough for a test.
    let policy = shipped.replace("min_age = \"1h\"", "min_age = \"1s\"");
    let ferry = Ferry::new(
        &regs(&[("dev", &dev.url), ("test", &test.url), ("prod", &prod.url)]),
        "1MiB",
        &[("promote.toml", &policy)],
    );
    trust(&ferry, "keys/release.pub");
    ferry.run(&["validate"]).assert_code(0);

    ferry
        .run(&["sync", "--policy", "promote-dev-to-test"])
        .assert_code(0);
    let t = Reader::new(&test.url);
    let mut want_test: Vec<String> = ["v1.0.0", "v1.1.0", "v1.2.0-rc.1", "v1.3.0"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    want_test.extend([0, 2, 3].map(|i| signature_tag(&imgs[i].digest)));
    want_test.sort();
    assert_eq!(
        t.tags(repo).await,
        want_test,
        "test gets every version tag with its signature"
    );

    // First sight in prod's policy: min_age holds; a second later the gates decide.
    ferry
        .run(&["sync", "--policy", "promote-test-to-prod"])
        .assert_code(0);
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let run = ferry.run(&["sync", "--policy", "promote-test-to-prod"]);
    run.assert_code(0);
    assert_eq!(
        run.summary("conflicts"),
        1,
        "prod's own v1.0.0: {}",
        run.all()
    );
    let p = Reader::new(&prod.url);
    let mut want_prod = vec![
        "v0.9.0".to_owned(),
        "v1.0.0".to_owned(),
        "v1.3.0".to_owned(),
        signature_tag(&imgs[3].digest),
    ];
    want_prod.sort();
    assert_eq!(
        p.tags(repo).await,
        want_prod,
        "only the signed final release is promoted"
    );
    assert_eq!(
        images::sha256(&p.manifest(repo, "v1.0.0").await.unwrap()),
        other.digest,
        "prod tag untouched"
    );
    assert_eq!(
        images::sha256(&p.manifest(repo, "v0.9.0").await.unwrap()),
        prod_own[0].digest
    );
    assert_same_image(&Reader::new(&dev.url), &p, repo, repo, "v1.3.0").await;
    assert!(
        run.stderr
            .contains("held: promote-test-to-prod: apps/web:v1.1.0")
            && run.stderr.contains("no signature"),
        "{}",
        run.stderr
    );
}
