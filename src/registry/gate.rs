//! Writes that must not land once their writer lost the right to make them: a cluster
//! member's tag writes and deletes. A registry cannot check a fencing token, so the writer
//! is asked before every attempt (a retry included), its stop ends a wait between attempts,
//! and no wait may outlast the time it can still vouch for itself.

use std::time::Duration;

use futures_util::future::BoxFuture;

/// Asked by the retry loop of a gated write.
pub trait WriteGate: Send + Sync {
    /// May the next attempt go? `Err`: why not; the write ends unsent.
    fn admit(&self) -> BoxFuture<'_, Result<(), String>>;
    /// Resolves when the writer must stop (its run was cancelled): a wait ends there.
    fn stopped(&self) -> BoxFuture<'_, ()>;
    /// How much longer the writer can vouch for itself (a cluster lease's safe time);
    /// `None`: no limit. A wait past it is not waited.
    fn vouched_for(&self) -> Option<Duration>;
}
