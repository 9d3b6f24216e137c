//! `[daemon]`: where state lives, the listener and its API token, and the shared copy limits.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use super::check::{positive, rate};
use super::diag::{Diagnostic, Sink};
use super::raw::RawConfig;
use super::schedule;
use crate::model::ByteSize;
use crate::model::Secret;
use crate::verify::TrustedRoot;

pub struct DaemonSettings {
    pub state_dir: PathBuf,
    pub policies_dir: PathBuf,
    pub listen: SocketAddr,
    pub chunk_size: ByteSize,
    pub max_concurrent_blobs: usize,
    pub bandwidth_limit: Option<ByteSize>,
    /// How long a stopping daemon waits for chunks in flight before it exits anyway.
    pub stop_timeout: Duration,
    /// The admin token: runs, `force_delete`, every read, and webhooks of registries
    /// without their own token. None: those endpoints answer 403.
    pub api_token: Option<Secret>,
    /// When set, `/status`, `/`, `/metrics` and `GET /v1/*` need it (or the admin token).
    pub read_token: Option<Secret>,
    /// The listener's TLS; none: plain HTTP (fine on loopback).
    pub tls: Option<super::tls::ListenerTls>,
    /// `public_url`'s host: the name the status routes answer to besides IP literals and
    /// `localhost` (a DNS-rebinding page names some other host).
    pub public_host: Option<String>,
    /// Accepted events not yet carried out, at most; past it new events are refused (503)
    /// rather than acknowledged and dropped.
    pub max_pending_events: usize,
    /// Runs kept per policy in the state store; older ones are pruned as new ones are recorded.
    pub run_history: usize,
    /// How long audit ledger entries are kept (`audit_retention`).
    pub audit_retention: Duration,
    /// Most audit ledger entries kept; the oldest go first.
    pub audit_max_entries: u64,
    /// Where entries past either limit are appended (JSON lines) before they go.
    pub audit_archive: Option<PathBuf>,
    /// `sigstore_trusted_root`: the Fulcio CAs and Rekor keys keyless signatures and
    /// `require_tlog` are checked against, offline.
    pub trusted_root: Option<Arc<TrustedRoot>>,
}

const DEFAULT_CONFIG_DIR_POLICIES: &str = "policies";

pub(super) fn daemon_settings(raw: &RawConfig, base: &Path, sink: &mut Sink) -> DaemonSettings {
    let d = &raw.daemon;
    let path_of = |v: &Option<Spanned<String>>, default: &str| {
        base.join(v.as_ref().map_or(default, |s| s.get_ref().as_str()))
    };
    let mut out = DaemonSettings {
        state_dir: path_of(&d.state_dir, "/var/lib/ferry"),
        policies_dir: path_of(&d.policies, DEFAULT_CONFIG_DIR_POLICIES),
        listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
        chunk_size: ByteSize(16 << 20),
        max_concurrent_blobs: 32,
        bandwidth_limit: None,
        stop_timeout: Duration::from_secs(10),
        api_token: None,
        read_token: None,
        tls: None,
        public_host: None,
        max_pending_events: 10_000,
        run_history: 50,
        audit_retention: Duration::from_secs(90 * 86400),
        audit_max_entries: 1_000_000,
        audit_archive: None,
        trusted_root: None,
    };
    out.api_token = token(
        d.api_token_env.as_ref(),
        d.api_token_file.as_ref(),
        "daemon.api_token",
        base,
        sink,
    );
    out.tls = super::tls::listener_tls(d, base, sink);
    if let Some(u) = &d.public_url {
        match url::Url::parse(u.get_ref()) {
            Ok(p) if matches!(p.scheme(), "http" | "https") && p.host_str().is_some() => {
                out.public_host = p.host_str().map(str::to_ascii_lowercase);
            }
            _ => sink.err(
                u.span(),
                format!(
                    "daemon.public_url: `{}` is not an http(s) URL like https://ferry.example:9464",
                    u.get_ref()
                ),
            ),
        }
    }
    out.read_token = token(
        d.read_token_env.as_ref(),
        d.read_token_file.as_ref(),
        "daemon.read_token",
        base,
        sink,
    );
    if let Some(n) = &d.max_pending_events {
        match usize::try_from(*n.get_ref()) {
            Ok(v) if (1..=1_000_000).contains(&v) => out.max_pending_events = v,
            _ => sink.err(
                n.span(),
                "daemon.max_pending_events: must be between 1 and 1000000",
            ),
        }
    }
    if let Some(n) = &d.run_history {
        match usize::try_from(*n.get_ref()) {
            Ok(v) if (1..=10_000).contains(&v) => out.run_history = v,
            _ => sink.err(n.span(), "daemon.run_history: must be between 1 and 10000"),
        }
    }
    if let Some(t) = &d.audit_retention {
        match schedule::parse_interval(t.get_ref()) {
            Ok(v) => out.audit_retention = v,
            Err(e) => sink.err(t.span(), format!("daemon.audit_retention: {e}")),
        }
    }
    if let Some(n) = &d.audit_max_entries {
        match u64::try_from(*n.get_ref()) {
            Ok(v) if (1000..=100_000_000).contains(&v) => out.audit_max_entries = v,
            _ => sink.err(
                n.span(),
                "daemon.audit_max_entries: must be between 1000 and 100000000",
            ),
        }
    }
    out.audit_archive = d.audit_archive.as_ref().map(|p| base.join(p.get_ref()));
    if let Some(t) = &d.stop_timeout {
        match schedule::parse_interval(t.get_ref()) {
            Ok(v) => out.stop_timeout = v,
            Err(e) => sink.err(t.span(), format!("daemon.stop_timeout: {e}")),
        }
    }
    if let Some(l) = &d.listen {
        match l.get_ref().parse() {
            Ok(a) => out.listen = a,
            Err(_) => sink.err(
                l.span(),
                format!(
                    "daemon.listen: `{}` is not an address like 127.0.0.1:9464",
                    l.get_ref()
                ),
            ),
        }
    }
    if let Some(c) = &d.chunk_size {
        match c.get_ref().parse::<ByteSize>() {
            // Below 64 KiB the per-request overhead dominates; above 1 GiB a lost chunk costs too much.
            Ok(b) if (64 << 10..=1 << 30).contains(&b.0) => out.chunk_size = b,
            Ok(_) => sink.err(
                c.span(),
                "daemon.chunk_size: must be between 64KiB and 1GiB",
            ),
            Err(e) => sink.err(c.span(), format!("daemon.chunk_size: {e}")),
        }
    }
    if let Some(n) = &d.max_concurrent_blobs {
        out.max_concurrent_blobs = positive(n, "daemon.max_concurrent_blobs", sink).unwrap_or(32);
    }
    out.bandwidth_limit = d
        .bandwidth_limit
        .as_ref()
        .and_then(|b| rate(b, "daemon.bandwidth_limit", sink));
    out.trusted_root = d
        .sigstore_trusted_root
        .as_ref()
        .and_then(|p| trusted_root(p, base, sink));
    out
}

/// The trusted root, parsed once; a problem inside it is reported at its own line and
/// column, a file that cannot be read at the config entry naming it.
fn trusted_root(path: &Spanned<String>, base: &Path, sink: &mut Sink) -> Option<Arc<TrustedRoot>> {
    let file = base.join(path.get_ref());
    let text = match super::read_bounded(&file) {
        Ok(t) => t,
        Err(e) => {
            sink.err(
                path.span(),
                format!("daemon.sigstore_trusted_root: {}: {e}", file.display()),
            );
            return None;
        }
    };
    match TrustedRoot::parse(&text) {
        Ok(root) => Some(Arc::new(root)),
        Err(e) => {
            let msg = format!("daemon.sigstore_trusted_root: {}", e.msg);
            sink.out.push(if e.line == 0 {
                Diagnostic::file(&file, msg)
            } else {
                Diagnostic {
                    file: file.clone(),
                    line: e.line,
                    col: e.col,
                    msg,
                }
            });
            None
        }
    }
}

/// A token from `FIELD_env` or `FIELD_file` (a trailing newline is dropped).
pub(super) fn token(
    env: Option<&Spanned<String>>,
    file: Option<&Spanned<String>>,
    field: &str,
    base: &Path,
    sink: &mut Sink,
) -> Option<Secret> {
    let (token, span) = super::check::secret(env, file, field, base, sink)?;
    // Short tokens can be guessed over the network; 16 characters is what `openssl rand -hex 8` gives.
    let value = token.expose();
    if value.len() < 16 || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        sink.err(span, format!("{field}: the token must be at least 16 characters, without spaces (e.g. `openssl rand -hex 32`)"));
        return None;
    }
    Some(token)
}
