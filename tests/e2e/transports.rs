//! One contract, two transports: the same sequence of registry operations against a real
//! Distribution over HTTP and against an OCI layout folder, with the same outcomes asked of
//! both. A behaviour one transport has and the other lacks shows up here, not in a sync.

use futures_util::StreamExt;

use ferry::model::{Digest, ErrorKind, RepoName};
use ferry::registry::{Endpoint, PulledManifest, Registry, UploadStart};

use crate::support::images::{image, layer, Format};
use crate::support::registry::TestRegistry;

fn repo(s: &str) -> RepoName {
    s.parse().unwrap()
}

fn digest(s: &str) -> Digest {
    s.parse().unwrap()
}

/// Upload `bytes` as a blob of `repo` in two chunks (a PATCH, then the PUT with the rest),
/// checking the upload's status between them.
async fn upload(r: &Registry, repo: &RepoName, bytes: &[u8]) {
    let d = Digest::of(bytes);
    let UploadStart::Session(s) = r.start_upload(repo, None).await.unwrap() else {
        panic!("{}: a new upload was mounted", r.name())
    };
    assert_eq!(s.offset, 0, "{}", r.name());
    let half = bytes.len() / 2;
    let s = r
        .patch_chunk(repo, &s, bytes[..half].to_vec().into(), half as u64, true)
        .await
        .unwrap()
        .session;
    assert_eq!(s.offset, half as u64, "{}", r.name());
    let status = r.upload_status(repo, &s.location).await.unwrap().unwrap();
    assert_eq!(
        status.offset,
        half as u64,
        "{}: the status says what was sent",
        r.name()
    );
    let rest = bytes[half..].to_vec();
    let len = rest.len() as u64;
    r.finish_upload(repo, &status, &d, Some((rest.into(), len)))
        .await
        .unwrap();
}

/// What one transport answers to the sequence, for comparing with the other.
#[derive(Debug, PartialEq)]
struct Seen {
    blob_size: Option<u64>,
    small_blob: Vec<u8>,
    ranged: Vec<u8>,
    tag_digest: Digest,
    manifest: Vec<u8>,
    tags: Vec<String>,
    in_catalog: bool,
    mounted: bool,
    wrong_digest_kind: ErrorKind,
    wrong_digest_left_nothing: bool,
    after_delete: (Option<Vec<String>>, bool),
}

async fn contract(r: &Registry) -> Seen {
    let (app, other) = (repo("contract/app"), repo("contract/other"));
    let big = layer(7, 300 << 10);
    let img = image(Format::Oci, &[&big], "amd64", None, "contract");
    for b in &img.blobs {
        upload(r, &app, &b.bytes).await;
    }
    let layer_digest = digest(&big.blob.digest);
    let blob_size = r.head_blob(&app, &layer_digest).await.unwrap();
    let config = &img.blobs[0];
    let small_blob = r
        .get_small_blob(&app, &digest(&config.digest), 1 << 20)
        .await
        .unwrap()
        .to_vec();
    // A read from an offset (a resumed copy): the stream says where it starts.
    let mut ranged = Vec::new();
    let body = r.get_blob(&app, &layer_digest, 1000).await.unwrap();
    let skip = (1000 - body.offset) as usize;
    let mut stream = body.stream;
    while let Some(chunk) = stream.next().await {
        ranged.extend_from_slice(&chunk.unwrap());
    }
    let ranged = ranged[skip..].to_vec();

    let m = PulledManifest {
        digest: digest(&img.digest),
        media_type: img.media_type.to_owned(),
        bytes: img.manifest.clone().into(),
    };
    r.put_manifest(&app, "v1", &m, None).await.unwrap();
    let head = r.head_manifest(&app, "v1").await.unwrap().unwrap();
    let pulled = r.get_manifest(&app, "v1").await.unwrap().unwrap();
    let tags = r
        .tags(&app)
        .await
        .unwrap()
        .unwrap()
        .iter()
        .map(|t| t.to_string())
        .collect();
    let in_catalog = r.catalog().await.unwrap().contains(&app);

    // The same layer into another repository of the same registry: mounted, not sent.
    let mounted = matches!(
        r.start_upload(&other, Some((&layer_digest, &app)))
            .await
            .unwrap(),
        UploadStart::Mounted
    );

    // Bytes that are not what the digest says: refused at the end, and nothing is kept.
    let fake = Digest::of(b"not these bytes");
    let UploadStart::Session(s) = r.start_upload(&app, None).await.unwrap() else {
        panic!("mounted")
    };
    let wrong = r
        .finish_upload(&app, &s, &fake, Some((b"these bytes".to_vec().into(), 11)))
        .await
        .unwrap_err();
    let wrong_digest_left_nothing = r.head_blob(&app, &fake).await.unwrap().is_none();

    r.delete_manifest(&app, &m.digest, None).await.unwrap();
    let gone = r.head_manifest(&app, "v1").await.unwrap().is_none();
    let after_tags = r
        .tags(&app)
        .await
        .unwrap()
        .map(|t| t.iter().map(|t| t.to_string()).collect());
    Seen {
        blob_size,
        small_blob,
        ranged,
        tag_digest: head.digest,
        manifest: pulled.bytes.to_vec(),
        tags,
        in_catalog,
        mounted,
        wrong_digest_kind: wrong.kind(),
        wrong_digest_left_nothing,
        after_delete: (after_tags, gone),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_and_layout_transports_keep_one_contract() {
    let reg = TestRegistry::start();
    let folder = tempfile::tempdir().unwrap();
    let http = Registry::new(Endpoint::anonymous("http", reg.url.parse().unwrap())).unwrap();
    let oci_url = format!("oci:{}", folder.path().display()).parse().unwrap();
    let layout = Registry::new(Endpoint::anonymous("layout", oci_url)).unwrap();

    let mut over_http = contract(&http).await;
    let mut over_layout = contract(&layout).await;

    let big = layer(7, 300 << 10);
    assert_eq!(over_http.blob_size, Some(big.blob.bytes.len() as u64));
    assert_eq!(
        over_http.ranged,
        big.blob.bytes[1000..],
        "a read from an offset"
    );
    assert_eq!(over_http.tags, ["v1"]);
    assert!(over_http.in_catalog && over_http.mounted && over_http.wrong_digest_left_nothing);
    assert_eq!(over_http.after_delete, (Some(vec![]), true));
    // Distribution answers a wrong digest with 400 DIGEST_INVALID; a layout hashes the file
    // itself. Both refuse; the kinds say who found out.
    assert_eq!(over_http.wrong_digest_kind, ErrorKind::Protocol);
    assert_eq!(over_layout.wrong_digest_kind, ErrorKind::Digest);
    over_layout.wrong_digest_kind = over_http.wrong_digest_kind;
    // Distribution keeps a repository whose last tag went (`"tags": null`); so does a layout.
    over_http.after_delete.0 = over_http.after_delete.0.filter(|t| !t.is_empty());
    over_layout.after_delete.0 = over_layout.after_delete.0.filter(|t| !t.is_empty());
    assert_eq!(over_http, over_layout, "the two transports disagree");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layout_failure_is_a_storage_error_naming_the_path() {
    let missing = Registry::new(Endpoint::anonymous(
        "usb",
        "oci:/nonexistent/ferry-contract".parse().unwrap(),
    ))
    .unwrap();
    let e = missing.start_upload(&repo("a/b"), None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Storage, "{e}");
    assert!(!e.is_retryable(), "a missing folder stays missing: {e}");
    let text = e.to_string();
    assert!(
        text.starts_with("usb: start upload: /nonexistent/ferry-contract: no such folder"),
        "{text}"
    );
}
