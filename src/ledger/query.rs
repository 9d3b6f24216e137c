//! Reading the ledger (filters, pages), checking its chain, and keeping it within bounds.

use std::io::Write as _;

use serde::{Deserialize, Serialize};

use super::chain::{self, Anchor, Broken};
use super::{Entry, Ledger, LedgerError};
use crate::model::{now_ms, Digest, RepoName};

/// Which entries to read: every field given must match.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Filter {
    /// From this time on (Unix ms), inclusive.
    pub since_ms: Option<u64>,
    /// Before this time (Unix ms).
    pub until_ms: Option<u64>,
    pub policy: Option<String>,
    pub target: Option<String>,
    pub repository: Option<RepoName>,
    /// The digest written or deleted, or the source digest it came from.
    pub digest: Option<Digest>,
    /// One run's entries (`policy@start`).
    pub run: Option<String>,
}

impl Filter {
    fn admits(&self, e: &Entry) -> bool {
        let d = &e.draft;
        self.since_ms.is_none_or(|t| d.at_ms >= t)
            && self.until_ms.is_none_or(|t| d.at_ms < t)
            && self.policy.as_ref().is_none_or(|p| &d.policy == p)
            && self.run.as_ref().is_none_or(|r| &d.run == r)
            && self.target.as_ref().is_none_or(|t| &d.target == t)
            && self.repository.as_ref().is_none_or(|r| &d.repository == r)
            && self
                .digest
                .as_ref()
                .is_none_or(|g| &d.digest == g || d.source.as_ref().is_some_and(|s| &s.digest == g))
    }
}

/// One page of entries, oldest first; `next` is the `after` of the next page.
#[derive(Debug, Serialize, Deserialize)]
pub struct Page {
    pub entries: Vec<Entry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<u64>,
}

/// What a check of the chain found: the entries and the head hash, or the first break.
#[derive(Debug, Serialize, Deserialize)]
pub struct Verified {
    pub entries: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broken: Option<Broken>,
}

/// Most entries one page holds, whatever is asked.
pub const MAX_PAGE: usize = 1000;

impl Ledger {
    /// Entries after seq `after` that `filter` admits, at most `limit` (capped at
    /// [`MAX_PAGE`]).
    ///
    /// # Errors
    /// When the store cannot be read or an entry does not decode.
    pub fn read(&self, filter: &Filter, after: u64, limit: usize) -> Result<Page, LedgerError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let mut entries = Vec::new();
        for item in self.state.ledger_scan(after.saturating_add(1)) {
            let (seq, bytes) = item?;
            let e = chain::decode(seq, &bytes)?;
            if !filter.admits(&e) {
                continue;
            }
            if entries.len() == limit {
                return Ok(Page {
                    next: entries.last().map(|e: &Entry| e.seq),
                    entries,
                });
            }
            entries.push(e);
        }
        Ok(Page {
            entries,
            next: None,
        })
    }

    /// Every entry after `after` that `filter` admits, a page at a time, oldest first.
    ///
    /// # Errors
    /// As [`Ledger::read`]; the pages before the failing one have been handed over.
    pub fn each_page(
        &self,
        filter: &Filter,
        mut after: u64,
        mut f: impl FnMut(Vec<Entry>),
    ) -> Result<(), LedgerError> {
        loop {
            let page = self.read(filter, after, MAX_PAGE)?;
            f(page.entries);
            match page.next {
                Some(n) => after = n,
                None => return Ok(()),
            }
        }
    }

    /// Check the whole chain: how many entries and the head hash, or the first break.
    ///
    /// # Errors
    /// The first entry that was edited, removed or inserted.
    pub fn verify(&self) -> Result<(u64, String), Broken> {
        let start = self.start().map_err(|e| Broken {
            seq: 0,
            why: e.to_string(),
        })?;
        let from = start.0;
        chain::check(
            start,
            self.state
                .ledger_scan(from)
                .map(|r| r.map_err(LedgerError::from)),
        )
    }

    /// The chain checked, as `ferry audit --verify` and `GET /v1/audit/verify` report it.
    pub fn check(&self) -> Verified {
        match self.verify() {
            Ok((entries, head)) => Verified {
                entries,
                head: Some(head),
                broken: None,
            },
            Err(b) => Verified {
                entries: 0,
                head: None,
                broken: Some(b),
            },
        }
    }

    /// Drop the entries past the retention limits (age, count), oldest first, archiving them
    /// first when an archive is set. Called after each append; `last` is the newest seq.
    pub(super) fn retain(&self, last: u64, now_entry_ms: u64) -> Result<(), LedgerError> {
        const BATCH: usize = 1000;
        let r = &self.retention;
        let cutoff = now_ms()
            .min(now_entry_ms)
            .saturating_sub(r.max_age.as_millis() as u64);
        let mut gone = Vec::new();
        let mut archived = Vec::new();
        for item in self.state.ledger_scan(0).take(BATCH) {
            let (seq, bytes) = item?;
            let over_count = last - seq + 1 > r.max_entries;
            let e = chain::decode(seq, &bytes)?;
            if !over_count && e.draft.at_ms >= cutoff {
                break;
            }
            gone.push((seq, e.hash.clone()));
            archived.push(bytes);
        }
        let Some((seq, hash)) = gone.last().cloned() else {
            return Ok(());
        };
        if let Some(path) = &r.archive {
            let fail = |source| LedgerError::Archive {
                path: path.display().to_string(),
                source,
            };
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(fail)?;
            for b in &archived {
                f.write_all(b)
                    .and_then(|()| f.write_all(b"\n"))
                    .map_err(fail)?;
            }
            f.sync_data().map_err(fail)?;
        }
        let anchor = serde_json::to_vec(&Anchor { seq, hash }).expect("anchors serialize");
        let seqs: Vec<u64> = gone.iter().map(|(s, _)| *s).collect();
        self.state.ledger_prune(&seqs, &anchor)?;
        Ok(())
    }
}

/// The filter of `ferry audit`'s options and `GET /v1/audit`'s query, as given: each is
/// checked here, so both say the same about a bad one.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Asked {
    pub since: Option<String>,
    pub until: Option<String>,
    pub policy: Option<String>,
    pub target: Option<String>,
    pub repository: Option<String>,
    pub digest: Option<String>,
}

impl Asked {
    /// # Errors
    /// A time, repository or digest that is not one, saying which and why.
    pub fn filter(&self, now: u64) -> Result<Filter, String> {
        let time = |v: &Option<String>, what: &str| {
            v.as_deref()
                .map(|t| parse_time(t, now).map_err(|e| format!("{what}: {e}")))
                .transpose()
        };
        Ok(Filter {
            since_ms: time(&self.since, "since")?,
            until_ms: time(&self.until, "until")?,
            policy: self.policy.clone(),
            target: self.target.clone(),
            repository: self
                .repository
                .as_deref()
                .map(|r| r.parse().map_err(|e| format!("repository `{r}`: {e}")))
                .transpose()?,
            digest: self
                .digest
                .as_deref()
                .map(|d| d.parse().map_err(|e| format!("digest `{d}`: {e}")))
                .transpose()?,
            run: None,
        })
    }
}

/// `2026-12-01T00:00:00Z` (RFC 3339), or a time ago: `90m`, `24h`, `7d`.
///
/// # Errors
/// Neither form.
fn parse_time(s: &str, now: u64) -> Result<u64, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return u64::try_from(t.timestamp_millis()).map_err(|_| format!("`{s}` is before 1970"));
    }
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| {
        format!("`{s}` is neither a time like 2026-12-01T00:00:00Z nor an age like 24h")
    })?;
    let unit_ms: u64 = match unit {
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("`{s}`: an age's unit is s, m, h or d")),
    };
    Ok(now.saturating_sub(n.saturating_mul(unit_ms)))
}
