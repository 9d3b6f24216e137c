use crate::support::images::{self, push_corpus, CorpusSpec, Format, Pusher};
use crate::support::registry::TestRegistry;
use crate::support::{assert_same_image, Ferry, Reader};

fn two_registries(src: &TestRegistry, dst: &TestRegistry) -> String {
    format!(
        "[registries.src]\nurl = \"{}\"\n\n[registries.dst]\nurl = \"{}\"\n",
        src.url, dst.url
    )
}

const MIRROR_ALL: &str = "[[policy]]\nname = \"mirror\"\nsource = \"src\"\ntargets = [\"dst\"]\nrepositories = [\"app-*\"]\n";

/// Lines of the target's access log for one upload method and digest.
fn log_count(reg: &TestRegistry, method: &str, needle: &str) -> usize {
    reg.log()
        .lines()
        .filter(|l| l.contains(&format!("\"{method} /v2/")) && l.contains(needle))
        .count()
}

#[tokio::test]
async fn full_sync_is_byte_exact_uploads_shared_layers_once_and_a_second_sync_sends_nothing() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    // 4 repositories sharing one base layer; OCI and Docker formats alternate; app-002 is
    // multi-arch (an OCI index); each repository has a signature tag.
    let spec = CorpusSpec {
        repos: 4,
        tags: 2,
        index_every: 3,
        ..CorpusSpec::default()
    };
    let corpus = push_corpus(&src.url, &spec).await;
    let ferry = Ferry::new(
        &two_registries(&src, &dst),
        "64KiB",
        &[("mirror.toml", MIRROR_ALL)],
    );

    let run = ferry.run(&["sync"]);
    run.assert_code(0);
    assert_eq!(run.summary("copied") as usize, corpus.tags.len());
    assert_eq!(run.summary("failures"), 0);

    let (s, d) = (Reader::new(&src.url), Reader::new(&dst.url));
    for (repo, tag, digest) in &corpus.tags {
        assert_same_image(&s, &d, repo, repo, tag).await;
        assert_eq!(
            &images::sha256(&d.manifest(repo, tag).await.unwrap()),
            digest
        );
    }
    // The amd64 base layer is in all four repositories: uploaded once, mounted three times.
    let base = images::layer(spec.seed * 1000, spec.base_size).blob.digest;
    let hex = &base["sha256:".len()..];
    assert_eq!(log_count(&dst, "PUT", hex), 1, "base layer uploads");
    assert_eq!(
        log_count(&dst, "POST", &format!("mount=sha256%3A{hex}")),
        3,
        "base layer mounts"
    );
    assert!(run.summary("mounted") >= 3);
    // The base is 512 KiB and chunks are 64 KiB: the upload really was chunked.
    assert!(
        log_count(&dst, "PATCH", "") >= 7,
        "expected chunked PATCH uploads"
    );

    // Nothing changed: no blob, no manifest, one HEAD per tag on the source and none on the
    // target (ferry wrote those tags and trusts them until verify_interval): the target
    // gets its tag lists and nothing else.
    let (writes_before, heads_src, heads_dst) = (
        dst.requests("PUT") + dst.requests("POST") + dst.requests("PATCH"),
        src.requests("HEAD"),
        dst.requests("HEAD"),
    );
    let gets_dst = dst.requests("GET");
    let again = ferry.run(&["sync"]);
    again.assert_code(0);
    assert_eq!(
        (
            again.summary("copied"),
            again.summary("uploaded"),
            again.summary("written")
        ),
        (0, 0, 0)
    );
    assert_eq!(
        again.summary("in") as usize,
        corpus.tags.len(),
        "all tags in sync"
    );
    assert_eq!(
        dst.requests("PUT") + dst.requests("POST") + dst.requests("PATCH"),
        writes_before,
        "no writes on a no-op sync"
    );
    assert_eq!(
        src.requests("HEAD") - heads_src,
        corpus.tags.len(),
        "source HEADs"
    );
    assert_eq!(dst.requests("HEAD") - heads_dst, 0, "target HEADs");
    assert_eq!(
        dst.requests("GET") - gets_dst,
        spec.repos,
        "target GETs: one tag list per repository"
    );
    // --verify asks the target about every tag again.
    let verified = ferry.run(&["sync", "--verify"]);
    verified.assert_code(0);
    assert_eq!(verified.summary("in") as usize, corpus.tags.len());
    assert_eq!(
        dst.requests("HEAD") - heads_dst,
        corpus.tags.len(),
        "target HEADs with --verify"
    );

    let status = ferry.run(&["status", "--json"]);
    status.assert_code(0);
    let v: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(v["runs"][0]["policy"], "mirror");
    assert_eq!(v["runs"][0]["outcome"], "ok");
    assert_eq!(
        v["runs"][0]["counts"]["tags_in_sync"].as_u64().unwrap() as usize,
        corpus.tags.len()
    );
}

/// Trust has limits: a target tag moved behind ferry's back stays wrong until a run asks
/// the target (`--verify`, or a run after `verify_interval`), which then repairs it; a tag
/// deleted from the target is seen at once (it leaves the tag list) and copied again.
#[tokio::test]
async fn target_tags_moved_or_deleted_behind_ferrys_back_are_repaired() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let spec = CorpusSpec {
        repos: 1,
        tags: 2,
        index_every: 0,
        sign: false,
        ..CorpusSpec::default()
    };
    let corpus = push_corpus(&src.url, &spec).await;
    let policy = |verify: &str| format!("{MIRROR_ALL}verify_interval = \"{verify}\"\n");
    let ferry = Ferry::new(
        &two_registries(&src, &dst),
        "1MiB",
        &[("mirror.toml", &policy("24h"))],
    );
    ferry.run(&["sync"]).assert_code(0);
    let (s, d) = (Reader::new(&src.url), Reader::new(&dst.url));
    let (repo, tag, _) = &corpus.tags[0];
    let intruder = images::image(
        Format::Oci,
        &[&images::layer(4242, 10_000)],
        "amd64",
        None,
        "intruder",
    );
    let overwrite = |tag: String| {
        let (url, img) = (dst.url.clone(), intruder.clone());
        async move { Pusher::new(&url).image(repo, &tag, &img).await }
    };

    overwrite(tag.clone()).await;
    ferry.run(&["sync"]).assert_code(0);
    assert_eq!(
        images::sha256(&d.manifest(repo, tag).await.unwrap()),
        intruder.digest,
        "trusted within verify_interval"
    );
    let run = ferry.run(&["sync", "--verify"]);
    run.assert_code(0);
    assert_eq!(run.summary("copied"), 1, "{}", run.all());
    assert_same_image(&s, &d, repo, repo, tag).await;

    std::fs::write(ferry.path().join("policies/mirror.toml"), policy("1s")).unwrap();
    overwrite(tag.clone()).await;
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let run = ferry.run(&["sync"]);
    assert_eq!(
        run.summary("copied"),
        1,
        "a run after verify_interval repairs: {}",
        run.all()
    );
    assert_same_image(&s, &d, repo, repo, tag).await;

    // Deleted on the target: gone from its tag list, so copied again whatever ferry remembers.
    let other = &corpus.tags[1].1;
    let digest = images::sha256(&d.manifest(repo, other).await.unwrap());
    let rsp = crate::support::http_client()
        .build()
        .unwrap()
        .delete(format!("{}/v2/{repo}/manifests/{digest}", dst.url))
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 202);
    std::fs::write(ferry.path().join("policies/mirror.toml"), policy("24h")).unwrap();
    let run = ferry.run(&["sync"]);
    // Distribution deletes manifests: every tag of that manifest (`latest` too) went.
    let sharing = corpus
        .tags
        .iter()
        .filter(|(_, _, dg)| *dg == digest)
        .count();
    assert_eq!(run.summary("copied") as usize, sharing, "{}", run.all());
    for (_, t, _) in &corpus.tags {
        assert_same_image(&s, &d, repo, repo, t).await;
    }
}

#[tokio::test]
async fn moved_tags_follow_the_source_unless_overwrite_is_false() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let spec = CorpusSpec {
        repos: 1,
        tags: 1,
        index_every: 0,
        sign: false,
        ..CorpusSpec::default()
    };
    push_corpus(&src.url, &spec).await;
    let strict = "[[policy]]\nname = \"strict\"\nsource = \"src\"\ntargets = [\"dst\"]\nrepositories = [\"app-000\"]\ntarget_repository = \"prod/{name}\"\noverwrite = false\n";
    let hook = crate::support::receiver::Receiver::start(0);
    let ferry = Ferry::new(
        &format!(
            "{}\n[[notify]]\nurl = \"{}\"\non = [\"conflict\"]\n",
            two_registries(&src, &dst),
            hook.url("/hook")
        ),
        "1MiB",
        &[("mirror.toml", MIRROR_ALL), ("strict.toml", strict)],
    );
    ferry.run(&["sync"]).assert_code(0);

    // Move 1.0.0 on the source to a new image.
    let new = images::image(
        Format::Oci,
        &[&images::layer(777, 40_000)],
        "amd64",
        None,
        "moved",
    );
    Pusher::new(&src.url).image("app-000", "1.0.0", &new).await;

    let plan = ferry.run(&["plan", "--json"]);
    plan.assert_code(0);
    let plans: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    let actions: Vec<(String, String)> = plans
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            let policy = p["policy"].as_str().unwrap().to_owned();
            p["tags"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|t| t["tag"] == "1.0.0")
                .map(move |t| (policy.clone(), t["action"].as_str().unwrap().to_owned()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        actions.contains(&("mirror".into(), "move".into())),
        "{actions:?}"
    );
    assert!(
        actions.contains(&("strict".into(), "conflict".into())),
        "{actions:?}"
    );

    let run = ferry.run(&["sync"]);
    // Conflicts do not fail the run (the policy did what it says), but each is named.
    run.assert_code(0);
    assert_eq!(run.summary("conflicts"), 1);
    let d = Reader::new(&dst.url);
    let old = images::sha256(&d.manifest("prod/app-000", "1.0.0").await.unwrap());
    let said = format!(
        "conflict: strict: dst/prod/app-000:1.0.0 is {old} there, {} on the source",
        new.digest
    );
    assert!(run.stderr.contains(&said), "{said}\n{}", run.stderr);
    let status = ferry.run(&["status"]);
    assert!(
        status.stdout.contains("conflict: dst/prod/app-000:1.0.0"),
        "{}",
        status.stdout
    );
    let doc: serde_json::Value =
        serde_json::from_str(&ferry.run(&["status", "--json"]).stdout).unwrap();
    let strict = doc["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["policy"] == "strict")
        .unwrap();
    assert_eq!(strict["conflicts"][0]["tag"], "1.0.0", "{strict}");
    assert_eq!(strict["conflicts"][0]["source_digest"], new.digest.as_str());
    assert_eq!(strict["conflicts"][0]["target_digest"], old.as_str());
    let got = hook.received();
    let told: Vec<_> = got
        .iter()
        .filter(|r| r.body["type"] == "dev.ferry.run.conflict")
        .collect();
    assert_eq!(told.len(), 1, "{got:#?}");
    assert_eq!(told[0].body["data"]["conflicts"][0]["tag"], "1.0.0");
    assert!(
        told[0].body["text"]
            .as_str()
            .unwrap()
            .contains("first: dst/prod/app-000:1.0.0"),
        "{}",
        told[0].body
    );
    assert_eq!(
        images::sha256(&d.manifest("app-000", "1.0.0").await.unwrap()),
        new.digest,
        "mirror moved the tag"
    );
    assert_ne!(
        images::sha256(&d.manifest("prod/app-000", "1.0.0").await.unwrap()),
        new.digest,
        "strict policy left the tag"
    );
    assert_same_image(&Reader::new(&src.url), &d, "app-000", "app-000", "1.0.0").await;
}

#[tokio::test]
async fn a_failing_repository_does_not_stop_the_others() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let spec = CorpusSpec {
        repos: 2,
        tags: 1,
        index_every: 0,
        sign: false,
        ..CorpusSpec::default()
    };
    push_corpus(&src.url, &spec).await;
    let policy =
        "[[policy]]\nname = \"some\"\nsource = \"src\"\ntargets = [\"dst\"]\nrepositories = [\"app-000\", \"no-such-repo\", \"app-001\"]\n";
    let ferry = Ferry::new(&two_registries(&src, &dst), "1MiB", &[("p.toml", policy)]);
    let run = ferry.run(&["sync"]);
    run.assert_code(1);
    assert!(
        run.stderr.contains("no-such-repo") && run.stderr.contains("not found"),
        "{}",
        run.all()
    );
    assert_eq!(run.summary("failures"), 1);
    let (s, d) = (Reader::new(&src.url), Reader::new(&dst.url));
    for repo in ["app-000", "app-001"] {
        assert_same_image(&s, &d, repo, repo, "1.0.0").await;
    }
}

#[tokio::test]
async fn plan_reports_what_is_missing_and_writes_nothing() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let spec = CorpusSpec {
        repos: 2,
        tags: 2,
        index_every: 2,
        sign: false,
        ..CorpusSpec::default()
    };
    let corpus = push_corpus(&src.url, &spec).await;
    let ferry = Ferry::new(
        &two_registries(&src, &dst),
        "1MiB",
        &[("mirror.toml", MIRROR_ALL)],
    );
    let plan = ferry.run(&["plan", "--json"]);
    plan.assert_code(0);
    let v: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    let creates: usize = v
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            p["tags"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|t| t["action"] == "create")
                .count()
        })
        .sum();
    assert_eq!(creates, corpus.tags.len());
    let blob_bytes: u64 = v
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["blobs"].as_object().unwrap().values())
        .map(|b| b["size"].as_u64().unwrap())
        .sum();
    assert!(
        blob_bytes >= corpus.bytes / 2,
        "plan counts blob bytes: {blob_bytes}"
    );
    // The multi-arch repository lists its three children besides the index.
    let multi = v
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["source_repository"] == "app-001")
        .unwrap();
    assert_eq!(multi["manifests"].as_object().unwrap().len(), 2 * 4);
    assert_eq!(
        dst.requests("PUT") + dst.requests("POST") + dst.requests("PATCH"),
        0,
        "plan wrote to the target"
    );
    let text = ferry.run(&["sync", "--dry-run"]);
    text.assert_code(0);
    assert!(
        text.stdout.contains("app-000 → dst/app-000:") && text.stdout.contains("to create"),
        "{}",
        text.stdout
    );
    assert!(Reader::new(&dst.url).tags("app-000").await.is_empty());
}

#[tokio::test]
async fn a_source_serving_corrupt_bytes_never_reaches_the_target() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let app = images::layer(99, 300_000);
    let good = images::layer(98, 50_000);
    let img = images::image(Format::Oci, &[&good, &app], "amd64", None, "corrupt");
    let mut p = Pusher::new(&src.url);
    p.image("app-000", "1.0.0", &img).await;
    // Flip bytes in the stored layer, keeping its size: Distribution serves it as it is.
    let hex = &app.blob.digest["sha256:".len()..];
    let path = src.dir.path().join(format!(
        "data/docker/registry/v2/blobs/sha256/{}/{hex}/data",
        &hex[..2]
    ));
    let mut bytes = std::fs::read(&path).unwrap();
    for b in bytes.iter_mut().skip(1000).take(64) {
        *b ^= 0xff;
    }
    std::fs::write(&path, bytes).unwrap();

    // Small chunks: the bad bytes are detected at the end, after several PATCHes went out.
    let ferry = Ferry::new(
        &two_registries(&src, &dst),
        "64KiB",
        &[("mirror.toml", MIRROR_ALL)],
    );
    let run = ferry.run(&["sync"]);
    run.assert_code(1);
    assert!(
        run.stderr.contains(&format!(
            "source sent blob {} with the wrong content",
            app.blob.digest
        )),
        "{}",
        run.all()
    );
    let d = Reader::new(&dst.url);
    assert!(
        d.manifest("app-000", "1.0.0").await.is_none(),
        "tag written over a broken image"
    );
    assert_eq!(
        d.blob_size("app-000", &app.blob.digest).await,
        None,
        "corrupt blob committed"
    );
    assert_eq!(
        d.blob_size("app-000", &good.blob.digest).await,
        Some(good.blob.bytes.len() as u64),
        "the good layer still copied"
    );
    let v: serde_json::Value =
        serde_json::from_str(&ferry.run(&["status", "--json"]).stdout).unwrap();
    assert_eq!(
        v["uploads_in_flight"].as_array().unwrap().len(),
        0,
        "no upload left to resume"
    );
    assert_eq!(v["runs"][0]["outcome"], "failed");
}

#[tokio::test]
async fn bandwidth_limits_hold_per_registry_and_per_daemon() {
    let src = TestRegistry::start();
    let img = images::image(
        Format::Oci,
        &[&images::layer(31337, 3 << 20)],
        "amd64",
        None,
        "limited",
    );
    Pusher::new(&src.url).image("app-000", "1.0.0", &img).await;
    // The target's limit caps uploads, the source's caps downloads, the daemon's all uploads.
    for (name, src_limit, dst_limit, daemon_limit) in [
        ("target registry", "", "bandwidth_limit = \"1MiB/s\"\n", ""),
        ("source registry", "bandwidth_limit = \"1MiB/s\"\n", "", ""),
        ("daemon", "", "", "bandwidth_limit = \"1MiB/s\"\n"),
    ] {
        let dst = TestRegistry::start();
        let regs = format!("[registries.src]\nurl = \"{}\"\n{src_limit}\n[registries.dst]\nurl = \"{}\"\n{dst_limit}", src.url, dst.url);
        let ferry = Ferry::new(&regs, "256KiB", &[("mirror.toml", MIRROR_ALL)]);
        ferry.daemon_lines(daemon_limit);
        let started = std::time::Instant::now();
        ferry.run(&["sync"]).assert_code(0);
        // 3 MiB at 1 MiB/s with a one-second burst: at least two seconds.
        assert!(
            started.elapsed() >= std::time::Duration::from_millis(1900),
            "{name} limit not applied: {:?}",
            started.elapsed()
        );
        assert_same_image(
            &Reader::new(&src.url),
            &Reader::new(&dst.url),
            "app-000",
            "app-000",
            "1.0.0",
        )
        .await;
    }
}

#[tokio::test]
async fn catalog_pagination_is_followed_to_the_last_page() {
    use futures_util::StreamExt;
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    // Distribution pages its catalog at 1000 repositories: make 1001 cheaply (two mounts and a
    // manifest each), with the only wanted one sorting last, on page two.
    let img = images::image(
        Format::Oci,
        &[&images::layer(5, 4096)],
        "amd64",
        None,
        "paging",
    );
    Pusher::new(&src.url).image("aaa-seed", "1.0.0", &img).await;
    let http = crate::support::http_client().build().unwrap();
    let names: Vec<String> = (0..1000).map(|i| format!("pad-{i:04}")).collect();
    futures_util::stream::iter(names)
        .for_each_concurrent(8, |repo| {
            let (http, url, img) = (&http, &src.url, &img);
            async move {
                for b in &img.blobs {
                    let rsp = http
                        .post(format!(
                            "{url}/v2/{repo}/blobs/uploads/?mount={}&from=aaa-seed",
                            b.digest
                        ))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(rsp.status(), 201, "mount into {repo}");
                }
                let rsp = http
                    .put(format!("{url}/v2/{repo}/manifests/1"))
                    .header("content-type", img.media_type)
                    .body(img.manifest.clone())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(rsp.status(), 201);
            }
        })
        .await;
    Pusher::new(&src.url).image("zz-last", "1.0.0", &img).await;
    let policy = "[[policy]]\nname = \"last\"\nsource = \"src\"\ntargets = [\"dst\"]\nrepositories = [\"zz-*\"]\n";
    let ferry = Ferry::new(&two_registries(&src, &dst), "1MiB", &[("p.toml", policy)]);
    ferry.run(&["sync"]).assert_code(0);
    assert_same_image(
        &Reader::new(&src.url),
        &Reader::new(&dst.url),
        "zz-last",
        "zz-last",
        "1.0.0",
    )
    .await;
    assert!(
        src.log()
            .lines()
            .any(|l| l.contains("\"GET /v2/_catalog?") && l.contains("last=")),
        "second catalog page requested"
    );
}

/// A no-op run after a copy does not hide the copy: `ferry status` names the last change.
#[tokio::test]
async fn status_shows_the_last_change_behind_a_no_op_run() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let spec = CorpusSpec {
        repos: 1,
        tags: 2,
        index_every: 0,
        sign: false,
        ..CorpusSpec::default()
    };
    push_corpus(&src.url, &spec).await;
    let ferry = Ferry::new(
        &two_registries(&src, &dst),
        "1MiB",
        &[("m.toml", MIRROR_ALL)],
    );
    ferry.run(&["sync"]).assert_code(0);
    let first = ferry.run(&["status"]);
    assert!(!first.stdout.contains("last change"), "{}", first.stdout);
    let json = |f: &Ferry| -> serde_json::Value {
        serde_json::from_str(&f.run(&["status", "--json"]).stdout).unwrap()
    };
    let copied = json(&ferry)["runs"][0]["counts"]["tags_copied"]
        .as_u64()
        .unwrap();
    assert!(copied >= 2);
    ferry.run(&["sync"]).assert_code(0);
    let status = ferry.run(&["status"]);
    assert!(
        status
            .stdout
            .contains(&format!("last change: {copied} copied, 0 deleted at")),
        "{}",
        status.stdout
    );
    let doc = json(&ferry);
    assert_eq!(doc["runs"][0]["counts"]["tags_copied"], 0);
    assert_eq!(doc["last_changes"][0]["counts"]["tags_copied"], copied);
}

/// What plan says it will send is what sync sends: a layer several repositories lack is
/// counted once and the rest as mounts, and a layer the state store knows in another
/// repository of the target is a mount, not bytes to send.
#[tokio::test]
async fn plan_counts_shared_and_known_layers_as_mounts() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let spec = CorpusSpec {
        repos: 3,
        tags: 1,
        index_every: 0,
        sign: false,
        ..CorpusSpec::default()
    };
    push_corpus(&src.url, &spec).await;
    let first = "[[policy]]\nname = \"mirror\"\nsource = \"src\"\ntargets = [\"dst\"]\nrepositories = [\"app-000\", \"app-001\"]\n";
    let ferry = Ferry::new(
        &two_registries(&src, &dst),
        "64KiB",
        &[("mirror.toml", first)],
    );
    let plan = ferry.run(&["plan"]);
    plan.assert_code(0);
    let total = plan
        .stdout
        .lines()
        .find(|l| l.starts_with("plan: "))
        .unwrap_or_else(|| panic!("{}", plan.all()))
        .to_owned();
    // The base layer: uploaded to app-000, mounted into app-001.
    assert!(total.contains(", 1 blob to mount;"), "{}", plan.all());
    let sync = ferry.run(&["sync"]);
    sync.assert_code(0);
    let sent = sync
        .stdout
        .split("; ")
        .find(|p| p.ends_with(" sent"))
        .unwrap_or_else(|| panic!("{}", sync.all()))
        .trim_end_matches(" sent")
        .to_owned();
    assert!(
        total.contains(&format!("; {sent} to send,")),
        "plan: {total}\nsync sent {sent}"
    );
    assert_eq!(sync.summary("mounted"), 1, "{}", sync.all());

    // app-002 shares the base layer with what is on the target now.
    std::fs::write(ferry.path().join("policies/mirror.toml"), MIRROR_ALL).unwrap();
    let plan = ferry.run(&["plan", "--json"]);
    plan.assert_code(0);
    let plans: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    let third = plans
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["target_repository"] == "app-002")
        .unwrap_or_else(|| panic!("{}", plan.stdout));
    let base = images::layer(spec.seed * 1000, spec.base_size).blob.digest;
    let from = &third["blobs"][&base]["mount_from"];
    assert!(from == "app-000" || from == "app-001", "{}", third["blobs"]);
    let text = ferry.run(&["plan"]);
    assert!(
        text.stdout
            .lines()
            .any(|l| l.contains("app-002") && l.contains(", 1 to mount)")),
        "{}",
        text.all()
    );
}
