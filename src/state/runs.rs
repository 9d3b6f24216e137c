//! Run history: how each policy run ended, kept for `ferry status`, `/status` and the page.
//!
//!   runs : policy \0 start_ms (u64 BE) -> RunRecord  one per run; scan in reverse for the latest
//!
//! The last `run_history` runs of each policy are kept: sled files never shrink, so the
//! keyspace stays bounded.

use serde::{Deserialize, Serialize};

use super::{key, now_ms, StateError, StateStore, Versioned, VERSION};

/// How a run ended. Serialised as `ok`, `failed` or `interrupted`, the words every document
/// and metric label has always used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    Failed,
    Interrupted,
}

impl Outcome {
    pub const ALL: [Outcome; 3] = [Outcome::Ok, Outcome::Failed, Outcome::Interrupted];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failed => "failed",
            Self::Interrupted => "interrupted",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub tags_copied: u64,
    pub tags_in_sync: u64,
    #[serde(default)]
    pub conflicts: u64,
    pub manifests_written: u64,
    pub blobs_uploaded: u64,
    pub blobs_mounted: u64,
    pub blobs_skipped: u64,
    pub bytes_sent: u64,
    pub failures: u64,
    /// Blob transfers resumed after a transient failure.
    #[serde(default)]
    pub retries: u64,
    /// Tags held back by a promotion gate.
    #[serde(default)]
    pub held: u64,
    /// Target tags deleted (delete = true).
    #[serde(default)]
    pub deleted: u64,
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
        self.tags_copied += o.tags_copied;
        self.tags_in_sync += o.tags_in_sync;
        self.conflicts += o.conflicts;
        self.manifests_written += o.manifests_written;
        self.blobs_uploaded += o.blobs_uploaded;
        self.blobs_mounted += o.blobs_mounted;
        self.blobs_skipped += o.blobs_skipped;
        self.bytes_sent += o.bytes_sent;
        self.failures += o.failures;
        self.retries += o.retries;
        self.held += o.held;
        self.deleted += o.deleted;
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    pub v: u32,
    pub policy: String,
    pub started_ms: u64,
    pub ended_ms: u64,
    pub outcome: Outcome,
    pub counts: Counts,
    /// The same counts per target.
    #[serde(default)]
    pub targets: std::collections::BTreeMap<String, Counts>,
    /// First few failure messages, for `ferry status`.
    pub errors: Vec<String>,
    /// Held, verified and conflicting tags (`held`, `verified`, `conflicts` in documents).
    #[serde(flatten)]
    pub findings: Findings,
    /// A targeted run's repository (and tag), e.g. `push team/app:v1`; none for a full run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// What a run found tag by tag beyond its counts, first few of each: what `ferry sync`,
/// `ferry status`, `/status`, the page and notifications list.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Findings {
    /// Tags held back by promotion gates, with the reason.
    #[serde(default)]
    pub held: Vec<String>,
    /// Gated tags copied, with what verified them (key or identity, signature digest).
    #[serde(default)]
    pub verified: Vec<String>,
    /// Tags left as they are because the target holds another digest (overwrite = false,
    /// or a registry that refuses to move the tag).
    #[serde(default)]
    pub conflicts: Vec<Conflict>,
}

impl Findings {
    pub fn extend(&mut self, o: Findings) {
        self.held.extend(o.held);
        self.verified.extend(o.verified);
        self.conflicts.extend(o.conflicts);
    }

    /// The first `n` of each list: what documents keep.
    pub fn first(&self, n: usize) -> Findings {
        Findings {
            held: self.held.iter().take(n).cloned().collect(),
            verified: self.verified.iter().take(n).cloned().collect(),
            conflicts: self.conflicts.iter().take(n).cloned().collect(),
        }
    }
}

/// A tag the target keeps at another digest than the source's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    pub target: String,
    /// The repository on the target.
    pub repository: String,
    pub tag: String,
    pub source_digest: String,
    pub target_digest: Option<String>,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}:{} is {} there, {} on the source",
            self.target,
            self.repository,
            self.tag,
            self.target_digest.as_deref().unwrap_or("another digest"),
            self.source_digest
        )
    }
}

impl StateStore {
    /// Record a run, keeping the last `keep` of its policy. Not flushed here: sled writes
    /// within a second anyway, and an fsync per run cost hundreds a second with many
    /// policies on short intervals; a crash loses at most the last second of history.
    pub fn record_run(&self, run: &RunRecord, keep: usize) -> Result<(), StateError> {
        self.runs.insert(
            key(&[run.policy.as_bytes(), &run.started_ms.to_be_bytes()]),
            serde_json::to_vec(run).expect("records serialize"),
        )?;
        self.prune_runs(&run.policy, keep)
    }

    /// Keep the last runs per policy only: sled files never shrink, so the keyspace stays bounded.
    fn prune_runs(&self, policy: &str, keep: usize) -> Result<(), StateError> {
        let prefix = key(&[policy.as_bytes(), b""]);
        let keys: Vec<sled::IVec> = self
            .runs
            .scan_prefix(&prefix)
            .keys()
            .collect::<Result<_, _>>()?;
        for k in keys.iter().take(keys.len().saturating_sub(keep)) {
            self.runs.remove(k)?;
        }
        Ok(())
    }

    /// The latest run of every policy, by policy name.
    pub fn last_runs(&self) -> Result<Vec<RunRecord>, StateError> {
        self.latest(|_| true)
    }

    /// The latest run of every policy that copied or deleted tags: a no-op run after it
    /// does not hide what last changed.
    pub fn last_changes(&self) -> Result<Vec<RunRecord>, StateError> {
        self.latest(RunRecord::changed)
    }

    fn latest(&self, pick: impl Fn(&RunRecord) -> bool) -> Result<Vec<RunRecord>, StateError> {
        let mut out: Vec<RunRecord> = Vec::new();
        // Keys sort by policy, then start time: backwards, each policy's newest come first.
        for kv in self.runs.iter().rev() {
            let (k, v) = kv?;
            let Some(rec) =
                self.read::<RunRecord>(&self.runs, &k, &v, "that run is missing from the history")
            else {
                continue;
            };
            if out.last().is_none_or(|l| l.policy != rec.policy) && pick(&rec) {
                out.push(rec);
            }
        }
        out.reverse();
        Ok(out)
    }
}

impl Versioned for RunRecord {
    fn version(&self) -> u32 {
        self.v
    }
}

impl RunRecord {
    pub fn changed(&self) -> bool {
        self.counts.tags_copied + self.counts.deleted > 0
    }

    pub fn new(
        policy: &str,
        started_ms: u64,
        outcome: Outcome,
        targets: std::collections::BTreeMap<String, Counts>,
        errors: Vec<String>,
        findings: Findings,
    ) -> Self {
        let mut counts = Counts::default();
        targets.values().for_each(|c| counts.add(c));
        RunRecord {
            v: VERSION,
            policy: policy.to_owned(),
            started_ms,
            ended_ms: now_ms(),
            outcome,
            counts,
            targets,
            errors,
            findings,
            scope: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn run_history_keeps_the_last_runs_of_each_policy() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(dir.path()).unwrap();
        for t in 1..=7 {
            for p in ["a", "b"] {
                s.record_run(
                    &RunRecord::new(
                        p,
                        t,
                        Outcome::Ok,
                        Default::default(),
                        vec![],
                        Findings::default(),
                    ),
                    3,
                )
                .unwrap();
            }
        }
        let kept: Vec<(String, u64)> = s
            .runs
            .iter()
            .values()
            .map(|v| serde_json::from_slice::<RunRecord>(&v.unwrap()).unwrap())
            .map(|r| (r.policy, r.started_ms))
            .collect();
        let want: Vec<(String, u64)> = ["a", "b"]
            .iter()
            .flat_map(|p| (5..=7).map(move |t| ((*p).to_owned(), t)))
            .collect();
        assert_eq!(kept, want);
    }
}
