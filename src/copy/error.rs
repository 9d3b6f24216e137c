//! How a copy fails, typed until the edge (the run record, notifications, the CLI, the
//! API), where a [`Failure`] becomes one line of text.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::model::{Digest, ErrorKind};
use crate::plan::PlanError;
use crate::registry::RegistryError;

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("interrupted")]
    Interrupted,
    #[error("source ended before the end of blob {digest}")]
    SourceShort { digest: Digest },
    #[error("source sent more than the {size} bytes of blob {digest}")]
    SourceLong { digest: Digest, size: u64 },
    #[error("source sent blob {expected} with the wrong content (digest {actual})")]
    SourceDigest { expected: Digest, actual: Digest },
    #[error("{0}")]
    Protocol(String),
    #[error(transparent)]
    Fence(#[from] FenceError),
    /// Deletes the policy wanted and its safety limits refused.
    #[error("{0}")]
    DeletesRefused(String),
    /// A blob whose copy failed: its error is shared by every tag that needed it.
    #[error("blob {digest}: {source}")]
    Blob { digest: Digest, source: Shared },
    /// A failure shared by several tags (a child manifest they all need).
    #[error(transparent)]
    Shared(Shared),
    /// The write could not be announced in the audit ledger, so it was not sent.
    #[error("{0}; the write was not made, as it could not be accounted for")]
    Ledger(#[from] crate::ledger::LedgerError),
}

/// One copy's error, handed to every tag waiting on the same blob or manifest.
pub type Shared = Arc<CopyError>;

impl CopyError {
    /// Worth asking the target where the upload stands and going on from there.
    pub(super) fn is_retryable(&self) -> bool {
        match self {
            Self::Registry(e) => e.is_retryable() || matches!(e, RegistryError::Protocol { .. }),
            Self::SourceShort { .. } | Self::Protocol(_) => true,
            _ => false,
        }
    }

    pub(super) fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Registry(e) => e.retry_after(),
            _ => None,
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Registry(e) => e.kind(),
            Self::Plan(e) => e.kind(),
            // A stop is no failure; counted as one only where a caller records it so.
            Self::Interrupted | Self::SourceShort { .. } => ErrorKind::Transport,
            Self::SourceLong { .. } | Self::SourceDigest { .. } => ErrorKind::Digest,
            Self::Protocol(_) => ErrorKind::Protocol,
            Self::Fence(_) => ErrorKind::Fence,
            Self::DeletesRefused(_) => ErrorKind::Guard,
            Self::Blob { source, .. } | Self::Shared(source) => source.kind(),
            Self::Ledger(_) => ErrorKind::Ledger,
        }
    }
}

/// Why a cluster member may no longer write a policy's tags (it lost the policy's lock, or
/// its lease is about to run out).
#[derive(Clone, Debug, thiserror::Error)]
#[error("{0}")]
pub struct FenceError(pub String);

/// How copying one tag ended.
#[derive(Debug)]
pub enum TagOutcome {
    Copied,
    /// The target refused to move the tag (immutable tags): it keeps its digest.
    Conflict,
    /// The run was stopped before the tag was written.
    Interrupted,
    Failed(CopyError),
}

/// A failure of a run, with where it happened (`team/app:v1 → edge/team/app`).
#[derive(Debug)]
pub struct Failure {
    pub place: String,
    pub error: CopyError,
}

impl Failure {
    pub fn new(place: impl Into<String>, error: impl Into<CopyError>) -> Self {
        Failure {
            place: place.into(),
            error: error.into(),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.error.kind()
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.place.is_empty() {
            write!(f, "{}", self.error)
        } else {
            write!(f, "{}: {}", self.place, self.error)
        }
    }
}
