//! Registry answers that name absurd sizes and times, against the real binary: a token
//! body of 200 MiB, a `RateLimit-Reset` of u64::MAX, a `Retry-After` of a day on a blob PUT.
//! Each must end bounded (memory, time) and without a panic.

use std::io::BufRead as _;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::support::bloat::{BloatedToken, BODY};
use crate::support::faults::FaultProxy;
use crate::support::images::{push_corpus, CorpusSpec};
use crate::support::registry::TestRegistry;
use crate::support::{assert_same_image, Ferry, Reader};

fn mirror(src: &str, dst: &str) -> Ferry {
    Ferry::new(
        &format!("[registries.src]\nurl = \"{src}\"\n[registries.dst]\nurl = \"{dst}\"\n"),
        "1MiB",
        &[(
            "p.toml",
            "[[policy]]\nname = \"p\"\nsource = \"src\"\ntargets = [\"dst\"]\nrepositories = [\"app-*\"]\n",
        )],
    )
}

/// Peak resident memory (VmHWM) of a running process, in KiB.
fn peak_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn a_200_mib_token_body_is_refused_after_1_mib_with_memory_bounded() {
    let bloat = BloatedToken::start();
    let dst = TestRegistry::start();
    let f = Ferry::new(
        &format!(
            "[registries.src]\nurl = \"{}\"\n[registries.dst]\nurl = \"{}\"\n",
            bloat.url(),
            dst.url
        ),
        "1MiB",
        &[(
            "p.toml",
            "[[policy]]\nname = \"p\"\nsource = \"src\"\ntargets = [\"dst\"]\nrepositories = [\"app\"]\n",
        )],
    );
    let mut child = f.spawn(&["plan"]);
    let mut peak = 0;
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        peak = peak.max(peak_kib(child.id()).unwrap_or(0));
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "plan still running"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().unwrap();
    let err = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("token response larger than 1 MiB"), "{err}");
    let sent = bloat.sent.load(Ordering::Relaxed);
    // What the server pushed into its socket: the 1 MiB read plus the kernel's buffers.
    assert!(sent < BODY / 4, "the client read {sent} bytes of {BODY}");
    assert!(peak < 120 << 10, "peak RSS {peak} KiB");
}

#[tokio::test]
async fn a_rate_limit_reset_of_u64_max_is_not_a_panic() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let corpus = push_corpus(
        &src.url,
        &CorpusSpec {
            repos: 1,
            tags: 2,
            index_every: 0,
            sign: false,
            ..CorpusSpec::default()
        },
    )
    .await;
    let proxy = FaultProxy::start(src.host());
    proxy.faults.pull_budget.store(100, Ordering::SeqCst);
    proxy.faults.pull_window_secs.store(3600, Ordering::SeqCst);
    *proxy.faults.rate_reset.lock().unwrap() = Some(u64::MAX.to_string());
    let f = mirror(&proxy.url(), &dst.url);
    f.run(&["plan"]).assert_code(0);
    f.run(&["sync"]).assert_code(0);
    assert!(proxy.faults.pulls_counted.load(Ordering::SeqCst) > 0);
    let (s, d) = (Reader::new(&src.url), Reader::new(&dst.url));
    for (repo, tag, _) in &corpus.tags {
        assert_same_image(&s, &d, repo, repo, tag).await;
    }
}

/// A blob PUT answered `503 Retry-After: 86400` is retried after at most 120 s: the wait
/// ferry announces is the cap, not the registry's day. (The run is stopped there: waiting
/// out the 120 s would prove nothing more.)
#[tokio::test]
async fn a_retry_after_of_a_day_on_a_blob_put_waits_at_most_120_s() {
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
    let proxy = FaultProxy::start(dst.host());
    proxy.faults.upload_put_503.store(86_400, Ordering::SeqCst);
    let f = mirror(&src.url, &proxy.url());
    let mut child = f.spawn(&["sync"]);
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let wait = loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) if l.contains("wait=") && l.contains("503") => break l,
            Ok(l) => seen.push(l),
            Err(_) => panic!("no retry announced:\n{}", seen.join("\n")),
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(proxy.faults.upload_put_503.load(Ordering::SeqCst), 0);
    assert!(wait.contains("wait=120s"), "{wait}");
}
