//! Uploads into a layout: a temporary file under `blobs/`, appended chunk by chunk (its
//! length is the offset: what was written survives a crash as far as it reached the disk),
//! hashed and renamed into place at the end.

use std::io::{Read, SeekFrom};
use std::path::{Path, PathBuf};

use futures_util::StreamExt;

use super::{blocking, io, rand_id, sync_dir, Io, Layout, LayoutError};
use crate::model::{Digest, Hasher, RepoName};
use crate::registry::upload::{UploadSession, UploadStart};

/// An upload file untouched this long was abandoned (its blob no longer wanted, or its
/// checkpoint lost): removed when the repository is next written or collected.
const UPLOAD_ABANDONED: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

impl Layout {
    /// Make `repo` a layout if it is not one yet; under its lock, since `index.json` is created
    /// here and a concurrent first write of a tag must not be overwritten by it.
    async fn ensure(&self, repo: &RepoName) -> Io<()> {
        self.placeable(repo)?;
        let dir = self.repo(repo);
        if dir.join("index.json").is_file() && dir.join("oci-layout").is_file() {
            return Ok(());
        }
        let lock = self.lock(repo);
        let _held = lock.lock().await;
        let (root, modes) = (self.root.clone(), self.modes());
        blocking(move || Self::init(&root, &dir, modes)).await
    }

    pub(in crate::registry) async fn start_upload(
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
        let file_mode = self.modes().file;
        blocking(move || {
            sweep_abandoned(&dir.join("blobs"));
            // A mount within the same folder is a hard link: no bytes copied.
            if let Some((src, dst)) = from {
                if dst.is_file() || std::fs::hard_link(&src, &dst).is_ok() {
                    return Ok(UploadStart::Mounted);
                }
            }
            super::files::create(&tmp, file_mode).map_err(io(&tmp))?;
            Ok(UploadStart::Session(UploadSession::at(
                tmp.display().to_string(),
                0,
            )))
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
            Err(LayoutError::invalid(
                Path::new(location),
                format!("not an upload in {}", self.root.display()),
            ))
        }
    }

    pub(in crate::registry) async fn upload_status(
        &self,
        location: &str,
    ) -> Io<Option<UploadSession>> {
        if !self.ours(location) {
            return Ok(None);
        }
        Ok(tokio::fs::metadata(location)
            .await
            .ok()
            .map(|m| UploadSession::at(location.to_owned(), m.len())))
    }

    /// Append `len` bytes of `body` at `session.offset`.
    pub(in crate::registry) async fn append(
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
            return Err(LayoutError::invalid(
                &path,
                format!("holds {at} bytes, the upload is at {}", session.offset),
            ));
        }
        tokio::io::AsyncSeekExt::seek(&mut f, SeekFrom::Start(at))
            .await
            .map_err(io(&path))?;
        let mut stream = body.into_data_stream();
        let mut written = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| LayoutError::Io {
                path: path.clone(),
                kind: std::io::ErrorKind::Other,
                detail: format!("source: {e}"),
            })?;
            written += chunk.len() as u64;
            tokio::io::AsyncWriteExt::write_all(&mut f, &chunk)
                .await
                .map_err(io(&path))?;
        }
        tokio::io::AsyncWriteExt::flush(&mut f)
            .await
            .map_err(io(&path))?;
        if written != len {
            return Err(LayoutError::invalid(
                &path,
                format!("got {written} bytes of a {len}-byte chunk"),
            ));
        }
        Ok(UploadSession::at(
            session.location.clone(),
            session.offset + len,
        ))
    }

    /// The upload is complete: check its digest, make it durable, move it into place.
    /// Close an upload, appending its last chunk first when there is one.
    pub(in crate::registry) async fn finish_with(
        &self,
        repo: &RepoName,
        session: &UploadSession,
        digest: &Digest,
        last: Option<(reqwest::Body, u64)>,
    ) -> Io<()> {
        let session = match last {
            Some((body, len)) => self.append(session, body, len).await?,
            None => session.clone(),
        };
        self.finish(repo, &session, digest).await
    }

    async fn finish(&self, repo: &RepoName, session: &UploadSession, digest: &Digest) -> Io<()> {
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
                return Err(LayoutError::Digest {
                    what: "uploaded blob",
                    expected: want,
                    actual: got,
                });
            }
            f.sync_all().map_err(io(&tmp))?;
            std::fs::rename(&tmp, &dst).map_err(io(&dst))?;
            sync_dir(&dst)
        })
        .await
    }

    pub(in crate::registry) async fn cancel(&self, location: &str) {
        if self.ours(location) {
            let _ = tokio::fs::remove_file(location).await;
        }
    }
}

/// Remove `.upload-*` files of `blobs` untouched for `UPLOAD_ABANDONED` (best effort: a
/// file that cannot be removed now is tried again next time).
pub(super) fn sweep_abandoned(blobs: &Path) {
    for e in std::fs::read_dir(blobs).into_iter().flatten().flatten() {
        let stale = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|a| a > UPLOAD_ABANDONED));
        let file = e.file_type().is_ok_and(|t| t.is_file());
        if stale && file && e.file_name().to_string_lossy().starts_with(".upload-") {
            let _ = std::fs::remove_file(e.path());
        }
    }
}
