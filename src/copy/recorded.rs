//! Every manifest write and every delete of a run goes through the audit ledger: announced
//! before it is sent, an entry once the registry took it, settled later by asking the
//! target when its answer was lost.

use std::future::Future;
use std::sync::Arc;

use tracing::{error, info, warn};

use super::{Copier, CopyError};
use crate::ledger::{Action, Draft, Intent, Ledger, Origin};
use crate::model::{now_ms, Digest, RepoName, Tag};
use crate::registry::{Registry, RegistryError};
use crate::state::TagChange;

/// Who writes, for the entries of one run.
pub struct Record {
    pub ledger: Arc<Ledger>,
    pub member: String,
    pub policy: String,
    pub run: String,
    pub trigger: String,
    /// The policy's source registry (the key in the config).
    pub source: String,
}

/// One write, as its entry will tell it.
pub(super) struct Write<'a> {
    pub action: Action,
    pub target: &'a str,
    pub repository: &'a RepoName,
    pub tag: Option<&'a Tag>,
    pub digest: &'a Digest,
    /// The source repository and digest a written manifest came from.
    pub source: Option<(&'a RepoName, &'a Digest)>,
    pub verified: Option<String>,
    pub reason: Option<String>,
}

/// Refused outright: the registry answered no, or never saw the request.
fn certainly_unsent(e: &RegistryError) -> bool {
    matches!(
        e,
        RegistryError::Status { .. }
            | RegistryError::Unauthorized { .. }
            | RegistryError::Immutable { .. }
            | RegistryError::MissingRepository { .. }
            | RegistryError::RateLimited { .. }
            | RegistryError::Unreachable { .. }
            | RegistryError::Fenced { .. }
            | RegistryError::NoDeletes { .. }
    )
}

impl Record {
    fn draft(&self, w: Write<'_>) -> Draft {
        Draft {
            at_ms: now_ms(),
            member: self.member.clone(),
            policy: self.policy.clone(),
            run: self.run.clone(),
            trigger: self.trigger.clone(),
            action: w.action,
            target: w.target.to_owned(),
            repository: w.repository.clone(),
            tag: w.tag.cloned(),
            digest: w.digest.clone(),
            source: w.source.map(|(repository, digest)| Origin {
                registry: self.source.clone(),
                repository: repository.clone(),
                digest: digest.clone(),
            }),
            verified: w.verified,
            reason: w.reason,
        }
    }
}

impl Copier {
    /// Make the write `op` under the ledger. What it changes about a tag (its `written`
    /// record, the exposure index) is kept in the same step as its entry; without a ledger (a
    /// copy outside a run) only the `written` record is kept.
    pub(super) async fn recorded<T>(
        &self,
        w: Write<'_>,
        change: Option<TagChange<'_>>,
        op: impl Future<Output = Result<T, RegistryError>>,
    ) -> Result<T, CopyError> {
        self.recorded_if(w, change, op, |_| true).await
    }

    /// As [`Copier::recorded`], for an operation whose success may still have done nothing
    /// (`made` says whether it did).
    pub(super) async fn recorded_if<T>(
        &self,
        w: Write<'_>,
        change: Option<TagChange<'_>>,
        op: impl Future<Output = Result<T, RegistryError>>,
        made: impl FnOnce(&T) -> bool,
    ) -> Result<T, CopyError> {
        let Some(rec) = &self.record else {
            let out = op.await?;
            if let Some(TagChange::Written(t)) = change {
                self.state.remember_written(
                    t.target,
                    t.repository,
                    t.tag,
                    t.source,
                    t.target_digest,
                );
            }
            return Ok(out);
        };
        let intent = rec.ledger.intend(rec.draft(w)).await?;
        match op.await {
            Ok(out) if !made(&out) => {
                rec.ledger.abandon(intent);
                Ok(out)
            }
            Ok(out) => {
                if let Err(e) = rec.ledger.commit(intent, change) {
                    // The announcement is on disk: the next run settles it from the target.
                    error!(error = %e, "audit ledger: a write was made and its entry could not be appended yet");
                }
                Ok(out)
            }
            Err(e) if certainly_unsent(&e) => {
                rec.ledger.abandon(intent);
                Err(e.into())
            }
            // Perhaps made (a timeout after the request went): the next run asks the target.
            Err(e) => {
                rec.ledger.left_open(intent);
                Err(e.into())
            }
        }
    }

    /// Settle the writes of this policy announced by an earlier run and left open (a crash,
    /// a lost answer), by asking each target what it holds now.
    pub async fn settle_announced(&self, targets: &[(&str, &Registry)]) {
        let Some(rec) = &self.record else { return };
        let pending = match rec.ledger.pending() {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "audit ledger: announced writes cannot be read");
                return;
            }
        };
        for intent in pending
            .into_iter()
            .filter(|i| i.draft().policy == rec.policy)
        {
            let Some((_, target)) = targets.iter().find(|(k, _)| *k == intent.draft().target)
            else {
                continue;
            };
            match happened(target, &intent).await {
                Ok(happened) => {
                    let d = intent.draft();
                    let what = format!("{}/{}:{}", d.target, d.repository, reference(&intent));
                    match rec.ledger.settle(intent, happened) {
                        Ok(Some(e)) => {
                            info!(entry = e.seq, write = %what, "audit ledger: an earlier run's write was found made and is recorded");
                        }
                        Ok(None) => {}
                        Err(e) => warn!(error = %e, "audit ledger: an announced write stays open"),
                    }
                }
                Err(e) => {
                    warn!(error = %e, "audit ledger: an earlier run's write could not be checked; asked again next run")
                }
            }
        }
    }
}

fn reference(i: &Intent) -> String {
    let d = i.draft();
    d.tag
        .as_ref()
        .map_or_else(|| d.digest.to_string(), |t| t.to_string())
}

/// Whether the target shows the announced write made.
async fn happened(target: &Registry, i: &Intent) -> Result<bool, RegistryError> {
    let d = i.draft();
    let now = target
        .head_target_manifest(&d.repository, &reference(i))
        .await?
        .map(|h| h.digest);
    Ok(match (d.action, &d.tag) {
        (Action::Written, _) => now.as_ref() == Some(&d.digest),
        (Action::Deleted, Some(_)) => now.as_ref() != Some(&d.digest),
        (Action::Deleted, None) => now.is_none(),
    })
}
