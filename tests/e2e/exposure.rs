//! `ferry where DIGEST`: every target tag ferry wrote whose image is or contains the digest,
//! across targets and through index children, from the state store alone; `--check` asks
//! the targets; a tag deleted behind ferry's back shows as not held.

use crate::support::images::{self, push_corpus, CorpusSpec};
use crate::support::registry::TestRegistry;
use crate::support::{Ferry, Reader};

fn found(f: &Ferry, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["where", "--json"];
    all.extend_from_slice(args);
    let run = f.run(&all);
    run.assert_code(0);
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.all()))
}

#[tokio::test]
async fn where_finds_a_layer_across_two_targets_and_an_index_child() {
    let (src, a, b) = (
        TestRegistry::start(),
        TestRegistry::start(),
        TestRegistry::start(),
    );
    let spec = CorpusSpec {
        repos: 2,
        tags: 1,
        index_every: 2,
        sign: false,
        ..CorpusSpec::default()
    };
    push_corpus(&src.url, &spec).await;
    let regs = format!(
        "[registries.src]\nurl = \"{}\"\n[registries.a]\nurl = \"{}\"\n[registries.b]\nurl = \"{}\"\n",
        src.url, a.url, b.url
    );
    let policy = "[[policy]]\nname = \"edges\"\nsource = \"src\"\ntargets = [\"a\", \"b\"]\nrepositories = [\"app-*\"]\n";
    let f = Ferry::new(&regs, "1MiB", &[("p.toml", policy)]);
    f.run(&["sync"]).assert_code(0);

    // The amd64 base layer is in every image: every tag of both repositories on both targets.
    let base = images::layer(spec.seed * 1000, spec.base_size).blob.digest;
    let held = found(&f, &[&base]);
    let (ra, rb) = (Reader::new(&a.url), Reader::new(&b.url));
    let mut want = Vec::new();
    for (name, r) in [("a", &ra), ("b", &rb)] {
        for repo in ["app-000", "app-001"] {
            for tag in r.tags(repo).await {
                want.push((
                    name.to_owned(),
                    repo.to_owned(),
                    tag.clone(),
                    r.digest(repo, &tag).await.unwrap(),
                ));
            }
        }
    }
    want.sort();
    let mut got: Vec<_> = held
        .iter()
        .map(|e| {
            (
                e["target"].as_str().unwrap().to_owned(),
                e["repository"].as_str().unwrap().to_owned(),
                e["tag"].as_str().unwrap().to_owned(),
                e["image"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(got, want);
    assert!(want.len() >= 8, "{want:?}");
    assert!(held
        .iter()
        .all(|e| e["written_ms"].as_u64().unwrap() > 0 && e["seen_ms"].as_u64().unwrap() > 0));

    // A child of app-001's index: the index's tags, under the index digest.
    let index = ra.digest("app-001", "latest").await.unwrap();
    let body: serde_json::Value =
        serde_json::from_slice(&ra.manifest("app-001", "latest").await.unwrap()).unwrap();
    let child = body["manifests"][1]["digest"].as_str().unwrap().to_owned();
    let held = found(&f, &[&child]);
    assert!(!held.is_empty());
    assert!(
        held.iter()
            .all(|e| e["repository"] == "app-001" && e["image"] == index.as_str()),
        "{held:#?}"
    );
    // The image itself is found as itself.
    assert!(found(&f, &[&index])
        .iter()
        .any(|e| e["image"] == index.as_str()));

    // Deleted behind ferry's back on b: --check says so; the index alone cannot know.
    let gone = rb.digest("app-000", "latest").await.unwrap();
    let rsp = crate::support::http_client()
        .build()
        .unwrap()
        .delete(format!("{}/v2/app-000/manifests/{gone}", b.url))
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status().as_u16(), 202);
    let checked = found(&f, &[&base, "--check"]);
    let gone: Vec<_> = checked.iter().filter(|e| e["holds_now"] == false).collect();
    assert!(
        !gone.is_empty()
            && gone
                .iter()
                .all(|e| e["target"] == "b" && e["repository"] == "app-000"),
        "{checked:#?}"
    );
    assert!(checked
        .iter()
        .filter(|e| e["target"] == "a")
        .all(|e| e["holds_now"] == true));

    let bad = f.run(&["where", "nope"]);
    bad.assert_code(2);
    assert!(bad.stderr.contains("nope"), "{}", bad.stderr);
    assert!(found(&f, &[&format!("sha256:{}", "0".repeat(64))]).is_empty());
}
