//! Keyless (Sigstore) promotion, offline: a signature counts when its certificate chains to
//! a Fulcio CA of `[daemon] sigstore_trusted_root` at the time a Rekor entry of that root
//! proves, and names a signer's identity and issuer. The CA, the log and the signatures are
//! the test support's, with real keys; the log's SET bytes are checked against a real
//! Rekor entry first.

use base64::Engine as _;
use serde_json::json;

use crate::support::cosign::{self, fallback_index, payload, SIGNATURE_ANNOTATION};
use crate::support::fulcio::{set_message, Sigstore, GITHUB, LIFETIME};
use crate::support::images::{self, signature_tag, Format, Image, Pusher};
use crate::support::registry::TestRegistry;
use crate::support::{tag_named as tag, Ferry, Reader};

/// sigstore-rs's published Rekor entry (src/cosign/bundle.rs, `bundle_new_verified_success`)
/// and the public Rekor key it verifies under.
const REKOR_KEY: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE2G2Y+2tabdTV5BcGiBIx0a9fAFwrkBbmLSGtks4L3qX6yYY0zufBnhC8Ur/iy55GhWP/9A/bY2LhC30M9+RYtw==";
const VECTOR_SET: &str = "MEUCIDx9M+yRpD0O47/Mzm8NAPCbtqy4uiTkLWWexW0bo4jZAiEA1wwueIW8XzJWNkut5y9snYj7UOfbMmUXp7fH3CzJmWg=";
const VECTOR_BODY: &str = "eyJhcGlWZXJzaW9uIjoiMC4wLjEiLCJraW5kIjoicmVrb3JkIiwic3BlYyI6eyJkYXRhIjp7Imhhc2giOnsiYWxnb3JpdGhtIjoic2hhMjU2IiwidmFsdWUiOiIzYWY0NDE0ZDIwYzllMWNiNzZjY2M3MmFhZThiMjQyMTY2ZGFiZTZhZjUzMWE0YTc5MGRiOGUyZjBlNWVlN2M5In19LCJzaWduYXR1cmUiOnsiY29udGVudCI6Ik1FWUNJUURXV3hQUWEzWEZVc1BieVRZK24rYlp1LzZQd2hnNVd3eVlEUXRFZlFobzl3SWhBUGtLVzdldWI4YjdCWCtZYmJSYWM4VHd3SXJLNUt4dmR0UTZOdW9EK2l2VyIsImZvcm1hdCI6Ing1MDkiLCJwdWJsaWNLZXkiOnsiY29udGVudCI6IkxTMHRMUzFDUlVkSlRpQlFWVUpNU1VNZ1MwVlpMUzB0TFMwS1RVWnJkMFYzV1VoTGIxcEplbW93UTBGUldVbExiMXBKZW1vd1JFRlJZMFJSWjBGRlRFdG9SRGRHTlU5TGVUYzNXalU0TWxrMmFEQjFNVW96UjA1Qkt3cHJkbFZ6YURSbFMzQmtNV3gzYTBSQmVtWkdSSE0zZVZoRlJYaHpSV3RRVUhWcFVVcENaV3hFVkRZNGJqZFFSRWxYUWk5UlJWazNiWEpCUFQwS0xTMHRMUzFGVGtRZ1VGVkNURWxESUV0RldTMHRMUzB0Q2c9PSJ9fX19";

const WORKFLOW: &str = "https://github.com/org/app/.github/workflows/release.yml@refs/heads/main";
const TAGGED: &str =
    r"https://github\.com/org/app/\.github/workflows/release\.yml@refs/tags/v[0-9.]+";

#[test]
fn the_test_log_signs_the_bytes_rekor_signs() {
    // The support's canonical form of the published entry is what Rekor signed.
    let b64 = base64::engine::general_purpose::STANDARD;
    let msg = set_message(
        VECTOR_BODY,
        1_634_714_179,
        "c0d23d6ad406973f9559f3ba2d1ca01f84147d8ffc5b8445c224f98b9591801d",
        783_606,
    );
    let rekor = ferry::verify::TrustedKey::from_spki(&b64.decode(REKOR_KEY).unwrap()).unwrap();
    assert!(rekor.verifies(&msg, &b64.decode(VECTOR_SET).unwrap()));
    // And the test root is one ferry reads.
    let s = Sigstore::new();
    let root = ferry::verify::TrustedRoot::parse(&s.trusted_root()).unwrap();
    assert!(root.has_cas());
}

fn small(seed: u64) -> Image {
    images::image(
        Format::Oci,
        &[&images::layer(seed, 7_000)],
        "amd64",
        None,
        &format!("keyless-{seed}"),
    )
}

/// A ferry over `src` → `dst` with the test trusted root and these policy files.
fn ferry(src: &str, dst: &str, s: &Sigstore, policies: &[(&str, &str)]) -> Ferry {
    let f = Ferry::new(
        &format!("[registries.src]\nurl = \"{src}\"\n\n[registries.dst]\nurl = \"{dst}\"\n"),
        "1MiB",
        policies,
    );
    f.daemon_lines("sigstore_trusted_root = \"trusted_root.json\"\n");
    std::fs::write(f.path().join("trusted_root.json"), s.trusted_root()).unwrap();
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_signatures_promote_only_a_named_identity_proven_by_the_log() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let s = Sigstore::new();
    let mut p = Pusher::new(&src.url);
    let names = [
        "right",
        "fork",
        "unlogged",
        "late",
        "bundle",
        "tagged",
        "suffixed",
        "deep",
        "loop",
        "other-issuer",
    ];
    let imgs: Vec<Image> = (0..names.len() as u64).map(|i| small(700 + i)).collect();
    for (n, img) in names.iter().zip(&imgs) {
        p.image("app", n, img).await;
    }
    let d = |i: usize| imgs[i].digest.as_str();
    let right = s.legacy(&s.leaf(WORKFLOW, GITHUB, 0), d(0), Some(60));
    let sigs = [
        (0, right.clone()),
        // A genuine certificate and log entry, for a fork's workflow.
        (
            1,
            s.legacy(
                &s.leaf(
                    "https://github.com/fork/app/.github/workflows/release.yml@refs/heads/main",
                    GITHUB,
                    0,
                ),
                d(1),
                Some(60),
            ),
        ),
        // `--tlog-upload=false`: nothing proves when the expired certificate signed.
        (2, s.legacy(&s.leaf(WORKFLOW, GITHUB, 0), d(2), None)),
        // Logged after the certificate expired.
        (
            3,
            s.legacy(&s.leaf(WORKFLOW, GITHUB, 0), d(3), Some(LIFETIME + 60)),
        ),
        (
            5,
            s.legacy(
                &s.leaf(
                    "https://github.com/org/app/.github/workflows/release.yml@refs/tags/v1.2",
                    GITHUB,
                    0,
                ),
                d(5),
                Some(30),
            ),
        ),
        // The regex matches a prefix of this SAN only: anchored, it is another identity.
        (
            6,
            s.legacy(
                &s.leaf(
                    "https://github.com/org/app/.github/workflows/release.yml@refs/tags/v1.2-evil",
                    GITHUB,
                    0,
                ),
                d(6),
                Some(30),
            ),
        ),
        (7, s.deep_legacy(WORKFLOW, d(7), 100)),
        (8, s.looping_legacy(WORKFLOW, d(8))),
        (
            9,
            s.legacy(
                &s.leaf(WORKFLOW, "https://accounts.example", 0),
                d(9),
                Some(60),
            ),
        ),
    ];
    for (i, sig) in &sigs {
        p.image("app", &signature_tag(d(*i)), sig).await;
    }
    // A v3 bundle, through the fallback tag (Distribution has no referrers API).
    let bundle = s.message_bundle(&s.leaf(WORKFLOW, GITHUB, 0), &imgs[4], 90);
    p.image("app", &bundle.digest.clone(), &bundle).await;
    p.manifest(
        "app",
        &d(4).replace(':', "-"),
        "application/vnd.oci.image.index.v1+json",
        &fallback_index(&[&bundle]),
    )
    .await;

    let policy = format!(
        "[[policy]]\nname = \"p\"\nsource = \"src\"\ntargets = [\"dst\"]\nrepositories = [\"app\"]\n\
         [[policy.require.signer]]\nissuer = \"{GITHUB}\"\nidentity = \"{WORKFLOW}\"\n\
         [[policy.require.signer]]\nissuer = \"{GITHUB}\"\nidentity_regex = '{TAGGED}'\n"
    );
    let f = ferry(&src.url, &dst.url, &s, &[("p.toml", &policy)]);
    f.run(&["validate"]).assert_code(0);
    let tags = f.plan_tags();
    for (n, sig, who) in [
        ("right", &right.digest, WORKFLOW),
        ("bundle", &bundle.digest, WORKFLOW),
    ] {
        let t = tag(&tags, n);
        assert_eq!(t["action"], "create", "{t:#}");
        assert_eq!(
            t["verified"],
            json!({ "identity": who, "issuer": GITHUB, "signature": sig }),
            "{n}"
        );
    }
    assert_eq!(
        tag(&tags, "tagged")["action"],
        "create",
        "{:#}",
        tag(&tags, "tagged")
    );
    let held = |n: &str| {
        let t = tag(&tags, n);
        assert_eq!(t["action"], "held", "{n}: {t:#}");
        t["reason"].as_str().unwrap().to_owned()
    };
    let under = "no signature verifies under signer: ";
    assert_eq!(held("fork"), format!("{under}1 by another identity (https://github.com/fork/app/.github/workflows/release.yml@refs/heads/main from {GITHUB})"));
    assert_eq!(
        held("unlogged"),
        format!("{under}1 not proven (no transparency-log entry)")
    );
    assert!(
        held("late").starts_with(&format!("{under}1 not proven ("))
            && held("late").contains("expired"),
        "{}",
        held("late")
    );
    assert!(held("suffixed").contains("1 by another identity (https://github.com/org/app/.github/workflows/release.yml@refs/tags/v1.2-evil"), "{}", held("suffixed"));
    for n in ["deep", "loop"] {
        assert!(
            held(n).starts_with(&format!("{under}1 not proven (")),
            "{n}: {}",
            held(n)
        );
    }
    assert_eq!(
        held("other-issuer"),
        format!("{under}1 by another identity ({WORKFLOW} from https://accounts.example)")
    );

    f.run(&["sync"]).assert_code(0);
    let r = Reader::new(&dst.url);
    let mut got: Vec<String> = r
        .tags("app")
        .await
        .into_iter()
        .filter(|t| !t.starts_with("sha256-"))
        .collect();
    got.sort();
    assert_eq!(
        got,
        ["bundle", "right", "tagged"],
        "only what a named identity signed"
    );
    for i in [0, 4, 5] {
        assert_eq!(r.digest("app", names[i]).await.as_deref(), Some(d(i)));
    }
    // The signature came along, and the run history says who verified what.
    assert_eq!(
        r.digest("app", &signature_tag(d(0))).await.as_deref(),
        Some(right.digest.as_str())
    );
    let status = f.run(&["status"]);
    assert!(
        status.stdout.contains(&format!(
            "verified: app:right → dst: identity {WORKFLOW} from {GITHUB} (signature {})",
            right.digest
        )),
        "{}",
        status.stdout
    );
    assert!(
        status.stdout.contains("held: app:fork → dst:"),
        "{}",
        status.stdout
    );
}

/// An attestation from the team's builder, keyless; and `require_tlog` with a key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_attestations_and_required_log_entries_gate_like_signatures() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let s = Sigstore::new();
    let key = cosign::Signer::new();
    let mut p = Pusher::new(&src.url);
    let imgs: Vec<Image> = (0..4).map(|i| small(800 + i)).collect();
    for (n, img) in ["built", "elsewhere"].iter().zip(&imgs) {
        p.image("att", n, img).await;
    }
    for (n, img) in ["logged", "offline"].iter().zip(&imgs[2..]) {
        p.image("app", n, img).await;
    }
    let builder = s.leaf(WORKFLOW, GITHUB, 0);
    let slsa = "https://slsa.dev/provenance/v1";
    for (i, repo) in [
        (0, "https://github.com/org/app"),
        (1, "https://github.com/evil/app"),
    ] {
        let pred = json!({ "buildDefinition": { "externalParameters": { "workflow": { "repository": repo } } } });
        let b = s.attestation_bundle(&builder, &imgs[i], slsa, pred, 60);
        p.image("att", &b.digest.clone(), &b).await;
        p.manifest(
            "att",
            &imgs[i].digest.replace(':', "-"),
            "application/vnd.oci.image.index.v1+json",
            &fallback_index(&[&b]),
        )
        .await;
    }
    // Key-signed `.sig`s, one with a Rekor entry of the test log, one offline.
    let logged = {
        let pl = payload(&imgs[2].digest, "ferry.test/app");
        let sig = key.sign(&pl);
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&sig)
            .unwrap();
        let e = s.log_message(&key.pem, &pl, &raw, 120);
        cosign::annotated_legacy_image(&[(
            pl,
            json!({ SIGNATURE_ANNOTATION: sig, "dev.sigstore.cosign/bundle": e.annotation() }),
        )])
    };
    p.image("app", &signature_tag(&imgs[2].digest), &logged)
        .await;
    p.image(
        "app",
        &signature_tag(&imgs[3].digest),
        &key.legacy(&imgs[3].digest),
    )
    .await;

    let att = format!(
        "[[policy]]\nname = \"att\"\nsource = \"src\"\ntargets = [\"dst\"]\nrepositories = [\"att\"]\n\
         [[policy.require.attestation]]\npredicate_type = \"{slsa}\"\n\
         match = {{ \"/buildDefinition/externalParameters/workflow/repository\" = \"https://github.com/org/app\" }}\n\
         [[policy.require.attestation.signer]]\nissuer = \"{GITHUB}\"\nidentity = \"{WORKFLOW}\"\n"
    );
    let tlog = "[[policy]]\nname = \"tlog\"\nsource = \"src\"\ntargets = [\"dst\"]\nrepositories = [\"app\"]\n\
                [policy.require]\nsigned_by = [\"release.pub\"]\nrequire_tlog = true\n";
    let f = ferry(
        &src.url,
        &dst.url,
        &s,
        &[("att.toml", &att), ("tlog.toml", tlog)],
    );
    std::fs::write(f.path().join("policies/release.pub"), &key.pem).unwrap();
    let tags = f.plan_tags();
    let built = tag(&tags, "built");
    assert_eq!(built["action"], "create", "{built:#}");
    assert_eq!(built["verified"]["identity"], WORKFLOW);
    assert!(
        tag(&tags, "elsewhere")["reason"]
            .as_str()
            .unwrap()
            .contains("workflow/repository is \"https://github.com/evil/app\""),
        "{:#}",
        tag(&tags, "elsewhere")
    );
    assert_eq!(
        tag(&tags, "logged")["verified"]["key"],
        key.fingerprint.as_str()
    );
    assert_eq!(
        tag(&tags, "offline")["reason"],
        "no signature verifies under signed_by: 1 not proven (no transparency-log entry)"
    );
    f.run(&["sync"]).assert_code(0);
    let r = Reader::new(&dst.url);
    assert_eq!(
        r.digest("att", "built").await.as_deref(),
        Some(imgs[0].digest.as_str())
    );
    assert_eq!(r.digest("att", "elsewhere").await, None);
    assert_eq!(
        r.digest("app", "logged").await.as_deref(),
        Some(imgs[2].digest.as_str())
    );
    assert_eq!(r.digest("app", "offline").await, None);
}

#[test]
fn keyless_config_mistakes_fail_validate_at_their_place() {
    let s = Sigstore::new();
    let signer = |body: &str| {
        format!("[[policy]]\nname = \"p\"\nsource = \"src\"\ntargets = [\"dst\"]\nrepositories = [\"app\"]\n[[policy.require.signer]]\n{body}")
    };
    let cases = [
        (
            signer("issuer = \"https://i\"\nidentity = \"a\"\nidentity_regex = \"b\"\n"),
            "p.toml:9:",
            "give identity or identity_regex, not both",
        ),
        (
            signer("issuer = \"https://i\"\n"),
            "p.toml:7:",
            "name the certificate identity",
        ),
        (
            signer("issuer = \"https://i\"\nidentity_regex = \"(\"\n"),
            "p.toml:8:",
            "identity_regex",
        ),
        (
            signer("issuer = \"\"\nidentity = \"a\"\n"),
            "p.toml:7:",
            "issuer is empty",
        ),
    ];
    for (policy, at, what) in &cases {
        let f = ferry(
            "http://127.0.0.1:1",
            "http://127.0.0.1:2",
            &s,
            &[("p.toml", policy)],
        );
        let run = f.run(&["validate"]);
        run.assert_code(2);
        assert!(
            run.stderr.contains(at) && run.stderr.contains(what),
            "{what}: {}",
            run.stderr
        );
    }
    // No trusted root: signers and require_tlog say what to set.
    let f = Ferry::new(
        "[registries.src]\nurl = \"http://127.0.0.1:1\"\n\n[registries.dst]\nurl = \"http://127.0.0.1:2\"\n",
        "1MiB",
        &[("p.toml", "[[policy]]\nname = \"p\"\nsource = \"src\"\ntargets = [\"dst\"]\nrepositories = [\"app\"]\n[policy.require]\nrequire_tlog = true\n[[policy.require.signer]]\nissuer = \"https://i\"\nidentity = \"a\"\n")],
    );
    let run = f.run(&["validate"]);
    run.assert_code(2);
    assert!(
        run.stderr
            .contains("sigstore_trusted_root, which is not set"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("require.require_tlog"),
        "{}",
        run.stderr
    );
    // A malformed trusted root: its own file, line and column.
    let f = ferry("http://127.0.0.1:1", "http://127.0.0.1:2", &s, &[]);
    std::fs::write(
        f.path().join("trusted_root.json"),
        "{\n  \"tlogs\": [\n    { \"publicKey\": 7 }\n  ]\n}\n",
    )
    .unwrap();
    let run = f.run(&["validate"]);
    run.assert_code(2);
    assert!(
        run.stderr.contains("trusted_root.json:3:"),
        "{}",
        run.stderr
    );
}
