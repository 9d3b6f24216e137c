//! Registry errors, each deciding once whether a retry can help.

use std::time::Duration;

use crate::model::{Digest, ErrorKind};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{registry}: {op}: HTTP {status}{}", code_text(.code, .message))]
    Status {
        registry: String,
        op: &'static str,
        status: u16,
        code: Option<String>,
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("{registry}: {op}: {}", chain(source))]
    Transport {
        registry: String,
        op: &'static str,
        source: reqwest::Error,
    },
    /// Nothing answered: connection refused, no such host, no route, after a short first-
    /// contact budget; for a while after, the other requests to it fail at once with the
    /// same words instead of retrying each.
    #[error("{registry}: {op}: not reachable: {detail}")]
    Unreachable {
        registry: String,
        op: &'static str,
        detail: String,
    },
    #[error("{registry}: {op}: authentication failed ({detail}); check the username and password for this registry")]
    Unauthorized {
        registry: String,
        op: &'static str,
        detail: String,
    },
    #[error("{registry}: {op}: {detail}")]
    Protocol {
        registry: String,
        op: &'static str,
        detail: String,
    },
    #[error("{registry}: {what} {expected}: got content with digest {actual}")]
    DigestMismatch {
        registry: String,
        what: &'static str,
        expected: Digest,
        actual: Digest,
    },
    #[error("{registry}: {op}: rate limit: {detail}")]
    RateLimited {
        registry: String,
        op: &'static str,
        detail: String,
    },
    #[error("{registry}: {op}: stalled: {detail}")]
    Stalled {
        registry: String,
        op: &'static str,
        detail: String,
    },
    /// The repository (or its project) must be created on the registry before a push: ECR,
    /// GAR, Harbor and Quay do not create it on the first push.
    #[error("{registry}: {op}: repository {repo} does not exist on {registry} ({detail}): create it first (see the README, \"Repositories that must exist\")")]
    MissingRepository {
        registry: String,
        op: &'static str,
        repo: String,
        detail: String,
    },
    /// The registry refused to move a tag that exists (immutable tags): a conflict.
    #[error("{registry}: {op}: tag {tag} is immutable on {registry} (HTTP {status}{}); it keeps its digest", code_text(.code, .message))]
    Immutable {
        registry: String,
        op: &'static str,
        tag: String,
        status: u16,
        code: Option<String>,
        message: String,
    },
    /// The registry deletes nothing through the registry API (GHCR-3; Docker Hub for tagged
    /// manifests: HUB-6; Distribution without `storage.delete.enabled`).
    #[error("{registry}: {op}: this registry does not allow deletes through the registry API (HTTP {status}{}){hint}", code_text(.code, .message))]
    NoDeletes {
        registry: String,
        op: &'static str,
        status: u16,
        code: Option<String>,
        message: String,
        hint: &'static str,
    },
    /// Credentials ran out in the middle of an upload (GitLab's 5-minute tokens); new ones
    /// were fetched, and the upload goes on from where the registry says it is.
    #[error("{registry}: {op}: credentials expired mid-upload; renewed")]
    Reauthenticated { registry: String, op: &'static str },
    /// A gated write was stopped before an attempt: its writer may no longer write.
    #[error("{registry}: {op}: not sent: {detail}")]
    Fenced {
        registry: String,
        op: &'static str,
        detail: String,
    },
    /// A layout folder's file system failed or holds something that is not a layout.
    #[error("{registry}: {op}: {path}: {detail}")]
    Storage {
        registry: String,
        op: &'static str,
        path: String,
        kind: std::io::ErrorKind,
        detail: String,
    },
}

fn code_text(code: &Option<String>, message: &str) -> String {
    let text = match (code, message.is_empty()) {
        (Some(c), true) => format!(" {c}"),
        (Some(c), false) => format!(" {c}: {message}"),
        (None, false) => format!(": {message}"),
        (None, true) => String::new(),
    };
    // Go's HTTP server (Distribution, Harbor, Zot) answers plain HTTP on a TLS port so.
    if message.contains("HTTP request to an HTTPS server") {
        return text + " (this registry speaks TLS: write its url with https://)";
    }
    text
}

/// The error and its causes, `a: b: c`: reqwest's own message ("error sending request")
/// says nothing of a refused connection or an untrusted certificate.
/// A TLS client meeting a plain-HTTP server says only "corrupt message", so it is named.
pub(super) fn chain(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(c) = cur {
        let msg = c.to_string();
        if !out.contains(&msg) {
            out = format!("{out}: {msg}");
        }
        cur = c.source();
    }
    if out.contains("InvalidContentType") {
        out.push_str(" (the server answered in plain HTTP, not TLS: write its url with http://)");
    }
    out
}

/// The connection closed before any answer came (ECR's answer to a push into a repository
/// that does not exist).
pub(super) fn hung_up(e: &reqwest::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = cur {
        if c.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_incomplete_message)
        {
            return true;
        }
        cur = c.source();
    }
    false
}

/// A TLS failure (untrusted or invalid certificate) will not heal by retrying. hyper-rustls
/// hands it up as a `rustls::Error` inside one or more `io::Error`s.
pub(super) fn is_tls_failure(e: &reqwest::Error) -> bool {
    fn is_rustls(e: &(dyn std::error::Error + 'static)) -> bool {
        if e.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        let inner = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref());
        inner.is_some_and(|i| is_rustls(i))
    }
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = cur {
        if is_rustls(c) {
            return true;
        }
        cur = c.source();
    }
    false
}

impl RegistryError {
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Status { status, .. } => matches!(status, 408 | 429 | 500..=599),
            // Connect failures, resets and timeouts are all worth another try; a request that
            // could not even be built is not.
            Self::Transport { source, .. } => {
                !source.is_builder() && !source.is_redirect() && !is_tls_failure(source)
            }
            // The blob copy resumes from what the target acknowledged, a bounded number of times.
            Self::Stalled { .. } | Self::Reauthenticated { .. } => true,
            Self::MissingRepository { .. }
            | Self::Immutable { .. }
            | Self::NoDeletes { .. }
            | Self::Fenced { .. }
            | Self::Unreachable { .. } => false,
            // A disk that is full, read-only or refuses us stays so; an interrupted call or
            // one that timed out may not.
            Self::Storage { kind, .. } => {
                use std::io::ErrorKind as K;
                matches!(kind, K::Interrupted | K::TimedOut | K::WouldBlock)
            }
            // Waiting was already bounded by rate_limit_max_wait: the next run goes on.
            Self::Unauthorized { .. }
            | Self::Protocol { .. }
            | Self::DigestMismatch { .. }
            | Self::RateLimited { .. } => false,
        }
    }

    /// What kind of failure this is, for metrics and messages.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Status {
                status: 401 | 403, ..
            }
            | Self::Unauthorized { .. } => ErrorKind::Auth,
            Self::Status { status: 429, .. } | Self::RateLimited { .. } => ErrorKind::RateLimit,
            Self::Status { .. } | Self::Protocol { .. } => ErrorKind::Protocol,
            Self::Transport { .. } | Self::Stalled { .. } | Self::Unreachable { .. } => {
                ErrorKind::Transport
            }
            Self::Reauthenticated { .. } => ErrorKind::Auth,
            Self::MissingRepository { .. } => ErrorKind::Missing,
            Self::Immutable { .. } => ErrorKind::Conflict,
            Self::NoDeletes { .. } => ErrorKind::Protocol,
            Self::DigestMismatch { .. } => ErrorKind::Digest,
            Self::Storage { .. } => ErrorKind::Storage,
            Self::Fenced { .. } => ErrorKind::Fence,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Status { code, .. } => code.as_deref(),
            _ => None,
        }
    }
}

/// `{"errors":[{"code":"MANIFEST_UNKNOWN","message":"..."}]}` → (code, message).
pub(super) fn oci_error(body: &[u8]) -> (Option<String>, String) {
    #[derive(serde::Deserialize)]
    struct Envelope {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        code: Option<String>,
        message: Option<String>,
    }
    let (code, message) = match serde_json::from_slice::<Envelope>(body) {
        Ok(e) if !e.errors.is_empty() => (
            e.errors[0].code.clone(),
            e.errors[0].message.clone().unwrap_or_default(),
        ),
        _ => (
            None,
            String::from_utf8_lossy(&body[..body.len().min(200)])
                .trim()
                .to_owned(),
        ),
    };
    (code.map(|c| printable(&c)), printable(&message))
}

/// A registry's words as they may reach a terminal, a log or the status page: control
/// characters (an escape sequence could rewrite the operator's screen) shown escaped, and
/// at most 200 characters.
pub(super) fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(200));
    for c in s.chars().take(200) {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An escape sequence in a registry's error message would reach the operator's terminal.
    #[test]
    fn registry_words_are_printed_with_control_characters_escaped() {
        let body =
            br#"{"errors":[{"code":"DENIED","message":"no\u001b[2J\u001b]0;pwned\u0007 way"}]}"#;
        let (code, message) = oci_error(body);
        assert_eq!(code.as_deref(), Some("DENIED"));
        assert_eq!(message, "no\\u{1b}[2J\\u{1b}]0;pwned\\u{7} way");
        assert!(!message.chars().any(char::is_control));
        let (_, raw) = oci_error(b"<html>\x1b[31mred\x1b[0m</html>");
        assert!(!raw.chars().any(char::is_control), "{raw:?}");
    }
}
