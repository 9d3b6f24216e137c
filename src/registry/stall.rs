//! A blob body that keeps its connection open while moving (almost) nothing is dead: the
//! client's read timeout only catches total silence, and a byte every few seconds would
//! hold a blob slot for days. A body must move `STALL_BYTES` in every `stall_timeout`;
//! anything slower than that (2 KiB/s at the default 30 s) is no longer a usable link.

use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use tokio::time::Instant;

use super::RegistryError;

pub const STALL_BYTES: u64 = 64 << 10;

/// `stream`, failing with `stalled()` once a window of `window` passes with fewer than
/// `STALL_BYTES` through it.
pub fn guard(
    stream: BoxStream<'static, Result<Bytes, RegistryError>>,
    window: Duration,
    stalled: impl Fn() -> RegistryError + Send + 'static,
) -> BoxStream<'static, Result<Bytes, RegistryError>> {
    struct Watch<S, F> {
        inner: S,
        stalled: F,
        since: Option<Instant>,
        moved: u64,
        done: bool,
    }
    let start = Watch {
        inner: stream,
        stalled,
        since: None,
        moved: 0,
        done: false,
    };
    futures_util::stream::unfold(start, move |mut w| async move {
        if w.done {
            return None;
        }
        let since = *w.since.get_or_insert_with(Instant::now);
        match tokio::time::timeout_at(since + window, w.inner.next()).await {
            Ok(Some(Ok(b))) => {
                w.moved += b.len() as u64;
                if w.moved >= STALL_BYTES {
                    (w.since, w.moved) = (Some(Instant::now()), 0);
                }
                Some((Ok(b), w))
            }
            Ok(Some(Err(e))) => {
                w.done = true;
                Some((Err(e), w))
            }
            Ok(None) => None,
            Err(_) => {
                w.done = true;
                let e = (w.stalled)();
                Some((Err(e), w))
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err() -> RegistryError {
        RegistryError::Stalled {
            registry: "r".into(),
            op: "get blob",
            detail: "test".into(),
        }
    }

    #[tokio::test]
    async fn a_trickle_fails_and_a_slow_link_lives() {
        // One byte every 20 ms with a 300 ms window: dead after one window.
        let trickle = futures_util::stream::iter(0..1000).then(|_| async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(Bytes::from_static(b"x"))
        });
        let got: Vec<_> = guard(trickle.boxed(), Duration::from_millis(300), err)
            .collect()
            .await;
        assert!(
            matches!(got.last(), Some(Err(RegistryError::Stalled { .. }))),
            "{}",
            got.len()
        );
        assert!(got.len() < 20, "{}", got.len());
        // Slow, but moving: 16 KiB every 40 ms, for over four windows.
        let slow = futures_util::stream::iter(0..40).then(|_| async {
            tokio::time::sleep(Duration::from_millis(40)).await;
            Ok(Bytes::from(vec![0u8; 16 << 10]))
        });
        let got: Vec<_> = guard(slow.boxed(), Duration::from_millis(300), err)
            .collect()
            .await;
        assert_eq!(got.len(), 40);
        assert!(got.iter().all(Result::is_ok));
    }
}
