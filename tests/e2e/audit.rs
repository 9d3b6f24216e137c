//! The audit ledger: one entry per manifest written and per delete, counted against the
//! target's access log (kill -9 included), with every field; the chain check finds an
//! edited entry; filters and bad input.

use crate::support::images::{self, push_corpus, CorpusSpec, Format, Pusher};
use crate::support::registry::TestRegistry;
use crate::support::{Ferry, Reader};

fn regs(src: &str, dst: &str) -> String {
    format!("[registries.src]\nurl = \"{src}\"\n[registries.dst]\nurl = \"{dst}\"\n")
}

/// Requests the target took (2xx) with this method on manifests.
fn taken(reg: &TestRegistry, method: &str) -> usize {
    reg.log()
        .lines()
        .filter(|l| l.contains(&format!("\"{method} /v2/")) && l.contains("/manifests/"))
        .filter(|l| l.contains("\" 201 ") || l.contains("\" 202 "))
        .count()
}

fn entries(f: &Ferry, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["audit", "--json"];
    all.extend_from_slice(args);
    let run = f.run(&all);
    run.assert_code(0);
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.all()))
}

#[tokio::test]
async fn every_write_and_delete_is_one_chained_entry_and_an_edit_is_found() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    // Multi-arch images (index children written by digest) and signature tags.
    let spec = CorpusSpec {
        repos: 3,
        tags: 2,
        index_every: 3,
        ..CorpusSpec::default()
    };
    push_corpus(&src.url, &spec).await;
    let policy = "[[policy]]\nname = \"mirror\"\nsource = \"src\"\ntargets = [\"dst\"]\nrepositories = [\"app-*\"]\n";
    let f = Ferry::new(&regs(&src.url, &dst.url), "64KiB", &[("p.toml", policy)]);
    f.run(&["sync"]).assert_code(0);

    let written = entries(&f, &[]);
    let puts = taken(&dst, "PUT");
    assert!(puts > 10, "{puts}");
    assert_eq!(
        written.len(),
        puts,
        "one entry per manifest PUT the target took"
    );
    let d = Reader::new(&dst.url);
    let mut tagged = 0;
    for (i, e) in written.iter().enumerate() {
        assert_eq!(e["seq"], i as u64 + 1);
        assert_eq!(e["action"], "written");
        assert_eq!(
            (e["policy"].as_str(), e["target"].as_str()),
            (Some("mirror"), Some("dst"))
        );
        assert_eq!(e["trigger"], "ferry sync");
        assert!(e["run"].as_str().unwrap().starts_with("mirror@"), "{e}");
        assert!(!e["member"].as_str().unwrap().is_empty());
        assert_eq!(e["source"]["registry"], "src");
        assert_eq!(e["source"]["repository"], e["repository"]);
        assert_eq!(e["hash"].as_str().unwrap().len(), 64);
        if i > 0 {
            assert_eq!(e["prev"], written[i - 1]["hash"]);
        }
        if let Some(tag) = e["tag"].as_str() {
            tagged += 1;
            let repo = e["repository"].as_str().unwrap();
            assert_eq!(
                d.digest(repo, tag).await.as_deref(),
                e["digest"].as_str(),
                "{e}"
            );
        }
    }
    assert!(
        tagged > 0 && tagged < written.len(),
        "tags and children by digest"
    );

    // A no-op run writes nothing and adds nothing.
    f.run(&["sync"]).assert_code(0);
    assert_eq!(entries(&f, &[]).len(), puts);

    // Filters: a digest matches what was written from it; a time window in the future, none.
    let one = written.iter().find(|e| e["tag"].is_string()).unwrap();
    let digest = one["source"]["digest"].as_str().unwrap();
    let by_digest = entries(&f, &["--digest", digest]);
    assert!(
        !by_digest.is_empty()
            && by_digest
                .iter()
                .all(|e| e["source"]["digest"] == digest || e["digest"] == digest)
    );
    assert!(entries(&f, &["--since", "2999-01-01T00:00:00Z"]).is_empty());
    assert_eq!(
        entries(&f, &["--repository", "app-000", "--since", "1h"]).len(),
        written
            .iter()
            .filter(|e| e["repository"] == "app-000")
            .count()
    );
    let bad = f.run(&["audit", "--digest", "sha256:nothex"]);
    bad.assert_code(2);
    assert!(bad.stderr.contains("--digest"), "{}", bad.stderr);
    let bad = f.run(&["audit", "--since", "yesterday"]);
    bad.assert_code(2);
    assert!(bad.stderr.contains("since: `yesterday`"), "{}", bad.stderr);

    let ok = f.run(&["audit", "--verify"]);
    ok.assert_code(0);
    assert!(
        ok.stdout.contains(&format!("{puts} entries intact; head ")),
        "{}",
        ok.all()
    );

    // An entry edited in the store breaks the chain there.
    {
        let store = ferry::state::StateStore::open(&f.path().join("state")).unwrap();
        let mut e = written[4].clone();
        e["repository"] = "app-999".into();
        store
            .ledger_overwrite(5, &serde_json::to_vec(&e).unwrap())
            .unwrap();
        store.flush().await.unwrap();
    }
    let broken = f.run(&["audit", "--verify"]);
    broken.assert_code(1);
    assert!(
        broken
            .stderr
            .contains("broken at entry 5: its content does not match its hash"),
        "{}",
        broken.all()
    );
}

#[tokio::test]
async fn deletes_are_entries_with_their_reason() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let mut p = Pusher::new(&src.url);
    for (i, t) in ["1.0.0", "1.1.0", "1.2.0"].iter().enumerate() {
        let img = images::image(
            Format::Oci,
            &[&images::layer(40 + i as u64, 20_000)],
            "amd64",
            None,
            t,
        );
        p.image("app", t, &img).await;
    }
    let policy = |rules: &str| {
        format!("[[policy]]\nname = \"p\"\nsource = \"src\"\ntargets = [\"dst\"]\nrepositories = [\"app\"]\n{rules}")
    };
    let f = Ferry::new(
        &regs(&src.url, &dst.url),
        "1MiB",
        &[("p.toml", &policy(""))],
    );
    f.run(&["sync"]).assert_code(0);
    // The layer only 1.0.0 has: exposed there until the prune deletes it.
    let only = images::layer(40, 20_000).blob.digest;
    let exposed = |f: &Ferry| {
        let run = f.run(&["where", "--json", &only]);
        run.assert_code(0);
        serde_json::from_str::<Vec<serde_json::Value>>(&run.stdout).unwrap()
    };
    let before = exposed(&f);
    assert_eq!(before.len(), 1, "{before:#?}");
    assert_eq!(before[0]["tag"], "1.0.0");
    std::fs::write(
        f.path().join("policies/p.toml"),
        policy("prune = true\nmax_delete = 2\n[policy.tags]\nlatest = 1\n"),
    )
    .unwrap();
    f.run(&["sync"]).assert_code(0);
    let all = entries(&f, &[]);
    let deleted: Vec<_> = all.iter().filter(|e| e["action"] == "deleted").collect();
    assert_eq!(deleted.len(), taken(&dst, "DELETE"), "{all:#?}");
    assert_eq!(deleted.len(), 2, "{}", dst.log());
    for e in deleted {
        assert!(
            e["reason"]
                .as_str()
                .unwrap()
                .contains("not among the newest 1"),
            "{e}"
        );
        assert!(e["source"].is_null());
    }
    assert!(exposed(&f).is_empty(), "exposure goes with the deleted tag");
}

/// kill -9 while tags are being written, then a second run: still exactly one entry per
/// manifest the target took, the one whose answer was lost recorded after the fact.
#[tokio::test]
async fn a_kill_during_writes_leaves_one_entry_per_write() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let spec = CorpusSpec {
        repos: 6,
        tags: 3,
        index_every: 0,
        sign: false,
        ..CorpusSpec::default()
    };
    push_corpus(&src.url, &spec).await;
    let slow = crate::support::proxy::Proxy::start(format!("127.0.0.1:{}", dst.port));
    slow.set_rate(400_000);
    let policy = "[[policy]]\nname = \"mirror\"\nsource = \"src\"\ntargets = [\"dst\"]\nrepositories = [\"app-*\"]\n";
    let f = Ferry::new(&regs(&src.url, &slow.url()), "64KiB", &[("p.toml", policy)]);
    let mut child = f.spawn(&["sync"]);
    assert!(
        crate::support::wait_until(60, || taken(&dst, "PUT") >= 4),
        "{}",
        dst.log()
    );
    crate::support::signal(&child, "KILL");
    let _ = child.wait();
    let before = taken(&dst, "PUT");
    slow.set_rate(0);
    f.run(&["sync"]).assert_code(0);
    let puts = taken(&dst, "PUT");
    assert!(puts > before, "the second run wrote the rest");
    let all = entries(&f, &[]);
    assert_eq!(
        all.len(),
        puts,
        "one entry per manifest PUT the target took"
    );
    f.run(&["audit", "--verify"]).assert_code(0);
}

/// Beside a daemon (which holds the store), `ferry audit` reads through `GET /v1/audit`,
/// paged, behind the read token; the chain check too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beside_a_daemon_the_ledger_is_read_through_its_api() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let spec = CorpusSpec {
        repos: 2,
        tags: 2,
        index_every: 0,
        sign: false,
        ..CorpusSpec::default()
    };
    push_corpus(&src.url, &spec).await;
    let policy = "[[policy]]\nname = \"mirror\"\nsource = \"src\"\ntargets = [\"dst\"]\nrepositories = [\"app-*\"]\nschedule = \"0 0 1 1 *\"\n";
    let f = Ferry::new(&regs(&src.url, &dst.url), "1MiB", &[("p.toml", policy)]);
    f.run(&["sync"]).assert_code(0);
    let alone = entries(&f, &[]);
    assert_eq!(alone.len(), taken(&dst, "PUT"));

    let port = crate::support::free_port();
    let read = "read-token-0123456789abcdef";
    std::fs::write(f.path().join("read"), read).unwrap();
    f.daemon_lines(&format!(
        "listen = \"127.0.0.1:{port}\"\nread_token_file = \"read\"\n"
    ));
    let d = crate::support::Daemon::start(&f, port, "daemon.log");
    assert!(d.ready().await, "{}", d.log());
    let through = entries(&f, &[]);
    assert_eq!(through, alone);
    let v = f.run(&["audit", "--verify"]);
    v.assert_code(0);
    assert!(v.stdout.contains("intact"), "{}", v.all());

    let http = crate::support::http_client().build().unwrap();
    let url = format!("http://127.0.0.1:{port}/v1/audit?limit=2&repository=app-001");
    let none = http.get(&url).send().await.unwrap();
    assert_eq!(none.status().as_u16(), 401);
    let page: serde_json::Value = http
        .get(&url)
        .bearer_auth(read)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let got = page["entries"].as_array().unwrap();
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|e| e["repository"] == "app-001"));
    assert_eq!(page["next"], got[1]["seq"]);
    let bad = http
        .get(format!("http://127.0.0.1:{port}/v1/audit?digest=nope"))
        .bearer_auth(read)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    assert!(bad.text().await.unwrap().contains("digest `nope`"));
    d.stop();
}

/// `[[notify]] on = ["written", "deleted"]`: a run's ledger entries reach the sink as
/// CloudEvents, each entry once (the first delivery refused and retried), in batches.
#[tokio::test]
async fn ledger_entries_stream_to_a_sink_as_cloudevents() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let spec = CorpusSpec {
        repos: 3,
        tags: 2,
        index_every: 3,
        sign: false,
        ..CorpusSpec::default()
    };
    push_corpus(&src.url, &spec).await;
    let sink = crate::support::receiver::Receiver::start(1);
    let cfg = format!(
        "{}\n[[notify]]\nurl = \"{}\"\non = [\"written\", \"deleted\"]\n",
        regs(&src.url, &dst.url),
        sink.url("/siem")
    );
    let policy = "[[policy]]\nname = \"mirror\"\nsource = \"src\"\ntargets = [\"dst\"]\nrepositories = [\"app-*\"]\n";
    let f = Ferry::new(&cfg, "1MiB", &[("p.toml", policy)]);
    f.run(&["sync"]).assert_code(0);
    let ledger = entries(&f, &[]);
    let got = sink.received();
    let taken: Vec<_> = got.iter().filter(|r| !r.refused).collect();
    assert!(
        got.iter().any(|r| r.refused),
        "the first delivery was refused and retried"
    );
    assert!(taken
        .iter()
        .all(|r| r.body["type"] == "dev.ferry.audit.written"));
    let streamed: Vec<&serde_json::Value> = taken
        .iter()
        .flat_map(|r| r.body["data"]["entries"].as_array().unwrap())
        .collect();
    let mut seqs: Vec<u64> = streamed
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    seqs.sort();
    let want: Vec<u64> = ledger.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, want, "every entry once");
    for e in streamed {
        assert_eq!(*e, ledger[e["seq"].as_u64().unwrap() as usize - 1]);
    }
    // A no-op run has nothing to stream.
    let before = sink.received().len();
    f.run(&["sync"]).assert_code(0);
    assert_eq!(sink.received().len(), before);
}
