//! The parsed `index.json` of each repository, kept while the file is unchanged.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use super::{io, replace, Io, Layout};

/// Each repository's `index.json` as last parsed, with the length and modification time it had:
/// planning asks about every tag of a repository, and each answer would otherwise re-read and
/// re-parse the whole file. Our own writes drop the entry and bump the generation, so a read
/// that raced a write is not kept; another writer changes the stamp.
#[derive(Default)]
pub(super) struct Indexes {
    parsed: std::sync::Mutex<HashMap<PathBuf, Parsed>>,
    generation: std::sync::atomic::AtomicU64,
}

pub(super) type IndexCache = Arc<Indexes>;
/// An index.json as parsed, with the length and modification time the file had then.
type Parsed = (u64, Option<std::time::SystemTime>, Arc<Value>);

impl Indexes {
    /// Replace `dir`'s index.json with `index` (a file of `mode`), and forget the parsed copy.
    pub(super) fn write(&self, dir: &Path, index: &Value, mode: u32) -> Io<()> {
        let written = replace(
            &dir.join("index.json"),
            serde_json::to_vec_pretty(index).expect("json").as_slice(),
            mode,
        );
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.parsed.lock().expect("lock poisoned").remove(dir);
        written
    }
}

/// `index.json` of `dir`, from the cache while the file is unchanged.
pub(super) fn read_index(cache: &IndexCache, dir: &Path) -> Io<Option<Arc<Value>>> {
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
