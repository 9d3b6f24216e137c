//! What the daemon has done, for `/metrics` (Prometheus text format) and `/status`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

pub use crate::api::PolicyState;
use crate::model::ErrorKind;
use crate::run::{PolicyRun, RegistryGauges};
use crate::state::{Counts, Outcome};

/// Upper bounds (seconds) of the event → replicated histogram: sub-second is the goal, a
/// minute or more means retries.
const LATENCY_BUCKETS: [f64; 11] = [
    0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
];

#[derive(Clone, Default)]
struct Histogram {
    buckets: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// What the metrics read from the rest of the daemon at scrape time.
#[derive(Clone, Copy)]
pub struct Live<'a> {
    pub uploads_in_flight: usize,
    pub registries: &'a [RegistryGauges],
    pub journal_pending: usize,
    /// Records dropped and operations failed in the state store.
    pub state_damage: (u64, u64),
    /// Notifications delivered and given up.
    pub notifications: (u64, u64),
    /// In a cluster: this member's view of it.
    pub cluster: Option<&'a crate::cluster::Gauges>,
}

#[derive(Default)]
pub struct Metrics {
    pub ready: AtomicBool,
    policies: Mutex<BTreeMap<String, PolicyState>>,
    /// Webhook events by (registry, outcome): accepted, ignored, duplicate, rejected.
    events: Mutex<BTreeMap<(String, &'static str), u64>>,
    pub events_replayed: AtomicU64,
    latency: Mutex<BTreeMap<String, Histogram>>,
    /// Failures since start by (policy, target, kind).
    failures: Mutex<BTreeMap<(String, String, ErrorKind), u64>>,
}

impl Metrics {
    fn with<R>(&self, policy: &str, f: impl FnOnce(&mut PolicyState) -> R) -> R {
        f(self
            .policies
            .lock()
            .expect("lock poisoned")
            .entry(policy.to_owned())
            .or_default())
    }

    /// Keep only these policies (after a reload), each with its trigger description.
    pub fn set_policies(&self, policies: &[(String, String)]) {
        let mut all = self.policies.lock().expect("lock poisoned");
        all.retain(|name, _| policies.iter().any(|(n, _)| n == name));
        for (name, trigger) in policies {
            all.entry(name.clone()).or_default().trigger = trigger.clone();
        }
    }

    pub fn scheduled(&self, policy: &str, next_run_ms: Option<u64>) {
        self.with(policy, |p| p.next_run_ms = next_run_ms);
    }

    pub fn started(&self, policy: &str) {
        self.with(policy, |p| p.running = true);
    }

    pub fn delayed(&self, policy: &str, skipped: u64) {
        self.with(policy, |p| {
            p.ticks_delayed += 1;
            p.ticks_skipped += skipped;
        });
    }

    /// A scheduled run ended: counted, and the policy is no longer running.
    pub fn finished(&self, run: &PolicyRun) {
        self.with(&run.policy, |p| {
            p.running = false;
            p.last_duration_secs = run.duration.as_secs_f64();
        });
        self.counted(run);
    }

    /// Any run ended, scheduled or targeted (an event, a request): its outcome and its
    /// counts go into every run and copy metric. In an events setup most copies are these.
    pub fn counted(&self, run: &PolicyRun) {
        self.with(&run.policy, |p| {
            match run.outcome() {
                Outcome::Ok => {
                    p.runs_ok += 1;
                    p.last_success_ms = Some(run.started_ms + run.duration.as_millis() as u64);
                }
                Outcome::Interrupted => p.runs_interrupted += 1,
                Outcome::Failed => p.runs_failed += 1,
            }
            for (t, c) in &run.targets {
                p.targets.entry(t.clone()).or_default().add(c);
            }
        });
        self.failed(run);
    }

    /// Count a run's failures by kind (its counts per target went in with `finished`).
    fn failed(&self, run: &PolicyRun) {
        let mut all = self.failures.lock().expect("lock poisoned");
        for ((target, kind), n) in &run.failure_kinds {
            *all.entry((run.policy.clone(), target.clone(), *kind))
                .or_default() += n;
        }
    }

    pub fn events(&self, registry: &str, outcome: &'static str, n: u64) {
        if n > 0 {
            *self
                .events
                .lock()
                .expect("lock poisoned")
                .entry((registry.to_owned(), outcome))
                .or_default() += n;
        }
    }

    /// An event's tag reached its target `ms` after the event was accepted.
    pub fn replicated(&self, policy: &str, ms: u64) {
        let secs = ms as f64 / 1000.0;
        let mut all = self.latency.lock().expect("lock poisoned");
        let h = all.entry(policy.to_owned()).or_default();
        for (b, le) in h.buckets.iter_mut().zip(LATENCY_BUCKETS) {
            if secs <= le {
                *b += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    pub fn snapshot(&self) -> BTreeMap<String, PolicyState> {
        self.policies.lock().expect("lock poisoned").clone()
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn render(&self, live: &Live<'_>) -> String {
        let Live {
            uploads_in_flight,
            registries,
            journal_pending,
            state_damage: (dropped, failed),
            notifications: (sent, lost),
            cluster,
        } = *live;
        let policies = self.snapshot();
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, f64)>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in samples {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        let per_policy = |f: &dyn Fn(&PolicyState) -> f64| {
            policies
                .iter()
                .map(|(n, p)| (labels(&[("policy", n)]), f(p)))
                .collect::<Vec<_>>()
        };
        let per_target = |f: &dyn Fn(&Counts) -> u64| {
            policies
                .iter()
                .flat_map(|(n, p)| {
                    p.targets
                        .iter()
                        .map(move |(t, c)| (labels(&[("policy", n), ("target", t)]), f(c) as f64))
                })
                .collect::<Vec<_>>()
        };
        family(
            "ferry_up",
            "gauge",
            "1 while the daemon runs.",
            vec![(String::new(), 1.0)],
        );
        family(
            "ferry_ready",
            "gauge",
            "1 once the config is loaded and the state store open.",
            vec![(
                String::new(),
                if self.ready.load(Ordering::Relaxed) {
                    1.0
                } else {
                    0.0
                },
            )],
        );
        let runs: Vec<_> = policies
            .iter()
            .flat_map(|(n, p)| {
                [
                    ("ok", p.runs_ok),
                    ("failed", p.runs_failed),
                    ("interrupted", p.runs_interrupted),
                ]
                .map(|(o, v)| (labels(&[("policy", n), ("outcome", o)]), v as f64))
            })
            .collect();
        family(
            "ferry_policy_runs_total",
            "counter",
            "Policy runs by outcome.",
            runs,
        );
        family(
            "ferry_policy_running",
            "gauge",
            "1 while a run of the policy is in progress.",
            per_policy(&|p| p.running as u8 as f64),
        );
        family(
            "ferry_policy_last_run_duration_seconds",
            "gauge",
            "Duration of the last run.",
            per_policy(&|p| p.last_duration_secs),
        );
        family(
            "ferry_policy_last_success_timestamp_seconds",
            "gauge",
            "End of the last successful run (Unix time; 0: none yet).",
            per_policy(&|p| p.last_success_ms.unwrap_or(0) as f64 / 1000.0),
        );
        family(
            "ferry_policy_next_run_timestamp_seconds",
            "gauge",
            "When the next run is due (Unix time; 0: manual only).",
            per_policy(&|p| p.next_run_ms.unwrap_or(0) as f64 / 1000.0),
        );
        family(
            "ferry_policy_ticks_delayed_total",
            "counter",
            "Ticks that waited for an overrunning run.",
            per_policy(&|p| p.ticks_delayed as f64),
        );
        family(
            "ferry_policy_ticks_skipped_total",
            "counter",
            "Ticks folded into a delayed one.",
            per_policy(&|p| p.ticks_skipped as f64),
        );
        family(
            "ferry_tags_copied_total",
            "counter",
            "Tags written on the target.",
            per_target(&|c| c.tags_copied),
        );
        family(
            "ferry_tags_in_sync_total",
            "counter",
            "Tags found already in sync.",
            per_target(&|c| c.tags_in_sync),
        );
        family(
            "ferry_manifests_written_total",
            "counter",
            "Manifests written on the target.",
            per_target(&|c| c.manifests_written),
        );
        family(
            "ferry_blobs_uploaded_total",
            "counter",
            "Blobs uploaded.",
            per_target(&|c| c.blobs_uploaded),
        );
        family(
            "ferry_blobs_mounted_total",
            "counter",
            "Blobs cross-repository mounted.",
            per_target(&|c| c.blobs_mounted),
        );
        family(
            "ferry_blobs_skipped_total",
            "counter",
            "Blobs already on the target.",
            per_target(&|c| c.blobs_skipped),
        );
        family(
            "ferry_bytes_sent_total",
            "counter",
            "Blob bytes sent to the target.",
            per_target(&|c| c.bytes_sent),
        );
        let failures = self.failures.lock().expect("lock poisoned").clone();
        family(
            "ferry_failures_total",
            "counter",
            "Tags or repositories that failed, by kind: auth, transport, digest, protocol, rate_limit, storage, fence, gate, guard, policy.",
            failures
                .iter()
                .map(|((p, t, k), n)| {
                    (labels(&[("policy", p), ("target", t), ("kind", k.as_str())]), *n as f64)
                })
                .collect(),
        );
        family(
            "ferry_retries_total",
            "counter",
            "Blob transfers resumed after a transient failure.",
            per_target(&|c| c.retries),
        );
        family(
            "ferry_tags_held_total",
            "counter",
            "Tags held back by a promotion gate.",
            per_target(&|c| c.held),
        );
        family(
            "ferry_tags_conflicts_total",
            "counter",
            "Tags left as they are because the target holds another digest (overwrite = false, immutable tags).",
            per_target(&|c| c.conflicts),
        );
        family(
            "ferry_tags_deleted_total",
            "counter",
            "Target tags deleted because they left the source or were pruned.",
            per_target(&|c| c.deleted),
        );
        family(
            "ferry_registry_retries_total",
            "counter",
            "Requests retried after a transient failure (5xx, 429, reset, timeout).",
            registries
                .iter()
                .map(|g| (labels(&[("registry", &g.name)]), g.retries as f64))
                .collect(),
        );
        family(
            "ferry_uploads_in_flight",
            "gauge",
            "Blob uploads checkpointed and not finished.",
            vec![(String::new(), uploads_in_flight as f64)],
        );
        family(
            "ferry_registry_rate_limit_remaining",
            "gauge",
            "Counted requests the registry says are left (RateLimit-Remaining); only registries that send it.",
            registries.iter().filter_map(|g| g.remaining.map(|v| (labels(&[("registry", &g.name)]), v as f64))).collect(),
        );
        family(
            "ferry_registry_rate_limit_paused_seconds_total",
            "counter",
            "Time counted requests waited for a rationed budget to refill.",
            registries
                .iter()
                .map(|g| (labels(&[("registry", &g.name)]), g.paused_seconds))
                .collect(),
        );
        family(
            "ferry_registry_concurrency_limit",
            "gauge",
            "Requests the registry gets at once now: adapted between 1 and max_concurrent to its latency, 429s and 5xx.",
            registries.iter().map(|g| (labels(&[("registry", &g.name)]), g.concurrency as f64)).collect(),
        );
        let events = self.events.lock().expect("lock poisoned").clone();
        family(
            "ferry_events_received_total",
            "counter",
            "Webhook events by outcome: accepted, ignored (no policy covers them), duplicate, rejected (bad body).",
            events.iter().map(|((r, o), v)| (labels(&[("registry", r), ("outcome", o)]), *v as f64)).collect(),
        );
        family(
            "ferry_events_replayed_total",
            "counter",
            "Journaled events carried over from an earlier process.",
            vec![(
                String::new(),
                self.events_replayed.load(Ordering::Relaxed) as f64,
            )],
        );
        family(
            "ferry_journal_pending",
            "gauge",
            "Accepted events not yet carried out.",
            vec![(String::new(), journal_pending as f64)],
        );
        family(
            "ferry_state_errors_total",
            "counter",
            "State store records dropped as unreadable, and reads or writes that failed (full disk, I/O errors).",
            vec![(labels(&[("kind", "dropped")]), dropped as f64), (labels(&[("kind", "failed")]), failed as f64)],
        );
        family(
            "ferry_notifications_total",
            "counter",
            "[[notify]] documents by outcome: delivered, or given up after retries (or refused with a 4xx).",
            vec![(labels(&[("outcome", "delivered")]), sent as f64), (labels(&[("outcome", "given_up")]), lost as f64)],
        );
        if let Some(c) = cluster {
            let member = |v: f64| vec![(labels(&[("member", &c.member)]), v)];
            family(
                "ferry_cluster_members",
                "gauge",
                "Live members of the cluster, as this member sees them.",
                member(c.members as f64),
            );
            family(
                "ferry_cluster_owned_units",
                "gauge",
                "Policies this member holds.",
                member(c.owned as f64),
            );
            family(
                "ferry_cluster_ownership_changes_total",
                "counter",
                "Policies taken or handed over by this member.",
                member(c.ownership_changes as f64),
            );
            family(
                "ferry_cluster_lease_lost_total",
                "counter",
                "Times this member's lease could not be kept alive.",
                member(c.lease_lost as f64),
            );
            family(
                "ferry_cluster_fence_checks_total",
                "counter",
                "Checks before tag writes that this member still holds the policy.",
                [("ok", c.fence_ok), ("refused", c.fence_refused)]
                    .map(|(o, v)| (labels(&[("member", &c.member), ("outcome", o)]), v as f64))
                    .to_vec(),
            );
            family(
                "ferry_cluster_etcd_requests_total",
                "counter",
                "Requests this member sent to etcd (keepalives included).",
                member(c.etcd_requests as f64),
            );
        }
        let latency = self.latency.lock().expect("lock poisoned").clone();
        let name = "ferry_event_to_replicated_seconds";
        let _ = writeln!(out, "# HELP {name} From accepting an event to its targeted run writing the tag.\n# TYPE {name} histogram");
        for (policy, h) in &latency {
            for (le, n) in LATENCY_BUCKETS.iter().zip(h.buckets) {
                let _ = writeln!(
                    out,
                    "{name}_bucket{} {n}",
                    labels(&[("policy", policy), ("le", &le.to_string())])
                );
            }
            let _ = writeln!(
                out,
                "{name}_bucket{} {}",
                labels(&[("policy", policy), ("le", "+Inf")]),
                h.count
            );
            let _ = writeln!(out, "{name}_sum{} {}", labels(&[("policy", policy)]), h.sum);
            let _ = writeln!(
                out,
                "{name}_count{} {}",
                labels(&[("policy", policy)]),
                h.count
            );
        }
        out
    }
}

fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// Label values escape backslash, double quote and newline.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped() {
        assert_eq!(
            labels(&[("policy", "a\"b\\c\nd")]),
            r#"{policy="a\"b\\c\nd"}"#
        );
    }
}
