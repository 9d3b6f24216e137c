//! Garbage collection after a delete: the blobs no index entry reaches any more.

use std::collections::HashSet;
use std::path::Path;

use serde_json::Value;

use super::upload::sweep_abandoned;
use super::{io, Io};
use crate::model::{manifest_media_type, manifest_references, Digest};

/// How old an unreferenced blob must be before a delete removes it.
const GC_GRACE: std::time::Duration = std::time::Duration::from_secs(600);

/// Remove the blobs of a layout that no index entry reaches (after a delete), and uploads
/// abandoned long ago.
pub(super) fn collect_garbage(dir: &Path, index: &Value) -> Io<()> {
    // Deleting follows no link: a `blobs` or `blobs/sha256` that is a symlink could point
    // at any folder on the machine, whose files would all look unreferenced.
    for d in [dir.join("blobs"), dir.join("blobs/sha256")] {
        let real = std::fs::symlink_metadata(&d).map_err(io(&d))?;
        if !real.is_dir() {
            return Err(io(&d)(std::io::Error::other(
                "not a folder of this layout (a symlink?); garbage is not collected through it",
            )));
        }
    }
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
        let name = e.file_name().to_string_lossy().into_owned();
        // Only what ferry could have written: a regular file named by a SHA-256 digest.
        let ours = is_hex_digest(&name) && e.file_type().is_ok_and(|t| t.is_file());
        if ours && !keep.contains(&name) && settled(&e) {
            std::fs::remove_file(e.path()).map_err(io(&e.path()))?;
        }
    }
    Ok(())
}

fn is_hex_digest(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}
