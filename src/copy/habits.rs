//! How to upload to a registry: the strategy it is known to take (configured, or learnt from
//! its answers and kept in the state store), and what a refusal means for the next try. The
//! decisions are pure; `blob.rs` carries them out.
//!
//! Learnt, not guessed from host names (the quirks catalogue): chunks are tried first (they
//! resume); a registry that refuses them (GAR: GCP-1), or keeps only the last (GHCR-6), gets
//! one streaming PATCH; a part it calls too small (ECR-3) gets bigger parts; a body it calls
//! too large (ACR-1) gets chunks.

use crate::model::UploadStrategy;
use crate::registry::RegistryError;
use crate::state::Habits;

use super::CopyError;

/// Parts are never grown past this when a registry gives no figure.
const MAX_PART: u64 = 64 << 20;

/// How the next upload to a registry goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Habit {
    pub strategy: UploadStrategy,
    pub min_part: Option<u64>,
    pub max_body: Option<u64>,
    /// Set by the config: refusals end the copy instead of changing the strategy.
    pub fixed: bool,
}

/// What a failed upload step says about the registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// It takes no chunked PATCH (or keeps only the last chunk).
    NoChunks,
    /// A chunk was too small; its floor when the registry named one.
    PartTooSmall(Option<u64>),
    /// A request body of this many bytes was too large (413).
    BodyTooLarge(u64),
    /// It takes no PATCH at all.
    NoPatch,
}

impl Habit {
    /// The configured strategy, else what was learnt, else chunks.
    pub fn of(setting: Option<UploadStrategy>, learnt: Option<&Habits>) -> Self {
        let (min_part, max_body) = learnt.map_or((None, None), |h| (h.min_part, h.max_body));
        match setting {
            Some(strategy) => Habit {
                strategy,
                min_part,
                max_body,
                fixed: true,
            },
            None => Habit {
                strategy: learnt.map_or(UploadStrategy::Chunked, |h| h.upload),
                min_part,
                max_body,
                fixed: false,
            },
        }
    }

    /// The chunk size for a chunked upload: `chunk_size`, raised to what the registry takes.
    pub fn part(&self, chunk_size: u64, session_min: Option<u64>) -> u64 {
        chunk_size
            .max(self.min_part.unwrap_or(0))
            .max(session_min.unwrap_or(0))
            .max(1)
    }

    /// Whether a body of `len` bytes may go in one request.
    pub fn fits(&self, len: u64) -> bool {
        self.max_body.is_none_or(|m| len <= m)
    }

    /// The habit after `refusal`: `None` when nothing else is worth a try.
    pub fn after(&self, refusal: Refusal, part: u64) -> Option<Habit> {
        if self.fixed && !matches!(refusal, Refusal::PartTooSmall(_) | Refusal::BodyTooLarge(_)) {
            return None;
        }
        let mut next = self.clone();
        match (self.strategy, refusal) {
            (UploadStrategy::Chunked, Refusal::PartTooSmall(floor)) => {
                let grown = floor.unwrap_or((part * 4).min(MAX_PART));
                if grown <= part {
                    return None;
                }
                next.min_part = Some(grown);
            }
            (_, Refusal::BodyTooLarge(len)) => {
                next.max_body = Some(len.saturating_sub(1).min(self.max_body.unwrap_or(u64::MAX)));
                if self.strategy != UploadStrategy::Chunked && !self.fixed {
                    next.strategy = UploadStrategy::Chunked;
                }
            }
            (UploadStrategy::Chunked, Refusal::NoChunks) => next.strategy = UploadStrategy::Stream,
            (UploadStrategy::Stream, Refusal::NoPatch | Refusal::NoChunks) => {
                next.strategy = UploadStrategy::Monolithic;
            }
            _ => return None,
        }
        (next != *self).then_some(next)
    }

    pub fn record(&self, url: &str) -> Habits {
        let mut h = Habits::new(url, self.strategy);
        h.min_part = self.min_part;
        h.max_body = self.max_body;
        h
    }
}

/// What `e`, the failure of an upload under `strategy` after `patches` chunk PATCHes, says
/// about the registry; `None` for a failure that says nothing about it (a cut, a 5xx, bad
/// credentials, a session it forgot).
pub(super) fn refusal(
    e: &CopyError,
    strategy: UploadStrategy,
    patches: u32,
    body: u64,
) -> Option<Refusal> {
    let CopyError::Registry(RegistryError::Status {
        op,
        status,
        code,
        message,
        ..
    }) = e
    else {
        return None;
    };
    let code = code.as_deref().unwrap_or("");
    let small = code == "SIZE_INVALID"
        || ["at least", "too small", "minimum"]
            .iter()
            .any(|w| message.contains(w));
    match (*op, *status) {
        (_, 413) => Some(Refusal::BodyTooLarge(body)),
        (_, 401 | 403 | 404 | 408 | 416 | 429) | (_, 500 | 502..) => None,
        ("upload chunk", _) if strategy == UploadStrategy::Chunked && small => {
            Some(Refusal::PartTooSmall(named_size(message)))
        }
        ("upload chunk", 400 | 405 | 415 | 501) if strategy == UploadStrategy::Chunked => {
            Some(Refusal::NoChunks)
        }
        ("upload chunk", 400 | 405 | 415 | 501) => Some(Refusal::NoPatch),
        // GHCR keeps only the last of several chunks: the PUT's digest check fails.
        ("finish upload", 400)
            if strategy == UploadStrategy::Chunked && patches > 1 && code == "DIGEST_INVALID" =>
        {
            Some(Refusal::NoChunks)
        }
        _ => None,
    }
}

/// `… at least 5 MiB …` → 5 MiB: the floor a registry names in its refusal.
fn named_size(message: &str) -> Option<u64> {
    let words: Vec<&str> = message.split_whitespace().collect();
    words.windows(2).find_map(|w| {
        let n: u64 = w[0].parse().ok()?;
        let unit = match w[1].trim_end_matches(|c: char| !c.is_ascii_alphabetic()) {
            "MiB" => 1 << 20,
            "MB" => 1_000_000,
            "KiB" => 1 << 10,
            "KB" => 1_000,
            _ => return None,
        };
        n.checked_mul(unit)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(op: &'static str, status: u16, code: Option<&str>, message: &str) -> CopyError {
        CopyError::Registry(RegistryError::Status {
            registry: "r".into(),
            op,
            status,
            code: code.map(str::to_owned),
            message: message.into(),
            retry_after: None,
        })
    }

    #[test]
    fn refusals_move_the_habit_down_the_ladder() {
        let auto = Habit::of(None, None);
        assert_eq!(auto.strategy, UploadStrategy::Chunked);
        // GAR: a PATCH with Content-Range refused.
        let gar = refusal(
            &status("upload chunk", 400, Some("UNSUPPORTED"), "no chunks"),
            UploadStrategy::Chunked,
            0,
            1 << 20,
        );
        let next = auto.after(gar.unwrap(), 1 << 20).unwrap();
        assert_eq!(next.strategy, UploadStrategy::Stream);
        // A stream refused too: one PUT.
        let again = refusal(
            &status("upload chunk", 405, None, ""),
            UploadStrategy::Stream,
            0,
            1 << 20,
        )
        .unwrap();
        assert_eq!(
            next.after(again, 1 << 20).unwrap().strategy,
            UploadStrategy::Monolithic
        );
        // GHCR: the PUT's digest fails after several chunks, not after one.
        let e = status("finish upload", 400, Some("DIGEST_INVALID"), "");
        assert_eq!(
            refusal(&e, UploadStrategy::Chunked, 3, 0),
            Some(Refusal::NoChunks)
        );
        assert_eq!(refusal(&e, UploadStrategy::Chunked, 1, 0), None);
        // ECR: parts of at least 5 MiB.
        let ecr = status(
            "upload chunk",
            400,
            Some("SIZE_INVALID"),
            "Layer parts must be at least 5 MiB in size",
        );
        let r = refusal(&ecr, UploadStrategy::Chunked, 0, 1 << 20).unwrap();
        assert_eq!(r, Refusal::PartTooSmall(Some(5 << 20)));
        let grown = auto.after(r, 1 << 20).unwrap();
        assert_eq!(
            (grown.strategy, grown.part(1 << 20, None)),
            (UploadStrategy::Chunked, 5 << 20)
        );
        // ACR: a body too large.
        let acr = refusal(
            &status("finish upload", 413, None, "Request Entity Too Large"),
            UploadStrategy::Monolithic,
            0,
            30 << 20,
        )
        .unwrap();
        let chunked = Habit {
            strategy: UploadStrategy::Monolithic,
            ..auto.clone()
        }
        .after(acr, 0)
        .unwrap();
        assert_eq!(chunked.strategy, UploadStrategy::Chunked);
        assert!(!chunked.fits(30 << 20) && chunked.fits(20 << 20));
        // Cuts, credentials and a forgotten session say nothing about what it takes.
        for (op, s) in [
            ("upload chunk", 500),
            ("upload chunk", 401),
            ("upload chunk", 404),
            ("upload chunk", 416),
        ] {
            assert_eq!(
                refusal(&status(op, s, None, ""), UploadStrategy::Chunked, 0, 1),
                None
            );
        }
    }

    #[test]
    fn a_configured_strategy_only_adapts_its_sizes() {
        let fixed = Habit::of(Some(UploadStrategy::Chunked), None);
        assert_eq!(fixed.after(Refusal::NoChunks, 1 << 20), None);
        assert!(fixed
            .after(Refusal::PartTooSmall(Some(5 << 20)), 1 << 20)
            .is_some());
        let learnt = Habits::new("http://r", UploadStrategy::Stream);
        assert_eq!(
            Habit::of(None, Some(&learnt)).strategy,
            UploadStrategy::Stream
        );
        assert_eq!(
            Habit::of(Some(UploadStrategy::Chunked), Some(&learnt)).strategy,
            UploadStrategy::Chunked
        );
    }
}
