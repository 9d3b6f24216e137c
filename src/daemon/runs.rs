//! Runs asked for over the API (`POST /v1/runs`), so `GET /v1/runs/{id}` can say how they went.
//! Kept in memory: a client that lost its daemon asks again; the work itself is journaled.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::api::{RunState, RunView};
use crate::model::now_ms;
use crate::run::PolicyRun;
use crate::state::{Counts, Findings, JournalKey, Outcome};

/// Finished runs kept for clients that poll late; the oldest go first.
const KEEP: usize = 1000;
/// Failures and holds a view keeps.
const LISTED: usize = 20;

#[derive(Default)]
pub struct RunBook {
    inner: Mutex<(u64, BTreeMap<u64, RunView>)>,
}

impl RunBook {
    /// A run asked for: of the whole policy, or of the repository (and tag) `key` names.
    pub fn create(&self, key: &JournalKey) -> u64 {
        let mut g = self.inner.lock().expect("lock poisoned");
        g.0 += 1;
        let id = g.0;
        g.1.insert(
            id,
            RunView {
                id,
                policy: key.policy.clone(),
                repository: key.repository.as_ref().map(ToString::to_string),
                tag: key.tag.as_ref().map(ToString::to_string),
                state: RunState::Queued,
                outcome: None,
                counts: Counts::default(),
                errors: vec![],
                findings: Findings::default(),
                requested_ms: now_ms(),
                finished_ms: None,
            },
        );
        while g.1.len() > KEEP {
            let Some(oldest) =
                g.1.iter()
                    .find(|(_, v)| v.state == RunState::Done)
                    .map(|(k, _)| *k)
            else {
                break;
            };
            g.1.remove(&oldest);
        }
        id
    }

    pub fn get(&self, id: u64) -> Option<RunView> {
        self.inner
            .lock()
            .expect("lock poisoned")
            .1
            .get(&id)
            .cloned()
    }

    pub fn running(&self, ids: &[u64]) {
        let mut g = self.inner.lock().expect("lock poisoned");
        for id in ids {
            if let Some(v) = g.1.get_mut(id) {
                v.state = RunState::Running;
            }
        }
    }

    pub fn finished(&self, ids: &[u64], run: &PolicyRun) {
        self.end(
            ids,
            Ended {
                outcome: run.outcome(),
                counts: run.counts(),
                errors: run.errors(),
                findings: run.findings.clone(),
            },
        );
    }

    /// End runs that will not happen (their policy was removed by a reload).
    pub fn abandoned(&self, ids: &[u64], why: &str) {
        self.end(ids, Ended::without(Outcome::Failed, why));
    }

    /// End runs this cluster member will not do: their policy moved to another member, which
    /// finds the request waiting in etcd.
    pub fn moved(&self, ids: &[u64]) {
        let why = "the policy moved to another cluster member, which runs this request";
        self.end(ids, Ended::without(Outcome::Interrupted, why));
    }

    /// A run asked for here was done by the cluster member that owns its policy: its result
    /// as that member reported it. A report that is not a finished run view fails the run.
    pub fn apply_remote(&self, id: u64, view: &[u8]) {
        match serde_json::from_slice::<RunView>(view) {
            Ok(v) => {
                let ended = Ended {
                    outcome: v.outcome.unwrap_or(Outcome::Failed),
                    counts: v.counts,
                    errors: v.errors,
                    findings: v.findings,
                };
                self.end(&[id], ended);
            }
            Err(e) => {
                let why = format!("the member that ran it sent an unreadable report: {e}");
                self.end(&[id], Ended::without(Outcome::Failed, &why));
            }
        }
    }

    fn end(&self, ids: &[u64], e: Ended) {
        let listed = |l: &[String]| l.iter().take(LISTED).cloned().collect();
        let mut g = self.inner.lock().expect("lock poisoned");
        for id in ids {
            if let Some(v) = g.1.get_mut(id) {
                v.state = RunState::Done;
                v.outcome = Some(e.outcome);
                v.counts = e.counts.clone();
                v.errors = listed(&e.errors);
                v.findings = e.findings.first(LISTED);
                v.finished_ms = Some(now_ms());
            }
        }
    }
}

/// How a run asked for over the API ended.
struct Ended {
    outcome: Outcome,
    counts: Counts,
    errors: Vec<String>,
    findings: Findings,
}

impl Ended {
    /// A run that did nothing, and why.
    fn without(outcome: Outcome, why: &str) -> Self {
        Ended {
            outcome,
            counts: Counts::default(),
            errors: vec![why.to_owned()],
            findings: Findings::default(),
        }
    }
}
