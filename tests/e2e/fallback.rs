//! The referrers fallback: a target without the OCI 1.1 referrers API (plain Distribution)
//! gets each referrer by digest and listed in its own index tagged `sha256-<subject hex>`,
//! whether the source found it through the API or through its own fallback tag; the index
//! is kept as the union of what the target holds, and a second sync writes nothing.

use serde_json::Value;

use crate::compat::referrer;
use crate::support::images::{self, Format, Image, Pusher};
use crate::support::quirks::knobs::{Knobs, Referrers};
use crate::support::quirks::QuirksProxy;
use crate::support::registry::TestRegistry;
use crate::support::{Ferry, Reader};

fn ferry(src: &str, dst: &str) -> Ferry {
    Ferry::new(
        &format!("[registries.src]\nurl = \"{src}\"\n\n[registries.dst]\nurl = \"{dst}\"\n"),
        "1MiB",
        &[("p.toml", "[[policy]]\nname = \"p\"\nsource = \"src\"\ntargets = [\"dst\"]\nrepositories = [\"app\"]\nreferrers = true\n")],
    )
}

/// Another referrer of `subject`, told apart by `kind`.
fn artifact(subject: &Image, kind: &str) -> Image {
    let mut r = referrer(subject);
    let mut m: Value = serde_json::from_slice(&r.manifest).unwrap();
    m["artifactType"] = Value::from(format!("application/vnd.example.{kind}"));
    m["annotations"]["example.kind"] = Value::from(kind);
    r.manifest = serde_json::to_vec(&m).unwrap();
    r.digest = images::sha256(&r.manifest);
    r
}

/// The fallback index as cosign v3 leaves it on a registry without the API.
fn index_of(refs: &[&Image]) -> Vec<u8> {
    let entries: Vec<Value> = refs
        .iter()
        .map(|r| {
            let m: Value = serde_json::from_slice(&r.manifest).unwrap();
            serde_json::json!({ "mediaType": r.media_type, "digest": r.digest,
                "size": r.manifest.len(), "artifactType": m["artifactType"] })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({ "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries }))
    .unwrap()
}

async fn fallback_entries(url: &str, subject: &Image) -> Vec<Value> {
    let tag = subject.digest.replace(':', "-");
    let Some(body) = Reader::new(url).manifest("app", &tag).await else {
        return vec![];
    };
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v["mediaType"], "application/vnd.oci.image.index.v1+json",
        "{v}"
    );
    v["manifests"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrers_found_through_a_fallback_tag_are_listed_in_the_targets_own_index() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let img = images::image(
        Format::Oci,
        &[&images::layer(501, 9_000)],
        "amd64",
        None,
        "fb",
    );
    let (sbom, bundle) = (artifact(&img, "sbom"), artifact(&img, "bundle"));
    let mut p = Pusher::new(&src.url);
    p.image("app", "v1", &img).await;
    for r in [&sbom, &bundle] {
        p.image("app", &r.digest.clone(), r).await;
    }
    let tag = img.digest.replace(':', "-");
    p.manifest(
        "app",
        &tag,
        "application/vnd.oci.image.index.v1+json",
        &index_of(&[&sbom, &bundle]),
    )
    .await;
    // The target already lists a referrer of its own there: kept, not overwritten.
    let own = artifact(&img, "scan");
    let mut q = Pusher::new(&dst.url);
    q.image("app", "v1", &img).await;
    q.image("app", &own.digest.clone(), &own).await;
    q.manifest(
        "app",
        &tag,
        "application/vnd.oci.image.index.v1+json",
        &index_of(&[&own]),
    )
    .await;

    let f = ferry(&src.url, &dst.url);
    f.run(&["sync"]).assert_code(0);
    let entries = fallback_entries(&dst.url, &img).await;
    let digests: Vec<&str> = entries
        .iter()
        .map(|e| e["digest"].as_str().unwrap())
        .collect();
    assert_eq!(
        digests,
        [
            own.digest.as_str(),
            sbom.digest.as_str(),
            bundle.digest.as_str()
        ]
    );
    for (e, r, kind) in [
        (&entries[1], &sbom, "sbom"),
        (&entries[2], &bundle, "bundle"),
    ] {
        assert_eq!(e["size"], r.manifest.len(), "{e}");
        assert_eq!(e["mediaType"], "application/vnd.oci.image.manifest.v1+json");
        assert_eq!(e["artifactType"], format!("application/vnd.example.{kind}"));
        assert_eq!(e["annotations"]["example.kind"], kind);
        let d = Reader::new(&dst.url);
        assert_eq!(
            d.digest("app", &r.digest).await.as_deref(),
            Some(r.digest.as_str())
        );
    }
    let puts = dst.manifest_puts();
    f.run(&["sync"]).assert_code(0);
    assert_eq!(dst.manifest_puts(), puts, "a second sync wrote");

    // A third referrer in a later run is added once.
    let sig = artifact(&img, "sig");
    p.image("app", &sig.digest.clone(), &sig).await;
    p.manifest(
        "app",
        &tag,
        "application/vnd.oci.image.index.v1+json",
        &index_of(&[&sbom, &bundle, &sig]),
    )
    .await;
    f.run(&["sync"]).assert_code(0);
    let entries = fallback_entries(&dst.url, &img).await;
    assert_eq!(entries.len(), 4, "{entries:#?}");
    assert_eq!(entries[3]["digest"], sig.digest.as_str());
}

/// A source with the API (and `OCI-Subject`), to a plain Distribution: the fallback tag is
/// written; to a target with the API: it is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrers_from_the_api_get_a_fallback_index_only_where_the_target_lacks_the_api() {
    let api = Knobs {
        referrers: Referrers::Api {
            subject_header: true,
        },
        ..Knobs::default()
    };
    let backend = TestRegistry::start();
    let src = QuirksProxy::with(None, api.clone(), &backend.url);
    let img = images::image(
        Format::Oci,
        &[&images::layer(502, 9_000)],
        "amd64",
        None,
        "fb2",
    );
    let (sbom, bundle) = (artifact(&img, "sbom"), artifact(&img, "bundle"));
    let mut p = Pusher::new(&src.url());
    p.image("app", "v1", &img).await;
    for r in [&sbom, &bundle] {
        p.image("app", &r.digest.clone(), r).await;
    }

    let plain = TestRegistry::start();
    let f = ferry(&src.url(), &plain.url);
    f.run(&["sync"]).assert_code(0);
    let mut got: Vec<String> = fallback_entries(&plain.url, &img)
        .await
        .iter()
        .map(|e| e["digest"].as_str().unwrap().to_owned())
        .collect();
    got.sort();
    let mut want = vec![sbom.digest.clone(), bundle.digest.clone()];
    want.sort();
    assert_eq!(got, want);

    let api_backend = TestRegistry::start();
    let with_api = QuirksProxy::with(None, api, &api_backend.url);
    let f = ferry(&src.url(), &with_api.url());
    f.run(&["sync"]).assert_code(0);
    assert!(fallback_entries(&api_backend.url, &img).await.is_empty());
    let d = Reader::new(&api_backend.url);
    assert_eq!(
        d.digest("app", &sbom.digest).await.as_deref(),
        Some(sbom.digest.as_str())
    );
}
