//! Verified promotion: a tag reaches the target only when a signature on the exact digest
//! its source tag points at verifies under a key of `signed_by`. Signatures are made by the
//! test support with real keys, in cosign's exact format, checked here against sigstore-rs's
//! published vector; registries are real Distributions.

use base64::Engine as _;
use serde_json::Value;

use crate::support::cosign::{legacy_image, payload, Signer, P256_SPKI_PREFIX};
use crate::support::images::{self, signature_tag, Format, Image, Pusher};
use crate::support::registry::TestRegistry;
use crate::support::{tag_named as tag, Ferry, Reader};

/// sigstore-rs, src/crypto/verification_key.rs, `verify_signature_success`.
const VECTOR_KEY_B64: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAENptdY/l3nB0yqkXLBWkZWQwo6+cuOSWS1X9vPavpiQOoTTGC0xX57OojUadxF1cdQmrsiReWg2Wn4FneJfa8xw==";
const VECTOR_SIG: &str = "MEUCIQD6q/COgzOyW0YH1Dk+CCYSt4uAhm3FDHUwvPI55zwnlwIgE0ZK58ZOWpZw8YVmBapJhBqCfdPekIknimuO0xH8Jh8=";
const VECTOR_PAYLOAD: &str = r#"{"critical":{"identity":{"docker-reference":"registry-testing.svc.lan/busybox"},"image":{"docker-manifest-digest":"sha256:f3cfc9d0dbf931d3db4685ec659b7ac68e2a578219da4aae65427886e649b06b"},"type":"cosign container image signature"},"optional":null}"#;

#[test]
fn the_signing_support_writes_what_the_published_cosign_vector_holds() {
    // The payload bytes, for the vector's digest and reference, are the vector's.
    let p = payload(
        "sha256:f3cfc9d0dbf931d3db4685ec659b7ac68e2a578219da4aae65427886e649b06b",
        "registry-testing.svc.lan/busybox",
    );
    assert_eq!(String::from_utf8(p).unwrap(), VECTOR_PAYLOAD);
    // The key encoding is the vector key's (same SPKI up to the point).
    let der = base64::engine::general_purpose::STANDARD
        .decode(VECTOR_KEY_B64)
        .unwrap();
    assert!(hex::encode(&der).starts_with(P256_SPKI_PREFIX));
    let s = Signer::new();
    let ours = s
        .pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<String>();
    assert_eq!(&ours[..36], &VECTOR_KEY_B64[..36]);
    // ferry's verifier takes the vector, and what the support signs, and nothing altered.
    let vector = ferry::verify::TrustedKey::from_spki(&der).unwrap();
    let sig = base64::engine::general_purpose::STANDARD
        .decode(VECTOR_SIG)
        .unwrap();
    assert!(vector.verifies(VECTOR_PAYLOAD.as_bytes(), &sig));
    let key = ferry::verify::TrustedKey::from_pem(&s.pem).unwrap();
    assert_eq!(key.fingerprint, s.fingerprint);
    let ours = base64::engine::general_purpose::STANDARD
        .decode(s.sign(b"hello"))
        .unwrap();
    assert!(key.verifies(b"hello", &ours) && !key.verifies(b"hellO", &ours));
    assert!(!vector.verifies(b"hello", &ours));
}

fn small(seed: u64) -> Image {
    images::image(
        Format::Oci,
        &[&images::layer(seed, 9_000)],
        "amd64",
        None,
        &format!("signed-{seed}"),
    )
}

fn gated(src: &str, dst: &str, require: &str) -> Ferry {
    let f = Ferry::new(
        &format!("[registries.src]\nurl = \"{src}\"\n\n[registries.dst]\nurl = \"{dst}\"\n"),
        "1MiB",
        &[(
            "p.toml",
            &format!("[[policy]]\nname = \"p\"\nsource = \"src\"\ntargets = [\"dst\"]\nrepositories = [\"app\"]\n[policy.require]\n{require}"),
        )],
    );
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_signature_by_a_trusted_key_on_the_exact_digest_promotes() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let (trusted, stranger) = (Signer::new(), Signer::new());
    let mut p = Pusher::new(&src.url);
    let imgs: Vec<Image> = (0..6).map(|i| small(300 + i)).collect();
    let names = ["good", "stranger", "fake", "other", "unsigned", "garbage"];
    for (n, img) in names.iter().zip(&imgs) {
        p.image("app", n, img).await;
    }
    let sig_of = |i: usize| signature_tag(&imgs[i].digest);
    let good_sig = trusted.legacy(&imgs[0].digest);
    p.image("app", &sig_of(0), &good_sig).await;
    p.image("app", &sig_of(1), &stranger.legacy(&imgs[1].digest))
        .await;
    // An ordinary image under the signature tag.
    p.image("app", &sig_of(2), &small(399)).await;
    // A good signature by the trusted key, over a payload naming another image.
    p.image("app", &sig_of(3), &trusted.legacy(&imgs[0].digest))
        .await;
    // Garbage: an annotation that is not base64, a payload that is not JSON (signed), and a
    // 2 MiB "signature" layer.
    let not_json = b"not json at all".to_vec();
    let signed = trusted.sign(&not_json);
    let garbage = legacy_image(&[
        (b"{}".to_vec(), Some("%%% not base64".into())),
        (not_json, Some(signed)),
        (vec![b'x'; 2 << 20], Some(trusted.sign(b"x"))),
    ]);
    p.image("app", &sig_of(5), &garbage).await;

    let ferry = gated(&src.url, &dst.url, "signed_by = [\"keys/release.pub\"]\n");
    std::fs::create_dir_all(ferry.path().join("policies/keys")).unwrap();
    std::fs::write(ferry.path().join("policies/keys/release.pub"), &trusted.pem).unwrap();
    ferry.run(&["validate"]).assert_code(0);

    let tags = ferry.plan_tags();
    let good = tag(&tags, "good");
    assert_eq!(good["action"], "create", "{good:#}");
    assert_eq!(good["verified"]["key"], trusted.fingerprint.as_str());
    assert_eq!(good["verified"]["signature"], good_sig.digest.as_str());
    let reason = |n: &str| {
        let t = tag(&tags, n);
        assert_eq!(t["action"], "held", "{n}: {t:#}");
        assert!(t.get("verified").is_none(), "{n}: {t:#}");
        t["reason"].as_str().unwrap().to_owned()
    };
    assert_eq!(
        reason("stranger"),
        "no signature verifies under signed_by: 1 by an unknown key"
    );
    assert!(
        reason("fake").contains("1 not a signature (a layer of type"),
        "{}",
        reason("fake")
    );
    assert_eq!(
        reason("other"),
        "no signature verifies under signed_by: 1 for another digest"
    );
    assert_eq!(
        reason("unsigned"),
        "no signature verifies under signed_by: none found"
    );
    let g = reason("garbage");
    assert!(g.starts_with("no signature verifies under signed_by: 3 not a signature (a signature annotation that is not base64)"), "{g}");
    // Signature tags are not images to promote under a gate.
    assert!(
        tags.iter()
            .all(|t| !t["tag"].as_str().unwrap().starts_with("sha256-")
                || t["tag"] == sig_of(0).as_str()),
        "{tags:#?}"
    );

    let run = ferry.run(&["sync"]);
    run.assert_code(0);
    assert_eq!(run.summary("held"), 5, "{}", run.all());
    let d = Reader::new(&dst.url);
    let mut got = d.tags("app").await;
    got.sort();
    let mut want = vec!["good".to_owned(), sig_of(0)];
    want.sort();
    assert_eq!(got, want);
    assert_eq!(
        d.digest("app", "good").await.as_deref(),
        Some(imgs[0].digest.as_str())
    );
    assert_eq!(
        d.digest("app", &sig_of(0)).await.as_deref(),
        Some(good_sig.digest.as_str())
    );

    // Nothing changed: the second run writes nothing.
    let puts = dst.manifest_puts();
    ferry.run(&["sync"]).assert_code(0);
    assert_eq!(dst.manifest_puts(), puts);
}

#[tokio::test]
async fn presence_alone_a_private_key_and_a_missing_key_are_refused_by_validate() {
    let s = Signer::new();
    let f = gated(
        "http://127.0.0.1:1",
        "http://127.0.0.1:2",
        "signature = true\n",
    );
    let run = f.run(&["validate"]);
    run.assert_code(2);
    assert!(
        run.stderr.contains("p.toml:")
            && run
                .stderr
                .contains("require.signature = true alone proves nothing")
            && run.stderr.contains("signed_by = [\"keys/release.pub\"]"),
        "{}",
        run.all()
    );

    let f = gated(
        "http://127.0.0.1:1",
        "http://127.0.0.1:2",
        "signed_by = [\"private.pem\", \"nowhere.pub\", \"junk.pub\"]\n",
    );
    std::fs::write(f.path().join("policies/private.pem"), &s.private_pem).unwrap();
    std::fs::write(f.path().join("policies/junk.pub"), "hello\n").unwrap();
    let run = f.run(&["validate"]);
    run.assert_code(2);
    let all = run.all();
    assert!(all.contains("private.pem: is a private key"), "{all}");
    assert!(all.contains("nowhere.pub: cannot read it"), "{all}");
    assert!(
        all.contains("junk.pub: holds no PEM `PUBLIC KEY` block"),
        "{all}"
    );
    // The private key's content is never printed.
    let secret = s.private_pem.lines().nth(1).unwrap();
    assert!(!all.contains(&secret[..20]), "{all}");
    // Each names the line of its entry.
    assert!(
        all.lines().filter(|l| l.contains("p.toml:")).count() >= 3,
        "{all}"
    );
}

/// cosign v3: bundles as referrers, found through the fallback tag on a source without the
/// referrers API; each verifies like a `.sig`, and the attestation-only image is held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cosign_v3_bundles_found_through_the_fallback_tag_promote_and_stay_discoverable() {
    use crate::support::cosign::{fallback_index, COSIGN_SIGN};
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let (trusted, stranger) = (Signer::new(), Signer::new());
    let mut p = Pusher::new(&src.url);
    let imgs: Vec<Image> = (0..4).map(|i| small(600 + i)).collect();
    let names = ["dsse", "message", "attested", "stranger"];
    for (n, img) in names.iter().zip(&imgs) {
        p.image("app", n, img).await;
    }
    let bundles = [
        trusted.dsse_bundle(&imgs[0], COSIGN_SIGN, serde_json::json!({})),
        trusted.message_bundle(&imgs[1]),
        trusted.dsse_bundle(
            &imgs[2],
            "https://slsa.dev/provenance/v1",
            serde_json::json!({}),
        ),
        stranger.dsse_bundle(&imgs[3], COSIGN_SIGN, serde_json::json!({})),
    ];
    for (img, b) in imgs.iter().zip(&bundles) {
        p.image("app", &b.digest.clone(), b).await;
        p.manifest(
            "app",
            &img.digest.replace(':', "-"),
            "application/vnd.oci.image.index.v1+json",
            &fallback_index(&[b]),
        )
        .await;
    }
    let ferry = gated(&src.url, &dst.url, "signed_by = [\"release.pub\"]\n");
    std::fs::write(ferry.path().join("policies/release.pub"), &trusted.pem).unwrap();
    let tags = ferry.plan_tags();
    for (i, n) in ["dsse", "message"].iter().enumerate() {
        let t = tag(&tags, n);
        assert_eq!(t["action"], "create", "{t:#}");
        assert_eq!(t["verified"]["key"], trusted.fingerprint.as_str());
        assert_eq!(t["verified"]["signature"], bundles[i].digest.as_str());
    }
    let held = |n: &str| tag(&tags, n)["reason"].as_str().unwrap().to_owned();
    assert!(
        held("attested")
            .contains("an attestation of https://slsa.dev/provenance/v1, not a signature"),
        "{}",
        held("attested")
    );
    assert_eq!(
        held("stranger"),
        "no signature verifies under signed_by: 1 by an unknown key"
    );

    ferry.run(&["sync"]).assert_code(0);
    let d = Reader::new(&dst.url);
    let mut got = d.tags("app").await;
    got.sort();
    let mut want = vec![
        "dsse".to_owned(),
        "message".to_owned(),
        imgs[0].digest.replace(':', "-"),
        imgs[1].digest.replace(':', "-"),
    ];
    want.sort();
    assert_eq!(
        got, want,
        "only the verified images and their fallback indexes"
    );
    // On the target, the bundle is where cosign looks for it: by digest, and in the
    // target's fallback index of the image.
    for i in 0..2 {
        assert_eq!(
            d.digest("app", &bundles[i].digest).await.as_deref(),
            Some(bundles[i].digest.as_str())
        );
        let index: Value = serde_json::from_slice(
            &d.manifest("app", &imgs[i].digest.replace(':', "-"))
                .await
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            index["manifests"][0]["digest"],
            bundles[i].digest.as_str(),
            "{index}"
        );
        assert_eq!(
            index["manifests"][0]["artifactType"],
            "application/vnd.dev.sigstore.bundle.v0.3+json"
        );
    }
}

/// `[[policy.require.attestation]]`: a provenance statement signed by the builder's key
/// whose predicate names our repository promotes; one naming another is held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attestation_whose_predicate_matches_promotes_and_one_that_does_not_is_held() {
    use crate::support::cosign::fallback_index;
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let builder = Signer::new();
    let mut p = Pusher::new(&src.url);
    let imgs: Vec<Image> = (0..3).map(|i| small(700 + i)).collect();
    let provenance = |repo: &str| serde_json::json!({ "buildDefinition": { "externalParameters": { "workflow": { "repository": repo } } } });
    let slsa = "https://slsa.dev/provenance/v1";
    let atts = [
        builder.dsse_bundle(&imgs[0], slsa, provenance("https://git.example/org/app")),
        builder.dsse_bundle(&imgs[1], slsa, provenance("https://evil.example/x")),
        builder.dsse_bundle(
            &imgs[2],
            "https://example.com/scan/v1",
            provenance("https://git.example/org/app"),
        ),
    ];
    for ((n, img), a) in ["ours", "theirs", "other-type"]
        .iter()
        .zip(&imgs)
        .zip(&atts)
    {
        p.image("app", n, img).await;
        p.image("app", &a.digest.clone(), a).await;
        p.manifest(
            "app",
            &img.digest.replace(':', "-"),
            "application/vnd.oci.image.index.v1+json",
            &fallback_index(&[a]),
        )
        .await;
    }
    // cosign's tag scheme: the statement in a `.att` tag's DSSE layer.
    let by_tag = small(710);
    p.image("app", "att-tag", &by_tag).await;
    let att_tag = builder.att_image(&by_tag, slsa, provenance("https://git.example/org/tool"));
    p.image(
        "app",
        &format!("{}.att", by_tag.digest.replace(':', "-")),
        &att_tag,
    )
    .await;
    let ferry = gated(
        &src.url,
        &dst.url,
        "[[policy.require.attestation]]\npredicate_type = \"https://slsa.dev/provenance/v1\"\nsigned_by = [\"builder.pub\"]\nmatch = { \"/buildDefinition/externalParameters/workflow/repository\" = 'regex:^https://git\\.example/org/' }\n",
    );
    std::fs::write(ferry.path().join("policies/builder.pub"), &builder.pem).unwrap();
    ferry.run(&["validate"]).assert_code(0);
    let tags = ferry.plan_tags();
    let ours = tag(&tags, "ours");
    assert_eq!(ours["action"], "create", "{ours:#}");
    assert_eq!(ours["verified"]["key"], builder.fingerprint.as_str());
    assert_eq!(ours["verified"]["signature"], atts[0].digest.as_str());
    let t = tag(&tags, "att-tag");
    assert_eq!(t["action"], "create", "{t:#}");
    assert_eq!(t["verified"]["signature"], att_tag.digest.as_str());
    let theirs = tag(&tags, "theirs");
    assert_eq!(theirs["action"], "held", "{theirs:#}");
    assert!(
        theirs["reason"].as_str().unwrap().contains(
            "a predicate whose /buildDefinition/externalParameters/workflow/repository is \"https://evil.example/x\""
        ),
        "{theirs:#}"
    );
    let other = tag(&tags, "other-type");
    assert_eq!(other["action"], "held", "{other:#}");
    assert!(
        other["reason"].as_str().unwrap().starts_with(
            "no attestation of https://slsa.dev/provenance/v1 verifies under signed_by"
        ),
        "{other:#}"
    );
    ferry.run(&["sync"]).assert_code(0);
    let d = Reader::new(&dst.url);
    assert_eq!(
        d.digest("app", "ours").await.as_deref(),
        Some(imgs[0].digest.as_str())
    );
    assert_eq!(d.digest("app", "theirs").await, None);
    let att = format!("{}.att", by_tag.digest.replace(':', "-"));
    assert_eq!(
        d.digest("app", &att).await.as_deref(),
        Some(att_tag.digest.as_str()),
        "the attestation travels with its image"
    );
}

#[tokio::test]
async fn attestation_rules_with_a_bad_regex_pointer_or_no_keys_are_refused_by_validate() {
    let f = gated(
        "http://127.0.0.1:1",
        "http://127.0.0.1:2",
        "[[policy.require.attestation]]\npredicate_type = \"https://slsa.dev/provenance/v1\"\n\n[[policy.require.attestation]]\npredicate_type = \"x\"\nsigned_by = [\"k.pub\"]\nmatch = { \"no/slash\" = \"a\", \"/b\" = \"regex:(\" }\n",
    );
    std::fs::write(f.path().join("policies/k.pub"), Signer::new().pem).unwrap();
    let run = f.run(&["validate"]);
    run.assert_code(2);
    let all = run.all();
    for want in [
        "require.attestation: name whom its statement must be signed by",
        "`no/slash` is not a JSON pointer",
        "require.attestation.match `/b`: regex parse error",
    ] {
        assert!(all.contains(want), "{want}\n{all}");
    }
    assert!(
        all.lines().filter(|l| l.contains("p.toml:")).count() >= 3,
        "{all}"
    );
}
