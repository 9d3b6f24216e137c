//! Air-gapped sites: a registry synced into a folder of OCI image layouts (`oci:/path`), which
//! skopeo reads, and from that folder into another registry, with identical digests;
//! incremental (a no-op writes nothing) and with deletes that take unreferenced blobs along.

use std::collections::BTreeMap;
use std::path::Path;

use crate::support::images::{self, push_corpus, CorpusSpec, Format, Pusher};
use crate::support::registry::TestRegistry;
use crate::support::{assert_same_image, Ferry, Reader};

/// Every file under `dir` with its length and modification time.
fn files(dir: &Path) -> BTreeMap<String, (u64, std::time::SystemTime)> {
    crate::support::files_under(dir)
        .into_iter()
        .map(|p| {
            let m = std::fs::metadata(&p).unwrap();
            (p.display().to_string(), (m.len(), m.modified().unwrap()))
        })
        .collect()
}

fn skopeo_raw(reference: &str) -> Vec<u8> {
    let out = std::process::Command::new("skopeo")
        .args(["inspect", "--raw", reference])
        .output()
        .expect("skopeo: apt-get install -y skopeo");
    assert!(
        out.status.success(),
        "skopeo inspect {reference}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[tokio::test]
async fn registry_to_layout_folder_to_registry_keeps_every_digest() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let corpus = push_corpus(
        &src.url,
        &CorpusSpec {
            repos: 2,
            tags: 2,
            index_every: 2,
            ..CorpusSpec::default()
        },
    )
    .await;
    let solo = |seed: u64, note: &str| {
        images::image(
            Format::Oci,
            &[&images::layer(seed, 30_000)],
            "amd64",
            None,
            note,
        )
    };
    let (v1, v2) = (solo(51, "v1"), solo(52, "v2"));
    Pusher::new(&src.url).image("solo", "v1", &v1).await;
    Pusher::new(&src.url).image("solo", "v2", &v2).await;
    let usb = tempfile::tempdir().unwrap();
    let usb_url = format!("oci:{}", usb.path().display());

    // Inside: registry → folder.
    let out_policy = "[[policy]]\nname = \"to-usb\"\nsource = \"src\"\ntargets = [\"usb\"]\nrepositories = [\"app-*\", \"solo\"]\ndelete = true\nmax_delete = \"100%\"\n";
    let inside = Ferry::new(
        &format!(
            "[registries.src]\nurl = \"{}\"\n[registries.usb]\nurl = \"{usb_url}\"\n",
            src.url
        ),
        "64KiB",
        &[("p.toml", out_policy)],
    );
    let run = inside.run(&["sync"]);
    run.assert_code(0);
    assert_eq!(
        run.summary("copied") as usize,
        corpus.tags.len() + 2,
        "{}",
        run.all()
    );
    // Every tag is in its repository's index.json with the source's digest and media type,
    // and its manifest bytes are in blobs/. skopeo (containers/image) only looks at entries
    // of OCI media types, so Docker-format images are checked from the files alone.
    let mut seen_by_skopeo = 0;
    for (repo, tag, digest) in &corpus.tags {
        let index: serde_json::Value = serde_json::from_slice(
            &std::fs::read(usb.path().join(repo).join("index.json")).unwrap(),
        )
        .unwrap();
        let entry = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag.as_str())
            .unwrap();
        assert_eq!(entry["digest"], digest.as_str(), "{repo}:{tag}");
        let bytes = std::fs::read(
            usb.path()
                .join(repo)
                .join("blobs/sha256")
                .join(&digest["sha256:".len()..]),
        )
        .unwrap();
        assert_eq!(&images::sha256(&bytes), digest);
        if entry["mediaType"]
            .as_str()
            .unwrap()
            .starts_with("application/vnd.oci.")
        {
            let raw = skopeo_raw(&format!("oci:{}/{repo}:{tag}", usb.path().display()));
            assert_eq!(
                &images::sha256(&raw),
                digest,
                "{repo}:{tag} as skopeo reads it from the folder"
            );
            seen_by_skopeo += 1;
        }
    }
    assert!(
        seen_by_skopeo >= 3,
        "the corpus has OCI images for skopeo to read"
    );
    // skopeo reads whole images from it too, not only the manifests.
    let copy = std::process::Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            &format!("oci:{}/solo:v2", usb.path().display()),
            &format!("dir:{}", usb.path().join("../solo-v2-check").display()),
        ])
        .output()
        .unwrap();
    assert!(
        copy.status.success(),
        "{}",
        String::from_utf8_lossy(&copy.stderr)
    );
    let _ = std::fs::remove_dir_all(usb.path().join("../solo-v2-check"));

    // Nothing changed: nothing written, not even index.json.
    let before = files(usb.path());
    let again = inside.run(&["sync"]);
    again.assert_code(0);
    assert_eq!(again.summary("copied"), 0);
    assert!(
        before == files(usb.path()),
        "a no-op sync wrote to the folder"
    );
    assert!(
        !before
            .keys()
            .any(|f| f.contains(".upload-") || f.contains(".tmp-")),
        "temporary files left: {before:?}"
    );

    // Outside: folder → another registry, digests identical to the first registry.
    let in_policy = "[[policy]]\nname = \"from-usb\"\nsource = \"usb\"\ntargets = [\"dst\"]\nrepositories = [\"**\"]\n";
    let outside = Ferry::new(
        &format!(
            "[registries.usb]\nurl = \"{usb_url}\"\n[registries.dst]\nurl = \"{}\"\n",
            dst.url
        ),
        "64KiB",
        &[("p.toml", in_policy)],
    );
    outside.run(&["sync"]).assert_code(0);
    let (s, d) = (Reader::new(&src.url), Reader::new(&dst.url));
    for (repo, tag, _) in &corpus.tags {
        assert_same_image(&s, &d, repo, repo, tag).await;
    }
    assert_same_image(&s, &d, "solo", "solo", "v1").await;

    // A tag deleted at the source leaves the folder, and so do the blobs only it used.
    let client = crate::support::http_client().build().unwrap();
    let gone = client
        .delete(format!("{}/v2/solo/manifests/{}", src.url, v1.digest))
        .send()
        .await
        .unwrap();
    assert!(gone.status().is_success(), "{}", gone.status());
    let only_v1 = v1
        .blobs
        .iter()
        .find(|b| !v2.blobs.iter().any(|c| c.digest == b.digest))
        .unwrap();
    let blob = |d: &str| {
        usb.path()
            .join("solo/blobs/sha256")
            .join(&d["sha256:".len()..])
    };
    assert!(blob(&only_v1.digest).is_file());
    // Blobs of the last minutes may belong to a copy in flight and are spared: age them.
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for e in std::fs::read_dir(usb.path().join("solo/blobs/sha256"))
        .unwrap()
        .flatten()
    {
        std::fs::File::options()
            .write(true)
            .open(e.path())
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    // An upload abandoned two days ago goes with the collection; one of a minute ago stays.
    let (stale, fresh) = (
        usb.path().join("solo/blobs/.upload-1-dead"),
        usb.path().join("solo/blobs/.upload-2-live"),
    );
    std::fs::write(&stale, b"half a layer").unwrap();
    std::fs::write(&fresh, b"half a layer").unwrap();
    let two_days = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 86_400);
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(two_days)
        .unwrap();
    let run = inside.run(&["sync"]);
    run.assert_code(0);
    assert_eq!(run.summary("deleted"), 1, "{}", run.all());
    assert!(
        !stale.exists() && fresh.exists(),
        "abandoned uploads: stale {} fresh {}",
        stale.exists(),
        fresh.exists()
    );
    std::fs::remove_file(&fresh).unwrap();
    assert!(!blob(&only_v1.digest).exists(), "v1's own layer stayed");
    assert!(blob(&v2.digest).is_file(), "v2 went too");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(usb.path().join("solo/index.json")).unwrap())
            .unwrap();
    let names: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str())
        .collect();
    assert_eq!(names, ["v2"]);
    assert_eq!(
        images::sha256(&skopeo_raw(&format!(
            "oci:{}/solo:v2",
            usb.path().display()
        ))),
        v2.digest
    );

    // A damaged index.json fails that repository, and is not overwritten; a folder in the
    // way that is not a layout is not written into; an unmounted disk is not created.
    std::fs::write(usb.path().join("solo/index.json"), b"{ not json").unwrap();
    std::fs::remove_dir_all(usb.path().join("app-000")).unwrap();
    std::fs::create_dir_all(usb.path().join("app-000")).unwrap();
    std::fs::write(usb.path().join("app-000/notes.txt"), b"someone's files").unwrap();
    let run = inside.run(&["sync"]);
    run.assert_code(1);
    assert!(
        run.all().contains("solo/index.json: not an OCI index"),
        "{}",
        run.all()
    );
    assert!(
        run.all().contains(
            "app-000: not an OCI layout (no oci-layout file) and not empty; not writing into it"
        ),
        "{}",
        run.all()
    );
    assert_eq!(
        std::fs::read(usb.path().join("solo/index.json")).unwrap(),
        b"{ not json"
    );
    assert_eq!(
        std::fs::read_dir(usb.path().join("app-000"))
            .unwrap()
            .count(),
        1
    );
    let unmounted = Ferry::new(
        &format!(
            "[registries.src]\nurl = \"{}\"\n[registries.usb]\nurl = \"oci:/nonexistent/usb\"\n",
            src.url
        ),
        "64KiB",
        &[("p.toml", out_policy)],
    );
    let run = unmounted.run(&["sync"]);
    run.assert_code(1);
    assert!(
        run.all()
            .contains("/nonexistent/usb: no such folder (is the disk mounted?)"),
        "{}",
        run.all()
    );
    assert!(!Path::new("/nonexistent").exists());

    // A folder that is not a layout path is a config error.
    let bad = Ferry::new(
        "[registries.usb]\nurl = \"oci:relative/path\"\n",
        "64KiB",
        &[],
    );
    let out = bad.run(&["validate"]);
    out.assert_code(2);
    assert!(
        out.stderr
            .contains("an OCI layout folder is written oci:/absolute/path"),
        "{}",
        out.stderr
    );
}
