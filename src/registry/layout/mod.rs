//! A "registry" that is a folder of OCI image layouts (`url = "oci:/media/usb/ferry"`), for
//! air-gapped sites: each repository is a layout at `<folder>/<repository>/` (`oci-layout`,
//! `index.json`, `blobs/sha256/…`), each tag an `index.json` entry annotated
//! `org.opencontainers.image.ref.name`, which is what `skopeo … oci:<folder>/<repository>:<tag>`
//! and regclient's `ocidir://` read.
//!
//! Crash safety comes from the order of writes: a blob is written under a temporary name,
//! checked against its digest, fsynced and renamed into place; `index.json` is replaced the
//! same way, and only after every blob it reaches is in place. A crash leaves at worst a
//! temporary file (removed by the next upload of that blob) or blobs nothing refers to yet.

use std::collections::HashMap;
use std::io::{Read, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{json, Value};

mod files;
mod gc;
mod index;
mod upload;

pub(super) use files::Modes;
use files::{create, open_regular};
use index::{read_index, IndexCache};

use super::meta::{BlobStream, ManifestHead, PulledManifest};
use super::RegistryError;
use crate::model::{manifest_media_type, Digest, RepoName, Tag, MAX_MANIFEST_BYTES, OCI_INDEX};

const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// `index.json` is read whole: a layout with 100,000 tags is about 30 MiB of it.
const MAX_INDEX_BYTES: u64 = 64 << 20;
/// Folders walked below the root to find repositories (`a/b/c` is three deep).
const MAX_DEPTH: usize = 8;

pub(super) struct Layout {
    root: PathBuf,
    /// One writer of each repository's `index.json` at a time.
    locks: std::sync::Mutex<HashMap<RepoName, Arc<tokio::sync::Mutex<()>>>>,
    indexes: IndexCache,
    modes: Modes,
}

type Io<T> = Result<T, LayoutError>;

/// What went wrong in a layout folder. Kept apart from HTTP failures: a full disk or a
/// permission problem is a storage error naming the path, and its io kind decides whether a
/// retry can help.
#[derive(Debug)]
pub(super) enum LayoutError {
    Io {
        path: PathBuf,
        kind: std::io::ErrorKind,
        detail: String,
    },
    Digest {
        what: &'static str,
        expected: Digest,
        actual: Digest,
    },
}

impl LayoutError {
    /// Something under `path` is not what a layout holds (bad JSON, too large, wrong place).
    fn invalid(path: &Path, detail: impl std::fmt::Display) -> Self {
        LayoutError::Io {
            path: path.to_owned(),
            kind: std::io::ErrorKind::InvalidData,
            detail: detail.to_string(),
        }
    }

    pub(super) fn into_registry(self, registry: &str, op: &'static str) -> RegistryError {
        match self {
            LayoutError::Io { path, kind, detail } => RegistryError::Storage {
                registry: registry.to_owned(),
                op,
                path: path.display().to_string(),
                kind,
                detail,
            },
            LayoutError::Digest {
                what,
                expected,
                actual,
            } => RegistryError::DigestMismatch {
                registry: registry.to_owned(),
                what,
                expected,
                actual,
            },
        }
    }
}

fn io(what: &Path) -> impl Fn(std::io::Error) -> LayoutError + '_ {
    move |e| LayoutError::Io {
        path: what.to_owned(),
        kind: e.kind(),
        detail: e.to_string(),
    }
}

/// Write `bytes` to `path` so a crash leaves the old file or the new one, never a mix.
fn replace(path: &Path, bytes: &[u8], mode: u32) -> Io<()> {
    let name = path
        .file_name()
        .map_or_else(Default::default, |n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(".{name}.tmp-{:x}", rand_id()));
    let mut f = create(&tmp, mode).map_err(io(&tmp))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))?;
    sync_dir(path)
}

fn sync_dir(path: &Path) -> Io<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

/// Blocking file work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Io<T> + Send + 'static) -> Io<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        // A bug in the closure: let it crash the process like any other panic.
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(LayoutError::Io {
            path: PathBuf::new(),
            kind: std::io::ErrorKind::Interrupted,
            detail: format!("the runtime is stopping: {e}"),
        }),
    }
}

impl Layout {
    pub(super) fn new(root: PathBuf, modes: Modes) -> Self {
        Layout {
            root,
            locks: std::sync::Mutex::default(),
            indexes: IndexCache::default(),
            modes,
        }
    }

    fn modes(&self) -> Modes {
        self.modes
    }

    fn repo(&self, repo: &RepoName) -> PathBuf {
        self.root.join(repo.as_str())
    }

    /// A repository written here must not land inside another's layout files: `a/blobs`
    /// would put repository `a/blobs/sha256`'s folders among `a`'s blobs, where a collection
    /// of `a` would treat them as garbage (and a digest-named file of theirs as `a`'s).
    fn placeable(&self, repo: &RepoName) -> Io<()> {
        match repo.as_str().split('/').find(|p| matches!(*p, "blobs" | "index.json" | "oci-layout")) {
            None => Ok(()),
            Some(part) => Err(LayoutError::invalid(
                &self.repo(repo),
                format!("a repository path part named `{part}` would sit inside another repository's layout files; rename it with target_repository"),
            )),
        }
    }

    fn blob_path(&self, repo: &RepoName, digest: &Digest) -> PathBuf {
        self.repo(repo).join("blobs/sha256").join(digest.hex())
    }

    fn lock(&self, repo: &RepoName) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .expect("lock poisoned")
            .entry(repo.clone())
            .or_default()
            .clone()
    }

    /// The repository's `index.json`; `None` when it is not a layout (yet).
    fn index(dir: &Path) -> Io<Option<Value>> {
        let path = dir.join("index.json");
        let f = match open_regular(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
        };
        let mut buf = Vec::new();
        f.take(MAX_INDEX_BYTES + 1)
            .read_to_end(&mut buf)
            .map_err(io(&path))?;
        if buf.len() as u64 > MAX_INDEX_BYTES {
            return Err(LayoutError::invalid(
                &path,
                format!("larger than {} MiB", MAX_INDEX_BYTES >> 20),
            ));
        }
        let v: Value = serde_json::from_slice(&buf)
            .map_err(|e| LayoutError::invalid(&path, format!("not an OCI index: {e}")))?;
        if !v["manifests"].is_array() {
            return Err(LayoutError::invalid(&path, "no manifests list"));
        }
        Ok(Some(v))
    }

    /// Create the layout's skeleton when missing. The folder itself must exist (an unmounted
    /// disk must not turn into a folder on the system disk), and a repository folder that
    /// holds something other than a layout is left alone.
    fn init(root: &Path, dir: &Path, modes: Modes) -> Io<()> {
        if !root.is_dir() {
            return Err(LayoutError::Io {
                path: root.to_owned(),
                kind: std::io::ErrorKind::NotFound,
                detail: "no such folder (is the disk mounted?)".into(),
            });
        }
        if !dir.join("oci-layout").is_file()
            && std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some())
        {
            return Err(LayoutError::invalid(
                dir,
                "not an OCI layout (no oci-layout file) and not empty; not writing into it",
            ));
        }
        std::fs::create_dir_all(dir.join("blobs/sha256")).map_err(io(dir))?;
        {
            use std::os::unix::fs::PermissionsExt as _;
            for d in [dir.to_owned(), dir.join("blobs"), dir.join("blobs/sha256")] {
                std::fs::set_permissions(&d, std::fs::Permissions::from_mode(modes.dir))
                    .map_err(io(&d))?;
            }
        }
        let marker = dir.join("oci-layout");
        if !marker.exists() {
            replace(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#, modes.file)?;
        }
        if !dir.join("index.json").exists() {
            replace(
                &dir.join("index.json"),
                json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [] })
                    .to_string()
                    .as_bytes(),
                modes.file,
            )?;
        }
        Ok(())
    }

    pub(super) async fn tags(&self, repo: &RepoName) -> Io<Option<Vec<Tag>>> {
        let (dir, cache) = (self.repo(repo), self.indexes.clone());
        blocking(move || {
            let Some(index) = read_index(&cache, &dir)? else {
                return Ok(None);
            };
            let mut tags: Vec<Tag> = index["manifests"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| m["annotations"][REF_NAME].as_str()?.parse().ok())
                .collect();
            tags.sort();
            tags.dedup();
            Ok(Some(tags))
        })
        .await
    }

    pub(super) async fn catalog(&self, limit: usize) -> Io<Vec<RepoName>> {
        let root = self.root.clone();
        blocking(move || {
            let mut out = Vec::new();
            let mut dirs = vec![(root.clone(), 0)];
            while let Some((dir, depth)) = dirs.pop() {
                if dir.join("oci-layout").is_file() {
                    let rel = dir
                        .strip_prefix(&root)
                        .unwrap_or(&dir)
                        .to_string_lossy()
                        .into_owned();
                    if let Ok(name) = rel.parse::<RepoName>() {
                        out.push(name);
                    }
                }
                if depth >= MAX_DEPTH {
                    continue;
                }
                for e in std::fs::read_dir(&dir).map_err(io(&dir))?.flatten() {
                    // Not into a layout's own blobs, and never through symlinks (loops).
                    if e.file_type().is_ok_and(|t| t.is_dir()) && e.file_name() != "blobs" {
                        dirs.push((e.path(), depth + 1));
                    }
                }
                if out.len() > limit {
                    return Err(LayoutError::invalid(
                        &root,
                        format!("more than {limit} repositories"),
                    ));
                }
            }
            out.sort();
            Ok(out)
        })
        .await
    }

    /// The index entry of `reference` (a tag or a digest), or a bare blob for a digest.
    async fn resolve(
        &self,
        repo: &RepoName,
        reference: &str,
    ) -> Io<Option<(Digest, Option<String>)>> {
        let dir = self.repo(repo);
        let reference = reference.to_owned();
        let digest_ref = reference.parse::<Digest>().ok();
        let blob = digest_ref.as_ref().map(|d| self.blob_path(repo, d));
        let cache = self.indexes.clone();
        blocking(move || {
            let Some(index) = read_index(&cache, &dir)? else {
                return Ok(None);
            };
            let found = index["manifests"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|m| match &digest_ref {
                    Some(d) => m["digest"] == d.as_str(),
                    None => m["annotations"][REF_NAME] == reference.as_str(),
                });
            match (found, digest_ref, blob) {
                (Some(m), _, _) => {
                    let d: Digest = m["digest"]
                        .as_str()
                        .unwrap_or("")
                        .parse()
                        .map_err(|e| LayoutError::invalid(&dir, e))?;
                    Ok(Some((d, m["mediaType"].as_str().map(str::to_owned))))
                }
                (None, Some(d), Some(b)) if b.is_file() => Ok(Some((d, None))),
                _ => Ok(None),
            }
        })
        .await
    }

    pub(super) async fn head_manifest(
        &self,
        repo: &RepoName,
        reference: &str,
    ) -> Io<Option<ManifestHead>> {
        match self.resolve(repo, reference).await? {
            Some((digest, Some(media_type))) => Ok(Some(ManifestHead {
                digest,
                media_type: Some(media_type),
            })),
            Some((digest, None)) => {
                Ok(self
                    .get_manifest(repo, digest.as_str())
                    .await?
                    .map(|m| ManifestHead {
                        digest,
                        media_type: Some(m.media_type),
                    }))
            }
            None => Ok(None),
        }
    }

    pub(super) async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &str,
    ) -> Io<Option<PulledManifest>> {
        let Some((digest, media_type)) = self.resolve(repo, reference).await? else {
            return Ok(None);
        };
        let bytes = self
            .get_small_blob(repo, &digest, MAX_MANIFEST_BYTES)
            .await?;
        let media_type = manifest_media_type(&bytes, media_type.as_deref())
            .map_err(|e| LayoutError::invalid(&self.blob_path(repo, &digest), e))?;
        Ok(Some(PulledManifest {
            digest,
            media_type,
            bytes,
        }))
    }

    pub(super) async fn get_small_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        limit: usize,
    ) -> Io<Bytes> {
        let path = self.blob_path(repo, digest);
        let want = digest.clone();
        blocking(move || {
            let mut buf = Vec::new();
            open_regular(&path)
                .and_then(|f| f.take(limit as u64 + 1).read_to_end(&mut buf))
                .map_err(io(&path))?;
            if buf.len() > limit {
                return Err(LayoutError::invalid(
                    &path,
                    format!("larger than {limit} bytes"),
                ));
            }
            let got = Digest::of(&buf);
            if got != want {
                return Err(LayoutError::Digest {
                    what: "blob",
                    expected: want,
                    actual: got,
                });
            }
            Ok(Bytes::from(buf))
        })
        .await
    }

    pub(super) async fn head_blob(&self, repo: &RepoName, digest: &Digest) -> Io<Option<u64>> {
        // Not followed through a link: only what a copy placed here counts as present.
        Ok(tokio::fs::symlink_metadata(self.blob_path(repo, digest))
            .await
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len()))
    }

    pub(super) async fn get_blob(
        &self,
        registry: &str,
        repo: &RepoName,
        digest: &Digest,
        offset: u64,
    ) -> Io<BlobStream> {
        let path = self.blob_path(repo, digest);
        let f = blocking({
            let path = path.clone();
            move || open_regular(&path).map_err(io(&path))
        })
        .await?;
        let mut f = tokio::fs::File::from_std(f);
        tokio::io::AsyncSeekExt::seek(&mut f, SeekFrom::Start(offset))
            .await
            .map_err(io(&path))?;
        let registry = registry.to_owned();
        let stream = tokio_util::io::ReaderStream::with_capacity(f, 256 << 10)
            .map(move |r| r.map_err(|e| io(&path)(e).into_registry(&registry, "read blob")))
            .boxed();
        Ok(BlobStream { offset, stream })
    }

    /// Store a manifest's bytes as a blob, and point `reference` at it when it is a tag.
    pub(super) async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &str,
        m: &PulledManifest,
    ) -> Io<()> {
        self.placeable(repo)?;
        let (dir, blob) = (self.repo(repo), self.blob_path(repo, &m.digest));
        let lock = self.lock(repo);
        let _held = lock.lock().await;
        let (m, tag) = (
            m.clone(),
            reference
                .parse::<Digest>()
                .is_err()
                .then(|| reference.to_owned()),
        );
        let (root, cache, modes) = (self.root.clone(), self.indexes.clone(), self.modes());
        blocking(move || {
            Self::init(&root, &dir, modes)?;
            if !blob.is_file() {
                replace(&blob, &m.bytes, modes.file)?;
            }
            let Some(tag) = tag else { return Ok(()) };
            let mut index = Self::index(&dir)?.unwrap_or_else(|| json!({ "schemaVersion": 2, "manifests": [] }));
            let entry =
                json!({ "mediaType": m.media_type, "digest": m.digest.as_str(), "size": m.bytes.len(), "annotations": { REF_NAME: tag } });
            let list = index["manifests"].as_array_mut().expect("checked by index()");
            if list.contains(&entry) {
                return Ok(()); // already so: a no-op sync writes nothing
            }
            list.retain(|e| e["annotations"][REF_NAME] != tag.as_str());
            list.push(entry);
            cache.write(&dir, &index, modes.file)
        })
        .await
    }

    /// Remove every tag at `digest`, then the blobs no tag reaches any more.
    pub(super) async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Io<()> {
        let digest = digest.clone();
        self.drop_entries(repo, move |e| e["digest"] == digest.as_str())
            .await
    }

    /// Remove one tag; the manifest stays while another tag reaches it.
    pub(super) async fn delete_tag(&self, repo: &RepoName, tag: &str) -> Io<()> {
        let tag = tag.to_owned();
        self.drop_entries(repo, move |e| e["annotations"][REF_NAME] == tag.as_str())
            .await
    }

    /// Remove the index entries `doomed` picks, then the blobs no entry reaches any more.
    async fn drop_entries(
        &self,
        repo: &RepoName,
        doomed: impl Fn(&serde_json::Value) -> bool + Send + 'static,
    ) -> Io<()> {
        let dir = self.repo(repo);
        let lock = self.lock(repo);
        let _held = lock.lock().await;
        let (cache, modes) = (self.indexes.clone(), self.modes);
        blocking(move || {
            let Some(mut index) = Self::index(&dir)? else {
                return Ok(());
            };
            index["manifests"]
                .as_array_mut()
                .expect("checked by index()")
                .retain(|e| !doomed(e));
            cache.write(&dir, &index, modes.file)?;
            gc::collect_garbage(&dir, &index)
        })
        .await
    }
}

fn rand_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}
