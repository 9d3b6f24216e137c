//! Retries of idempotent requests. The only file that names `backoff` (unmaintained:
//! swapping it for another crate touches this file alone).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use backoff::ExponentialBackoffBuilder;
use tracing::warn;

use super::error::RegistryError;
use super::gate::WriteGate;

/// Longest `Retry-After` we honour; a registry asking for an hour is better reported than obeyed.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max_interval: Duration,
    pub deadline: Duration,
    /// The deadline while the registry has never answered in this process: a wrong port
    /// or host name is said in seconds, not after a minute of retries per repository.
    pub first_contact: Duration,
    /// Retries are logged at debug, not warn: a first contact's retries end in one error
    /// that says it all, and a line per retry per repository buried it.
    pub quiet: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_millis(250),
            max_interval: Duration::from_secs(10),
            deadline: Duration::from_secs(60),
            first_contact: Duration::from_secs(5),
            quiet: false,
        }
    }
}

impl RetryPolicy {
    /// `retry_timeout` set in the config: the budget for every request, the first included.
    pub fn lasting(timeout: Duration) -> Self {
        RetryPolicy {
            deadline: timeout,
            first_contact: timeout,
            ..Self::default()
        }
    }
}

/// Run `f` until it succeeds, fails permanently, or the deadline passes. `backoff` lets a
/// `Retry-After` bypass its own elapsed-time limit, so the deadline is enforced here too.
/// A `gate` is asked before every attempt; its stop ends a wait, and no wait is longer than
/// the gate can vouch for (it is asked again when the wait ends).
pub async fn with_retry<T, F, Fut>(
    policy: RetryPolicy,
    registry: &str,
    op: &'static str,
    retries: &AtomicU64,
    gate: Option<&dyn WriteGate>,
    mut f: F,
) -> Result<T, RegistryError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, RegistryError>>,
{
    let start = tokio::time::Instant::now();
    let backoff = ExponentialBackoffBuilder::new()
        .with_initial_interval(policy.initial)
        .with_max_interval(policy.max_interval)
        .with_max_elapsed_time(Some(policy.deadline))
        .build();
    let fenced = |detail: String| RegistryError::Fenced {
        registry: registry.to_owned(),
        op,
        detail,
    };
    let retried = backoff::future::retry_notify(
        backoff,
        || {
            // The attempt is made now (it borrows `f` only here); the gate is asked first.
            let attempt = f();
            let fenced = &fenced;
            async move {
                let admitted = match gate {
                    Some(g) => g.admit().await.map_err(fenced),
                    None => Ok(()),
                };
                let result = match admitted {
                    Ok(()) => attempt.await,
                    Err(e) => Err(e),
                };
                result.map_err(|e| {
                    if !e.is_retryable() || start.elapsed() >= policy.deadline {
                        return backoff::Error::permanent(e);
                    }
                    // No wait past what the writer can vouch for: it is asked again (`admit`)
                    // when the wait ends, and a lost lock ends the write there.
                    let cap = gate
                        .and_then(|g| g.vouched_for())
                        .unwrap_or(MAX_RETRY_AFTER)
                        .min(MAX_RETRY_AFTER);
                    match e.retry_after() {
                        Some(ra) => backoff::Error::retry_after(e, ra.min(cap)),
                        None => backoff::Error::transient(e),
                    }
                })
            }
        },
        |e: RegistryError, wait: Duration| {
            retries.fetch_add(1, Ordering::Relaxed);
            if policy.quiet {
                tracing::debug!(op, error = %e, ?wait, "retrying");
            } else {
                warn!(op, error = %e, ?wait, "retrying");
            }
        },
    );
    match gate {
        None => retried.await,
        Some(g) => tokio::select! {
            r = retried => r,
            () = g.stopped() => Err(fenced("the run was stopped".into())),
        },
    }
}

/// `Retry-After` as delta-seconds or an HTTP date.
/// Capped here, where the header is read, so no path (blob uploads, budgets, the retry
/// loop) can be parked by a registry asking for a day.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    if let Ok(secs) = v.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v.trim()).ok()?;
    (when.with_timezone(&chrono::Utc) - chrono::Utc::now())
        .to_std()
        .ok()
        .map(|d| d.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn a_retry_after_of_a_day_is_capped_on_every_path() {
        assert_eq!(parse_retry_after("86400"), Some(MAX_RETRY_AFTER));
        assert_eq!(
            parse_retry_after("18446744073709551615"),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(
            parse_retry_after("Fri, 01 Jan 2100 00:00:00 GMT"),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
    }

    fn status(code: u16, retry_after: Option<Duration>) -> RegistryError {
        RegistryError::Status {
            registry: "r".into(),
            op: "t",
            status: code,
            code: None,
            message: String::new(),
            retry_after,
        }
    }

    #[tokio::test]
    async fn transient_then_success_and_permanent_stops() {
        let calls = AtomicU32::new(0);
        let policy = RetryPolicy {
            initial: Duration::from_millis(1),
            max_interval: Duration::from_millis(5),
            deadline: Duration::from_secs(5),
            ..RetryPolicy::default()
        };
        let r = with_retry(policy, "r", "t", &AtomicU64::new(0), None, || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 2 {
                    Err(status(503, None))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(r.unwrap(), 2);
        calls.store(0, Ordering::SeqCst);
        let r: Result<(), _> = with_retry(policy, "r", "t", &AtomicU64::new(0), None, || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(status(404, None)) }
        })
        .await;
        assert_eq!(
            (r.unwrap_err().status(), calls.load(Ordering::SeqCst)),
            (Some(404), 1)
        );
    }

    #[tokio::test]
    async fn retry_after_cannot_outlive_the_deadline() {
        let policy = RetryPolicy {
            initial: Duration::from_millis(1),
            max_interval: Duration::from_millis(5),
            deadline: Duration::from_millis(150),
            ..RetryPolicy::default()
        };
        let start = std::time::Instant::now();
        let r: Result<(), _> = with_retry(policy, "r", "t", &AtomicU64::new(0), None, || async {
            Err(status(429, Some(Duration::from_millis(40))))
        })
        .await;
        assert_eq!(r.unwrap_err().status(), Some(429));
        assert!(
            start.elapsed() < Duration::from_millis(400),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None); // in the past
    }
}
