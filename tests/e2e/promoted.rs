//! What is promoted is what was verified: a tag moved on the source while its verified
//! digest is being copied does not carry the new, unverified digest along; a platform-
//! filtered index is verified through the original index, and the kept children's own
//! signatures travel with it.

use crate::support::cosign::Signer;
use crate::support::images::{self, signature_tag, Format, Image, Pusher};
use crate::support::proxy::Proxy;
use crate::support::registry::TestRegistry;
use crate::support::{tag_named, wait_until, Ferry, Reader};

fn gated(src: &str, dst: &str, extra: &str) -> Ferry {
    let f = Ferry::new(
        &format!("[registries.src]\nurl = \"{src}\"\n\n[registries.dst]\nurl = \"{dst}\"\n"),
        "1MiB",
        &[(
            "p.toml",
            &format!("[[policy]]\nname = \"p\"\nsource = \"src\"\ntargets = [\"dst\"]\nrepositories = [\"app\"]\n{extra}[policy.require]\nsigned_by = [\"release.pub\"]\n"),
        )],
    );
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_moved_during_the_copy_lands_as_the_digest_that_verified() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    // Uploads to the target crawl, so the copy is still running when the tag moves.
    let slow = Proxy::start(dst.url.trim_start_matches("http://").to_owned());
    slow.set_rate(256 << 10);
    let key = Signer::new();
    let signed = images::image(
        Format::Oci,
        &[&images::layer(901, 1 << 20)],
        "amd64",
        None,
        "signed",
    );
    let unsigned = images::image(
        Format::Oci,
        &[&images::layer(902, 64 << 10)],
        "amd64",
        None,
        "moved",
    );
    let mut p = Pusher::new(&src.url);
    p.image("app", "v1", &signed).await;
    p.image(
        "app",
        &signature_tag(&signed.digest),
        &key.legacy(&signed.digest),
    )
    .await;
    let f = gated(&src.url, &slow.url(), "");
    std::fs::write(f.path().join("policies/release.pub"), &key.pem).unwrap();

    let child = f.spawn(&["sync"]);
    assert!(
        wait_until(30, || slow.sent() > 64 << 10),
        "the copy started"
    );
    p.image("app", "v1", &unsigned).await;
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = Reader::new(&dst.url);
    assert_eq!(
        d.digest("app", "v1").await.as_deref(),
        Some(signed.digest.as_str())
    );
    assert_eq!(
        d.blob_size("app", &unsigned.blobs[1].digest).await,
        None,
        "nothing of the moved image"
    );

    // The next run sees the move: unsigned, held; the target keeps what verified.
    slow.set_rate(0);
    let run = f.run(&["sync"]);
    run.assert_code(0);
    assert!(
        run.stderr
            .contains("held: p: app:v1 → dst: no signature verifies under signed_by: none found"),
        "{}",
        run.all()
    );
    assert_eq!(
        d.digest("app", "v1").await.as_deref(),
        Some(signed.digest.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_index_is_verified_by_its_original_and_kept_children_keep_their_signatures() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let key = Signer::new();
    let child = |seed: u64, arch: &str| -> Image {
        images::image(
            Format::Oci,
            &[&images::layer(seed, 5_000)],
            arch,
            None,
            &format!("c{seed}"),
        )
    };
    let (amd, arm) = (child(911, "amd64"), child(912, "arm64"));
    let (amd2, arm2) = (child(913, "amd64"), child(914, "arm64"));
    let mut p = Pusher::new(&src.url);
    let signed = p
        .multi_arch("app", "signed", Format::Oci, &[amd.clone(), arm.clone()])
        .await;
    // `cosign sign --recursive`: the index and each child.
    let index_sig = key.legacy(&signed);
    p.image("app", &signature_tag(&signed), &index_sig).await;
    for c in [&amd, &arm] {
        p.image("app", &signature_tag(&c.digest), &key.legacy(&c.digest))
            .await;
    }
    // Only the children signed, not the index the tag points at.
    let children_only = p
        .multi_arch(
            "app",
            "children-only",
            Format::Oci,
            &[amd2.clone(), arm2.clone()],
        )
        .await;
    for c in [&amd2, &arm2] {
        p.image("app", &signature_tag(&c.digest), &key.legacy(&c.digest))
            .await;
    }
    let f = gated(&src.url, &dst.url, "platforms = [\"linux/amd64\"]\n");
    std::fs::write(f.path().join("policies/release.pub"), &key.pem).unwrap();
    let tags = f.plan_tags();
    let get = |n: &str| tag_named(&tags, n).clone();
    assert_eq!(
        get("signed")["verified"]["signature"],
        index_sig.digest.as_str()
    );
    assert_ne!(
        get("signed")["source_digest"],
        signed.as_str(),
        "a filtered index"
    );
    assert_eq!(get("children-only")["action"], "held");
    f.run(&["sync"]).assert_code(0);

    let d = Reader::new(&dst.url);
    let filtered = d.digest("app", "signed").await.unwrap();
    assert_ne!(filtered, signed);
    // The index signature names the original; the kept child's names the child, whose
    // digest is the source's; the dropped child's stays behind.
    assert_eq!(
        d.digest("app", &signature_tag(&signed)).await.as_deref(),
        Some(index_sig.digest.as_str())
    );
    assert!(d.digest("app", &signature_tag(&amd.digest)).await.is_some());
    assert_eq!(d.digest("app", &signature_tag(&arm.digest)).await, None);
    assert_eq!(d.digest("app", "children-only").await, None);
    assert_eq!(d.digest("app", &signature_tag(&children_only)).await, None);
}

/// A tag that verified is not verified again within `verify_interval` (here: a tag planned
/// twice, its copy not yet made), unless what the gate trusts changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verification_is_remembered_until_the_keys_change() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let (key, rotated) = (Signer::new(), Signer::new());
    let img = images::image(
        Format::Oci,
        &[&images::layer(921, 5_000)],
        "amd64",
        None,
        "kept",
    );
    let sig = key.legacy(&img.digest);
    let mut p = Pusher::new(&src.url);
    p.image("app", "v1", &img).await;
    p.image("app", &signature_tag(&img.digest), &sig).await;
    let f = gated(&src.url, &dst.url, "");
    std::fs::write(f.path().join("policies/release.pub"), &key.pem).unwrap();
    std::fs::write(f.path().join("policies/rotated.pub"), &rotated.pem).unwrap();
    // The signature's payload blob: read only when a signature is verified.
    let payload = &sig.blobs[1].digest;
    let reads = || {
        src.log()
            .lines()
            .filter(|l| l.contains(&format!("\"GET /v2/app/blobs/{payload}")))
            .count()
    };
    // What a plan verified is remembered in a state store that is there (a plan creates none).
    std::fs::create_dir_all(f.path().join("state")).unwrap();
    let verified = |f: &Ferry| {
        let tags = f.plan_tags();
        tag_named(&tags, "v1")["verified"]["key"]
            .as_str()
            .map(ToOwned::to_owned)
    };
    assert_eq!(verified(&f).as_deref(), Some(key.fingerprint.as_str()));
    let first = reads();
    assert!(first >= 1, "the first plan reads the signature");
    assert_eq!(verified(&f).as_deref(), Some(key.fingerprint.as_str()));
    assert_eq!(reads(), first, "the second plan trusts the record");
    // A rotated key list is another gate: verified again, from the source.
    let policy = std::fs::read_to_string(f.path().join("policies/p.toml")).unwrap();
    std::fs::write(
        f.path().join("policies/p.toml"),
        policy.replace("[\"release.pub\"]", "[\"rotated.pub\", \"release.pub\"]"),
    )
    .unwrap();
    assert_eq!(verified(&f).as_deref(), Some(key.fingerprint.as_str()));
    assert!(reads() > first, "a changed signed_by verifies again");
}

/// A webhook-driven run applies the same gate, and `/status` shows what verified and what
/// was held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_runs_gate_like_full_runs_and_status_shows_the_evidence() {
    use crate::support::registry::RegistryOpts;
    use crate::support::{daemon_get, free_port, wait_for, Daemon};
    const TOKEN: &str = "test-token-0123456789abcdef";
    let port = free_port();
    let src = TestRegistry::start_with(RegistryOpts {
        notify: Some((
            format!("http://127.0.0.1:{port}/v1/events/distribution/src"),
            TOKEN.into(),
        )),
        ..RegistryOpts::default()
    });
    let dst = TestRegistry::start();
    let key = Signer::new();
    let f = gated(
        &src.url,
        &dst.url,
        "schedule = \"0 0 1 1 *\"\nevents = true\n",
    );
    std::fs::write(f.path().join("policies/release.pub"), &key.pem).unwrap();
    std::fs::write(f.path().join("token"), TOKEN).unwrap();
    f.daemon_lines(&format!(
        "listen = \"127.0.0.1:{port}\"\napi_token_file = \"token\"\n"
    ));
    let d = Daemon::start(&f, port, "daemon.log");
    assert!(d.ready().await, "{}", d.log());

    let mk = |seed: u64| {
        images::image(
            Format::Oci,
            &[&images::layer(seed, 6_000)],
            "amd64",
            None,
            "hooked",
        )
    };
    let (unsigned, signed) = (mk(931), mk(932));
    let mut p = Pusher::new(&src.url);
    let sig = key.legacy(&signed.digest);
    p.image("app", &signature_tag(&signed.digest), &sig).await;
    p.image("app", "signed", &signed).await;
    let r = Reader::new(&dst.url);
    assert!(
        wait_for(20, || async { r.digest("app", "signed").await.is_some() }).await,
        "{}",
        d.log()
    );
    let status = || async {
        let (_, body) = daemon_get(port, "/status").await.unwrap();
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    let lines = |v: &serde_json::Value, what: &str| -> Vec<String> {
        v["runs"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|run| run[what].as_array().cloned().unwrap_or_default())
            .filter_map(|l| l.as_str().map(ToOwned::to_owned))
            .collect()
    };
    let want = format!(
        "app:signed → dst: key {} (signature {})",
        key.fingerprint, sig.digest
    );
    assert!(
        wait_for(10, || async {
            lines(&status().await, "verified").contains(&want)
        })
        .await,
        "{:#}",
        status().await
    );
    // An unsigned push: its targeted run holds it, and says so.
    p.image("app", "unsigned", &unsigned).await;
    let held = "app:unsigned → dst: no signature verifies under signed_by: none found".to_owned();
    assert!(
        wait_for(20, || async {
            lines(&status().await, "held").contains(&held)
        })
        .await,
        "{:#}",
        status().await
    );
    assert_eq!(r.digest("app", "unsigned").await, None);
    assert_eq!(
        r.digest("app", "signed").await.as_deref(),
        Some(signed.digest.as_str())
    );
    assert_eq!(d.stop().0, 0);
}
