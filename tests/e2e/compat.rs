//! ferry against the registries people run, each emulated by the quirks proxy in front of a
//! real Distribution: a corpus with a layer of several chunks, a multi-arch index, a cosign
//! signature and an OCI referrer reaches every profile byte-exact, and a second run writes
//! nothing. Digests are read from the proxy's backend directly, never through ferry or the
//! proxy.

use crate::support::images::{
    image, index, layer, signature, signature_tag, Format, Image, Pusher,
};
use crate::support::quirks::knobs::{Profile, Referrers};
use crate::support::quirks::QuirksProxy;
use crate::support::registry::TestRegistry;
use crate::support::{assert_same_image, Ferry, Reader};

/// What the corpus holds, to check on the target.
pub struct Pushed {
    pub tags: Vec<(&'static str, String, String)>,
    /// The referrer's digest and its subject's.
    pub referrer: (String, String),
}

/// An OCI artifact about `subject` (an SBOM, say), with `subject` set.
pub fn referrer(subject: &Image) -> Image {
    let blob = crate::support::images::Blob::new(b"{\"sbom\":\"ferry-test\"}".to_vec());
    let empty = crate::support::images::Blob::new(b"{}".to_vec());
    let m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.example.sbom+json",
        "config": { "mediaType": "application/vnd.oci.empty.v1+json", "digest": empty.digest, "size": 2 },
        "layers": [{ "mediaType": "application/vnd.example.sbom+json", "digest": blob.digest, "size": blob.bytes.len() }],
        "subject": { "mediaType": subject.media_type, "digest": subject.digest, "size": subject.manifest.len() },
        "annotations": { "org.opencontainers.image.created": "2026-01-01T00:00:00Z" }
    });
    let manifest = serde_json::to_vec_pretty(&m).unwrap();
    Image {
        media_type: "application/vnd.oci.image.manifest.v1+json",
        digest: crate::support::images::sha256(&manifest),
        manifest,
        blobs: vec![empty, blob],
        platform: Default::default(),
    }
}

/// Push the corpus into `url`: `team/app` (an OCI image with a 12 MiB layer, its cosign
/// signature, an OCI referrer with its fallback tag, a multi-arch index) and `team/lib` (a
/// Docker v2 image).
pub async fn push(url: &str) -> Pushed {
    let mut p = Pusher::new(url);
    let big = layer(31, 12 << 20);
    let small = layer(32, 200 << 10);
    let v1 = image(Format::Oci, &[&big, &small], "amd64", None, "compat v1");
    p.image("team/app", "v1", &v1).await;
    let sig = signature(&v1.digest);
    p.image("team/app", &signature_tag(&v1.digest), &sig).await;
    let sbom = referrer(&v1);
    p.image("team/app", &sbom.digest.clone(), &sbom).await;
    // The OCI fallback for a registry without the referrers API: `sha256-<hex>` lists it.
    let fallback = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{ "mediaType": sbom.media_type, "digest": sbom.digest, "size": sbom.manifest.len(),
                        "artifactType": "application/vnd.example.sbom+json",
                        "annotations": { "org.opencontainers.image.created": "2026-01-01T00:00:00Z" } }]
    });
    let fallback = serde_json::to_vec_pretty(&fallback).unwrap();
    let fallback_tag = v1.digest.replace(':', "-");
    // Not among the tags copied byte-exact: a target keeps its own (see below).
    p.manifest(
        "team/app",
        &fallback_tag,
        "application/vnd.oci.image.index.v1+json",
        &fallback,
    )
    .await;
    let arm = image(Format::Oci, &[&small], "arm64", None, "compat arm");
    let amd = image(Format::Oci, &[&small], "amd64", None, "compat amd");
    let multi = p
        .multi_arch("team/app", "v2", Format::Oci, &[amd, arm])
        .await;
    let (_, _, _) = index(Format::Oci, &[]);
    let lib = image(Format::Docker, &[&small], "amd64", None, "compat lib");
    p.image("team/lib", "1.0", &lib).await;
    Pushed {
        tags: vec![
            ("team/app", "v1".into(), v1.digest.clone()),
            ("team/app", signature_tag(&v1.digest), sig.digest.clone()),
            ("team/app", "v2".into(), multi),
            ("team/lib", "1.0".into(), lib.digest.clone()),
        ],
        referrer: (sbom.digest, v1.digest),
    }
}

/// The `[registries.NAME]` entry ferry uses for the proxy, and the environment it needs.
pub fn registry_entry(name: &str, profile: Profile, url: &str) -> (String, Vec<(String, String)>) {
    let mut entry = format!("[registries.{name}]\nurl = \"{url}\"\n");
    let mut env = Vec::new();
    if let Some((user, pass)) = profile.credentials() {
        let var = format!("QUIRKS_{}_PASSWORD", name.to_uppercase());
        entry += &format!("username = \"{user}\"\npassword_env = \"{var}\"\n");
        env.push((var, pass.to_owned()));
    }
    // Artifactory and Nexus behind a proxy hand out upload Locations on another port: the
    // credentials go there only when the config says it is the same service.
    if profile.knobs().location == crate::support::quirks::knobs::Location::OtherPort {
        if let Some(other) = crate::support::quirks::other_origin(url) {
            entry += &format!("trusted_origins = [\"{other}\"]\n");
        }
    }
    (entry, env)
}

fn policy(source: &str, target: &str) -> String {
    format!(
        "[[policy]]\nname = \"to-{target}\"\nsource = \"{source}\"\ntargets = [\"{target}\"]\nrepositories = [\"team/app\", \"team/lib\"]\nreferrers = true\n"
    )
}

/// Copy the corpus into `profile` and check it there, then sync again.
async fn corpus_reaches(profile: Profile) {
    let src = TestRegistry::start();
    let backend = TestRegistry::start();
    let proxy = QuirksProxy::start(profile, &backend.url);
    for r in ["team", "team/app", "team/lib"] {
        proxy.create(r);
    }
    let pushed = push(&src.url).await;
    let (entry, env) = registry_entry("target", profile, &proxy.url());
    let mut ferry = Ferry::new(
        &format!("[registries.source]\nurl = \"{}\"\n\n{entry}", src.url),
        "1MiB",
        &[("p.toml", &policy("source", "target"))],
    );
    ferry.env = env;
    let first = ferry.run(&["sync"]);
    let name = profile.name();
    if profile == Profile::Zot {
        // ZOT-1: Docker v2 is refused, and ferry says how to allow it rather than convert.
        first.assert_code(1);
        assert!(
            first.stderr.contains("team/lib:1.0") && first.stderr.contains("docker2s2"),
            "{name}: {}",
            first.all()
        );
    } else {
        first.assert_code(0);
    }
    let (s, d) = (Reader::new(&src.url), Reader::new(&backend.url));
    for (repo, tag, digest) in &pushed.tags {
        if profile == Profile::Zot && *repo == "team/lib" {
            continue;
        }
        assert_eq!(
            d.digest(repo, tag).await.as_deref(),
            Some(digest.as_str()),
            "{name}: {repo}:{tag}\n{}",
            first.all()
        );
        assert_same_image(&s, &d, repo, repo, tag).await;
    }
    let (sbom, subject) = &pushed.referrer;
    assert!(
        d.digest("team/app", sbom).await.is_some(),
        "{name}: the referrer is not on the target"
    );
    // Found where a client looks: through the API, or on a target without it, in the
    // target's own fallback index.
    let fallback = d.manifest("team/app", &subject.replace(':', "-")).await;
    match profile.knobs().referrers {
        Referrers::Api { .. } => {
            assert!(fallback.is_none(), "{name}: a fallback tag beside the API")
        }
        _ => {
            let index: serde_json::Value = serde_json::from_slice(
                &fallback.unwrap_or_else(|| panic!("{name}: no fallback index\n{}", first.all())),
            )
            .unwrap();
            assert_eq!(
                index["manifests"][0]["digest"],
                sbom.as_str(),
                "{name}: {index}"
            );
            assert_eq!(
                index["manifests"][0]["artifactType"], "application/vnd.example.sbom+json",
                "{name}: {index}"
            );
        }
    }
    let writes = proxy.writes();
    let again = ferry.run(&["sync"]);
    again.assert_code(if profile == Profile::Zot { 1 } else { 0 });
    assert_eq!(
        proxy.writes(),
        writes,
        "{name}: a second run wrote:\n{:#?}",
        &proxy.stats().lines()[proxy.stats().lines().len().saturating_sub(20)..]
    );
}

macro_rules! profiles {
    ($($test:ident: $p:expr),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $test() {
            corpus_reaches($p).await;
        }
    )*};
}

profiles! {
    corpus_reaches_hub: Profile::Hub,
    corpus_reaches_ecr: Profile::Ecr,
    corpus_reaches_gar: Profile::Gar,
    corpus_reaches_acr: Profile::Acr,
    corpus_reaches_ghcr: Profile::Ghcr,
    corpus_reaches_quay: Profile::Quay,
    corpus_reaches_harbor: Profile::Harbor,
    corpus_reaches_gitlab: Profile::Gitlab,
    corpus_reaches_artifactory: Profile::Artifactory,
    corpus_reaches_nexus: Profile::Nexus,
    corpus_reaches_zot: Profile::Zot,
    corpus_reaches_dist3: Profile::Dist3,
}
