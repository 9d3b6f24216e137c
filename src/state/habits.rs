//! What a registry's answers taught about uploading to it, so a registry that answered one
//! way keeps being treated that way (across runs and restarts):
//!
//!   habits : registry key -> Habits  the upload strategy it takes, and part size limits
//!
//! A record made for another URL (the config now points the key elsewhere) is ignored.

use serde::{Deserialize, Serialize};

use super::{StateStore, Versioned, VERSION};
use crate::model::UploadStrategy;

const HABITS: &str = "learnt upload habits are not kept: refusals are met again and worked around";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Habits {
    pub v: u32,
    pub url: String,
    pub upload: UploadStrategy,
    /// The smallest chunk the registry took (ECR's 5 MiB).
    #[serde(default)]
    pub min_part: Option<u64>,
    /// Larger request bodies were refused with 413 (ACR's about 20 MB).
    #[serde(default)]
    pub max_body: Option<u64>,
    pub learnt_ms: u64,
}

impl Versioned for Habits {
    fn version(&self) -> u32 {
        self.v
    }
}

impl Habits {
    pub fn new(url: &str, upload: UploadStrategy) -> Self {
        Habits {
            v: VERSION,
            url: url.to_owned(),
            upload,
            min_part: None,
            max_body: None,
            learnt_ms: super::now_ms(),
        }
    }
}

impl StateStore {
    /// What was learnt of `registry` at `url`, if anything.
    pub fn habits(&self, registry: &str, url: &str) -> Option<Habits> {
        let v = self.lost(self.habits.get(registry.as_bytes()), HABITS)?;
        self.read::<Habits>(&self.habits, registry.as_bytes(), &v, HABITS)
            .filter(|h| h.url == url)
    }

    pub fn remember_habits(&self, registry: &str, h: &Habits) {
        let saved = self.habits.insert(
            registry.as_bytes(),
            serde_json::to_vec(h).expect("records serialize"),
        );
        self.lost(saved.map(drop), HABITS);
    }
}
