//! The documents of the daemon's HTTP API, typed once: what the daemon serves, what
//! `ferry sync` and `ferry status` read from a running daemon, what the status page renders,
//! what cluster members pass each other, and what the tests parse. A field renamed here is
//! renamed on both sides of the wire, or the build fails.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::state::{
    Counts, Findings, InFlight, Outcome, PendingEvent, RunRecord, StateError, StateStore,
};

/// `POST /v1/runs`: run a policy now, or one repository (and tag) of it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    pub policy: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Delete past the policy's `max_delete`.
    #[serde(default)]
    pub force_delete: bool,
    /// Ask the target about every tag instead of trusting what ferry wrote there.
    #[serde(default)]
    pub verify: bool,
}

/// The 202 answer to a run request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunAccepted {
    pub id: u64,
}

/// Where a run asked for over the API stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Queued,
    Running,
    Done,
}

/// `GET /v1/runs/{id}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunView {
    pub id: u64,
    pub policy: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    pub state: RunState,
    /// Set once `state` is `done`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    pub counts: Counts,
    pub errors: Vec<String>,
    /// Held, verified and conflicting tags (`held`, `verified`, `conflicts`).
    #[serde(flatten)]
    pub findings: Findings,
    pub requested_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<u64>,
}

/// What the daemon knows of a policy beyond its last run: its trigger, whether it runs now,
/// and totals since the daemon started.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PolicyState {
    pub trigger: String,
    pub running: bool,
    pub next_run_ms: Option<u64>,
    pub runs_ok: u64,
    pub runs_failed: u64,
    pub runs_interrupted: u64,
    pub last_duration_secs: f64,
    pub last_success_ms: Option<u64>,
    /// Ticks that came while the previous run was still going, and so waited for it.
    pub ticks_delayed: u64,
    /// Ticks folded into a delayed one (more than one came during a long run).
    pub ticks_skipped: u64,
    /// Counts summed over every run since the daemon started, per target.
    pub targets: BTreeMap<String, Counts>,
}

/// A registry's rationed budget, as it last reported it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RateLimitView {
    pub registry: String,
    pub remaining: Option<u64>,
    pub limit: Option<u64>,
    pub paused_seconds: f64,
}

/// Requests a registry gets at once now (adaptive), and at most.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConcurrencyView {
    pub registry: String,
    pub limit: usize,
    pub max: usize,
}

/// One cluster member, as `/status` lists it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    pub name: String,
    pub host: String,
    pub pid: u32,
    pub api: String,
    pub started_ms: u64,
    /// Seconds since etcd last saw the member's keepalive; `None` when it could not say.
    pub heartbeat_age_seconds: Option<i64>,
    /// Policies the member defines.
    pub policies: usize,
    /// Policies rendezvous hashing gives it.
    pub owns: Vec<String>,
    /// Policies whose lock it holds now.
    pub holds: Vec<String>,
}

/// A policy not defined alike on every member: missing on some, or defined differently.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mismatch {
    pub policy: String,
    pub defined_on: Vec<String>,
    pub missing_on: Vec<String>,
    /// The members do not agree on its definition.
    pub differs: bool,
}

/// The `cluster` part of the status document.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    #[serde(default)]
    pub member: String,
    #[serde(default)]
    pub etcd: String,
    #[serde(default)]
    pub lease_ttl_seconds: u64,
    #[serde(default)]
    pub joined: bool,
    /// Policies this member holds.
    #[serde(default)]
    pub holds: Vec<String>,
    #[serde(default)]
    pub members: Vec<MemberView>,
    #[serde(default)]
    pub mismatches: Vec<Mismatch>,
    /// Events and run requests accepted by any member, not yet done by their owner.
    #[serde(default)]
    pub events_waiting: Option<usize>,
    /// `false` when `ferry status` read etcd itself because this member's daemon is down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon_running: Option<bool>,
    /// Why the cluster could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ClusterStatus {
    pub fn unreadable(why: impl Into<String>) -> Self {
        ClusterStatus {
            error: Some(why.into()),
            ..Default::default()
        }
    }
}

/// `/status` and `ferry status --json`: the state store's part (runs, uploads, pending
/// events), and what only a running daemon knows (policies, registries, the cluster).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusDoc {
    /// Why the state store could not be read; the store's parts are then empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub runs: Vec<RunRecord>,
    /// For a policy whose last run changed nothing: its latest run that copied or deleted.
    #[serde(default)]
    pub last_changes: Vec<RunRecord>,
    #[serde(default)]
    pub uploads_in_flight: Vec<InFlight>,
    /// Accepted events not yet carried out (the first `PENDING_SHOWN`).
    #[serde(default)]
    pub pending_events: Vec<PendingEvent>,
    #[serde(default)]
    pub pending_events_total: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policies: Option<BTreeMap<String, PolicyState>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limits: Option<Vec<RateLimitView>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Vec<ConcurrencyView>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterStatus>,
}

/// Pending events a status lists; the total counts them all.
pub const PENDING_SHOWN: usize = 100;

impl StatusDoc {
    /// The store's part. `pending`: the events a daemon's queue holds (in a cluster it also
    /// holds work handed over through etcd, which its journal does not); without a daemon,
    /// the journal's entries. A store that cannot be read gives a document that says why.
    pub fn from_store(store: &StateStore, pending: Option<(Vec<PendingEvent>, usize)>) -> Self {
        match Self::read(store, pending) {
            Ok(doc) => doc,
            Err(e) => StatusDoc {
                error: Some(e.to_string()),
                ..Default::default()
            },
        }
    }

    /// The store's part, or why the store cannot be read.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub fn read(
        store: &StateStore,
        pending: Option<(Vec<PendingEvent>, usize)>,
    ) -> Result<Self, StateError> {
        let (pending_events, pending_events_total) = match pending {
            Some(p) => p,
            None => {
                let (entries, _) = store.journal_all()?;
                let total = entries.len();
                let shown = entries
                    .into_iter()
                    .take(PENDING_SHOWN)
                    .map(|(key, e)| PendingEvent::new(key, &e, false))
                    .collect();
                (shown, total)
            }
        };
        let runs = store.last_runs()?;
        let unchanged: Vec<&str> = runs
            .iter()
            .filter(|r| !r.changed())
            .map(|r| r.policy.as_str())
            .collect();
        let last_changes = store
            .last_changes()?
            .into_iter()
            .filter(|r| unchanged.contains(&r.policy.as_str()))
            .collect();
        Ok(StatusDoc {
            runs,
            last_changes,
            uploads_in_flight: store.uploads_in_flight()?,
            pending_events,
            pending_events_total,
            ..Default::default()
        })
    }

    /// The latest run of `policy`, if it ever ran.
    pub fn last_run(&self, policy: &str) -> Option<&RunRecord> {
        self.runs.iter().find(|r| r.policy == policy)
    }
}
