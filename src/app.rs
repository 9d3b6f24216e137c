//! Composition root: validated config → one `Registry` per endpoint, the state store and the
//! shared copy limits. The only place where config meets the registry and copy layers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, info_span, Instrument};

use crate::config::{Config, Policy};
use crate::copy::{Copier, CopyOptions, CopyShared};
use crate::plan::{plan_repo, select_repositories, RepoPlan};
use crate::registry::{Endpoint, Registry, RegistryError, RetryPolicy};
use crate::state::{now_ms, Counts, RunRecord, StateError, StateStore};

/// Repositories planned and copied at once per policy and target; blob transfers are bounded
/// separately by `max_concurrent_blobs`.
const REPO_CONCURRENCY: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("no policy named `{0}` (see `ferry validate` for the list)")]
    UnknownPolicy(String),
}

pub struct App {
    pub config: Config,
    registries: BTreeMap<String, Registry>,
    state: Option<StateStore>,
    shared: Arc<CopyShared>,
}

/// How one policy run ended.
pub struct PolicyRun {
    pub policy: String,
    pub counts: Counts,
    pub errors: Vec<String>,
    pub interrupted: bool,
}

impl PolicyRun {
    pub fn outcome(&self) -> &'static str {
        match (self.interrupted, self.errors.is_empty()) {
            (true, _) => "interrupted",
            (false, true) => "ok",
            (false, false) => "failed",
        }
    }
}

impl App {
    /// Build registries; open the state store only when `with_state` (plan never writes).
    ///
    /// # Errors
    /// A registry client that cannot be built (bad CA), or a state store that cannot be opened.
    pub fn new(config: Config, with_state: bool) -> Result<Self, AppError> {
        let mut registries = BTreeMap::new();
        for (key, spec) in &config.registries {
            let ep = Endpoint {
                name: spec.name.clone(),
                url: spec.url.clone(),
                credentials: spec.credentials.clone(),
                ca_pem: spec.ca_pem.clone(),
                max_concurrent: spec.max_concurrent,
                retry: RetryPolicy::default(),
                request_timeout: Duration::from_secs(60),
            };
            registries.insert(key.clone(), Registry::new(ep)?);
        }
        let state = if with_state {
            std::fs::create_dir_all(&config.daemon.state_dir)
                .map_err(|e| StateError::Open { path: config.daemon.state_dir.display().to_string(), source: e.into() })?;
            Some(StateStore::open(&config.daemon.state_dir)?)
        } else {
            None
        };
        let d = &config.daemon;
        let shared = CopyShared::new(CopyOptions { chunk_size: d.chunk_size.0, max_concurrent_blobs: d.max_concurrent_blobs });
        Ok(App { config, registries, state, shared })
    }

    pub fn state(&self) -> Option<&StateStore> {
        self.state.as_ref()
    }

    fn registry(&self, key: &str) -> &Registry {
        &self.registries[key] // config validation guarantees every policy's registries exist
    }

    /// The named policies, or all of them when `names` is empty.
    ///
    /// # Errors
    /// A name that matches no policy.
    pub fn select(&self, names: &[String]) -> Result<Vec<&Policy>, AppError> {
        if names.is_empty() {
            return Ok(self.config.policies.iter().collect());
        }
        names.iter().map(|n| self.config.policies.iter().find(|p| &p.name == n).ok_or_else(|| AppError::UnknownPolicy(n.clone()))).collect()
    }

    /// Plan every (target, repository) of a policy. A source that cannot be listed gives one
    /// plan entry carrying the error per target.
    pub async fn plan_policy(&self, policy: &Policy) -> Vec<RepoPlan> {
        let source = self.registry(&policy.source);
        let repos = match select_repositories(policy, source).await {
            Ok(r) => r,
            Err(e) => {
                return policy
                    .targets
                    .iter()
                    .map(|t| {
                        let mut p = RepoPlan::empty(&policy.name, t, unreachable_repo(), unreachable_repo());
                        p.error = Some(e.to_string());
                        p
                    })
                    .collect();
            }
        };
        let jobs = policy.targets.iter().flat_map(|t| repos.iter().map(move |r| (t, r)));
        stream::iter(jobs).map(|(t, r)| plan_repo(policy, t, source, self.registry(t), r)).buffered(REPO_CONCURRENCY).collect().await
    }

    /// Run one policy now: plan and copy each repository for each target, record the run.
    ///
    /// # Panics
    /// When the app was built without a state store.
    pub async fn run_policy(&self, policy: &Policy, cancel: &CancellationToken) -> PolicyRun {
        let state = self.state.clone().expect("run_policy needs the state store");
        let started = now_ms();
        let copier = Copier::new(self.shared.clone(), state.clone(), cancel.clone());
        let source = self.registry(&policy.source);
        let mut errors = Vec::new();
        let mut interrupted = false;
        match select_repositories(policy, source).await {
            Err(e) => {
                copier.count_failure();
                errors.push(e.to_string());
            }
            Ok(repos) => {
                let jobs = policy.targets.iter().flat_map(|t| repos.iter().map(move |r| (t, r)));
                let reports: Vec<_> = stream::iter(jobs)
                    .map(|(t, r)| {
                        let copier = &copier;
                        async move {
                            if copier.cancel_token().is_cancelled() {
                                return Default::default();
                            }
                            let target = self.registry(t);
                            let plan = plan_repo(policy, t, source, target, r).await;
                            copier.copy_repo(&plan, source, target).await
                        }
                        .instrument(info_span!("repo", target = %t, repo = %r))
                    })
                    .buffer_unordered(REPO_CONCURRENCY)
                    .collect()
                    .await;
                for r in reports {
                    interrupted |= r.interrupted;
                    errors.extend(r.errors);
                }
                interrupted |= cancel.is_cancelled();
            }
        }
        let run = PolicyRun { policy: policy.name.clone(), counts: copier.counts(), errors, interrupted };
        for e in &run.errors {
            error!(policy = %policy.name, error = %e, "copy failed");
        }
        let rec = RunRecord::new(&policy.name, started, run.outcome(), run.counts.clone(), run.errors.iter().take(20).cloned().collect());
        if let Err(e) = state.record_run(&rec).await {
            error!(policy = %policy.name, error = %e, "could not record the run");
        }
        info!(policy = %policy.name, outcome = run.outcome(), "run finished");
        run
    }
}

fn unreachable_repo() -> crate::model::RepoName {
    "unknown".parse().expect("valid repository name")
}
