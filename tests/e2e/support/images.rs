//! Deterministic, realistic test images pushed through the registry API: gzip'd tar layers,
//! configs with matching diff_ids, OCI and Docker v2 manifests, OCI indexes and Docker
//! manifest lists, and cosign-style signature tags. The same seed gives the same digests.
//! Shared by the tests and by `examples/corpus.rs` (demo and benchmark).

#![allow(dead_code)]

use std::io::Write;

use serde_json::json;
use sha2::{Digest as _, Sha256};

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// splitmix64: tiny, fast and deterministic, which is all test data needs.
pub struct Rng(u64);
impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Oci,
    Docker,
}

impl Format {
    pub fn manifest(self) -> &'static str {
        match self {
            Format::Oci => "application/vnd.oci.image.manifest.v1+json",
            Format::Docker => "application/vnd.docker.distribution.manifest.v2+json",
        }
    }
    pub fn index(self) -> &'static str {
        match self {
            Format::Oci => "application/vnd.oci.image.index.v1+json",
            Format::Docker => "application/vnd.docker.distribution.manifest.list.v2+json",
        }
    }
    pub fn config(self) -> &'static str {
        match self {
            Format::Oci => "application/vnd.oci.image.config.v1+json",
            Format::Docker => "application/vnd.docker.container.image.v1+json",
        }
    }
    fn layer(self) -> &'static str {
        match self {
            Format::Oci => "application/vnd.oci.image.layer.v1.tar+gzip",
            Format::Docker => "application/vnd.docker.image.rootfs.diff.tar.gzip",
        }
    }
}

#[derive(Clone)]
pub struct Blob {
    pub bytes: Vec<u8>,
    pub digest: String,
}

impl Blob {
    pub fn new(bytes: Vec<u8>) -> Self {
        Blob {
            digest: sha256(&bytes),
            bytes,
        }
    }
}

#[derive(Clone)]
pub struct Layer {
    pub blob: Blob,
    pub diff_id: String,
}

/// A gzip'd tar with one file of `size` random bytes and a small text file. Random data does
/// not compress, so the blob is about `size` bytes; big layers are stored, not deflated.
pub fn layer(seed: u64, size: usize) -> Layer {
    let mut rng = Rng::new(seed);
    let mut data = vec![0u8; size];
    rng.fill(&mut data);
    let mut tar = tar::Builder::new(Vec::with_capacity(size + 4096));
    let mut add = |path: &str, content: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        tar.append_data(&mut h, path, content).unwrap();
    };
    add(&format!("opt/data/blob-{seed}.bin"), &data);
    add(
        "etc/ferry-test.txt",
        format!("layer seed {seed}\n").repeat(16).as_bytes(),
    );
    let tar = tar.into_inner().unwrap();
    let level = if size > (32 << 20) {
        flate2::Compression::none()
    } else {
        flate2::Compression::fast()
    };
    let mut gz = flate2::write::GzEncoder::new(Vec::with_capacity(tar.len() + 1024), level);
    gz.write_all(&tar).unwrap();
    Layer {
        diff_id: sha256(&tar),
        blob: Blob::new(gz.finish().unwrap()),
    }
}

#[derive(Clone)]
pub struct Image {
    pub media_type: &'static str,
    pub manifest: Vec<u8>,
    pub digest: String,
    pub blobs: Vec<Blob>,
    pub platform: (String, String, Option<String>),
}

fn descriptor(media_type: &str, b: &Blob) -> serde_json::Value {
    json!({ "mediaType": media_type, "digest": b.digest, "size": b.bytes.len() })
}

/// An image manifest over `layers`. Pretty-printed on purpose: any re-serialisation by a copy
/// tool would change the bytes and the digest, and the tests would see it.
pub fn image(
    format: Format,
    layers: &[&Layer],
    arch: &str,
    variant: Option<&str>,
    note: &str,
) -> Image {
    image_at(format, layers, arch, variant, note, "2026-01-01T00:00:00Z")
}

/// The annotation OCI test images carry (Docker v2 manifests have no annotations).
pub const SOURCE_ANNOTATION: (&str, &str) = (
    "org.opencontainers.image.source",
    "https://git.example/ferry-test",
);

/// An image whose config says it was built at `created` (RFC 3339).
pub fn image_at(
    format: Format,
    layers: &[&Layer],
    arch: &str,
    variant: Option<&str>,
    note: &str,
    created: &str,
) -> Image {
    let config = json!({
        "created": created,
        "architecture": arch,
        "os": "linux",
        "variant": variant,
        "config": { "Env": ["PATH=/usr/bin:/bin", format!("FERRY_TEST={note}")], "Cmd": ["/bin/sh"] },
        "rootfs": { "type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>() },
        "history": layers.iter().map(|_| json!({ "created_by": "ferry test generator" })).collect::<Vec<_>>(),
    });
    let config = Blob::new(serde_json::to_vec(&config).unwrap());
    let mut manifest = json!({
        "schemaVersion": 2,
        "mediaType": format.manifest(),
        "config": descriptor(format.config(), &config),
        "layers": layers.iter().map(|l| descriptor(format.layer(), &l.blob)).collect::<Vec<_>>(),
    });
    if format == Format::Oci {
        manifest["annotations"] = json!({ SOURCE_ANNOTATION.0: SOURCE_ANNOTATION.1 });
    }
    let manifest = serde_json::to_vec_pretty(&manifest).unwrap();
    let mut blobs = vec![config];
    blobs.extend(layers.iter().map(|l| l.blob.clone()));
    Image {
        media_type: format.manifest(),
        digest: sha256(&manifest),
        manifest,
        blobs,
        platform: ("linux".into(), arch.into(), variant.map(Into::into)),
    }
}

/// An OCI index or Docker manifest list over `children`.
pub fn index(format: Format, children: &[Image]) -> (Vec<u8>, &'static str, String) {
    let manifests: Vec<_> = children
        .iter()
        .map(|c| {
            let mut platform = json!({ "os": c.platform.0, "architecture": c.platform.1 });
            if let Some(v) = &c.platform.2 {
                platform["variant"] = json!(v);
            }
            json!({ "mediaType": c.media_type, "digest": c.digest, "size": c.manifest.len(), "platform": platform })
        })
        .collect();
    let body = serde_json::to_vec_pretty(
        &json!({ "schemaVersion": 2, "mediaType": format.index(), "manifests": manifests }),
    )
    .unwrap();
    let digest = sha256(&body);
    (body, format.index(), digest)
}

/// A cosign-style signature image for `subject`, tagged `sha256-<hex>.sig` by the caller.
pub fn signature(subject: &str) -> Image {
    let payload = json!({ "critical": { "identity": { "docker-reference": "ferry.test/app" }, "image": { "docker-manifest-digest": subject }, "type": "cosign container image signature" } });
    let payload = Blob::new(serde_json::to_vec(&payload).unwrap());
    let config = Blob::new(
        b"{\"architecture\":\"\",\"os\":\"\",\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}"
            .to_vec(),
    );
    let mut layer = descriptor("application/vnd.dev.cosign.simplesigning.v1+json", &payload);
    layer["annotations"] =
        json!({ "dev.cosignproject.cosign/signature": "MEUCIQDferrytestsignature" });
    let manifest = json!({ "schemaVersion": 2, "mediaType": Format::Oci.manifest(), "config": descriptor(Format::Oci.config(), &config), "layers": [layer] });
    let manifest = serde_json::to_vec_pretty(&manifest).unwrap();
    Image {
        media_type: Format::Oci.manifest(),
        digest: sha256(&manifest),
        manifest,
        blobs: vec![config, payload],
        platform: Default::default(),
    }
}

pub fn signature_tag(subject: &str) -> String {
    format!("{}.sig", subject.replace(':', "-"))
}

/// A minimal, anonymous pushing client: HEAD, then a monolithic upload (POST, PUT ?digest=).
pub struct Pusher {
    http: reqwest::Client,
    base: String,
    pub requests: u64,
}

impl Pusher {
    pub fn new(base: &str) -> Self {
        Pusher {
            http: super::http_client().build().unwrap(),
            base: base.trim_end_matches('/').to_owned(),
            requests: 0,
        }
    }

    pub async fn blob(&mut self, repo: &str, b: &Blob) {
        self.requests += 1;
        let head = self
            .http
            .head(format!("{}/v2/{repo}/blobs/{}", self.base, b.digest))
            .send()
            .await
            .unwrap();
        if head.status().is_success() {
            return;
        }
        self.requests += 2;
        let rsp = self
            .http
            .post(format!("{}/v2/{repo}/blobs/uploads/", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(rsp.status(), 202, "POST upload");
        let loc = rsp.headers()["location"].to_str().unwrap().to_owned();
        let mut url = reqwest::Url::parse(&self.base).unwrap().join(&loc).unwrap();
        url.query_pairs_mut().append_pair("digest", &b.digest);
        let rsp = self
            .http
            .put(url)
            .header("content-type", "application/octet-stream")
            .body(b.bytes.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(rsp.status(), 201, "PUT blob {}", b.digest);
    }

    pub async fn manifest(&mut self, repo: &str, reference: &str, media_type: &str, body: &[u8]) {
        self.requests += 1;
        let rsp = self
            .http
            .put(format!("{}/v2/{repo}/manifests/{reference}", self.base))
            .header("content-type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(
            rsp.status(),
            201,
            "PUT manifest {repo}:{reference}: {}",
            rsp.text().await.unwrap_or_default()
        );
    }

    pub async fn image(&mut self, repo: &str, tag: &str, img: &Image) {
        for b in &img.blobs {
            self.blob(repo, b).await;
        }
        self.manifest(repo, tag, img.media_type, &img.manifest)
            .await;
    }

    /// Children by digest first, then the index under its tag. Returns the index digest.
    pub async fn multi_arch(
        &mut self,
        repo: &str,
        tag: &str,
        format: Format,
        children: &[Image],
    ) -> String {
        for c in children {
            self.image(repo, &c.digest.clone(), c).await;
        }
        let (body, mt, digest) = index(format, children);
        self.manifest(repo, tag, mt, &body).await;
        digest
    }
}

/// The shape of a generated corpus.
#[derive(Clone, Debug)]
pub struct CorpusSpec {
    pub prefix: String,
    pub repos: usize,
    pub tags: usize,
    pub base_size: usize,
    pub repo_layer: usize,
    pub app_layer: (usize, usize),
    /// Every n-th repository is multi-arch (0: none).
    pub index_every: usize,
    pub sign: bool,
    pub seed: u64,
}

impl Default for CorpusSpec {
    fn default() -> Self {
        CorpusSpec {
            prefix: "app".into(),
            repos: 3,
            tags: 2,
            base_size: 512 << 10,
            repo_layer: 128 << 10,
            app_layer: (16 << 10, 96 << 10),
            index_every: 3,
            sign: true,
            seed: 1,
        }
    }
}

/// What was pushed: every (repository, tag, digest), and the bytes of distinct blobs.
pub struct Corpus {
    pub tags: Vec<(String, String, String)>,
    pub bytes: u64,
}

/// Push a corpus: one base layer per architecture shared by every repository, one layer per
/// repository, one per tag. Repositories alternate OCI and Docker formats; every
/// `index_every`-th is multi-arch (amd64, arm64, arm/v7); tag `latest` follows the newest;
/// with `sign`, the newest image of each repository gets a `sha256-<hex>.sig` tag.
pub async fn push_corpus(url: &str, spec: &CorpusSpec) -> Corpus {
    let mut p = Pusher::new(url);
    let mut tags = Vec::new();
    let mut bytes = 0u64;
    let mut seen = std::collections::HashSet::new();
    let arches: [(&str, Option<&str>); 3] = [("amd64", None), ("arm64", None), ("arm", Some("v7"))];
    let bases: Vec<Layer> = (0..3)
        .map(|i| layer(spec.seed * 1000 + i, spec.base_size))
        .collect();
    let mut rng = Rng::new(spec.seed);
    for r in 0..spec.repos {
        let repo = format!("{}-{r:03}", spec.prefix);
        let format = if r % 2 == 0 {
            Format::Oci
        } else {
            Format::Docker
        };
        let multi = spec.index_every > 0 && r % spec.index_every == spec.index_every - 1;
        let n_arch = if multi { 3 } else { 1 };
        let repo_layers: Vec<Layer> = (0..n_arch)
            .map(|a| {
                layer(
                    spec.seed * 1_000_000 + r as u64 * 100 + a as u64,
                    spec.repo_layer,
                )
            })
            .collect();
        let mut newest = String::new();
        let mut newest_body: (Vec<u8>, &str) = (Vec::new(), "");
        for t in 0..spec.tags {
            let tag = format!("1.{t}.0");
            let children: Vec<Image> = (0..n_arch)
                .map(|a| {
                    let size = rng.range(spec.app_layer.0 as u64, spec.app_layer.1 as u64) as usize;
                    let app = layer(
                        spec.seed * 1_000_000_000 + r as u64 * 10_000 + t as u64 * 10 + a as u64,
                        size,
                    );
                    let (arch, variant) = arches[a];
                    image(
                        format,
                        &[&bases[a], &repo_layers[a], &app],
                        arch,
                        variant,
                        &format!("{repo}:{tag}"),
                    )
                })
                .collect();
            for b in children.iter().flat_map(|c| &c.blobs) {
                if seen.insert(b.digest.clone()) {
                    bytes += b.bytes.len() as u64;
                }
            }
            let digest = if multi {
                let (body, mt, _) = index(format, &children);
                newest_body = (body, mt);
                p.multi_arch(&repo, &tag, format, &children).await
            } else {
                p.image(&repo, &tag, &children[0]).await;
                newest_body = (children[0].manifest.clone(), children[0].media_type);
                children[0].digest.clone()
            };
            tags.push((repo.clone(), tag, digest.clone()));
            newest = digest;
        }
        if spec.tags > 0 {
            p.manifest(&repo, "latest", newest_body.1, &newest_body.0)
                .await;
            tags.push((repo.clone(), "latest".into(), newest.clone()));
        }
        if spec.sign && !newest.is_empty() {
            let sig = signature(&newest);
            let tag = signature_tag(&newest);
            p.image(&repo, &tag, &sig).await;
            tags.push((repo.clone(), tag, sig.digest.clone()));
        }
    }
    Corpus { tags, bytes }
}

/// GET a manifest's exact bytes (anonymous).
pub async fn fetch_manifest(url: &str, repo: &str, reference: &str, accept: &str) -> Vec<u8> {
    let rsp = super::http_client().build().unwrap()
        .get(format!("{url}/v2/{repo}/manifests/{reference}"))
        .header("accept", format!("{accept}, application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json"))
        .send()
        .await
        .unwrap();
    assert!(
        rsp.status().is_success(),
        "GET manifest {repo}:{reference}: {}",
        rsp.status()
    );
    rsp.bytes().await.unwrap().to_vec()
}
