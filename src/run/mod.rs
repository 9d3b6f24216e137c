//! Running a policy: [`Runner::run`] reads in the order the work happens. Select the
//! repositories, then for each of them (several at once) lock it, plan it for every target,
//! gather the fan-out and copy; then record the run and notify. `ferry sync`, the scheduler
//! and the event queue all start runs here.

mod memory;
mod told;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use futures_util::{stream, StreamExt};
use tracing::{error, info, info_span, Instrument};

use crate::config::Policy;
use crate::copy::{Copier, CopyShared, Failure, Guards, KeyedLocks, Progress, Record, RepoReport};
use crate::ledger::Ledger;
use crate::model::{ErrorKind, RepoName};
use crate::notify::Notifier;
use crate::plan::{
    plan_repo, select_repositories, Memory, NoMemory, PlanError, RepoPlan, RunOptions, Scope,
    SourceReads,
};
use crate::registry::Registry;
use crate::state::{now_ms, Counts, Findings, Outcome, RunRecord, StateStore};

use memory::StateMemory;
pub use told::Told;

/// What started a run, as the audit ledger tells it.
#[derive(Clone, Debug)]
pub enum Cause {
    /// `ferry sync`.
    Sync,
    /// The daemon: its schedule for a full run, an event for a targeted one.
    Daemon,
    /// Run requests through the API, by id.
    Requests(Vec<u64>),
}

impl Cause {
    fn describe(&self, reach: &Reach) -> String {
        match (self, reach.describe()) {
            (Cause::Sync, _) => "ferry sync".into(),
            (Cause::Daemon, None) => "schedule".into(),
            (Cause::Daemon, Some(scope)) => format!("event: {scope}"),
            (Cause::Requests(ids), _) => {
                let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
                format!("request {}", ids.join(", "))
            }
        }
    }
}

/// What a run covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reach {
    /// Every repository the policy selects, every tag.
    Full,
    /// One repository, within `scope`: an event, or a run asked for one repository or tag.
    Targeted { repository: RepoName, scope: Scope },
}

impl Reach {
    /// `push team/app:v1`, `delete team/app:v1`, `delete team/app`, `repository team/app`;
    /// none for a full run.
    fn describe(&self) -> Option<String> {
        let Reach::Targeted {
            repository: repo,
            scope,
        } = self
        else {
            return None;
        };
        Some(match scope {
            Scope::All => format!("repository {repo}"),
            Scope::Tag(t) => format!("push {repo}:{t}"),
            Scope::Deleted(Some(t)) => format!("delete {repo}:{t}"),
            Scope::Deleted(None) => format!("delete {repo}"),
        })
    }
}

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

/// How one policy run ended. Failures stay typed here; they become text in the run record.
#[derive(Debug)]
pub struct PolicyRun {
    pub policy: String,
    pub started_ms: u64,
    pub duration: Duration,
    pub targets: BTreeMap<String, Counts>,
    pub failures: Vec<Failure>,
    /// Failures by target and kind (the counts a failure adds to, not the failure list: one
    /// source that cannot be listed fails every target once).
    pub failure_kinds: BTreeMap<(String, ErrorKind), u64>,
    /// Held, verified and conflicting tags.
    pub findings: Findings,
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

    pub fn outcome(&self) -> Outcome {
        match (self.interrupted, self.failures.is_empty()) {
            (true, _) => Outcome::Interrupted,
            (false, true) => Outcome::Ok,
            (false, false) => Outcome::Failed,
        }
    }

    /// The failures as the lines a person reads.
    pub fn errors(&self) -> Vec<String> {
        self.failures.iter().map(ToString::to_string).collect()
    }

    /// What the run history keeps: the first 20 failures and of each finding.
    pub fn record(&self) -> RunRecord {
        let mut rec = RunRecord::new(
            &self.policy,
            self.started_ms,
            self.outcome(),
            self.targets.clone(),
            self.failures
                .iter()
                .take(20)
                .map(ToString::to_string)
                .collect(),
            self.findings.first(20),
        );
        rec.scope = self.scope.clone();
        rec
    }
}

/// Everything runs share: one client per registry, the state store, the copy limits, the
/// repository locks and the notifier.
pub struct Runner {
    registries: BTreeMap<String, Registry>,
    state: Option<StateStore>,
    shared: Arc<CopyShared>,
    /// One per (policy, target, source repository), held while it is planned and copied: a
    /// targeted run and a full run never write the same tags at once.
    repo_locks: Arc<KeyedLocks<(String, String, RepoName)>>,
    notifier: Notifier,
    /// Runs kept per policy in the state store.
    history: usize,
    /// Where every write is accounted for, and the name it is made under.
    ledger: Option<Arc<Ledger>>,
    member: String,
}

impl Runner {
    pub fn new(
        registries: BTreeMap<String, Registry>,
        state: Option<StateStore>,
        shared: Arc<CopyShared>,
        notifier: Notifier,
        history: usize,
    ) -> Self {
        Runner {
            registries,
            state,
            shared,
            repo_locks: Arc::default(),
            notifier,
            history,
            ledger: None,
            member: String::new(),
        }
    }

    /// Account for every write of this runner's runs in `ledger`, made by `member`.
    pub fn recording(self, ledger: Option<Arc<Ledger>>, member: String) -> Self {
        Runner {
            ledger,
            member,
            ..self
        }
    }

    pub fn ledger(&self) -> Option<&Arc<Ledger>> {
        self.ledger.as_ref()
    }

    /// Keep what `older` learnt and holds that is still true: its repository locks (runs of
    /// the old config may still be going), its client of every registry whose endpoint is
    /// unchanged (a rationed budget, the adaptive concurrency, open connections), and its
    /// notifier when `same_notify` (its counters and deliveries in flight).
    pub fn carry_over(&mut self, older: &Runner, same_notify: bool) {
        self.repo_locks = older.repo_locks.clone();
        // One appender per process: runs of the old config may still be writing.
        if older.ledger.is_some() {
            self.ledger = older.ledger.clone();
        }
        if same_notify {
            self.notifier = older.notifier.clone();
        }
        for (key, reg) in &mut self.registries {
            if let Some(old) = older.registries.get(key).filter(|o| o.same_endpoint(reg)) {
                *reg = old.clone();
            }
        }
    }

    /// Where run outcomes are sent (`[[notify]]`).
    pub fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    /// Live totals of every run of this process so far.
    pub fn progress(&self) -> &Progress {
        &self.shared.progress
    }

    /// Background work copies left running (one source read feeding several targets):
    /// awaited at a stop.
    pub fn tasks(&self) -> &tokio_util::task::TaskTracker {
        self.shared.tasks()
    }

    pub fn state(&self) -> Option<&StateStore> {
        self.state.as_ref()
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

    fn registry(&self, key: &str) -> &Registry {
        &self.registries[key] // config validation guarantees every policy's registries exist
    }

    /// The client of the configured registry `key`, if there is one.
    pub fn registry_named(&self, key: &str) -> Option<&Registry> {
        self.registries.get(key)
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

    /// Plan every (target, repository) of a policy, touching nothing (`ferry plan`). A source
    /// that cannot be listed gives one plan entry carrying the error per target.
    pub async fn plan_policy(&self, policy: &Policy) -> Vec<RepoPlan> {
        let source = self.registry(&policy.source);
        let repos = match select_repositories(policy, source).await {
            Ok(r) => r,
            Err(e) => {
                let e = Arc::new(e);
                return policy
                    .targets
                    .iter()
                    .map(|t| {
                        let mut p = RepoPlan::empty(&policy.name, t, unknown(), unknown());
                        p.error = Some(PlanError::Listing(e.clone()));
                        p
                    })
                    .collect();
            }
        };
        let memory = self.memory();
        let by_repo: Vec<Vec<RepoPlan>> = stream::iter(&repos)
            .map(|r| {
                self.plan_repository(
                    policy,
                    r,
                    memory.as_ref(),
                    RunOptions::default(),
                    &Scope::All,
                )
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

    /// Run `policy` now, as far as `reach` says.
    ///
    /// # Panics
    /// When the runner was built without a state store.
    pub async fn run(
        &self,
        policy: &Policy,
        reach: &Reach,
        opts: RunOptions,
        guards: Guards,
        cause: Cause,
    ) -> PolicyRun {
        let state = self
            .state
            .clone()
            .expect("running a policy needs the state store");
        let (started, clock) = (now_ms(), std::time::Instant::now());
        let cancel = guards.cancel.clone();
        let mut copier = Copier::new(self.shared.clone(), state.clone(), guards);
        // The run history's key, and each of its ledger entries' `run`.
        let run_id = format!("{}@{started}", policy.name);
        let ledger_from = self.ledger.as_ref().map(|l| l.last_seq());
        if let Some(ledger) = &self.ledger {
            copier = copier.recording(Record {
                ledger: ledger.clone(),
                member: self.member.clone(),
                policy: policy.name.clone(),
                run: run_id.clone(),
                trigger: cause.describe(reach),
                source: policy.source.clone(),
            });
            let targets: Vec<(&str, &Registry)> = policy
                .targets
                .iter()
                .map(|t| (t.as_str(), self.registry(t)))
                .collect();
            copier.settle_announced(&targets).await;
        }
        let memory = StateMemory(&state);

        let mut failures = Vec::new();
        let mut reports = Vec::new();
        let mut interrupted = false;
        match self.select(policy, reach, &cancel).await {
            Err(e) => {
                for t in &policy.targets {
                    copier.count_failure(t, e.kind());
                }
                failures.push(Failure::new("", e));
            }
            Ok(repos) => {
                let scope = match reach {
                    Reach::Full => Scope::All,
                    Reach::Targeted { scope, .. } => scope.clone(),
                };
                let copier = &copier;
                let per_repo: Vec<Vec<RepoReport>> = stream::iter(repos)
                    .map(|r| {
                        let span = info_span!("repo", repo = %r);
                        let scope = &scope;
                        let memory = &memory;
                        async move {
                            self.sync_repository(policy, &r, copier, memory, opts, scope)
                                .await
                        }
                        .instrument(span)
                    })
                    .buffer_unordered(self.repo_width(policy))
                    .collect()
                    .await;
                reports = per_repo.into_iter().flatten().collect();
                interrupted = cancel.is_cancelled();
            }
        }

        let mut run = PolicyRun {
            policy: policy.name.clone(),
            started_ms: started,
            duration: clock.elapsed(),
            targets: copier.counts_by_target(),
            failure_kinds: copier.failure_kinds(),
            failures,
            findings: Findings::default(),
            interrupted,
            scope: reach.describe(),
        };
        for r in reports {
            run.interrupted |= r.interrupted;
            run.failures.extend(r.errors);
            run.findings.extend(r.findings);
        }
        self.record_and_notify(&run, &state);
        if let Some(from) = ledger_from {
            self.stream_entries(&run_id, from);
        }
        run
    }

    /// Phase 1: the repositories the run covers. Listing only reads: at a stop it ends at
    /// once, not after its retries.
    async fn select(
        &self,
        policy: &Policy,
        reach: &Reach,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<Vec<RepoName>, crate::registry::RegistryError> {
        match reach {
            Reach::Targeted { repository, .. } => Ok(vec![repository.clone()]),
            Reach::Full => tokio::select! {
                biased;
                () = cancel.cancelled() => Ok(Vec::new()),
                r = select_repositories(policy, self.registry(&policy.source)) => r,
            },
        }
    }

    /// Phases 2 to 5 for one repository: lock it for every target, plan it with one source
    /// read of each tag list and manifest, gather the fan-out (one source read of each blob
    /// several targets lack), copy to every target.
    async fn sync_repository(
        &self,
        policy: &Policy,
        repo: &RepoName,
        copier: &Copier,
        memory: &StateMemory<'_>,
        opts: RunOptions,
        scope: &Scope,
    ) -> Vec<RepoReport> {
        let locked_and_planned = async {
            let locks = self.lock(policy, repo).await;
            (
                locks,
                self.plan_repository(policy, repo, memory, opts, scope)
                    .await,
            )
        };
        // Waiting for a lock and planning only read (what planning remembers is best-effort):
        // at a stop they end at once, instead of running out their retries against a registry
        // that does not answer while the daemon waits for its stop deadline. Cancellation is
        // looked at first, so a repository reached after the stop is not even started.
        let (_locks, plans) = tokio::select! {
            biased;
            () = copier.cancel_token().cancelled() => return Vec::new(),
            p = locked_and_planned => p,
        };
        if let Scope::Tag(_) = scope {
            // An event for a tag the rules leave out: say so, or the push seems lost.
            for (p, d) in plans
                .iter()
                .flat_map(|p| p.dropped.iter().map(move |d| (p, d)))
            {
                info!(repository = %repo, tag = %d.tag, target = %p.target, reason = %d.reason, "pushed tag not copied: the policy's rules leave it out");
            }
        }
        let source = self.registry(&policy.source);
        let fan = copier.fanout(source, repo, &plans);
        let copies = plans.into_iter().map(|p| {
            let (target, span) = (
                self.registry(&p.target),
                info_span!("copy", target = %p.target),
            );
            copier.copy_repo(p, source, target, &fan).instrument(span)
        });
        join_all(copies).await
    }

    /// The repository's lock for every target of the policy, taken in name order so two
    /// runs of the policy never hold each other's locks crosswise.
    async fn lock(
        &self,
        policy: &Policy,
        repo: &RepoName,
    ) -> Vec<tokio::sync::OwnedMutexGuard<()>> {
        let mut held = Vec::new();
        for t in policy.targets.iter().collect::<BTreeSet<_>>() {
            held.push(
                self.repo_locks
                    .lock((policy.name.clone(), t.clone(), repo.clone()))
                    .await,
            );
        }
        held
    }

    /// One repository planned for every target, with one source read of each tag list and
    /// manifest.
    async fn plan_repository(
        &self,
        policy: &Policy,
        repo: &RepoName,
        memory: &dyn Memory,
        opts: RunOptions,
        scope: &Scope,
    ) -> Vec<RepoPlan> {
        let reads = SourceReads::new(self.registry(&policy.source));
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
        join_all(plans).await
    }

    /// The run's ledger entries to the `[[notify]]` that stream them, read back from the
    /// ledger (what was committed, nothing else), a page at a time.
    fn stream_entries(&self, run: &str, after: u64) {
        let Some(ledger) = self
            .ledger
            .as_ref()
            .filter(|_| self.notifier.wants_entries())
        else {
            return;
        };
        let filter = crate::ledger::Filter {
            run: Some(run.to_owned()),
            ..Default::default()
        };
        let sent = ledger.each_page(&filter, after, |page| self.notifier.entries(&page));
        if let Err(e) = sent {
            error!(error = %e, "audit ledger entries not streamed to [[notify]]");
        }
    }

    /// Phases 6 and 7: the run history and `[[notify]]`. A targeted run that found its tag in
    /// sync (a coalesced or repeated event) is not worth a place in the history; one that did
    /// something or failed is.
    fn record_and_notify(&self, run: &PolicyRun, state: &StateStore) {
        let mut told = Told::default();
        for f in &run.failures {
            let error = told.brief(&f.to_string());
            error!(policy = %run.policy, %error, kind = f.kind().as_str(), "copy failed");
        }
        let c = run.counts();
        let worth = run.scope.is_none()
            || c.tags_copied + c.deleted + c.held + c.conflicts > 0
            || !run.failures.is_empty();
        if worth {
            let rec = run.record();
            if let Err(e) = state.record_run(&rec, self.history) {
                error!(policy = %run.policy, error = %e, "could not record the run");
            }
            self.notifier.after_run(&rec);
        }
        match &run.scope {
            None => info!(policy = %run.policy, outcome = %run.outcome(), "run finished"),
            Some(s) => {
                info!(policy = %run.policy, scope = %s, outcome = %run.outcome(), copied = c.tags_copied, deleted = c.deleted, "targeted run finished")
            }
        }
    }

    fn memory(&self) -> Box<dyn Memory + '_> {
        match &self.state {
            Some(s) => Box::new(StateMemory(s)),
            None => Box::new(NoMemory),
        }
    }
}

/// The repository a plan names when the source could not even be listed.
fn unknown() -> RepoName {
    "unknown".parse().expect("valid repository name")
}
