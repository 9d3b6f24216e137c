//! A damaged state store, one from a newer ferry, a read-only one, a full disk: the store is a
//! cache of progress, so damage costs progress (said once, with what it costs), never a copy;
//! only what ferry cannot safely rewrite is refused.

use std::collections::BTreeMap;
use std::path::Path;

use crate::support::disk::{skipped, Tmpfs};
use crate::support::images::{self, Format, Pusher};
use crate::support::registry::TestRegistry;
use crate::support::{
    assert_same_image, daemon_get, daemon_post, free_port, metric, Daemon, Ferry, Reader,
};

const POLICY: &str =
    "[[policy]]\nname = \"m\"\nsource = \"src\"\ntargets = [\"dst\"]\nrepositories = [\"app\"]\n";

fn regs(src: &TestRegistry, dst: &TestRegistry) -> String {
    format!(
        "[registries.src]\nurl = \"{}\"\n\n[registries.dst]\nurl = \"{}\"\n",
        src.url, dst.url
    )
}

async fn push(url: &str, tag: &str, seed: u64, size: usize) {
    let image = images::image(
        Format::Oci,
        &[&images::layer(seed, size)],
        "amd64",
        None,
        tag,
    );
    Pusher::new(url).image("app", tag, &image).await;
}

/// Every file under `dir` with its bytes, to show a store was left exactly as it was.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    crate::support::files_under(dir)
        .into_iter()
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect()
}

#[tokio::test]
async fn garbled_records_are_dropped_and_counted_and_a_newer_store_is_refused_untouched() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    for (i, tag) in ["v1", "v2", "v3"].iter().enumerate() {
        push(&src.url, tag, 10 + i as u64, 30_000).await;
    }
    let ferry = Ferry::new(&regs(&src, &dst), "1MiB", &[("p.toml", POLICY)]);
    ferry.run(&["sync"]).assert_code(0);

    // Bytes that are not records, where sled itself is fine: run history, what ferry wrote,
    // an upload checkpoint.
    let store = ferry.path().join("state/state.sled");
    {
        let db = sled::open(&store).unwrap();
        for tree in ["runs", "written"] {
            let t = db.open_tree(tree).unwrap();
            let keys: Vec<_> = t.iter().keys().map(Result::unwrap).collect();
            assert!(!keys.is_empty(), "{tree} has records to spoil");
            for k in keys {
                t.insert(k, &b"\xff{not json"[..]).unwrap();
            }
        }
        db.open_tree("uploads")
            .unwrap()
            .insert(b"dst\0app\0sha256:00", &br#"{"v":7}"#[..])
            .unwrap();
        db.flush().unwrap();
    }
    let status = ferry.run(&["status", "--json"]);
    status.assert_code(0);
    let v: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(
        v["runs"].as_array().map(Vec::len),
        Some(0),
        "unreadable runs left out: {}",
        status.all()
    );
    assert!(
        status.stderr.contains("unreadable state record dropped"),
        "{}",
        status.stderr
    );

    // The spoiled memory of what ferry wrote is forgotten: the target is asked about each tag.
    let heads = dst.requests("HEAD");
    let again = ferry.run(&["sync"]);
    again.assert_code(0);
    assert_eq!(again.summary("in"), 3, "{}", again.all());
    assert_eq!(
        dst.requests("HEAD") - heads,
        3,
        "every target tag asked again"
    );
    assert!(
        again.stderr.contains("those target tags are asked again"),
        "{}",
        again.stderr
    );
    // Dropped, not kept around: a third sync trusts what the second wrote and reads cleanly.
    let third = ferry.run(&["sync"]);
    third.assert_code(0);
    assert!(!third.stderr.contains("dropped"), "{}", third.stderr);
    let status = ferry.run(&["status", "--json"]);
    assert!(
        status.stdout.contains("\"outcome\": \"ok\"") && status.stderr.is_empty(),
        "{}",
        status.all()
    );

    // A store stamped by a newer ferry is refused, and not one byte of it changes.
    let format = ferry.path().join("state/state.format");
    assert_eq!(
        std::fs::read_to_string(&format).unwrap(),
        "1\n",
        "the store is stamped with its format"
    );
    std::fs::write(&format, "99\n").unwrap();
    let before = snapshot(&store);
    for args in [&["sync"][..], &["status"][..]] {
        let run = ferry.run(args);
        run.assert_code(1);
        assert!(
            run.stderr
                .contains("was written by a newer ferry (format 99; this one reads 1)"),
            "{}",
            run.stderr
        );
    }
    assert!(before == snapshot(&store), "the newer store was rewritten");
}

#[tokio::test]
async fn a_read_only_state_dir_is_named_and_nothing_is_copied() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    push(&src.url, "v1", 20, 30_000).await;
    let ferry = Ferry::new(&regs(&src, &dst), "1MiB", &[("p.toml", POLICY)]);
    let state = ferry.path().join("state");
    let ro = if nix_root() {
        let Some(m) = Tmpfs::mount(&state, "1m", true) else {
            return skipped("mount not permitted: no read-only state_dir");
        };
        Some(m)
    } else {
        std::fs::create_dir_all(&state).unwrap();
        std::fs::set_permissions(&state, std::os::unix::fs::PermissionsExt::from_mode(0o555))
            .unwrap();
        None
    };
    let run = ferry.run(&["sync"]);
    run.assert_code(1);
    let store = state.join("state.sled").display().to_string();
    assert!(
        run.stderr.contains(&format!("state store {store}:"))
            && (run.stderr.contains("Read-only file system")
                || run.stderr.contains("Permission denied")),
        "{}",
        run.stderr
    );
    assert!(
        Reader::new(&dst.url).manifest("app", "v1").await.is_none(),
        "nothing copied without a store"
    );
    drop(ro);
}

fn nix_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// A disk that fills under a running daemon: webhooks are refused with 503 instead of
/// acknowledged, checkpoints cannot be written (the log says what that costs), and no tag is
/// written, since the audit ledger cannot account for it: a replicator must not make a write
/// it cannot record. A `ferry sync` that cannot open its store on a full disk says so and
/// copies nothing. Room again: everything is copied, and right.
#[tokio::test]
async fn a_full_disk_refuses_events_and_writes_it_cannot_account_for() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    push(&src.url, "v1", 30, 30_000).await;
    let port = free_port();
    let token = "state-test-token-0123456789";
    let policy = format!(
        "{POLICY}events = true\nschedule = \"0 0 1 1 *\"\n[policy.tags]\ninclude = [\"^v\"]\n"
    );
    let ferry = Ferry::new(&regs(&src, &dst), "64KiB", &[("p.toml", &policy)]);
    std::fs::write(ferry.path().join("token"), token).unwrap();
    ferry.daemon_lines(&format!(
        "listen = \"127.0.0.1:{port}\"\napi_token_file = \"token\"\nmax_pending_events = 1000000\n"
    ));
    let Some(disk) = Tmpfs::mount(&ferry.path().join("state"), "16m", false) else {
        return skipped("mount not permitted: no full disk to test on");
    };
    ferry.run(&["sync"]).assert_code(0);
    let daemon = Daemon::start(&ferry, port, "../daemon.log");
    assert!(daemon.ready().await, "{}", daemon.log());
    disk.fill();

    // sled writes inside space it already holds until that runs out: events for tags that do
    // not exist (each journaled, then dropped by its run) use it up. The first refusal must
    // come with a reason, and before anything is lost: nothing is acknowledged after it.
    let envelope = |n: usize| {
        let events: Vec<_> = (0..1000)
            .map(|i| {
                serde_json::json!({ "id": format!("e{n}-{i}"), "action": "push",
                "target": { "repository": "app", "tag": format!("x{n}-{i}"), "mediaType": "application/vnd.oci.image.manifest.v1+json",
                            "digest": "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" } })
            })
            .collect();
        serde_json::json!({ "events": events })
            .to_string()
            .into_bytes()
    };
    let mut refused = None;
    for n in 0..400 {
        let (code, body) = daemon_post(
            port,
            "/v1/events/distribution/src",
            Some(token),
            "application/json",
            envelope(n),
        )
        .await;
        if code != 202 {
            refused = Some((code, body));
            break;
        }
    }
    let (code, body) = refused.expect("a full disk refuses events");
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("state store") && body.contains("No space left on device"),
        "{body}"
    );
    assert_eq!(
        daemon_get(port, "/healthz").await.map(|(c, _)| c),
        Some(200),
        "the daemon stays up"
    );

    // A run on the full disk: 122 chunks per image, a checkpoint after each, none saved.
    for (i, tag) in ["v2", "v3"].iter().enumerate() {
        push(&src.url, tag, 40 + i as u64, 8_000_000).await;
    }
    let (code, body) = daemon_post(
        port,
        "/v1/runs",
        Some(token),
        "application/json",
        br#"{"policy": "m"}"#.to_vec(),
    )
    .await;
    assert_eq!(code, 202, "{body}");
    let d = Reader::new(&dst.url);
    let refused = crate::support::wait_until(60, || {
        daemon.log().matches("could not be accounted for").count() >= 2
    });
    assert!(refused, "{}", daemon.log());
    assert!(d.manifest("app", "v2").await.is_none() && d.manifest("app", "v3").await.is_none());
    let s = Reader::new(&src.url);
    assert_same_image(&s, &d, "app", "app", "v1").await;
    let log = daemon.log();
    assert!(
        log.contains("state store failing; upload checkpoints are not saved"),
        "{log}"
    );
    assert!(
        metric(port, "ferry_state_errors_total", ("kind", "failed"))
            .await
            .unwrap()
            >= 1.0
    );
    assert_eq!(daemon.stop().0, 0);

    // A sync that cannot open the store on the full disk names it and copies nothing.
    push(&src.url, "v4", 50, 30_000).await;
    let run = ferry.run(&["sync"]);
    run.assert_code(1);
    assert!(
        run.stderr.contains("state store") && run.stderr.contains("No space left on device"),
        "{}",
        run.stderr
    );
    assert!(d.manifest("app", "v4").await.is_none());
    // Room again: everything works.
    disk.free();
    ferry.run(&["sync"]).assert_code(0);
    for tag in ["v2", "v3", "v4"] {
        assert_same_image(&s, &d, "app", "app", tag).await;
    }
    ferry.run(&["audit", "--verify"]).assert_code(0);
}

/// A store sled cannot open (truncated) is moved aside and the run goes on with an empty one,
/// saying what was lost; a `state_dir` that is a file stops the run with exit 1.
#[tokio::test]
async fn a_truncated_store_is_moved_aside_and_a_state_dir_that_is_a_file_stops_the_run() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    push(&src.url, "v1", 60, 30_000).await;
    let ferry = Ferry::new(&regs(&src, &dst), "1MiB", &[("p.toml", POLICY)]);
    ferry.run(&["sync"]).assert_code(0);
    // sled's own config file cut short: the store no longer opens.
    std::fs::OpenOptions::new()
        .write(true)
        .open(ferry.path().join("state/state.sled/conf"))
        .unwrap()
        .set_len(10)
        .unwrap();
    push(&src.url, "v2", 61, 30_000).await;
    let run = ferry.run(&["sync"]);
    run.assert_code(0);
    assert!(
        run.stderr
            .contains("state store corrupt; moved aside, starting empty: lost upload progress"),
        "{}",
        run.stderr
    );
    assert!(std::fs::read_dir(ferry.path().join("state"))
        .unwrap()
        .flatten()
        .any(|e| e
            .file_name()
            .to_string_lossy()
            .starts_with("state.sled.corrupt-")));
    assert_same_image(
        &Reader::new(&src.url),
        &Reader::new(&dst.url),
        "app",
        "app",
        "v2",
    )
    .await;

    let file = Ferry::new(&regs(&src, &dst), "1MiB", &[("p.toml", POLICY)]);
    std::fs::write(file.path().join("state"), b"not a folder").unwrap();
    let run = file.run(&["sync"]);
    run.assert_code(1);
    assert!(
        run.stderr.contains("state store") && run.stderr.contains("File exists"),
        "{}",
        run.stderr
    );
}

/// The store holds upload URLs with registry state, the run history and the journal: it is
/// its owner's only, whatever the umask.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_store_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt as _;
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    push(&src.url, "v1", 21, 10_000).await;
    let ferry = Ferry::new(&regs(&src, &dst), "1MiB", &[("p.toml", POLICY)]);
    let state = ferry.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    ferry.run(&["sync"]).assert_code(0);
    for p in [state.clone(), state.join("state.sled")] {
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}: {mode:o}", p.display());
    }
}
