//! A token bucket on bytes: `bandwidth_limit` for one registry or the whole daemon.

use std::time::{Duration, Instant};

use tokio::sync::Mutex;

pub struct RateLimiter {
    rate: f64,
    /// Bytes that may go out now; negative is debt that callers sleep off.
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    pub fn new(bytes_per_sec: u64) -> Self {
        RateLimiter {
            rate: bytes_per_sec.max(1) as f64,
            state: Mutex::new((0.0, Instant::now())),
        }
    }

    /// Wait until `n` more bytes may be sent. A burst of up to one second's worth is allowed,
    /// so the limit holds over any window longer than a second.
    pub async fn acquire(&self, n: usize) {
        let wait = {
            let mut s = self.state.lock().await;
            let now = Instant::now();
            s.0 = (s.0 + now.duration_since(s.1).as_secs_f64() * self.rate).min(self.rate);
            s.1 = now;
            s.0 -= n as f64;
            if s.0 >= 0.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(-s.0 / self.rate)
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn holds_the_rate() {
        let l = RateLimiter::new(1 << 20);
        let start = Instant::now();
        for _ in 0..48 {
            l.acquire(64 << 10).await; // 3 MiB at 1 MiB/s, starting with an empty bucket
        }
        let t = start.elapsed().as_secs_f64();
        assert!((2.8..3.6).contains(&t), "{t}");
    }
}
