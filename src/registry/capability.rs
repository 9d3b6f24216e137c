//! What a registry has been found to offer, learnt from its answers and believed for a while.
//! A leaf: the HTTP client owns one, the endpoint files that probe teach it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a registry's answer about the API is believed: an upgrade may add it.
const KEEP: Duration = Duration::from_secs(3600);

/// Whether the registry has the OCI 1.1 referrers API, as last found out.
#[derive(Default)]
pub(super) struct Capability(Mutex<Option<(bool, Instant)>>);

impl Capability {
    /// `Some(has_api)` while the last finding is fresh.
    pub(super) fn known(&self) -> Option<bool> {
        let g = self.0.lock().expect("lock poisoned");
        g.filter(|(_, at)| at.elapsed() < KEEP).map(|(has, _)| has)
    }

    pub(super) fn learn(&self, has: bool) {
        *self.0.lock().expect("lock poisoned") = Some((has, Instant::now()));
    }
}
