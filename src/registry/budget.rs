//! Rate-limit budgets: registries that ration pulls (Docker Hub: `RateLimit-Limit: 100;w=21600`,
//! `RateLimit-Remaining: 76;w=21600`; the IETF draft: `RateLimit-Limit`, `RateLimit-Remaining`,
//! `RateLimit-Reset` in seconds) say how many counted requests are left. ferry keeps its
//! counted requests (manifest GETs; Docker Hub does not count HEADs) within what is left,
//! counting those in flight and a configured reserve, and pauses them until the budget
//! refills instead of drawing refusals.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;

/// The longest rate-limit window ferry believes (Docker Hub's is six hours).
const MAX_RESET_SECS: u64 = 86_400;
/// While paused without a reset time, look again this often (a HEAD probes the headers).
const PROBE_EVERY: Duration = Duration::from_secs(15);

#[derive(Debug, Default)]
struct State {
    limit: Option<u64>,
    remaining: Option<u64>,
    /// The window the registry names (`w=`), or the time to its reset.
    window: Option<Duration>,
    reset_at: Option<Instant>,
    in_flight: u64,
    paused: Duration,
    garbage_logged: bool,
    /// A counted request came back, or a response carried the headers: until then nobody
    /// knows whether the registry rations, so counted requests go one at a time.
    seen: bool,
    /// Counted requests started plus reports observed. A report can raise the estimate only
    /// if nothing happened between its request's send and its arrival: otherwise the server
    /// may have written it before counting requests whose lower reports came in already, so
    /// it may only lower the estimate.
    events: u64,
    /// The latest send ticket whose response carried the budget's headers.
    observed: u64,
    /// A pause was logged and nothing has gone since.
    announced: bool,
}

/// One registry's budget.
pub struct Budget {
    registry: String,
    reserve: u64,
    state: Mutex<State>,
}

/// What a counted request must do now.
#[derive(Debug, PartialEq)]
pub enum Decision {
    Go(u64),
    /// What is left is taken by requests in flight: wait a moment for them, then ask again.
    Queue,
    /// Nothing is left: wait this long for the budget to refill, then ask again (probing
    /// the headers with a HEAD first).
    Wait(Duration),
}

/// How long a queued counted request waits before asking again.
pub const QUEUE_WAIT: Duration = Duration::from_millis(50);

/// A number with an optional `;w=SECONDS` (Docker Hub), or a plain number (IETF draft).
fn parse_value(v: &str) -> Option<(u64, Option<u64>)> {
    let mut parts = v.split(';');
    let n = parts.next()?.trim().parse().ok()?;
    let mut window = None;
    for p in parts {
        let (k, val) = p.split_once('=')?;
        if k.trim() == "w" {
            window = Some(val.trim().parse().ok()?);
        }
    }
    Some((n, window))
}

impl Budget {
    pub fn new(registry: &str, reserve: u64) -> Self {
        Budget {
            registry: registry.to_owned(),
            reserve,
            state: Mutex::default(),
        }
    }

    /// Taken before sending any request, handed to `observe` with its response.
    pub fn ticket(&self) -> u64 {
        self.state.lock().expect("lock poisoned").events
    }

    /// Read the rate-limit headers of any response to a request sent at `ticket`. Headers
    /// that do not parse count as no limit (logged once per registry).
    pub fn observe(&self, ticket: u64, h: &HeaderMap) {
        let get = |n: &str| h.get(n).map(|v| v.to_str().ok().and_then(parse_value));
        let (limit, remaining) = (get("ratelimit-limit"), get("ratelimit-remaining"));
        if limit.is_none() && remaining.is_none() {
            return; // most responses (tag lists, blobs) say nothing either way
        }
        let mut s = self.state.lock().expect("lock poisoned");
        s.seen = true;
        let (Some(Some(limit)), Some(Some(remaining))) = (limit, remaining) else {
            if !s.garbage_logged {
                s.garbage_logged = true;
                tracing::warn!(registry = %self.registry, "rate-limit headers that do not parse; treating the registry as unlimited");
            }
            s.remaining = None;
            return;
        };
        let reset = h
            .get("ratelimit-reset")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        s.limit = Some(limit.0);
        s.observed = s.observed.max(ticket);
        let stale = ticket != s.events;
        s.events += 1;
        s.remaining = match s.remaining {
            Some(now) if stale => Some(now.min(remaining.0)),
            _ => Some(remaining.0),
        };
        s.window = remaining.1.or(limit.1).map(Duration::from_secs);
        // Any number may arrive (u64::MAX overflows an Instant); a window is at most a day.
        s.reset_at = reset
            .and_then(|r| Instant::now().checked_add(Duration::from_secs(r.min(MAX_RESET_SECS))));
    }

    /// May a counted request go now? `Go(ticket)` reserves a place: hand the ticket to
    /// `done` after the response.
    pub fn decide(&self) -> Decision {
        let mut s = self.state.lock().expect("lock poisoned");
        let go = match s.remaining {
            None => s.seen || s.in_flight == 0,
            Some(remaining) => remaining > s.in_flight + self.reserve,
        };
        if go {
            s.in_flight += 1;
            s.events += 1;
            s.announced = false;
            return Decision::Go(s.events);
        }
        let Some(remaining) = s.remaining else {
            return Decision::Queue;
        };
        if remaining > self.reserve {
            return Decision::Queue;
        }
        let wait = match s.reset_at {
            Some(at) => at
                .saturating_duration_since(Instant::now())
                .max(Duration::from_secs(1)),
            // Docker Hub's window slides: pulls leave it one by one, so look again soon.
            None => s.window.map_or(PROBE_EVERY, |w| {
                (w / 100).clamp(Duration::from_secs(1), PROBE_EVERY)
            }),
        };
        Decision::Wait(wait)
    }

    pub fn done(&self, ticket: u64) {
        let mut s = self.state.lock().expect("lock poisoned");
        s.seen = true;
        s.in_flight = s.in_flight.saturating_sub(1);
        // A request whose answer carried no budget (a reset, a timeout) may still have been
        // counted: assume it was until a response says otherwise.
        if s.observed < ticket {
            if let Some(r) = s.remaining.as_mut() {
                *r = r.saturating_sub(1);
            }
        }
    }

    /// The last response said nothing is left: a 429 now is the budget, not a passing fault.
    pub fn spent(&self) -> bool {
        self.state.lock().expect("lock poisoned").remaining == Some(0)
    }

    /// True for the first waiter of a pause, so it is logged once.
    pub fn announce(&self) -> bool {
        !std::mem::replace(
            &mut self.state.lock().expect("lock poisoned").announced,
            true,
        )
    }

    pub fn paused(&self, d: Duration) {
        self.state.lock().expect("lock poisoned").paused += d;
    }

    /// (remaining, limit, seconds paused so far), for metrics and status.
    pub fn snapshot(&self) -> (Option<u64>, Option<u64>, f64) {
        let s = self.state.lock().expect("lock poisoned");
        (s.remaining, s.limit, s.paused.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Rate-limit and Retry-After headers come from registries ferry does not control:
        /// any text is a value or nothing, and well-formed ones read back exactly.
        #[test]
        fn headers_parse_or_refuse(v in "[0-9;w=, a-z.-]{0,40}|\\PC{0,40}", n: u64, w: u64) {
            let _ = parse_value(&v);
            let _ = super::super::retry::parse_retry_after(&v);
            proptest::prop_assert_eq!(parse_value(&format!("{n};w={w}")), Some((n, Some(w))));
            proptest::prop_assert_eq!(parse_value(&format!(" {n} ")), Some((n, None)));
            proptest::prop_assert_eq!(super::super::retry::parse_retry_after(&n.to_string()), Some(Duration::from_secs(n.min(120))));
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    reqwest::header::HeaderName::from_static(k),
                    v.parse().unwrap(),
                )
            })
            .collect()
    }

    /// A reset time that overflows an `Instant` panicked while the budget's lock was held.
    #[test]
    fn a_reset_at_u64_max_is_a_day_not_a_panic() {
        let b = Budget::new("hub", 0);
        let max = u64::MAX.to_string();
        b.observe(
            b.ticket(),
            &headers(&[
                ("ratelimit-limit", "100;w=21600"),
                ("ratelimit-remaining", "0;w=21600"),
                ("ratelimit-reset", &max),
            ]),
        );
        let s = b.state.lock().unwrap();
        let left = s
            .reset_at
            .unwrap()
            .saturating_duration_since(Instant::now());
        assert!(left <= Duration::from_secs(MAX_RESET_SECS), "{left:?}");
    }

    #[test]
    fn docker_hub_and_draft_headers() {
        let b = Budget::new("hub", 0);
        assert_eq!(b.decide(), Decision::Go(1));
        assert_eq!(
            b.decide(),
            Decision::Queue,
            "one at a time until a response says whether it rations"
        );
        b.observe(
            b.ticket(),
            &headers(&[
                ("ratelimit-limit", "100;w=21600"),
                ("ratelimit-remaining", "2;w=21600"),
            ]),
        );
        b.done(1);
        assert_eq!(
            b.snapshot().0,
            Some(2),
            "the response's own count is not taken twice"
        );
        assert_eq!(b.decide(), Decision::Go(3));
        assert_eq!(b.decide(), Decision::Go(4));
        assert_eq!(
            b.decide(),
            Decision::Queue,
            "two in flight use the last two"
        );
        b.done(3);
        b.done(4);
        assert_eq!(
            b.snapshot().0,
            Some(0),
            "unanswered requests count as spent"
        );
        assert!(matches!(b.decide(), Decision::Wait(_)), "spent");
        // A report from before those two went out says 2 again: it may not raise the estimate.
        b.observe(
            0,
            &headers(&[
                ("ratelimit-limit", "100;w=21600"),
                ("ratelimit-remaining", "2;w=21600"),
            ]),
        );
        assert_eq!(b.snapshot().0, Some(0));
        b.observe(
            b.ticket(),
            &headers(&[
                ("ratelimit-limit", "100;w=21600"),
                ("ratelimit-remaining", "100;w=21600"),
            ]),
        );
        assert_eq!(b.snapshot().0, Some(100), "a fresh report refills");
        let d = Budget::new("draft", 1);
        d.observe(
            d.ticket(),
            &headers(&[
                ("ratelimit-limit", "10"),
                ("ratelimit-remaining", "1"),
                ("ratelimit-reset", "30"),
            ]),
        );
        match d.decide() {
            Decision::Wait(w) => {
                assert!(w > Duration::from_secs(28) && w <= Duration::from_secs(30))
            }
            other => panic!("the reserve of 1 keeps the last request: {other:?}"),
        }
    }

    #[test]
    fn a_report_overtaken_by_another_cannot_raise_the_estimate() {
        let hub = |r: &str| headers(&[("ratelimit-limit", "5;w=60"), ("ratelimit-remaining", r)]);
        let b = Budget::new("hub", 0);
        b.observe(b.ticket(), &hub("5;w=60"));
        let (Decision::Go(one), Decision::Go(two)) = (b.decide(), b.decide()) else {
            panic!()
        };
        let (t1, t2) = (b.ticket(), b.ticket());
        // The server counted the second request first (4 left) and the first after it (3),
        // but the first's answer arrives first.
        b.observe(t1, &hub("3;w=60"));
        b.observe(t2, &hub("4;w=60"));
        b.done(one);
        b.done(two);
        assert_eq!(b.snapshot().0, Some(3));
    }

    #[test]
    fn garbage_is_no_limit() {
        let b = Budget::new("x", 0);
        b.observe(
            b.ticket(),
            &headers(&[
                ("ratelimit-limit", "lots"),
                ("ratelimit-remaining", "-3;w=x"),
            ]),
        );
        assert_eq!(b.snapshot().0, None);
        assert_eq!(b.decide(), Decision::Go(1));
        assert_eq!(parse_value("5;w=60"), Some((5, Some(60))));
        assert_eq!(parse_value("5;w=sixty"), None);
    }
}
