//! Runs asked for over the API (`POST /v1/runs`), so `GET /v1/runs/{id}` can say how they went.
//! Kept in memory: a client that lost its daemon asks again; the work itself is journaled.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

use crate::app::PolicyRun;
use crate::model::now_ms;
use crate::state::{Counts, JournalKey};

/// Finished runs kept for clients that poll late; the oldest go first.
const KEEP: usize = 1000;

#[derive(Clone, Debug, Serialize)]
pub struct RunView {
    pub id: u64,
    pub policy: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// `queued`, `running` or `done`.
    pub state: &'static str,
    /// Once done: `ok`, `failed` or `interrupted`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    pub counts: Counts,
    pub errors: Vec<String>,
    pub held: Vec<String>,
    pub requested_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<u64>,
}

#[derive(Default)]
pub struct RunBook {
    inner: Mutex<(u64, BTreeMap<u64, RunView>)>,
}

impl RunBook {
    /// A run asked for: of the whole policy, or of the repository (and tag) `key` names.
    pub fn create(&self, key: &JournalKey) -> u64 {
        let named = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let mut g = self.inner.lock().expect("lock poisoned");
        g.0 += 1;
        let id = g.0;
        g.1.insert(
            id,
            RunView {
                id,
                policy: key.policy.clone(),
                repository: named(&key.repository),
                tag: named(&key.tag),
                state: "queued",
                outcome: None,
                counts: Counts::default(),
                errors: vec![],
                held: vec![],
                requested_ms: now_ms(),
                finished_ms: None,
            },
        );
        while g.1.len() > KEEP {
            let Some(oldest) = g.1.iter().find(|(_, v)| v.state == "done").map(|(k, _)| *k) else {
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
                v.state = "running";
            }
        }
    }

    pub fn finished(&self, ids: &[u64], run: &PolicyRun) {
        self.end(
            ids,
            run.outcome(),
            run.counts(),
            run.errors.clone(),
            run.held.clone(),
        );
    }

    /// End runs that will not happen (their policy was removed by a reload).
    pub fn abandoned(&self, ids: &[u64], why: &str) {
        self.end(
            ids,
            "failed",
            Counts::default(),
            vec![why.to_owned()],
            vec![],
        );
    }

    /// End runs this cluster member will not do: their policy moved to another member, which
    /// finds the request waiting in etcd.
    pub fn moved(&self, ids: &[u64]) {
        let why = "the policy moved to another cluster member, which runs this request".to_owned();
        self.end(ids, "interrupted", Counts::default(), vec![why], vec![]);
    }

    /// A run asked for here was done by the cluster member that owns its policy: its result
    /// as that member reported it (checked field by field; a bad one says so).
    pub fn apply_remote(&self, id: u64, view: &serde_json::Value) {
        let strings = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .take(20)
                        .collect()
                })
                .unwrap_or_default()
        };
        let outcome = view["outcome"]
            .as_str()
            .filter(|o| matches!(*o, "ok" | "failed" | "interrupted"))
            .unwrap_or("failed");
        let counts = serde_json::from_value(view["counts"].clone()).unwrap_or_default();
        self.end(
            &[id],
            outcome,
            counts,
            strings(&view["errors"]),
            strings(&view["held"]),
        );
    }

    fn end(
        &self,
        ids: &[u64],
        outcome: &str,
        counts: Counts,
        errors: Vec<String>,
        held: Vec<String>,
    ) {
        let mut g = self.inner.lock().expect("lock poisoned");
        for id in ids {
            if let Some(v) = g.1.get_mut(id) {
                v.state = "done";
                v.outcome = Some(outcome.to_owned());
                v.counts = counts.clone();
                v.errors = errors.iter().take(20).cloned().collect();
                v.held = held.iter().take(20).cloned().collect();
                v.finished_ms = Some(now_ms());
            }
        }
    }
}
