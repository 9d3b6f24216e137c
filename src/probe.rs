//! `ferry probe`: what a registry does, found out by asking it, beside what ferry has learnt
//! of it before (the upload habits in the state store). Read-only unless a repository to
//! write is given: then a small test image is pushed the way a copy pushes (so the upload
//! strategy is learnt and kept), mounted, tagged and deleted again.

use std::path::PathBuf;

use bytes::Bytes;
use serde::Serialize;
use sha2::Digest as _;

use crate::copy::{push_blob, BlobOutcome};
use crate::model::{Digest, RepoName, Tag, OCI_MANIFEST};
use crate::registry::{
    AuthFacts, Endpoint, PulledManifest, Registry, RegistryError, TagDelete, UploadStart,
};
use crate::state::StateStore;

/// The test layer: three parts of 1 MiB, enough for a chunked upload of several PATCHes.
const LAYER: usize = 3 << 20;
const PART: u64 = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Answer {
    Yes,
    No,
    Unknown,
}

/// One thing found out about the registry.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub what: &'static str,
    pub answer: Answer,
    pub detail: String,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub registry: String,
    pub url: String,
    pub findings: Vec<Finding>,
    pub auth: Option<AuthFacts>,
    /// What `--write` left behind on the registry, if anything.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub left: Vec<String>,
}

impl Report {
    fn add(&mut self, what: &'static str, answer: Answer, detail: impl Into<String>) {
        self.findings.push(Finding {
            what,
            answer,
            detail: detail.into(),
        });
    }

    /// `GET /v2/` failed: nothing else is worth asking.
    pub fn unreachable(&self) -> bool {
        self.findings
            .first()
            .is_some_and(|f| f.what == "api" && f.answer == Answer::No)
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "registry {} ({})", self.registry, self.url)?;
        for x in &self.findings {
            let a = match x.answer {
                Answer::Yes => "yes",
                Answer::No => "no",
                Answer::Unknown => "?",
            };
            writeln!(f, "  {:<10} {a:<4} {}", x.what, x.detail)?;
        }
        if let Some(a) = &self.auth {
            let token = a.token.as_ref().map_or(String::new(), |t| {
                let life = t
                    .expires_in
                    .map_or("no expires_in (read as 60 s)".into(), |s| {
                        format!("expires_in {s} s")
                    });
                format!(
                    "; token in `{}`, {life}{}",
                    t.field,
                    if t.oauth2 {
                        ", OAuth2 refresh exchange"
                    } else {
                        ""
                    }
                )
            });
            writeln!(f, "  {:<10} {:<4} {}{token}", "auth", "", a.scheme)?;
        }
        for l in &self.left {
            writeln!(f, "  left behind: {l}")?;
        }
        Ok(())
    }
}

/// Probe `registry` (configured as `key`). `write`: a repository ferry may push a test image
/// to; `repo`: one to ask read-only questions about (the referrers API).
pub async fn probe(
    registry: &Registry,
    key: &str,
    state: &StateStore,
    repo: Option<&RepoName>,
    write: Option<&RepoName>,
) -> Report {
    let mut r = Report {
        registry: key.to_owned(),
        url: registry.url().to_string(),
        findings: Vec::new(),
        auth: None,
        left: Vec::new(),
    };
    match registry.ping().await {
        Ok(s) if (200..300).contains(&s) => {
            r.add("api", Answer::Yes, format!("GET /v2/ answers {s}"))
        }
        Ok(s) => r.add("api", Answer::Unknown, format!("GET /v2/ answers {s}")),
        Err(e) => {
            r.add("api", Answer::No, e.to_string());
            return r;
        }
    }
    let before = state.habits(key, registry.url().as_str());
    if let Some(w) = write {
        write_probe(&mut r, registry, key, state, w).await;
    }
    // After the write: an empty registry's empty catalog looks like a refusal.
    match registry.catalog().await {
        Ok(repos) => r.add(
            "catalog",
            Answer::Yes,
            format!(
                "lists {} repositories: globs in `repositories` work",
                repos.len()
            ),
        ),
        Err(e) => r.add("catalog", Answer::No, e.to_string()),
    }
    match repo.or(write) {
        Some(repo) => referrers(&mut r, registry, repo).await,
        None => r.add(
            "referrers",
            Answer::Unknown,
            "give --repo (or --write) to ask",
        ),
    }
    upload(
        &mut r,
        registry,
        state,
        key,
        before.is_some(),
        write.is_some(),
    );
    r.auth = registry.auth_facts().await;
    r
}

async fn referrers(r: &mut Report, registry: &Registry, repo: &RepoName) {
    let nothing = Digest::of(b"ferry probe: a digest nothing refers to");
    match registry.referrers(repo, &nothing).await {
        Err(e) => r.add("referrers", Answer::Unknown, e.to_string()),
        Ok(_) => match registry.referrers_api() {
            Some(true) => r.add("referrers", Answer::Yes, "the OCI 1.1 referrers API"),
            Some(false) => r.add(
                "referrers",
                Answer::No,
                "no referrers API: signatures are found by their `sha256-<hex>` tags",
            ),
            None => r.add(
                "referrers",
                Answer::Unknown,
                format!("{repo} does not exist there"),
            ),
        },
    }
}

fn upload(
    r: &mut Report,
    registry: &Registry,
    state: &StateStore,
    key: &str,
    known: bool,
    wrote: bool,
) {
    if let Some(s) = registry.upload_setting() {
        r.add("upload", Answer::Yes, format!("{s} (set in the config)"));
        return;
    }
    let Some(h) = state.habits(key, registry.url().as_str()) else {
        let detail = if wrote {
            "chunked: took chunks of 1 MiB as they came".to_owned()
        } else {
            "not learnt yet: chunks are tried first (`--write REPO` finds out)".to_owned()
        };
        r.add(
            "upload",
            if wrote { Answer::Yes } else { Answer::Unknown },
            detail,
        );
        return;
    };
    let mut d = h.upload.to_string();
    if let Some(m) = h.min_part {
        d += &format!(", parts of at least {}", crate::model::ByteSize(m));
    }
    if let Some(m) = h.max_body {
        d += &format!(", request bodies of at most {}", crate::model::ByteSize(m));
    }
    let when = chrono::DateTime::from_timestamp_millis(h.learnt_ms as i64)
        .map_or(String::new(), |t| {
            t.format(" (learnt %Y-%m-%d %H:%M UTC)").to_string()
        });
    let fresh = if known { "" } else { ", learnt now" };
    r.add("upload", Answer::Yes, format!("{d}{when}{fresh}"));
}

/// Bytes nobody else has: a SHA-256 chain seeded by the time and the process.
fn noise(len: usize) -> Vec<u8> {
    let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
    let mut out = Vec::with_capacity(len + 32);
    let mut block = sha2::Sha256::digest(seed.as_bytes());
    while out.len() < len {
        out.extend_from_slice(&block);
        block = sha2::Sha256::digest(block);
    }
    out.truncate(len);
    out
}

/// A folder with the test blobs, read as an OCI layout source; removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn write_probe(
    r: &mut Report,
    target: &Registry,
    key: &str,
    state: &StateStore,
    repo: &RepoName,
) {
    let layer = noise(LAYER);
    let config = b"{}".to_vec();
    let (layer_d, config_d) = (Digest::of(&layer), Digest::of(&config));
    let dir = std::env::temp_dir().join(format!(
        "ferry-probe-{}-{}",
        std::process::id(),
        &layer_d.hex()[..8]
    ));
    let scratch = Scratch(dir);
    let src: RepoName = "probe".parse().expect("a valid name");
    let blobs = scratch.0.join("probe/blobs/sha256");
    let wrote = std::fs::create_dir_all(&blobs)
        .and_then(|()| std::fs::write(blobs.join(layer_d.hex()), &layer))
        .and_then(|()| std::fs::write(blobs.join(config_d.hex()), &config));
    let url = url::Url::parse(&format!("oci:{}", scratch.0.display()));
    let source = match (
        wrote,
        url.map(|u| Registry::new(Endpoint::anonymous("probe", u))),
    ) {
        (Ok(()), Ok(Ok(s))) => s,
        _ => {
            r.add(
                "write",
                Answer::Unknown,
                format!("could not make test blobs in {}", scratch.0.display()),
            );
            return;
        }
    };
    for (d, len) in [(&config_d, config.len()), (&layer_d, layer.len())] {
        match push_blob(&source, &src, target, key, repo, d, len as u64, PART, state).await {
            Ok(BlobOutcome::Uploaded { .. } | BlobOutcome::AlreadyThere | BlobOutcome::Mounted) => {
            }
            Err(e) => {
                r.add(
                    "write",
                    Answer::No,
                    format!(
                        "pushing a {} blob to {repo}: {e}",
                        crate::model::ByteSize(len as u64)
                    ),
                );
                return;
            }
        }
    }
    r.add(
        "write",
        Answer::Yes,
        format!(
            "pushed a {} test blob to {repo}",
            crate::model::ByteSize(LAYER as u64)
        ),
    );
    match target.start_upload(repo, Some((&layer_d, repo))).await {
        Ok(UploadStart::Mounted) => r.add(
            "mount",
            Answer::Yes,
            "answers a mount (from the same repository) with 201",
        ),
        Ok(UploadStart::Session(s)) => {
            target.cancel_upload(repo, &s.location).await;
            r.add(
                "mount",
                Answer::No,
                "answers a mount with an upload session: blobs are sent, not mounted",
            );
        }
        Err(e) => r.add("mount", Answer::Unknown, e.to_string()),
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.ferry.probe.v1",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config_d.as_str(), "size": config.len()},
        "layers": [{"mediaType": "application/octet-stream", "digest": layer_d.as_str(), "size": layer.len()}],
    });
    let bytes = Bytes::from(serde_json::to_vec(&manifest).expect("JSON serializes"));
    let m = PulledManifest {
        digest: Digest::of(&bytes),
        media_type: OCI_MANIFEST.to_owned(),
        bytes,
    };
    let tag: Tag = format!("ferry-probe-{}", &m.digest.hex()[..12])
        .parse()
        .expect("a valid tag");
    if let Err(e) = target.put_manifest(repo, tag.as_str(), &m, None).await {
        r.add(
            "delete",
            Answer::Unknown,
            format!("could not tag a test manifest: {e}"),
        );
        return;
    }
    let left = format!("{repo}:{tag} ({})", m.digest);
    match deletes(target, repo, &tag, &m.digest).await {
        Ok((answer, detail)) => {
            if answer == Answer::No {
                r.left.push(left);
            }
            r.add("delete", answer, detail);
        }
        Err(e) => {
            r.left.push(left);
            r.add("delete", Answer::Unknown, e.to_string());
        }
    }
}

/// How the registry deletes: by tag, by digest only, or not at all.
async fn deletes(
    target: &Registry,
    repo: &RepoName,
    tag: &Tag,
    digest: &Digest,
) -> Result<(Answer, String), RegistryError> {
    if target.delete_tag(repo, tag, None).await? == TagDelete::Deleted {
        if target
            .head_target_manifest(repo, tag.as_str())
            .await?
            .is_some()
        {
            return Ok((
                Answer::Unknown,
                "answered a tag delete with success, but the tag is still there".into(),
            ));
        }
        return Ok((Answer::Yes, "deletes single tags".into()));
    }
    match target.delete_manifest(repo, digest, None).await {
        Ok(()) => Ok((Answer::Yes, "deletes by digest only: a delete takes every tag of its manifest, so ferry keeps tags whose manifest a kept tag shares".into())),
        Err(e @ RegistryError::NoDeletes { .. }) => Ok((Answer::No, e.to_string())),
        Err(e) => Err(e),
    }
}

/// `ferry validate --online` for one registry: what its first requests say, in one line.
pub struct Reached {
    pub line: String,
    /// Reachable, with the credentials accepted, and a catalog where a policy needs one.
    pub ok: bool,
}

/// Ask `registry` once: `GET /v2/` (with its credentials, if any) and its catalog.
/// `needs_catalog`: the policies that list its repositories by glob.
pub async fn reached(
    registry: &Registry,
    key: &str,
    credentials: bool,
    needs_catalog: &[&str],
) -> Reached {
    let who = format!("registry {key} ({})", registry.url());
    let access = match registry.ping().await {
        Ok(s) if (200..300).contains(&s) && credentials => "reachable, credentials accepted",
        Ok(s) if (200..300).contains(&s) => "reachable, anonymous access",
        Ok(s @ (401 | 403)) => {
            let why = if credentials {
                format!("credentials refused (GET /v2/ answers {s}): check username and password")
            } else {
                format!("needs credentials (GET /v2/ answers {s}): set username and password_env or password_file")
            };
            return Reached {
                line: format!("{who}: problem: {why}"),
                ok: false,
            };
        }
        Ok(s) => {
            return Reached {
                line: format!("{who}: problem: GET /v2/ answers {s}, not a registry API"),
                ok: false,
            }
        }
        Err(e) => {
            return Reached {
                line: format!("{who}: problem: {e}"),
                ok: false,
            }
        }
    };
    match registry.catalog().await {
        Ok(repos) => Reached {
            line: format!(
                "{who}: ok: {access}, catalog lists {} repositories",
                repos.len()
            ),
            ok: true,
        },
        Err(_) if needs_catalog.is_empty() => Reached {
            line: format!(
                "{who}: ok: {access}, no catalog (policies name its repositories exactly)"
            ),
            ok: true,
        },
        Err(e) => Reached {
            line: format!(
                "{who}: problem: {access}, but policy {} lists repositories by glob and {e}",
                needs_catalog.join(", ")
            ),
            ok: false,
        },
    }
}
