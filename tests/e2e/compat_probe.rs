//! `ferry probe`: what it reports of a registry, that what `--write` learns is what the next
//! sync uses, and how an unreachable registry ends.

use serde_json::Value;

use crate::compat::registry_entry;
use crate::support::images::{image, layer, Format, Pusher};
use crate::support::quirks::knobs::Profile;
use crate::support::quirks::QuirksProxy;
use crate::support::registry::TestRegistry;
use crate::support::{Ferry, Reader, Run};

fn ferry_for(source: &str, profile: Profile, target: &str) -> Ferry {
    let (entry, env) = registry_entry("target", profile, target);
    let policy = "[[policy]]\nname = \"probe\"\nsource = \"source\"\ntargets = [\"target\"]\nrepositories = [\"team/app\"]\n";
    let mut f = Ferry::new(
        &format!("[registries.source]\nurl = \"{source}\"\n\n{entry}"),
        "1MiB",
        &[("p.toml", policy)],
    );
    f.env = env;
    f
}

/// `what` → (answer, detail) from `ferry probe --json`.
fn finding(run: &Run, what: &str) -> (String, String) {
    let v: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("probe --json: {e}\n{}", run.all()));
    let f = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["what"] == what)
        .unwrap_or_else(|| panic!("no `{what}` finding\n{}", run.stdout));
    (
        f["answer"].as_str().unwrap().to_owned(),
        f["detail"].as_str().unwrap().to_owned(),
    )
}

/// Upload steps (PATCH, closing PUT) the target refused during one sync.
fn refused_upload_steps(proxy: &QuirksProxy) -> Vec<String> {
    proxy
        .stats()
        .lines()
        .into_iter()
        .filter(|l| l.contains("/blobs/uploads/") && (l.contains("-> 4") || l.contains("-> 5")))
        .collect()
}

/// On a registry that refuses chunks, a sync with a fresh state store learns that the hard
/// way (a refused step, then a restart); after `probe --write` the first sync already knows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_probe_write_learns_spares_the_next_sync_a_refused_upload() {
    for profile in [Profile::Gar, Profile::Ghcr] {
        let src = TestRegistry::start();
        let img = image(Format::Oci, &[&layer(61, 3 << 20)], "amd64", None, "probe");
        Pusher::new(&src.url).image("team/app", "v1", &img).await;
        let name = profile.name();

        // Without probing: the refusal is met during the copy.
        let backend = TestRegistry::start();
        let proxy = QuirksProxy::start(profile, &backend.url);
        proxy.create("team/app");
        let blind = ferry_for(&src.url, profile, &proxy.url());
        blind.run(&["sync"]).assert_code(0);
        assert!(
            !refused_upload_steps(&proxy).is_empty(),
            "{name}: the profile refused nothing, so this test proves nothing"
        );

        // Probing first.
        let backend = TestRegistry::start();
        let proxy = QuirksProxy::start(profile, &backend.url);
        proxy.create("team/app");
        let ferry = ferry_for(&src.url, profile, &proxy.url());
        let run = ferry.run(&["probe", "target", "--write", "team/app", "--json"]);
        run.assert_code(0);
        let (answer, upload) = finding(&run, "upload");
        assert_eq!(answer, "yes", "{name}: {}", run.stdout);
        assert!(
            !upload.starts_with("chunked") && upload.ends_with("learnt now"),
            "{name}: upload {upload}"
        );
        let (answer, _) = finding(&run, "write");
        assert_eq!(answer, "yes", "{name}: {}", run.stdout);
        // Neither lists repositories.
        assert_eq!(finding(&run, "catalog").0, "no", "{name}: {}", run.stdout);

        // A read-only probe reports the habit from the state store, not learnt anew.
        let again = ferry.run(&["probe", "target", "--json"]);
        again.assert_code(0);
        let (_, kept) = finding(&again, "upload");
        assert!(
            kept.starts_with(upload.split(',').next().unwrap()) && !kept.ends_with("learnt now"),
            "{name}: upload after probing {kept}, probed {upload}"
        );

        let before = proxy.stats().lines().len();
        ferry.run(&["sync"]).assert_code(0);
        let refused: Vec<String> = refused_upload_steps(&proxy)
            .into_iter()
            .filter(|l| proxy.stats().lines()[before..].contains(l))
            .collect();
        assert!(
            refused.is_empty(),
            "{name}: the sync after probing still met refusals: {refused:?}"
        );
        crate::support::assert_same_image(
            &Reader::new(&src.url),
            &Reader::new(&backend.url),
            "team/app",
            "team/app",
            "v1",
        )
        .await;
    }
}

/// Plain Distribution with deletes on: chunks taken, mounts answered, the test tag deleted,
/// nothing left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_write_on_distribution_finds_chunks_mounts_and_deletes_and_leaves_nothing() {
    let target = TestRegistry::start();
    let ferry = Ferry::new(
        &format!("[registries.target]\nurl = \"{}\"\n", target.url),
        "1MiB",
        &[],
    );
    let run = ferry.run(&["probe", "target", "--write", "team/app", "--json"]);
    run.assert_code(0);
    for what in ["api", "catalog", "write", "mount", "delete"] {
        assert_eq!(finding(&run, what).0, "yes", "{what}: {}", run.stdout);
    }
    assert!(
        finding(&run, "upload").1.starts_with("chunked"),
        "{}",
        run.stdout
    );
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    assert!(v.get("left").is_none(), "{}", run.stdout);
    let tags = Reader::new(&target.url).tags("team/app").await;
    assert!(tags.is_empty(), "probe left tags: {tags:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_of_a_registry_nobody_answers_at_exits_1_and_says_so() {
    let port = crate::support::free_port();
    let ferry = Ferry::new(
        &format!("[registries.gone]\nurl = \"http://127.0.0.1:{port}\"\n"),
        "1MiB",
        &[],
    );
    let run = ferry.run(&["probe", "gone"]);
    run.assert_code(1);
    assert!(
        run.stdout.contains("api") && run.stdout.contains("no"),
        "{}",
        run.all()
    );
    let run = ferry.run(&["probe", "nowhere"]);
    run.assert_code(2);
    assert!(
        run.stderr.contains("no registry named `nowhere`"),
        "{}",
        run.all()
    );
}
