//! When each policy runs: one loop per policy, so a policy never runs twice at once. A tick
//! that comes while a run is still going waits for it (the next run starts as soon as the
//! current one ends); more ticks during the same run are folded into that one and counted.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info_span, warn, Instrument};

use tokio::sync::mpsc;

use super::shared::Claimed;
use super::Shared;
use crate::app::App;
use crate::config::Trigger;
use crate::plan::RunOptions;
use crate::run::Reach;

/// The first run after the daemon starts: interval policies run at once, cron policies at
/// their next tick, manual ones never (they run with `ferry sync --policy NAME`).
pub fn first_run(trigger: &Trigger, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match trigger {
        Trigger::Every(_) => Some(now),
        Trigger::Cron(s) => s.after(&now).next(),
        Trigger::Manual => None,
    }
}

/// After a run that started at `started` and ended at `now`: when the next run starts, and
/// how many ticks fell inside the run (0: none was missed).
pub fn after_run(
    trigger: &Trigger,
    started: DateTime<Utc>,
    now: DateTime<Utc>,
) -> (Option<DateTime<Utc>>, u64) {
    match trigger {
        Trigger::Manual => (None, 0),
        Trigger::Every(every) => {
            let every = chrono::Duration::from_std(*every).unwrap_or(chrono::Duration::MAX);
            let due = started + every;
            if due > now {
                return (Some(due), 0);
            }
            let missed = ((now - started).num_milliseconds() / every.num_milliseconds().max(1))
                .max(1) as u64;
            (Some(now), missed)
        }
        Trigger::Cron(s) => {
            // Bounded: a per-second schedule and a day-long run must not make this loop long.
            let missed = s
                .after(&started)
                .take_while(|t| *t <= now)
                .take(100_000)
                .count() as u64;
            if missed > 0 {
                (Some(now), missed)
            } else {
                (s.after(&now).next(), 0)
            }
        }
    }
}

/// A random delay in `[0, max)`, spreading policies that share a schedule.
fn jitter(max: Duration) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    let r = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    Duration::from_millis(r % max.as_millis().max(1) as u64)
}

/// A run asked for over the API.
pub struct RunAsk {
    pub id: u64,
    pub opts: RunOptions,
}

/// Run policy `index` of `app` on its trigger until `stop`, and whenever a run is asked for
/// on `asks`. `run_now` starts with a run (uploads of this policy were left in flight by an
/// earlier process). Runs asked for while one is going share the next one.
pub async fn policy_loop(
    app: Arc<App>,
    index: usize,
    stop: CancellationToken,
    shared: Arc<Shared>,
    mut asks: mpsc::UnboundedReceiver<RunAsk>,
    run_now: bool,
) {
    let policy = &app.config.policies[index];
    let name = policy.name.as_str();
    let metrics = &shared.metrics;
    let jittered = |at: Option<DateTime<Utc>>| {
        at.map(|at| at + chrono::Duration::from_std(jitter(policy.jitter)).unwrap_or_default())
    };
    let mut next_at = jittered(if run_now {
        Some(Utc::now())
    } else {
        first_run(&policy.trigger, Utc::now())
    });
    // In a cluster, an interval policy this member takes over runs at once: its previous
    // owner may be long gone. A scheduled one waits for its next tick, as it would have.
    let mut taken = match (shared.cluster(), &policy.trigger) {
        (Some(c), Trigger::Every(_)) => Some((c.clone(), c.subscribe(), false)),
        _ => None,
    };
    loop {
        metrics.scheduled(name, next_at.map(|at| at.timestamp_millis().max(0) as u64));
        let wait = async {
            match next_at {
                Some(at) => {
                    tokio::time::sleep((at - Utc::now()).to_std().unwrap_or_default()).await
                }
                None => std::future::pending().await,
            }
        };
        let mut asked = Vec::new();
        tokio::select! {
            () = stop.cancelled() => return,
            () = wait => {}
            Some(ask) = asks.recv() => asked.push(ask),
            () = newly_taken(taken.as_mut(), name) => {}
        }
        while let Ok(ask) = asks.try_recv() {
            asked.push(ask);
        }
        let ids: Vec<u64> = asked.iter().map(|a| a.id).collect();
        let opts = RunOptions {
            force_delete: asked.iter().any(|a| a.opts.force_delete),
            verify: asked.iter().any(|a| a.opts.verify),
        };
        let started = Utc::now();
        let claimed = shared
            .run_claimed(&app, policy, &Reach::Full, opts, &stop, &ids, || {
                metrics.started(name)
            })
            .instrument(info_span!("run", policy = name))
            .await;
        let run = match claimed {
            Claimed::Ran { run, .. } => *run,
            Claimed::Elsewhere => {
                // Another member holds it: that member runs it on the same schedule.
                debug!(
                    policy = name,
                    "held by another cluster member; not run here"
                );
                let (n, _) = after_run(&policy.trigger, started, Utc::now());
                next_at = jittered(n);
                continue;
            }
        };
        metrics.finished(&run);
        if stop.is_cancelled() {
            return;
        }
        if !asked.is_empty() && next_at.is_some_and(|at| at > Utc::now()) {
            continue; // a run on request leaves the schedule as it was
        }
        let (n, missed) = after_run(&policy.trigger, started, Utc::now());
        if missed > 0 {
            warn!(policy = name, missed, took = ?run.duration, "run overran its next tick; the next run starts now");
            metrics.delayed(name, missed - 1);
        } else if let Some(n) = n {
            debug!(policy = name, next = %n.format("%Y-%m-%dT%H:%M:%SZ"), "next run");
        }
        next_at = jittered(n);
    }
}

/// Resolves when this member has just taken the policy (never outside a cluster).
async fn newly_taken(
    taken: Option<&mut (
        crate::cluster::Cluster,
        tokio::sync::watch::Receiver<u64>,
        bool,
    )>,
    name: &str,
) {
    let Some((cluster, changes, held)) = taken else {
        return std::future::pending().await;
    };
    loop {
        let now = cluster.holds(name);
        let was = std::mem::replace(held, now);
        if now && !was {
            return;
        }
        if changes.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, h, m, s).unwrap()
    }

    #[test]
    fn interval_runs_on_time_or_right_after_an_overrun() {
        let every = Trigger::Every(Duration::from_secs(60));
        assert_eq!(
            after_run(&every, t(0, 0, 0), t(0, 0, 10)),
            (Some(t(0, 1, 0)), 0)
        );
        assert_eq!(
            after_run(&every, t(0, 0, 0), t(0, 3, 30)),
            (Some(t(0, 3, 30)), 3)
        );
        assert_eq!(first_run(&every, t(0, 0, 0)), Some(t(0, 0, 0)));
    }

    #[test]
    fn cron_counts_ticks_inside_a_long_run() {
        let cron = Trigger::Cron(Box::new(crate::config::schedule::Cron::new(
            crate::config::schedule::parse_schedule("*/10 * * * *").unwrap(),
            jiff::tz::TimeZone::UTC,
            "*/10 * * * *",
        )));
        assert_eq!(first_run(&cron, t(0, 1, 0)), Some(t(0, 10, 0)));
        assert_eq!(
            after_run(&cron, t(0, 10, 0), t(0, 12, 0)),
            (Some(t(0, 20, 0)), 0)
        );
        assert_eq!(
            after_run(&cron, t(0, 10, 0), t(0, 35, 0)),
            (Some(t(0, 35, 0)), 2)
        );
        assert_eq!(
            after_run(&Trigger::Manual, t(0, 0, 0), t(1, 0, 0)),
            (None, 0)
        );
    }

    #[test]
    fn jitter_stays_below_its_bound() {
        assert!((0..100).all(|_| jitter(Duration::from_secs(5)) < Duration::from_secs(5)));
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
    }
}
