//! Why a repository could not be planned. Kept typed until the edge (the run record, the
//! CLI, the API), so a failure can be counted by kind.

use crate::model::{Digest, ErrorKind, Invalid, RepoName};
use crate::registry::RegistryError;

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The source's repositories could not be listed: the same error for every target.
    #[error(transparent)]
    Listing(std::sync::Arc<RegistryError>),
    #[error("repository `{repo}` not found on {registry}")]
    NotFound { repo: RepoName, registry: String },
    /// The policy's `target_repository` does not make a valid name of this repository.
    #[error("{0}")]
    Template(Invalid),
    /// A source manifest that cannot be planned: not JSON, an unknown type, bad descriptors.
    #[error("{repo}@{digest}: {reason}")]
    Manifest {
        repo: RepoName,
        digest: Digest,
        reason: Invalid,
    },
    #[error("{repo}@{digest}: {what}")]
    TooLarge {
        repo: RepoName,
        digest: Digest,
        what: String,
    },
    #[error("more than {0} manifests in one repository")]
    TooManyManifests(usize),
    #[error("{repo}@{digest}: manifest referenced but missing on {registry}")]
    Missing {
        repo: RepoName,
        digest: Digest,
        registry: String,
    },
    /// A promotion gate whose evidence could not be read (not a tag held: a failure).
    #[error("require: {0}")]
    Gate(String),
}

impl PlanError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Registry(e) => e.kind(),
            Self::Listing(e) => e.kind(),
            Self::Manifest { .. } | Self::Missing { .. } => ErrorKind::Protocol,
            Self::NotFound { .. }
            | Self::Template(_)
            | Self::TooLarge { .. }
            | Self::TooManyManifests(_) => ErrorKind::Policy,
            Self::Gate(_) => ErrorKind::Gate,
        }
    }
}
