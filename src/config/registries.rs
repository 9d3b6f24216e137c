//! `[registries.NAME]` entries and bare registry URLs in policies: endpoints and credentials.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::check::{login, parse_url, positive, rate};
use super::diag::Sink;
use super::raw::RawRegistry;
use crate::model::ByteSize;
use crate::model::{Credentials, Secret, UploadStrategy};

use std::time::Duration;

/// Requests in flight at most; the adaptive limit runs below it.
const DEFAULT_MAX_CONCURRENT: usize = 32;
const DEFAULT_RATE_LIMIT_WAIT: Duration = Duration::from_secs(600);
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Generous: the largest real repositories hold tens of thousands of tags.
const DEFAULT_LIST_LIMIT: usize = 100_000;
const DEFAULT_LIST_TIMEOUT: Duration = Duration::from_secs(600);

pub struct RegistrySpec {
    pub name: String,
    pub url: url::Url,
    pub credentials: Option<Credentials>,
    pub ca_pem: Option<Vec<u8>>,
    pub max_concurrent: usize,
    pub bandwidth_limit: Option<ByteSize>,
    /// Counted requests to leave unused in a rationed budget (RateLimit-Remaining).
    pub rate_limit_reserve: u64,
    /// How long a counted request may wait for a rationed budget to refill.
    pub rate_limit_max_wait: Duration,
    /// Whole-request bound on metadata requests (manifests, tag lists, upload steps).
    pub request_timeout: Duration,
    /// How long a failing request is retried, the first contact included; `None`: 60 s,
    /// and 5 s while the registry has never answered.
    pub retry_timeout: Option<Duration>,
    /// A blob transfer that moves almost nothing for this long is dead.
    pub stall_timeout: Duration,
    /// Most entries one tag list or catalog may have, and how long listing it may take.
    pub list_limit: usize,
    pub list_timeout: Duration,
    /// `upload = "chunked" | "stream" | "monolithic"`; `None` (`"auto"`): what the registry
    /// is known to take, learnt from its answers.
    pub upload: Option<UploadStrategy>,
    /// Origins besides the registry's own that may receive its credentials (a `Location`
    /// on another port of the same service, behind a proxy).
    pub trusted_origins: Vec<url::Url>,
    /// The token webhooks from this registry carry (`/v1/events/*/NAME` only).
    pub webhook_token: Option<crate::model::Secret>,
    /// `layout_mode = "shared"`: an `oci:` folder readable by other accounts.
    pub layout_shared: bool,
}

impl RegistrySpec {
    /// A registry named by its URL in a policy: anonymous, every bound at its default.
    fn anonymous(name: String, url: url::Url) -> Self {
        RegistrySpec {
            name,
            url,
            credentials: None,
            ca_pem: None,
            max_concurrent: DEFAULT_MAX_CONCURRENT,
            bandwidth_limit: None,
            rate_limit_reserve: 0,
            rate_limit_max_wait: DEFAULT_RATE_LIMIT_WAIT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            retry_timeout: None,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            list_limit: DEFAULT_LIST_LIMIT,
            list_timeout: DEFAULT_LIST_TIMEOUT,
            upload: None,
            trusted_origins: Vec::new(),
            webhook_token: None,
            layout_shared: false,
        }
    }
}

pub(super) fn registry_spec(
    name: &str,
    reg: &Spanned<RawRegistry>,
    base: &Path,
    sink: &mut Sink,
) -> Option<RegistrySpec> {
    let r = reg.get_ref();
    let field = |f: &str| format!("registries.{name}.{f}");
    let url = parse_url(r.url.get_ref())
        .map_err(|e| sink.err(r.url.span(), format!("{}: {e}", field("url"))))
        .ok();
    let from_docker = match (r.docker_config.as_ref().filter(|d| *d.get_ref()), &url) {
        (Some(d), Some(_))
            if r.username.is_some() || r.password_env.is_some() || r.password_file.is_some() =>
        {
            sink.err(
                d.span(),
                format!(
                    "{}: give docker_config or username/password, not both",
                    field("docker_config")
                ),
            );
            None
        }
        (Some(d), Some(u)) => match docker_credentials(u) {
            Ok(c) => c,
            Err(e) => {
                sink.err(d.span(), format!("{}: {e}", field("docker_config")));
                None
            }
        },
        _ => None,
    };
    let login = login(
        r.username.as_ref(),
        r.password_env.as_ref(),
        r.password_file.as_ref(),
        &format!("registries.{name}"),
        reg.span(),
        base,
        sink,
    );
    let credentials = login
        .map(|(username, password)| match &r.password_file {
            Some(f) => Credentials::PasswordFile {
                username,
                path: base.join(f.get_ref()),
                password,
            },
            None => Credentials::Password(username, password),
        })
        .or(from_docker);
    let ca_pem = r
        .ca_file
        .as_ref()
        .and_then(|f| super::check::pem_file(f, &field("ca_file"), base, sink));
    let max_concurrent = r
        .max_concurrent
        .as_ref()
        .and_then(|n| positive(n, &field("max_concurrent"), sink))
        .unwrap_or(DEFAULT_MAX_CONCURRENT);
    let bandwidth_limit = r
        .bandwidth_limit
        .as_ref()
        .and_then(|b| rate(b, &field("bandwidth_limit"), sink));
    let rate_limit_reserve = match &r.rate_limit_reserve {
        None => 0,
        Some(n) => u64::try_from(*n.get_ref()).unwrap_or_else(|_| {
            sink.err(
                n.span(),
                format!("{}: must be 0 or more", field("rate_limit_reserve")),
            );
            0
        }),
    };
    let mut duration = |v: &Option<Spanned<String>>, name: &str, default: Duration| match v {
        None => default,
        Some(w) => super::schedule::parse_interval(w.get_ref()).unwrap_or_else(|e| {
            sink.err(w.span(), format!("{}: {e}", field(name)));
            default
        }),
    };
    let rate_limit_max_wait = duration(
        &r.rate_limit_max_wait,
        "rate_limit_max_wait",
        DEFAULT_RATE_LIMIT_WAIT,
    );
    let request_timeout = duration(
        &r.request_timeout,
        "request_timeout",
        DEFAULT_REQUEST_TIMEOUT,
    );
    let retry_timeout = r
        .retry_timeout
        .as_ref()
        .map(|_| duration(&r.retry_timeout, "retry_timeout", Duration::from_secs(60)));
    let stall_timeout = duration(&r.stall_timeout, "stall_timeout", DEFAULT_STALL_TIMEOUT);
    let list_timeout = duration(&r.list_timeout, "list_timeout", DEFAULT_LIST_TIMEOUT);
    let list_limit = match &r.list_limit {
        None => DEFAULT_LIST_LIMIT,
        Some(n) => usize::try_from(*n.get_ref())
            .ok()
            .filter(|v| (1..=10_000_000).contains(v))
            .unwrap_or_else(|| {
                sink.err(
                    n.span(),
                    format!("{}: must be between 1 and 10000000", field("list_limit")),
                );
                DEFAULT_LIST_LIMIT
            }),
    };
    let upload = r.upload.as_ref().and_then(|u| {
        let strategies = [
            UploadStrategy::Chunked,
            UploadStrategy::Stream,
            UploadStrategy::Monolithic,
        ];
        match strategies.into_iter().find(|s| s.as_str() == u.get_ref()) {
            Some(s) => Some(s),
            None if u.get_ref() == "auto" => None,
            None => {
                sink.err(
                    u.span(),
                    format!(
                        "{}: `{}` is not one of auto, chunked, stream, monolithic",
                        field("upload"),
                        u.get_ref()
                    ),
                );
                None
            }
        }
    });
    let trusted_origins = trusted_origins(r, url.as_ref(), &field("trusted_origins"), sink);
    let layout_shared = match r.layout_mode.as_ref().map(|m| (m, m.get_ref().as_str())) {
        None | Some((_, "private")) => false,
        Some((m, "shared")) => {
            if url.as_ref().is_some_and(|u| u.scheme() != "oci") {
                sink.err(
                    m.span(),
                    format!(
                        "{}: only an oci: folder has a layout mode",
                        field("layout_mode")
                    ),
                );
            }
            true
        }
        Some((m, other)) => {
            sink.err(
                m.span(),
                format!(
                    "{}: `{other}` is not private (files 0600, the default) or shared (0644)",
                    field("layout_mode")
                ),
            );
            false
        }
    };
    let webhook_token = super::daemon::token(
        r.webhook_token_env.as_ref(),
        r.webhook_token_file.as_ref(),
        &field("webhook_token"),
        base,
        sink,
    );
    Some(RegistrySpec {
        name: name.to_owned(),
        url: url?,
        credentials,
        ca_pem,
        max_concurrent,
        bandwidth_limit,
        rate_limit_reserve,
        rate_limit_max_wait,
        request_timeout,
        retry_timeout,
        stall_timeout,
        list_limit,
        list_timeout,
        upload,
        trusted_origins,
        webhook_token,
        layout_shared,
    })
}

/// `trusted_origins`: each `scheme://host[:port]`, https unless the registry itself is
/// plain http (credentials never go to another origin less protected than the registry).
fn trusted_origins(
    r: &RawRegistry,
    registry: Option<&url::Url>,
    field: &str,
    sink: &mut Sink,
) -> Vec<url::Url> {
    let plain = registry.is_some_and(|u| u.scheme() == "http");
    let mut out = Vec::new();
    for o in r.trusted_origins.iter().flatten() {
        match url::Url::parse(o.get_ref()) {
            Ok(u) if u.scheme() == "http" && !plain => sink.err(o.span(), format!("{field}: `{}` is plain http for an https registry; its credentials go to another origin only over TLS", u.origin().ascii_serialization())),
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() && u.path() == "/" && u.username().is_empty() && u.password().is_none() && u.query().is_none() => out.push(u),
            _ => sink.err(o.span(), format!("{field}: `{}` is not an origin like https://registry.example:8443", o.get_ref())),
        }
    }
    out
}

/// Credentials for `url` from Docker's config (`$DOCKER_CONFIG/config.json`, else
/// `~/.docker/config.json`), with Docker's precedence: a `credHelpers` entry for its host,
/// else `credsStore`, else the `auths` entry. `None` when there is none (anonymous access).
/// A helper is only named here; it runs when the registry first asks for credentials, and a
/// missing one fails that run (exit 1) naming it: it may be installed after the config is.
fn docker_credentials(url: &url::Url) -> Result<Option<Credentials>, String> {
    use base64::Engine;
    let dir = std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".docker")));
    let Some(path) = dir.map(|d| d.join("config.json")) else {
        return Err("no DOCKER_CONFIG or HOME to find config.json".into());
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let host = match url.port() {
        Some(p) => format!("{}:{p}", url.host_str().unwrap_or("")),
        None => url.host_str().unwrap_or("").to_owned(),
    };
    // Keys are written as `host`, `host:port` or a full URL (`https://index.docker.io/v1/`).
    let matches = |k: &str| {
        let k = k
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        let k = k.split('/').next().unwrap_or(k);
        k == host || (host == "registry-1.docker.io" && k == "index.docker.io")
    };
    let entry = |section: &str| {
        json.get(section)
            .and_then(|a| a.as_object())
            .and_then(|a| a.iter().find(|(k, _)| matches(k)))
    };
    let helper = |name: &str, server: &str| -> Result<Option<Credentials>, String> {
        let program = format!("docker-credential-{name}");
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(format!(
                "{}: `{name}` is not a credential helper name",
                path.display()
            ));
        }
        Ok(Some(Credentials::Helper {
            program,
            server: server.to_owned(),
        }))
    };
    if let Some((key, name)) = entry("credHelpers") {
        return helper(name.as_str().unwrap_or(""), key);
    }
    let auths = entry("auths");
    if let Some(name) = json.get("credsStore").and_then(|s| s.as_str()) {
        // The server as Docker names it to helpers: the `auths` key if there is one.
        return helper(name, auths.map_or(host.as_str(), |(k, _)| k.as_str()));
    }
    let Some(auth) = auths
        .and_then(|(_, e)| e.get("auth"))
        .and_then(|a| a.as_str())
    else {
        return Ok(None);
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|_| format!("{}: the auth for {host} is not base64", path.display()))?;
    let decoded = String::from_utf8(decoded)
        .map_err(|_| format!("{}: the auth for {host} is not text", path.display()))?;
    let (user, pass) = decoded.split_once(':').ok_or_else(|| {
        format!(
            "{}: the auth for {host} is not user:password",
            path.display()
        )
    })?;
    Ok(Some(Credentials::Password(
        user.to_owned(),
        Secret::new(pass),
    )))
}

/// A registry reference in a policy: a name from `[registries]`, or a bare URL (anonymous).
pub(super) fn registry_ref(
    r: &Spanned<String>,
    field: &str,
    named: &BTreeMap<String, Spanned<RawRegistry>>,
    registries: &mut BTreeMap<String, RegistrySpec>,
    sink: &mut Sink,
) -> Option<String> {
    let key = r.get_ref();
    if named.contains_key(key) {
        return registries.contains_key(key).then(|| key.clone()); // else its own error was reported
    }
    if key.contains("://") {
        return match parse_url(key) {
            Ok(url) => {
                let name = url.host_str().unwrap_or(key).to_owned()
                    + &url.port().map(|p| format!(":{p}")).unwrap_or_default();
                registries
                    .entry(key.clone())
                    .or_insert_with(|| RegistrySpec::anonymous(name, url));
                Some(key.clone())
            }
            Err(e) => {
                sink.err(r.span(), format!("{field}: {e}"));
                None
            }
        };
    }
    let known: Vec<&str> = named.keys().map(String::as_str).collect();
    sink.err(
        r.span(),
        format!(
            "{field}: unknown registry `{key}` (known: {})",
            if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            }
        ),
    );
    None
}
