//! Composition root: validated config → one `Registry` per endpoint, the state store and the
//! shared copy limits. The only place where config meets the registry and copy layers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use futures_util::{stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, info_span, Instrument};

use crate::config::{Config, Policy};
use crate::copy::{Copier, CopyOptions, CopyShared, Fence, KeyedLocks, RepoReport};
use crate::model::Digest;
use crate::model::RepoName;
use crate::model::Tag;
use crate::notify::Notifier;
use crate::plan::{
    plan_repo, select_repositories, Memory, NoMemory, RepoPlan, RunOptions, Scope, SourceReads,
};
use crate::registry::{Endpoint, Registry, RegistryError, RetryPolicy};
use crate::state::{now_ms, Counts, RunRecord, StateError, StateStore};

/// One registry client's counters: retries, its rationed budget as last reported, and the
/// adaptive request limit in force.
pub struct RegistryGauges {
    pub name: String,
    pub retries: u64,
    pub remaining: Option<u64>,
    pub limit: Option<u64>,
    pub paused_seconds: f64,
    pub concurrency: usize,
    pub max_concurrent: usize,
}

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
    /// One per (policy, target, source repository), held while it is planned and copied: a
    /// targeted run and a full run never write the same tags at once.
    repo_locks: Arc<KeyedLocks<(String, String, RepoName)>>,
    notifier: Notifier,
}

/// What planning remembers between runs, kept in the state store.
struct StateMemory<'a>(&'a StateStore);

impl Memory for StateMemory<'_> {
    fn first_seen(&self, key: &str) -> u64 {
        self.0.first_seen(key, now_ms())
    }
    fn filtered(&self, key: &str) -> Option<Digest> {
        self.0.filtered_index(key)
    }
    fn remember_filtered(&self, key: &str, digest: &Digest) {
        self.0.remember_filtered_index(key, digest);
    }
    fn written(&self, target: &str, repo: &RepoName, tag: &Tag) -> Option<(Digest, Digest, u64)> {
        self.0
            .written(target, repo, tag)
            .map(|r| (r.source, r.target, r.at_ms))
    }
    fn remember_written(
        &self,
        target: &str,
        repo: &RepoName,
        tag: &Tag,
        source: &Digest,
        target_digest: &Digest,
    ) {
        self.0
            .remember_written(target, repo, tag, source, target_digest);
    }
    fn forget_written_except(
        &self,
        target: &str,
        repo: &RepoName,
        keep: &std::collections::HashSet<Tag>,
    ) {
        self.0.forget_written_except(target, repo, &|t| {
            t.parse::<Tag>().is_ok_and(|t| keep.contains(&t))
        });
    }
}

/// How one policy run ended.
pub struct PolicyRun {
    pub policy: String,
    pub started_ms: u64,
    pub duration: Duration,
    pub targets: BTreeMap<String, Counts>,
    pub errors: Vec<String>,
    /// Tags held back by promotion gates, with the reason.
    pub held: Vec<String>,
    pub interrupted: bool,
    /// What a targeted run looked at (`push team/app:v1`); none for a full run.
    pub scope: Option<String>,
}

impl PolicyRun {
    pub fn counts(&self) -> Counts {
        let mut total = Counts::default();
        self.targets.values().for_each(|c| total.add(c));
        total
    }

    pub fn outcome(&self) -> &'static str {
        match (self.interrupted, self.errors.is_empty()) {
            (true, _) => "interrupted",
            (false, true) => "ok",
            (false, false) => "failed",
        }
    }
}

impl App {
    /// Open the state store named by the config, creating its folder.
    ///
    /// # Errors
    /// When the folder cannot be created or another ferry process holds the store.
    pub fn open_state(config: &Config) -> Result<StateStore, AppError> {
        let dir = &config.daemon.state_dir;
        std::fs::create_dir_all(dir).map_err(|e| StateError::Open {
            path: dir.display().to_string(),
            source: e.into(),
        })?;
        Ok(StateStore::open(dir)?)
    }

    /// Where run outcomes are sent (`[[notify]]`).
    pub fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    /// Build one registry client per endpoint. `state` is needed to run policies, not to plan.
    ///
    /// # Errors
    /// A registry client that cannot be built (bad CA).
    pub fn new(config: Config, state: Option<StateStore>) -> Result<Self, AppError> {
        let mut registries = BTreeMap::new();
        for (key, spec) in &config.registries {
            registries.insert(key.clone(), Registry::new(endpoint(spec))?);
        }
        let d = &config.daemon;
        let shared = CopyShared::new(CopyOptions {
            chunk_size: d.chunk_size.0,
            max_concurrent_blobs: d.max_concurrent_blobs,
            bandwidth_limit: d.bandwidth_limit.map(|b| b.0),
        });
        let notifier = Notifier::new(config.notify.clone());
        Ok(App {
            config,
            registries,
            state,
            shared,
            repo_locks: Arc::default(),
            notifier,
        })
    }

    /// Share `older`'s repository locks: targeted runs started under the config before a
    /// reload may still be going, and must not overlap the new config's runs. Keep its
    /// client of every registry the reload left unchanged: what it learnt (a rationed pull
    /// budget and its pause, the adaptive concurrency, open connections) is still true. The
    /// notifier too, when `[[notify]]` is unchanged.
    pub fn after(mut self, older: &App) -> Self {
        self.repo_locks = older.repo_locks.clone();
        if self.config.notify == older.config.notify {
            self.notifier = older.notifier.clone(); // its counters and deliveries in flight
        }
        for (key, reg) in &mut self.registries {
            if let Some(old) = older.registries.get(key).filter(|o| o.same_endpoint(reg)) {
                *reg = old.clone();
            }
        }
        self
    }

    /// What each registry's client has seen so far, for metrics and `/status`.
    pub fn registry_gauges(&self) -> Vec<RegistryGauges> {
        self.registries
            .values()
            .map(|r| {
                let (remaining, limit, paused_seconds) = r.rate_limit();
                let (concurrency, max_concurrent) = r.concurrency();
                RegistryGauges {
                    name: r.name().to_owned(),
                    retries: r.retries(),
                    remaining,
                    limit,
                    paused_seconds,
                    concurrency,
                    max_concurrent,
                }
            })
            .collect()
    }

    /// Live totals of every run of this process so far.
    pub fn progress(&self) -> &crate::copy::Progress {
        &self.shared.progress
    }

    pub fn state(&self) -> Option<&StateStore> {
        self.state.as_ref()
    }

    fn registry(&self, key: &str) -> &Registry {
        &self.registries[key] // config validation guarantees every policy's registries exist
    }

    /// Repositories of `policy` planned and copied at once: enough that their requests can
    /// fill the widest of its registries' `max_concurrent` (a repository has a few round
    /// trips in sequence: tag lists, then its tags' HEADs in parallel). What each registry
    /// really gets at once is its adaptive limit; blobs are bounded by `max_concurrent_blobs`.
    fn repo_width(&self, policy: &Policy) -> usize {
        let widest = std::iter::once(&policy.source)
            .chain(&policy.targets)
            .map(|r| self.registry(r).concurrency().1)
            .max();
        (widest.unwrap_or(1) / 2).max(2)
    }

    /// The named policies, or all of them when `names` is empty.
    ///
    /// # Errors
    /// A name that matches no policy.
    pub fn select(&self, names: &[String]) -> Result<Vec<&Policy>, AppError> {
        if names.is_empty() {
            return Ok(self.config.policies.iter().collect());
        }
        names
            .iter()
            .map(|n| {
                self.config
                    .policies
                    .iter()
                    .find(|p| &p.name == n)
                    .ok_or_else(|| AppError::UnknownPolicy(n.clone()))
            })
            .collect()
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
                        let mut p = RepoPlan::empty(
                            &policy.name,
                            t,
                            unreachable_repo(),
                            unreachable_repo(),
                        );
                        p.error = Some(e.to_string());
                        p
                    })
                    .collect();
            }
        };
        let memory: Box<dyn Memory> = match &self.state {
            Some(s) => Box::new(StateMemory(s)),
            None => Box::new(NoMemory),
        };
        let memory = memory.as_ref();
        let by_repo: Vec<Vec<RepoPlan>> = stream::iter(&repos)
            .map(|r| async move {
                let reads = SourceReads::new(source);
                let plans = policy.targets.iter().map(|t| {
                    plan_repo(
                        policy,
                        t,
                        &reads,
                        self.registry(t),
                        r,
                        memory,
                        RunOptions::default(),
                        &Scope::All,
                    )
                });
                join_all(plans).await
            })
            .buffered(self.repo_width(policy))
            .collect()
            .await;
        // Target by target, as before plans were made for all targets of a repository at once.
        let mut by_repo: Vec<_> = by_repo.into_iter().map(Vec::into_iter).collect();
        policy
            .targets
            .iter()
            .flat_map(|_| {
                by_repo
                    .iter_mut()
                    .filter_map(Iterator::next)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Run one policy now: plan and copy each repository for each target, record the run.
    ///
    /// # Panics
    /// When the app was built without a state store.
    pub async fn run_policy(
        &self,
        policy: &Policy,
        cancel: &CancellationToken,
        fence: Option<Arc<dyn Fence>>,
        opts: RunOptions,
    ) -> PolicyRun {
        self.run(policy, None, &Scope::All, cancel, fence, opts)
            .await
    }

    /// A targeted run: one repository of `policy`, within `scope`, for each target, through
    /// every rule of the policy. Recorded in the run history when it wrote, deleted or failed.
    ///
    /// # Panics
    /// When the app was built without a state store.
    pub async fn run_targeted(
        &self,
        policy: &Policy,
        repo: &RepoName,
        scope: &Scope,
        cancel: &CancellationToken,
        fence: Option<Arc<dyn Fence>>,
    ) -> PolicyRun {
        self.run(
            policy,
            Some(repo),
            scope,
            cancel,
            fence,
            RunOptions::default(),
        )
        .await
    }

    async fn run(
        &self,
        policy: &Policy,
        only: Option<&RepoName>,
        scope: &Scope,
        cancel: &CancellationToken,
        fence: Option<Arc<dyn Fence>>,
        opts: RunOptions,
    ) -> PolicyRun {
        let state = self
            .state
            .clone()
            .expect("run_policy needs the state store");
        let started = now_ms();
        let clock = std::time::Instant::now();
        let copier = Copier::new(self.shared.clone(), state.clone(), cancel.clone(), fence);
        let source = self.registry(&policy.source);
        let mut errors = Vec::new();
        let mut held = Vec::new();
        let mut interrupted = false;
        let memory = StateMemory(&state);
        let memory = &memory;
        let repos = match only {
            Some(r) => Ok(vec![r.clone()]),
            // Listing only reads: at a stop it ends at once, not after its retries.
            None => tokio::select! {
                biased;
                () = cancel.cancelled() => Ok(Vec::new()),
                r = select_repositories(policy, source) => r,
            },
        };
        match repos {
            Err(e) => {
                policy.targets.iter().for_each(|t| copier.count_failure(t));
                errors.push(e.to_string());
            }
            Ok(repos) => {
                let copier = &copier;
                let reports: Vec<Vec<RepoReport>> = stream::iter(repos)
                    .map(|r| {
                        let span = info_span!("repo", repo = %r);
                        async move {
                            self.sync_repo(policy, &r, copier, memory, opts, scope)
                                .await
                        }
                        .instrument(span)
                    })
                    .buffer_unordered(self.repo_width(policy))
                    .collect()
                    .await;
                for r in reports.into_iter().flatten() {
                    interrupted |= r.interrupted;
                    errors.extend(r.errors);
                    held.extend(r.held);
                }
                interrupted |= cancel.is_cancelled();
            }
        }
        let scope = only.map(|r| describe_scope(r, scope));
        let run = PolicyRun {
            policy: policy.name.clone(),
            started_ms: started,
            duration: clock.elapsed(),
            targets: copier.counts_by_target(),
            errors,
            held,
            interrupted,
            scope,
        };
        for e in &run.errors {
            error!(policy = %policy.name, error = %e, "copy failed");
        }
        let c = run.counts();
        // A targeted run that found its tag in sync (a coalesced or repeated event) is not
        // worth a place in the history; one that did something or failed is.
        if run.scope.is_none()
            || c.tags_copied + c.deleted + c.held + c.conflicts > 0
            || !run.errors.is_empty()
        {
            let mut rec = RunRecord::new(
                &policy.name,
                started,
                run.outcome(),
                run.targets.clone(),
                run.errors.iter().take(20).cloned().collect(),
                run.held.iter().take(20).cloned().collect(),
            );
            rec.scope = run.scope.clone();
            if let Err(e) = state.record_run(&rec, self.config.daemon.run_history) {
                error!(policy = %policy.name, error = %e, "could not record the run");
            }
            self.notifier.after_run(&rec);
        }
        match &run.scope {
            None => info!(policy = %policy.name, outcome = run.outcome(), "run finished"),
            Some(s) => {
                info!(policy = %policy.name, scope = %s, outcome = run.outcome(), copied = c.tags_copied, deleted = c.deleted, "targeted run finished")
            }
        }
        run
    }
}

impl App {
    /// One repository for every target of the policy: planned with one source read of each
    /// tag list and manifest, then copied with one source read of each blob several targets
    /// lack.
    async fn sync_repo(
        &self,
        policy: &Policy,
        repo: &RepoName,
        copier: &Copier,
        memory: &StateMemory<'_>,
        opts: RunOptions,
        scope: &Scope,
    ) -> Vec<RepoReport> {
        let source = self.registry(&policy.source);
        let planned = async {
            // In name order, so two runs of the policy never hold each other's locks crosswise.
            let mut held = Vec::new();
            for t in policy
                .targets
                .iter()
                .collect::<std::collections::BTreeSet<_>>()
            {
                held.push(
                    self.repo_locks
                        .lock((policy.name.clone(), t.clone(), repo.clone()))
                        .await,
                );
            }
            let reads = SourceReads::new(source);
            let plans = policy.targets.iter().map(|t| {
                plan_repo(
                    policy,
                    t,
                    &reads,
                    self.registry(t),
                    repo,
                    memory,
                    opts,
                    scope,
                )
                .instrument(info_span!("plan", target = %t))
            });
            (held, join_all(plans).await)
        };
        // Waiting for a lock and planning only read (what planning remembers is best-effort):
        // at a stop they end at once, instead of running out their retries against a registry
        // that does not answer while the daemon waits for its stop deadline. Cancellation is
        // looked at first, so a repository reached after the stop is not even started.
        let (_held, plans) = tokio::select! {
            biased;
            () = copier.cancel_token().cancelled() => return Vec::new(),
            p = planned => p,
        };
        let fan = copier.fanout(source, repo);
        for p in plans.iter().filter(|p| p.error.is_none()) {
            p.blobs
                .iter()
                .filter(|(_, b)| b.on_target != Some(true))
                .for_each(|(d, _)| fan.expect(&p.target, d));
        }
        fan.settle();
        let copies = plans.iter().map(|p| {
            copier
                .copy_repo(p, source, self.registry(&p.target), &fan)
                .instrument(info_span!("copy", target = %p.target))
        });
        join_all(copies).await
    }
}

/// How to reach a configured registry.
fn endpoint(spec: &crate::config::RegistrySpec) -> Endpoint {
    Endpoint {
        name: spec.name.clone(),
        url: spec.url.clone(),
        credentials: spec.credentials.clone(),
        ca_pem: spec.ca_pem.clone(),
        max_concurrent: spec.max_concurrent,
        bandwidth_limit: spec.bandwidth_limit.map(|b| b.0),
        retry: RetryPolicy::default(),
        request_timeout: spec.request_timeout,
        stall_timeout: spec.stall_timeout,
        list_limit: spec.list_limit,
        list_timeout: spec.list_timeout,
        rate_limit_reserve: spec.rate_limit_reserve,
        rate_limit_max_wait: spec.rate_limit_max_wait,
    }
}

/// `push team/app:v1`, `delete team/app:v1`, `delete team/app`, `repository team/app`.
fn describe_scope(repo: &RepoName, scope: &Scope) -> String {
    match scope {
        Scope::All => format!("repository {repo}"),
        Scope::Tag(t) => format!("push {repo}:{t}"),
        Scope::Deleted(Some(t)) => format!("delete {repo}:{t}"),
        Scope::Deleted(None) => format!("delete {repo}"),
    }
}

fn unreachable_repo() -> RepoName {
    "unknown".parse().expect("valid repository name")
}
