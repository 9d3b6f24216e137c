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

use std::collections::{HashMap, HashSet};
use std::io::{Read, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{json, Value};

use super::meta::{BlobStream, ManifestHead, PulledManifest};
use super::upload::{UploadSession, UploadStart};
use super::RegistryError;
use crate::model::{
    manifest_media_type, manifest_references, Digest, Hasher, RepoName, Tag, MAX_MANIFEST_BYTES,
    OCI_INDEX,
};

const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// `index.json` is read whole: a layout with 100,000 tags is about 30 MiB of it.
const MAX_INDEX_BYTES: u64 = 64 << 20;
/// How old an unreferenced blob must be before a delete removes it.
const GC_GRACE: std::time::Duration = std::time::Duration::from_secs(600);
/// An upload file untouched this long was abandoned (its blob no longer wanted, or its
/// checkpoint lost): removed when the repository is next written or collected.
const UPLOAD_ABANDONED: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// Folders walked below the root to find repositories (`a/b/c` is three deep).
const MAX_DEPTH: usize = 8;

pub(super) struct Layout {
    root: PathBuf,
    /// One writer of each repository's `index.json` at a time.
    locks: std::sync::Mutex<HashMap<RepoName, Arc<tokio::sync::Mutex<()>>>>,
    indexes: IndexCache,
}

/// Each repository's `index.json` as last parsed, with the length and modification time it had:
/// planning asks about every tag of a repository, and each answer would otherwise re-read and
/// re-parse the whole file. Our own writes drop the entry and bump the generation, so a read
/// that raced a write is not kept; another writer changes the stamp.
#[derive(Default)]
struct Indexes {
    parsed: std::sync::Mutex<HashMap<PathBuf, Parsed>>,
    generation: std::sync::atomic::AtomicU64,
}
type IndexCache = Arc<Indexes>;
/// An index.json as parsed, with the length and modification time the file had then.
type Parsed = (u64, Option<std::time::SystemTime>, Arc<Value>);

impl Indexes {
    /// Replace `dir`'s index.json with `index`, and forget the parsed copy.
    fn write(&self, dir: &Path, index: &Value) -> Io<()> {
        let written = replace(
            &dir.join("index.json"),
            serde_json::to_vec_pretty(index).expect("json").as_slice(),
        );
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.parsed.lock().expect("lock poisoned").remove(dir);
        written
    }
}

/// `index.json` of `dir`, from the cache while the file is unchanged.
fn read_index(cache: &IndexCache, dir: &Path) -> Io<Option<Arc<Value>>> {
    let generation = cache.generation.load(std::sync::atomic::Ordering::SeqCst);
    let path = dir.join("index.json");
    let stamp = match std::fs::metadata(&path) {
        Ok(m) => (m.len(), m.modified().ok()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&path)(e)),
    };
    if let Some((.., v)) = cache
        .parsed
        .lock()
        .expect("lock poisoned")
        .get(dir)
        .filter(|(len, at, _)| (*len, *at) == stamp)
    {
        return Ok(Some(v.clone()));
    }
    let Some(v) = Layout::index(dir)? else {
        return Ok(None);
    };
    let v = Arc::new(v);
    let mut parsed = cache.parsed.lock().expect("lock poisoned");
    if cache.generation.load(std::sync::atomic::Ordering::SeqCst) == generation {
        parsed.insert(dir.to_owned(), (stamp.0, stamp.1, v.clone()));
    }
    Ok(Some(v))
}

type Io<T> = Result<T, String>;

fn io(what: &Path) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{}: {e}", what.display())
}

/// Write `bytes` to `path` so a crash leaves the old file or the new one, never a mix.
fn replace(path: &Path, bytes: &[u8]) -> Io<()> {
    let name = path
        .file_name()
        .map_or_else(Default::default, |n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(".{name}.tmp-{:x}", rand_id()));
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
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
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| e.to_string())?
}

impl Layout {
    pub(super) fn new(root: PathBuf) -> Self {
        Layout {
            root,
            locks: std::sync::Mutex::default(),
            indexes: IndexCache::default(),
        }
    }

    fn repo(&self, repo: &RepoName) -> PathBuf {
        self.root.join(repo.as_str())
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
        let f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
        };
        let mut buf = Vec::new();
        f.take(MAX_INDEX_BYTES + 1)
            .read_to_end(&mut buf)
            .map_err(io(&path))?;
        if buf.len() as u64 > MAX_INDEX_BYTES {
            return Err(format!(
                "{}: larger than {} MiB",
                path.display(),
                MAX_INDEX_BYTES >> 20
            ));
        }
        let v: Value = serde_json::from_slice(&buf)
            .map_err(|e| format!("{}: not an OCI index: {e}", path.display()))?;
        if !v["manifests"].is_array() {
            return Err(format!("{}: no manifests list", path.display()));
        }
        Ok(Some(v))
    }

    /// Create the layout's skeleton when missing. The folder itself must exist (an unmounted
    /// disk must not turn into a folder on the system disk), and a repository folder that
    /// holds something other than a layout is left alone.
    fn init(root: &Path, dir: &Path) -> Io<()> {
        if !root.is_dir() {
            return Err(format!(
                "{}: no such folder (is the disk mounted?)",
                root.display()
            ));
        }
        if !dir.join("oci-layout").is_file()
            && std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some())
        {
            return Err(format!(
                "{}: not an OCI layout (no oci-layout file) and not empty; not writing into it",
                dir.display()
            ));
        }
        std::fs::create_dir_all(dir.join("blobs/sha256")).map_err(io(dir))?;
        let marker = dir.join("oci-layout");
        if !marker.exists() {
            replace(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        if !dir.join("index.json").exists() {
            replace(
                &dir.join("index.json"),
                json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [] })
                    .to_string()
                    .as_bytes(),
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
                    return Err(format!(
                        "{}: more than {limit} repositories",
                        root.display()
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
                        .map_err(|e| format!("{}: {e}", dir.display()))?;
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
        let media_type = manifest_media_type(&bytes, media_type.as_deref())?;
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
            std::fs::File::open(&path)
                .and_then(|f| f.take(limit as u64 + 1).read_to_end(&mut buf))
                .map_err(io(&path))?;
            if buf.len() > limit {
                return Err(format!("{}: larger than {limit} bytes", path.display()));
            }
            let got = Digest::of(&buf);
            if got != want {
                return Err(format!("{}: content has digest {got}", path.display()));
            }
            Ok(Bytes::from(buf))
        })
        .await
    }

    pub(super) async fn head_blob(&self, repo: &RepoName, digest: &Digest) -> Io<Option<u64>> {
        Ok(tokio::fs::metadata(self.blob_path(repo, digest))
            .await
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len()))
    }

    pub(super) async fn get_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        offset: u64,
    ) -> Io<BlobStream> {
        let path = self.blob_path(repo, digest);
        let mut f = tokio::fs::File::open(&path).await.map_err(io(&path))?;
        tokio::io::AsyncSeekExt::seek(&mut f, SeekFrom::Start(offset))
            .await
            .map_err(io(&path))?;
        let name = path.display().to_string();
        let stream = tokio_util::io::ReaderStream::with_capacity(f, 256 << 10)
            .map(move |r| {
                r.map_err(|e| RegistryError::Protocol {
                    registry: name.clone(),
                    op: "read blob",
                    detail: e.to_string(),
                })
            })
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
        let (root, cache) = (self.root.clone(), self.indexes.clone());
        blocking(move || {
            Self::init(&root, &dir)?;
            if !blob.is_file() {
                replace(&blob, &m.bytes)?;
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
            cache.write(&dir, &index)
        })
        .await
    }

    /// Remove every tag at `digest`, then the blobs no tag reaches any more.
    pub(super) async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Io<()> {
        let dir = self.repo(repo);
        let lock = self.lock(repo);
        let _held = lock.lock().await;
        let (digest, cache) = (digest.clone(), self.indexes.clone());
        blocking(move || {
            let Some(mut index) = Self::index(&dir)? else {
                return Ok(());
            };
            index["manifests"]
                .as_array_mut()
                .expect("checked by index()")
                .retain(|e| e["digest"] != digest.as_str());
            cache.write(&dir, &index)?;
            collect_garbage(&dir, &index)
        })
        .await
    }

    // Uploads: a temporary file under `blobs/`, appended chunk by chunk (its length is the
    // offset: what was written survives a crash as far as it reached the disk), hashed and
    // renamed into place at the end.

    /// Make `repo` a layout if it is not one yet; under its lock, since `index.json` is created
    /// here and a concurrent first write of a tag must not be overwritten by it.
    async fn ensure(&self, repo: &RepoName) -> Io<()> {
        let dir = self.repo(repo);
        if dir.join("index.json").is_file() && dir.join("oci-layout").is_file() {
            return Ok(());
        }
        let lock = self.lock(repo);
        let _held = lock.lock().await;
        let root = self.root.clone();
        blocking(move || Self::init(&root, &dir)).await
    }

    pub(super) async fn start_upload(
        &self,
        repo: &RepoName,
        mount: Option<(&Digest, &RepoName)>,
    ) -> Io<UploadStart> {
        self.ensure(repo).await?;
        let dir = self.repo(repo);
        let from = mount.map(|(d, from)| (self.blob_path(from, d), self.blob_path(repo, d)));
        let tmp = dir
            .join("blobs")
            .join(format!(".upload-{}-{:x}", std::process::id(), rand_id()));
        blocking(move || {
            sweep_abandoned(&dir.join("blobs"));
            // A mount within the same folder is a hard link: no bytes copied.
            if let Some((src, dst)) = from {
                if dst.is_file() || std::fs::hard_link(&src, &dst).is_ok() {
                    return Ok(UploadStart::Mounted);
                }
            }
            std::fs::File::create(&tmp).map_err(io(&tmp))?;
            Ok(UploadStart::Session(UploadSession {
                location: tmp.display().to_string(),
                offset: 0,
            }))
        })
        .await
    }

    /// An upload location is a temporary file of this folder; anything else (a checkpoint
    /// from when this registry was another one) is no upload of ours.
    fn ours(&self, location: &str) -> bool {
        let p = Path::new(location);
        p.starts_with(&self.root)
            && p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".upload-"))
            && !location.contains("/../")
    }

    /// The file of an upload of ours, or why it is not one.
    fn upload_file(&self, location: &str) -> Io<PathBuf> {
        if self.ours(location) {
            Ok(PathBuf::from(location))
        } else {
            Err(format!(
                "{location}: not an upload in {}",
                self.root.display()
            ))
        }
    }

    pub(super) async fn upload_status(&self, location: &str) -> Io<Option<UploadSession>> {
        if !self.ours(location) {
            return Ok(None);
        }
        Ok(tokio::fs::metadata(location)
            .await
            .ok()
            .map(|m| UploadSession {
                location: location.to_owned(),
                offset: m.len(),
            }))
    }

    /// Append `len` bytes of `body` at `session.offset`.
    pub(super) async fn append(
        &self,
        session: &UploadSession,
        body: reqwest::Body,
        len: u64,
    ) -> Io<UploadSession> {
        use http_body_util::BodyExt;
        let path = self.upload_file(&session.location)?;
        let mut f = tokio::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .await
            .map_err(io(&path))?;
        let at = f.metadata().await.map_err(io(&path))?.len();
        if at != session.offset {
            return Err(format!(
                "{}: holds {at} bytes, the upload is at {}",
                path.display(),
                session.offset
            ));
        }
        tokio::io::AsyncSeekExt::seek(&mut f, SeekFrom::Start(at))
            .await
            .map_err(io(&path))?;
        let mut stream = body.into_data_stream();
        let mut written = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| format!("source: {e}"))?;
            written += chunk.len() as u64;
            tokio::io::AsyncWriteExt::write_all(&mut f, &chunk)
                .await
                .map_err(io(&path))?;
        }
        tokio::io::AsyncWriteExt::flush(&mut f)
            .await
            .map_err(io(&path))?;
        if written != len {
            return Err(format!(
                "{}: got {written} bytes of a {len}-byte chunk",
                path.display()
            ));
        }
        Ok(UploadSession {
            location: session.location.clone(),
            offset: session.offset + len,
        })
    }

    /// The upload is complete: check its digest, make it durable, move it into place.
    pub(super) async fn finish(
        &self,
        repo: &RepoName,
        session: &UploadSession,
        digest: &Digest,
    ) -> Io<()> {
        let (tmp, dst, want) = (
            self.upload_file(&session.location)?,
            self.blob_path(repo, digest),
            digest.clone(),
        );
        blocking(move || {
            let mut f = std::fs::File::open(&tmp).map_err(io(&tmp))?;
            let mut hasher = Hasher::default();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = f.read(&mut buf).map_err(io(&tmp))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
            let got = hasher.finish();
            if got != want {
                let _ = std::fs::remove_file(&tmp);
                return Err(format!("uploaded blob has digest {got}, expected {want}"));
            }
            f.sync_all().map_err(io(&tmp))?;
            std::fs::rename(&tmp, &dst).map_err(io(&dst))?;
            sync_dir(&dst)
        })
        .await
    }

    pub(super) async fn cancel(&self, location: &str) {
        if self.ours(location) {
            let _ = tokio::fs::remove_file(location).await;
        }
    }
}

/// Remove `.upload-*` files of `blobs` untouched for `UPLOAD_ABANDONED` (best effort: a
/// file that cannot be removed now is tried again next time).
fn sweep_abandoned(blobs: &Path) {
    for e in std::fs::read_dir(blobs).into_iter().flatten().flatten() {
        let stale = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|a| a > UPLOAD_ABANDONED));
        if stale && e.file_name().to_string_lossy().starts_with(".upload-") {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Remove the blobs of a layout that no index entry reaches (after a delete), and uploads
/// abandoned long ago.
fn collect_garbage(dir: &Path, index: &Value) -> Io<()> {
    sweep_abandoned(&dir.join("blobs"));
    let blobs = dir.join("blobs/sha256");
    let mut keep = HashSet::new();
    let mut queue: Vec<(String, String)> = index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| {
            Some((
                m["digest"].as_str()?.to_owned(),
                m["mediaType"].as_str().unwrap_or("").to_owned(),
            ))
        })
        .collect();
    while let Some((digest, media_type)) = queue.pop() {
        let Ok(d) = digest.parse::<Digest>() else {
            continue;
        };
        if !keep.insert(d.hex().to_owned()) {
            continue;
        }
        let Ok(bytes) = std::fs::read(blobs.join(d.hex())) else {
            continue;
        };
        let media_type = if media_type.is_empty() {
            manifest_media_type(&bytes, None).unwrap_or_default()
        } else {
            media_type
        };
        if let Ok(refs) = manifest_references(&media_type, &bytes) {
            keep.extend(refs.blobs.iter().map(|(b, _)| b.hex().to_owned()));
            queue.extend(
                refs.manifests
                    .iter()
                    .map(|(m, _)| (m.as_str().to_owned(), String::new())),
            );
        }
    }
    // A blob written in the last minutes may belong to an image still being copied into this
    // repository (its tag is written last): left for a later delete to collect.
    let settled = |e: &std::fs::DirEntry| {
        e.metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|a| a > GC_GRACE))
    };
    for e in std::fs::read_dir(&blobs).map_err(io(&blobs))?.flatten() {
        if !keep.contains(e.file_name().to_string_lossy().as_ref()) && settled(&e) {
            std::fs::remove_file(e.path()).map_err(io(&e.path()))?;
        }
    }
    Ok(())
}

fn rand_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}
