//! How many requests one registry gets at once: adapted at run time between 1 and its
//! `max_concurrent`, so a long link is kept full and a loopback registry is not queued into.
//!
//! The signal is TCP Vegas's: with `base` the unloaded latency of a light request (no body
//! to send), `limit × (1 − base / latency)` estimates how many requests wait in the
//! registry's queue rather than on the wire. Fewer than `ALPHA` waiting: one more request
//! is allowed; more than `BETA`: one fewer. A 429 or 5xx (not a rationed budget, which
//! `budget` paces) or a timeout halves the limit, at most once per `CUT_EVERY`.
//! The limit only grows while it is actually reached, so an idle spell proves nothing.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, SemaphorePermit};

/// Requests allowed in the registry's queue before the limit stops growing / shrinks.
const ALPHA: f64 = 3.0;
const BETA: f64 = 6.0;
/// One halving per this long: the answers already under way still carry the old overload.
const CUT_EVERY: Duration = Duration::from_secs(1);

pub struct Concurrency {
    max: usize,
    permits: Semaphore,
    state: Mutex<State>,
}

struct State {
    limit: usize,
    /// Permits to swallow as they come back, after a cut below what is in flight.
    debt: usize,
    in_flight: usize,
    /// Requests started so far: one that ran alone saw this unchanged from start to end.
    starts: u64,
    /// The unloaded latency: set by any request that ran alone (so it follows a registry
    /// that got slower for good), lowered by any faster answer.
    base: Option<Duration>,
    last_cut: Option<Instant>,
}

/// What a request's answer says about the registry's load.
pub enum Sample {
    /// A light request answered (any status but an overload): its latency counts.
    Light,
    /// Answered, but the time says nothing about the queue (a body was sent).
    Answered,
    /// Refused or timed out for load: 429 without a rationed budget, 502/503/504, a timeout.
    Overload,
}

pub struct Permit<'a> {
    owner: &'a Concurrency,
    permit: Option<SemaphorePermit<'a>>,
    started: Instant,
    /// `starts` when this request began with nothing else in flight.
    alone_from: Option<u64>,
}

impl Concurrency {
    pub fn new(max: usize) -> Self {
        let max = max.max(1);
        // Start where a loopback registry is comfortable and a long link still gets going:
        // growth is one request per answer, so the limit doubles each round trip.
        let start = max.min(8);
        Concurrency {
            max,
            permits: Semaphore::new(start),
            state: Mutex::new(State {
                limit: start,
                debt: 0,
                in_flight: 0,
                starts: 0,
                base: None,
                last_cut: None,
            }),
        }
    }

    /// The limit in force now.
    pub fn limit(&self) -> usize {
        self.state.lock().expect("lock poisoned").limit
    }

    pub fn max(&self) -> usize {
        self.max
    }

    pub async fn acquire(&self) -> Permit<'_> {
        let permit = self
            .permits
            .acquire()
            .await
            .expect("semaphore never closed");
        let mut s = self.state.lock().expect("lock poisoned");
        s.in_flight += 1;
        s.starts += 1;
        let alone_from = (s.in_flight == 1).then_some(s.starts);
        Permit {
            owner: self,
            permit: Some(permit),
            started: Instant::now(),
            alone_from,
        }
    }

    fn release(
        &self,
        permit: SemaphorePermit<'_>,
        sample: Option<Sample>,
        rtt: Duration,
        alone_from: Option<u64>,
    ) {
        let mut s = self.state.lock().expect("lock poisoned");
        let alone = alone_from == Some(s.starts);
        // The load seen by this request included itself.
        let in_flight = s.in_flight;
        s.in_flight -= 1;
        if s.debt > 0 {
            s.debt -= 1;
            permit.forget();
        } else {
            drop(permit);
        }
        match sample {
            Some(Sample::Overload) => self.cut(&mut s),
            Some(Sample::Light) => {
                let base = match s.base {
                    Some(b) if !alone && b <= rtt => b,
                    _ => {
                        s.base = Some(rtt);
                        return;
                    }
                };
                let queued =
                    s.limit as f64 * (1.0 - base.as_secs_f64() / rtt.as_secs_f64().max(1e-6));
                let limit = s.limit;
                if queued > BETA {
                    self.set(&mut s, limit - 1);
                } else if queued < ALPHA && in_flight * 2 >= limit {
                    // Only a limit that was (nearly) reached is evidence that more would help.
                    self.set(&mut s, limit + 1);
                }
            }
            Some(Sample::Answered) | None => {}
        }
    }

    fn cut(&self, s: &mut State) {
        let now = Instant::now();
        if s.last_cut
            .is_some_and(|t| now.duration_since(t) < CUT_EVERY)
        {
            return;
        }
        s.last_cut = Some(now);
        let half = s.limit / 2;
        self.set(s, half);
    }

    fn set(&self, s: &mut State, to: usize) {
        let to = to.clamp(1, self.max);
        if to > s.limit {
            let mut grow = to - s.limit;
            let paid = grow.min(s.debt);
            s.debt -= paid;
            grow -= paid;
            self.permits.add_permits(grow);
        } else if to < s.limit {
            let shrink = s.limit - to;
            let taken = self.permits.forget_permits(shrink);
            s.debt += shrink - taken;
        }
        s.limit = to;
    }
}

impl Permit<'_> {
    /// Give the place back, telling the limiter what the answer said; latency is measured
    /// from the moment the place was taken.
    pub fn done(mut self, sample: Sample) {
        if let Some(p) = self.permit.take() {
            self.owner
                .release(p, Some(sample), self.started.elapsed(), self.alone_from);
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        // Cancelled or failed before an answer: no evidence either way.
        if let Some(p) = self.permit.take() {
            self.owner.release(p, None, Duration::ZERO, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One request alone, then `n` rounds of `limit` concurrent requests, each answered after
    /// `latency(in flight)`.
    async fn rounds(c: &Concurrency, n: usize, latency: impl Fn(usize) -> Duration) {
        answer(c.acquire().await, latency(1));
        for _ in 0..n {
            let limit = c.limit();
            let permits: Vec<_> =
                futures_util::future::join_all((0..limit).map(|_| c.acquire())).await;
            let rtt = latency(limit);
            permits.into_iter().for_each(|p| answer(p, rtt));
        }
    }

    fn answer(mut p: Permit<'_>, rtt: Duration) {
        let alone_from = p.alone_from;
        p.owner.release(
            p.permit.take().expect("fresh permit"),
            Some(Sample::Light),
            rtt,
            alone_from,
        );
    }

    #[tokio::test]
    async fn a_long_link_fills_up_to_max() {
        let c = Concurrency::new(32);
        // 50 ms of wire and 0.1 ms of service per request in flight.
        rounds(&c, 20, |l| Duration::from_micros(50_000 + 100 * l as u64)).await;
        assert_eq!(c.limit(), 32);
    }

    #[tokio::test]
    async fn a_busy_registry_is_not_queued_into() {
        let c = Concurrency::new(32);
        // Loopback: 0.5 ms alone, and the registry serves 2 at once, so each extra request queues.
        rounds(&c, 50, |l| {
            Duration::from_micros(500 * (l as u64).div_ceil(2))
        })
        .await;
        // Vegas holds 3 to 6 in the queue: 5 to 8 in flight.
        assert!((4..=9).contains(&c.limit()), "{}", c.limit());
    }

    #[tokio::test]
    async fn overload_halves_once_per_second_and_permits_follow() {
        let c = Concurrency::new(16);
        let held: Vec<_> = futures_util::future::join_all((0..8).map(|_| c.acquire())).await;
        let mut held = held.into_iter();
        held.next().unwrap().done(Sample::Overload);
        held.next().unwrap().done(Sample::Overload);
        assert_eq!(
            c.limit(),
            4,
            "the second 503 of the same moment does not cut again"
        );
        // 6 still in flight with a limit of 4: two must be swallowed before anyone else starts.
        drop(held);
        let a = c.acquire().await;
        let more = tokio::time::timeout(Duration::from_millis(50), async {
            let _b = c.acquire().await;
            let _c = c.acquire().await;
            let _d = c.acquire().await;
            c.acquire().await
        })
        .await;
        assert!(more.is_err(), "a fifth request started under a limit of 4");
        drop(a);
    }
}
