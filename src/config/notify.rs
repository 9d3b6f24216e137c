//! `[[notify]]`: where ferry says that a run failed, held tags back or met a conflict.

use std::path::Path;

use super::diag::Sink;
use super::raw::RawConfig;
use crate::model::Secret;

/// What a run can be notified for (`on = [...]`, and the CloudEvents type
/// `dev.ferry.run.<it>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotifyOn {
    Failed,
    Held,
    Conflict,
    Succeeded,
    /// Audit ledger entries of a run's manifest writes (`dev.ferry.audit.written`).
    Written,
    /// Audit ledger entries of a run's deletes (`dev.ferry.audit.deleted`).
    Deleted,
}

impl NotifyOn {
    pub const ALL: [NotifyOn; 6] = [
        Self::Failed,
        Self::Held,
        Self::Conflict,
        Self::Succeeded,
        Self::Written,
        Self::Deleted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Failed => "failed",
            Self::Held => "held",
            Self::Conflict => "conflict",
            Self::Succeeded => "succeeded",
            Self::Written => "written",
            Self::Deleted => "deleted",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }

    fn names() -> String {
        Self::ALL.map(Self::as_str).join(", ")
    }
}

#[derive(Clone, PartialEq)]
pub struct NotifySpec {
    pub url: url::Url,
    pub on: Vec<NotifyOn>,
    pub bearer_token: Option<Secret>,
    /// Extra headers, as chat and incident tools want them (`X-Api-Key = "..."`). Their values
    /// are treated as secrets: never logged.
    pub headers: Vec<(String, Secret)>,
}

pub(super) fn notify_specs(raw: &RawConfig, base: &Path, sink: &mut Sink) -> Vec<NotifySpec> {
    let mut out = Vec::new();
    for (i, n) in raw.notify.iter().enumerate() {
        let n = n.get_ref();
        let field = |f: &str| format!("notify[{i}].{f}");
        let url = notify_url(n, &field, base, sink);
        let mut on = Vec::new();
        for o in n.on.get_ref() {
            if let Some(kind) = NotifyOn::parse(o.get_ref()) {
                on.push(kind);
            } else {
                sink.err(
                    o.span(),
                    format!(
                        "{}: `{}` is not one of {}",
                        field("on"),
                        o.get_ref(),
                        NotifyOn::names()
                    ),
                );
            }
        }
        if n.on.get_ref().is_empty() {
            sink.err(
                n.on.span(),
                format!(
                    "{}: name at least one of {}",
                    field("on"),
                    NotifyOn::names()
                ),
            );
        }
        let bearer_token = super::check::secret(
            n.bearer_token_env.as_ref(),
            n.bearer_token_file.as_ref(),
            &field("bearer_token"),
            base,
            sink,
        )
        .map(|(t, _)| t);
        let mut headers = Vec::new();
        let mut all: Vec<_> = n
            .headers
            .iter()
            .map(|(k, v)| (k, Some((Secret::new(v.get_ref().clone()), v.span()))))
            .collect();
        for (k, v) in &n.headers_env {
            all.push((
                k,
                super::check::secret(Some(v), None, &field(&format!("headers.{k}")), base, sink),
            ));
        }
        for (k, v) in &n.headers_file {
            all.push((
                k,
                super::check::secret(None, Some(v), &field(&format!("headers.{k}")), base, sink),
            ));
        }
        for (k, v) in all {
            let Some((value, span)) = v else { continue };
            if reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err()
                || reqwest::header::HeaderValue::from_str(value.expose()).is_err()
            {
                sink.err(
                    span,
                    format!("{}: `{k}` is not a valid HTTP header", field("headers")),
                );
            } else {
                headers.push((k.clone(), value));
            }
        }
        if let Some(url) = url {
            out.push(NotifySpec {
                url,
                on,
                bearer_token,
                headers,
            });
        }
    }
    out
}

/// `url`, or `url_env` / `url_file` when the URL itself is the secret. Never echoed when it
/// came from a secret source.
fn notify_url(
    n: &super::raw::RawNotify,
    field: &dyn Fn(&str) -> String,
    base: &Path,
    sink: &mut Sink,
) -> Option<url::Url> {
    let (text, span, secret) = match (
        &n.url,
        super::check::secret(
            n.url_env.as_ref(),
            n.url_file.as_ref(),
            &field("url"),
            base,
            sink,
        ),
    ) {
        (Some(u), None) if n.url_env.is_none() && n.url_file.is_none() => {
            (u.get_ref().clone(), u.span(), false)
        }
        (None, Some((s, span))) => (s.expose().trim().to_owned(), span, true),
        (Some(u), _) => {
            sink.err(
                u.span(),
                format!(
                    "{}: give url, url_env or url_file, one of them",
                    field("url")
                ),
            );
            return None;
        }
        (None, None) => {
            if n.url_env.is_none() && n.url_file.is_none() {
                sink.err(
                    n.on.span(),
                    format!(
                        "{}: name the endpoint with url, url_env or url_file",
                        field("url")
                    ),
                );
            }
            return None;
        }
    };
    match url::Url::parse(&text) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
        _ => {
            let shown = if secret {
                "(from a secret)".to_owned()
            } else {
                format!("`{text}`")
            };
            sink.err(
                span,
                format!(
                    "{}: {shown} is not an http:// or https:// URL",
                    field("url")
                ),
            );
            None
        }
    }
}
