//! Read once, write N: a policy with three targets reads each source blob once, and every
//! target ends byte-identical, also when one target drops connections mid-upload.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use crate::support::faults::FaultProxy;
use crate::support::images::{push_corpus, CorpusSpec};
use crate::support::registry::TestRegistry;
use crate::support::{assert_same_image, Ferry, Reader};

/// Source blob GETs by digest, from the source registry's access log.
fn blob_gets(src: &TestRegistry) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for line in src
        .log()
        .lines()
        .filter(|l| l.contains("\"GET /v2/") && l.contains("/blobs/sha256:"))
    {
        let digest = line
            .split("/blobs/")
            .nth(1)
            .and_then(|r| r.split([' ', '?', '"']).next())
            .unwrap_or("")
            .to_owned();
        *out.entry(digest).or_default() += 1;
    }
    out
}

fn ferry(src: &str, dsts: &[String]) -> Ferry {
    let mut regs = format!("[registries.src]\nurl = \"{src}\"\n");
    for (i, d) in dsts.iter().enumerate() {
        regs += &format!("[registries.dst{i}]\nurl = \"{d}\"\n");
    }
    let targets: Vec<String> = (0..dsts.len()).map(|i| format!("\"dst{i}\"")).collect();
    let policy = format!("[[policy]]\nname = \"fan\"\nsource = \"src\"\ntargets = [{}]\nrepositories = [\"app-*\"]\n", targets.join(", "));
    Ferry::new(&regs, "256KiB", &[("f.toml", &policy)])
}

#[tokio::test]
async fn three_targets_read_each_source_blob_once() {
    let src = TestRegistry::start();
    let dsts: Vec<TestRegistry> = (0..3).map(|_| TestRegistry::start()).collect();
    let spec = CorpusSpec {
        repos: 4,
        tags: 3,
        index_every: 2,
        sign: false,
        ..CorpusSpec::default()
    };
    let corpus = push_corpus(&src.url, &spec).await;
    let before = blob_gets(&src);
    let ferry = ferry(
        &src.url,
        &dsts.iter().map(|d| d.url.clone()).collect::<Vec<_>>(),
    );
    let run = ferry.run(&["sync"]);
    run.assert_code(0);
    let s = Reader::new(&src.url);
    for d in &dsts {
        let d = Reader::new(&d.url);
        for (repo, tag, _) in &corpus.tags {
            assert_same_image(&s, &d, repo, repo, tag).await;
        }
    }
    let mut gets = blob_gets(&src);
    for (d, n) in before {
        *gets.get_mut(&d).unwrap() -= n;
    }
    gets.retain(|_, n| *n > 0);
    let twice: Vec<_> = gets.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "{} distinct blobs read, some more than once: {twice:?}\n{}",
        gets.len(),
        run.all()
    );
    // Every blob reached all three targets: uploaded to each, or mounted from another repository.
    let uploaded = run.summary("uploaded");
    assert_eq!(uploaded, 3 * gets.len() as u64, "{}", run.all());
}

#[tokio::test]
async fn a_target_that_drops_uploads_does_not_spoil_the_others() {
    let src = TestRegistry::start();
    let dsts: Vec<TestRegistry> = (0..3).map(|_| TestRegistry::start()).collect();
    let spec = CorpusSpec {
        repos: 2,
        tags: 2,
        index_every: 0,
        sign: false,
        base_size: 2 << 20,
        ..CorpusSpec::default()
    };
    let corpus = push_corpus(&src.url, &spec).await;
    let proxy = FaultProxy::start(dsts[1].host());
    proxy.faults.every_patch_reset.store(3, Ordering::SeqCst);
    proxy.faults.max_resets.store(4, Ordering::SeqCst);
    let urls = vec![dsts[0].url.clone(), proxy.url(), dsts[2].url.clone()];
    let ferry = ferry(&src.url, &urls);
    let run = ferry.run(&["sync"]);
    run.assert_code(0);
    assert!(
        proxy.faults.resets.load(Ordering::SeqCst) > 0,
        "the proxy cut uploads"
    );
    let s = Reader::new(&src.url);
    for d in &dsts {
        let d = Reader::new(&d.url);
        for (repo, tag, _) in &corpus.tags {
            assert_same_image(&s, &d, repo, repo, tag).await;
        }
    }
}
