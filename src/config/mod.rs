//! The main config and the policy files: TOML → validated types, every problem reported
//! as `FILE:LINE:COL: message`. Imports only `model`.

mod diag;
mod raw;
pub mod schedule;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use diag::Diagnostic;
use diag::Sink;
use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use raw::{RawConfig, RawPolicy, RawPolicyFile, RawRegistry};
use regex::Regex;
use toml::Spanned;

use crate::model::ByteSize;
use crate::model::RepoName;
use crate::model::Secret;

pub struct Config {
    pub file: PathBuf,
    pub daemon: DaemonSettings,
    /// Named registries, plus one anonymous entry per bare URL used in a policy (keyed by the URL).
    pub registries: BTreeMap<String, RegistrySpec>,
    pub policies: Vec<Policy>,
}

pub struct DaemonSettings {
    pub state_dir: PathBuf,
    pub policies_dir: PathBuf,
    pub listen: SocketAddr,
    pub chunk_size: ByteSize,
    pub max_concurrent_blobs: usize,
    pub bandwidth_limit: Option<ByteSize>,
    /// How long a stopping daemon waits for chunks in flight before it exits anyway.
    pub stop_timeout: Duration,
}

pub struct RegistrySpec {
    pub name: String,
    pub url: url::Url,
    pub credentials: Option<(String, Secret)>,
    pub ca_pem: Option<Vec<u8>>,
    pub max_concurrent: usize,
    pub bandwidth_limit: Option<ByteSize>,
}

pub struct Policy {
    pub name: String,
    pub file: PathBuf,
    pub source: String,
    pub targets: Vec<String>,
    pub trigger: Trigger,
    /// Each run starts after a random delay up to this, so many policies on one schedule spread out.
    pub jitter: Duration,
    pub repositories: RepoSelector,
    pub target_repository: String,
    pub tags: TagRules,
    pub overwrite: bool,
    /// Also copy signatures, SBOMs and attestations of every image copied.
    pub referrers: bool,
    /// Only these platforms from multi-arch indexes; empty: all, index copied byte-exact.
    pub platforms: Vec<Platform>,
    pub require: Require,
    /// Delete target tags that are gone from the source, within `max_delete`.
    pub delete: bool,
    pub max_delete: MaxDelete,
}

/// `os/arch` or `os/arch/variant`, as in `linux/arm/v7`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        self.variant.as_ref().map_or(Ok(()), |v| write!(f, "/{v}"))
    }
}

/// Promotion gates: an image that fails one is held back, with the reason in plan and status.
#[derive(Clone, Debug, Default)]
pub struct Require {
    pub signature: bool,
    pub min_age: Option<Duration>,
    pub annotations: BTreeMap<String, String>,
}

impl Require {
    pub fn any(&self) -> bool {
        self.signature || self.min_age.is_some() || !self.annotations.is_empty()
    }
}

/// How many target tags one run may delete before it refuses (unless forced).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MaxDelete {
    Count(usize),
    Percent(f64),
}

impl MaxDelete {
    pub fn allows(&self, deletes: usize, target_tags: usize) -> bool {
        match *self {
            MaxDelete::Count(n) => deletes <= n,
            MaxDelete::Percent(p) => deletes as f64 <= (target_tags as f64 * p / 100.0).floor().max(1.0),
        }
    }
}

pub enum Trigger {
    Cron(Box<cron::Schedule>),
    Every(Duration),
    Manual,
}

pub struct RepoSelector {
    /// Names listed literally: used without asking the catalog.
    pub exact: Vec<RepoName>,
    /// Glob patterns (as written, for messages) and their compiled set; need the catalog.
    pub globs: Vec<String>,
    pub glob_set: GlobSet,
    pub exclude: GlobSet,
}

impl RepoSelector {
    pub fn needs_catalog(&self) -> bool {
        !self.globs.is_empty()
    }
    pub fn matches_glob(&self, repo: &str) -> bool {
        self.glob_set.is_match(repo) && !self.exclude.is_match(repo)
    }
    pub fn excluded(&self, repo: &str) -> bool {
        self.exclude.is_match(repo)
    }
}

#[derive(Default)]
pub struct TagRules {
    pub include: Vec<Regex>,
    pub exclude: Vec<Regex>,
    /// Only tags that parse as semver (`v1.2.3` or `1.2.3`) and match this range. As in
    /// Cargo, a prerelease matches only a range that names a prerelease of the same version.
    pub semver: Option<semver::VersionReq>,
    /// After the other rules: only the newest N (by semver, or by image creation time when
    /// some kept tags are not semver).
    pub latest: Option<usize>,
}

impl TagRules {
    /// Whether the include/exclude/semver rules keep `tag`; the reason when they do not.
    pub fn decide(&self, tag: &str) -> Result<(), String> {
        if let Some(r) = self.exclude.iter().find(|r| r.is_match(tag)) {
            return Err(format!("excluded by tags.exclude `{}`", r.as_str()));
        }
        if !self.include.is_empty() && !self.include.iter().any(|r| r.is_match(tag)) {
            return Err("matches no tags.include".into());
        }
        if let Some(req) = &self.semver {
            match crate::model::tag_version(tag) {
                None => return Err("not a semver tag (tags.semver is set)".into()),
                Some(v) if !req.matches(&v) => return Err(format!("{v} is outside tags.semver `{req}`")),
                Some(_) => {}
            }
        }
        Ok(())
    }
}

impl Policy {
    /// The target repository for a source repository, from the `target_repository` template.
    pub fn target_repo(&self, source: &RepoName) -> Result<RepoName, String> {
        render_template(&self.target_repository, source)
    }
}

fn render_template(template: &str, source: &RepoName) -> Result<RepoName, String> {
    let out = template.replace("{repository}", source.as_str()).replace("{name}", source.last());
    out.parse().map_err(|e| format!("target_repository `{template}` gives {e} for `{source}`"))
}

const DEFAULT_CONFIG_DIR_POLICIES: &str = "policies";

/// Read and check the main config and every policy file. Returns every problem found.
pub fn load(path: &Path) -> Result<Config, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let src = std::fs::read_to_string(path).map_err(|e| vec![Diagnostic::file(path, format!("cannot read: {e}"))])?;
    let raw: RawConfig = toml::from_str(&src).map_err(|e| vec![Diagnostic::from_toml(path, &src, &e)])?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut sink = Sink { file: path, src: &src, out: &mut diags };
    let daemon = daemon_settings(&raw, base, &mut sink);
    let mut registries = BTreeMap::new();
    for (name, reg) in &raw.registries {
        if let Some(spec) = registry_spec(name, reg, base, &mut sink) {
            registries.insert(name.clone(), spec);
        }
    }
    let policies = load_policies(&daemon.policies_dir, &raw.registries, &mut registries, &mut diags);
    if diags.is_empty() {
        Ok(Config { file: path.to_owned(), daemon, registries, policies })
    } else {
        Err(diags)
    }
}

fn daemon_settings(raw: &RawConfig, base: &Path, sink: &mut Sink) -> DaemonSettings {
    let d = &raw.daemon;
    let path_of = |v: &Option<Spanned<String>>, default: &str| base.join(v.as_ref().map_or(default, |s| s.get_ref().as_str()));
    let mut out = DaemonSettings {
        state_dir: path_of(&d.state_dir, "/var/lib/ferry"),
        policies_dir: path_of(&d.policies, DEFAULT_CONFIG_DIR_POLICIES),
        listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
        chunk_size: ByteSize(16 << 20),
        max_concurrent_blobs: 8,
        bandwidth_limit: None,
        stop_timeout: Duration::from_secs(10),
    };
    if let Some(t) = &d.stop_timeout {
        match schedule::parse_interval(t.get_ref()) {
            Ok(v) => out.stop_timeout = v,
            Err(e) => sink.err(t.span(), format!("daemon.stop_timeout: {e}")),
        }
    }
    if let Some(l) = &d.listen {
        match l.get_ref().parse() {
            Ok(a) => out.listen = a,
            Err(_) => sink.err(l.span(), format!("daemon.listen: `{}` is not an address like 127.0.0.1:9464", l.get_ref())),
        }
    }
    if let Some(c) = &d.chunk_size {
        match c.get_ref().parse::<ByteSize>() {
            // Below 64 KiB the per-request overhead dominates; above 1 GiB a lost chunk costs too much.
            Ok(b) if (64 << 10..=1 << 30).contains(&b.0) => out.chunk_size = b,
            Ok(_) => sink.err(c.span(), "daemon.chunk_size: must be between 64KiB and 1GiB"),
            Err(e) => sink.err(c.span(), format!("daemon.chunk_size: {e}")),
        }
    }
    if let Some(n) = &d.max_concurrent_blobs {
        out.max_concurrent_blobs = positive(n, "daemon.max_concurrent_blobs", sink).unwrap_or(8);
    }
    out.bandwidth_limit = d.bandwidth_limit.as_ref().and_then(|b| rate(b, "daemon.bandwidth_limit", sink));
    out
}

fn positive(n: &Spanned<i64>, field: &str, sink: &mut Sink) -> Option<usize> {
    match usize::try_from(*n.get_ref()) {
        Ok(v) if (1..=1024).contains(&v) => Some(v),
        _ => {
            sink.err(n.span(), format!("{field}: must be between 1 and 1024"));
            None
        }
    }
}

fn rate(b: &Spanned<String>, field: &str, sink: &mut Sink) -> Option<ByteSize> {
    let s = b.get_ref().trim();
    match s.strip_suffix("/s").unwrap_or(s).parse::<ByteSize>() {
        Ok(v) if v.0 > 0 => Some(v),
        Ok(_) => {
            sink.err(b.span(), format!("{field}: must be more than 0"));
            None
        }
        Err(e) => {
            sink.err(b.span(), format!("{field}: {e}"));
            None
        }
    }
}

fn parse_url(s: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(s).map_err(|e| format!("`{s}` is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!("`{s}` must be an http:// or https:// URL with a host"));
    }
    if url.path() != "/" || url.query().is_some() {
        return Err(format!("`{s}` must be the registry's root (no path or query)"));
    }
    Ok(url)
}

fn registry_spec(name: &str, reg: &Spanned<RawRegistry>, base: &Path, sink: &mut Sink) -> Option<RegistrySpec> {
    let r = reg.get_ref();
    let field = |f: &str| format!("registries.{name}.{f}");
    let url = parse_url(r.url.get_ref()).map_err(|e| sink.err(r.url.span(), format!("{}: {e}", field("url")))).ok();
    let from_docker = match (r.docker_config.as_ref().filter(|d| *d.get_ref()), &url) {
        (Some(d), Some(_)) if r.username.is_some() || r.password_env.is_some() || r.password_file.is_some() => {
            sink.err(d.span(), format!("{}: give docker_config or username/password, not both", field("docker_config")));
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
    let password = match (&r.password_env, &r.password_file) {
        (Some(_), Some(f)) => {
            sink.err(f.span(), format!("{}: give password_env or password_file, not both", field("password_file")));
            None
        }
        (Some(env), None) => match std::env::var(env.get_ref()) {
            Ok(v) if !v.is_empty() => Some(Secret::new(v)),
            _ => {
                sink.err(env.span(), format!("{}: environment variable `{}` is not set", field("password_env"), env.get_ref()));
                None
            }
        },
        (None, Some(f)) => match std::fs::read_to_string(base.join(f.get_ref())) {
            // A trailing newline is an artefact of `echo pw > file`, never part of a password.
            Ok(v) => Some(Secret::new(v.trim_end_matches(['\n', '\r']))),
            Err(e) => {
                sink.err(f.span(), format!("{}: cannot read `{}`: {e}", field("password_file"), f.get_ref()));
                None
            }
        },
        (None, None) => None,
    };
    let credentials = match (&r.username, password) {
        (Some(u), Some(p)) => Some((u.get_ref().clone(), p)),
        (Some(u), None) if r.password_env.is_none() && r.password_file.is_none() => {
            sink.err(u.span(), format!("{}: needs password_env or password_file", field("username")));
            None
        }
        (None, Some(_)) => {
            sink.err(reg.span(), format!("registries.{name}: a password is given but no username"));
            None
        }
        _ => from_docker,
    };
    let ca_pem = r.ca_file.as_ref().and_then(|f| match std::fs::read(base.join(f.get_ref())) {
        Ok(pem) if pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") => Some(pem),
        Ok(_) => {
            sink.err(f.span(), format!("{}: `{}` holds no PEM certificate", field("ca_file"), f.get_ref()));
            None
        }
        Err(e) => {
            sink.err(f.span(), format!("{}: cannot read `{}`: {e}", field("ca_file"), f.get_ref()));
            None
        }
    });
    let max_concurrent = r.max_concurrent.as_ref().and_then(|n| positive(n, &field("max_concurrent"), sink)).unwrap_or(16);
    let bandwidth_limit = r.bandwidth_limit.as_ref().and_then(|b| rate(b, &field("bandwidth_limit"), sink));
    Some(RegistrySpec { name: name.to_owned(), url: url?, credentials, ca_pem, max_concurrent, bandwidth_limit })
}

/// Credentials for `url` from Docker's config (`$DOCKER_CONFIG/config.json`, else
/// `~/.docker/config.json`): the `auths` entry for its host (and port). `None` when there is
/// none (anonymous access). Credential helpers run programs and are not supported.
fn docker_credentials(url: &url::Url) -> Result<Option<(String, Secret)>, String> {
    use base64::Engine;
    let dir =
        std::env::var_os("DOCKER_CONFIG").map(PathBuf::from).or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".docker")));
    let Some(path) = dir.map(|d| d.join("config.json")) else { return Err("no DOCKER_CONFIG or HOME to find config.json".into()) };
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let host = match url.port() {
        Some(p) => format!("{}:{p}", url.host_str().unwrap_or("")),
        None => url.host_str().unwrap_or("").to_owned(),
    };
    // Keys are written as `host`, `host:port` or a full URL (`https://index.docker.io/v1/`).
    let matches = |k: &str| {
        let k = k.trim_start_matches("https://").trim_start_matches("http://");
        let k = k.split('/').next().unwrap_or(k);
        k == host || (host == "registry-1.docker.io" && k == "index.docker.io")
    };
    if json.get("credHelpers").and_then(|h| h.as_object()).is_some_and(|h| h.keys().any(|k| matches(k))) || json.get("credsStore").is_some()
    {
        let entry = json.get("auths").and_then(|a| a.as_object()).and_then(|a| a.iter().find(|(k, _)| matches(k)));
        if entry.and_then(|(_, v)| v.get("auth")).is_none() {
            return Err(format!(
                "{}: credentials for {host} live in a credential helper, which ferry does not run; use password_file",
                path.display()
            ));
        }
    }
    let Some((_, entry)) = json.get("auths").and_then(|a| a.as_object()).and_then(|a| a.iter().find(|(k, _)| matches(k))) else {
        return Ok(None);
    };
    let Some(auth) = entry.get("auth").and_then(|a| a.as_str()) else { return Ok(None) };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|_| format!("{}: the auth for {host} is not base64", path.display()))?;
    let decoded = String::from_utf8(decoded).map_err(|_| format!("{}: the auth for {host} is not text", path.display()))?;
    let (user, pass) = decoded.split_once(':').ok_or_else(|| format!("{}: the auth for {host} is not user:password", path.display()))?;
    Ok(Some((user.to_owned(), Secret::new(pass))))
}

/// Policy files in name order, so diagnostics and runs come out in a stable order.
fn policy_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read policy folder: {e}"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    Ok(files)
}

fn load_policies(
    dir: &Path,
    named: &BTreeMap<String, Spanned<RawRegistry>>,
    registries: &mut BTreeMap<String, RegistrySpec>,
    diags: &mut Vec<Diagnostic>,
) -> Vec<Policy> {
    let files = match policy_files(dir) {
        Ok(f) => f,
        Err(e) => {
            diags.push(Diagnostic::file(dir, e));
            return Vec::new();
        }
    };
    let mut policies = Vec::new();
    let mut seen: BTreeMap<String, Diagnostic> = BTreeMap::new();
    for file in files {
        let src = match std::fs::read_to_string(&file) {
            Ok(s) => s,
            Err(e) => {
                diags.push(Diagnostic::file(&file, format!("cannot read: {e}")));
                continue;
            }
        };
        let parsed: RawPolicyFile = match toml::from_str(&src) {
            Ok(p) => p,
            Err(e) => {
                diags.push(Diagnostic::from_toml(&file, &src, &e));
                continue;
            }
        };
        let mut sink = Sink { file: &file, src: &src, out: diags };
        for raw in &parsed.policy {
            let name = raw.get_ref().name.get_ref().clone();
            let here = Diagnostic::at(&file, &src, raw.get_ref().name.span(), "");
            if let Some(first) = seen.get(&name) {
                sink.err(
                    raw.get_ref().name.span(),
                    format!("duplicate policy name `{name}` (first defined at {}:{}:{})", first.file.display(), first.line, first.col),
                );
                continue;
            }
            seen.insert(name, here);
            if let Some(p) = policy(raw.get_ref(), &file, named, registries, &mut sink) {
                policies.push(p);
            }
        }
    }
    policies
}

/// A registry reference in a policy: a name from `[registries]`, or a bare URL (anonymous).
fn registry_ref(
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
                registries.entry(key.clone()).or_insert_with(|| RegistrySpec {
                    name: url.host_str().unwrap_or(key).to_owned() + &url.port().map(|p| format!(":{p}")).unwrap_or_default(),
                    url,
                    credentials: None,
                    ca_pem: None,
                    max_concurrent: 16,
                    bandwidth_limit: None,
                });
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
        format!("{field}: unknown registry `{key}` (known: {})", if known.is_empty() { "none".into() } else { known.join(", ") }),
    );
    None
}

fn glob(pattern: &str) -> Result<Glob, globset::Error> {
    // `*` stays within one path part; `**` crosses parts, as in .gitignore.
    GlobBuilder::new(pattern).literal_separator(true).build()
}

fn policy(
    raw: &RawPolicy,
    file: &Path,
    named: &BTreeMap<String, Spanned<RawRegistry>>,
    registries: &mut BTreeMap<String, RegistrySpec>,
    sink: &mut Sink,
) -> Option<Policy> {
    let name = raw.name.get_ref().clone();
    let ctx = |f: &str| format!("policy `{name}`: {f}");
    let before = sink.out.len();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        sink.err(raw.name.span(), ctx("name: use letters, digits, `-`, `_` and `.` only"));
    }
    let source = registry_ref(&raw.source, &ctx("source"), named, registries, sink);
    let targets: Vec<String> =
        raw.targets.get_ref().iter().filter_map(|t| registry_ref(t, &ctx("targets"), named, registries, sink)).collect();
    if raw.targets.get_ref().is_empty() {
        sink.err(raw.targets.span(), ctx("targets: name at least one target"));
    }
    for t in raw.targets.get_ref() {
        if Some(t.get_ref()) == source.as_ref() {
            sink.err(t.span(), ctx("targets: a target cannot be the source"));
        }
    }
    let trigger = match (&raw.schedule, &raw.interval) {
        (Some(_), Some(i)) => {
            sink.err(i.span(), ctx("interval: give schedule or interval, not both"));
            Trigger::Manual
        }
        (Some(s), None) => match schedule::parse_schedule(s.get_ref()) {
            Ok(c) => Trigger::Cron(Box::new(c)),
            Err(e) => {
                sink.err(s.span(), ctx(&format!("schedule: {e}")));
                Trigger::Manual
            }
        },
        (None, Some(i)) => match schedule::parse_interval(i.get_ref()) {
            Ok(d) => Trigger::Every(d),
            Err(e) => {
                sink.err(i.span(), ctx(&format!("interval: {e}")));
                Trigger::Manual
            }
        },
        (None, None) => Trigger::Manual,
    };
    let jitter = match &raw.jitter {
        Some(j) => schedule::parse_interval(j.get_ref()).unwrap_or_else(|e| {
            sink.err(j.span(), ctx(&format!("jitter: {e}")));
            Duration::ZERO
        }),
        None => Duration::ZERO,
    };
    let repositories = repo_selector(raw, &ctx, sink);
    let target_repository = match &raw.target_repository {
        Some(t) => {
            let bad_var = t.get_ref().split('{').skip(1).find(|p| !(p.starts_with("repository}") || p.starts_with("name}")));
            if let Some(v) = bad_var {
                sink.err(
                    t.span(),
                    ctx(&format!(
                        "target_repository: unknown placeholder `{{{}`; use {{repository}} or {{name}}",
                        v.split('}').next().unwrap_or(v)
                    )),
                );
            } else if let Err(e) = render_template(t.get_ref(), &"example/app".parse().expect("valid")) {
                sink.err(t.span(), ctx(&e));
            }
            t.get_ref().clone()
        }
        None => "{repository}".to_owned(),
    };
    let mut tags = TagRules::default();
    if let Some(t) = &raw.tags {
        for (list, out, f) in [(&t.include, &mut tags.include, "tags.include"), (&t.exclude, &mut tags.exclude, "tags.exclude")] {
            for r in list {
                match Regex::new(r.get_ref()) {
                    Ok(re) => out.push(re),
                    Err(e) => sink.err(r.span(), ctx(&format!("{f}: invalid regex: {}", one_line(&e.to_string())))),
                }
            }
        }
        if let Some(v) = &t.semver {
            match semver::VersionReq::parse(v.get_ref()) {
                Ok(req) => tags.semver = Some(req),
                Err(e) => sink.err(v.span(), ctx(&format!("tags.semver: invalid range `{}`: {e}", v.get_ref()))),
            }
        }
        if let Some(n) = &t.latest {
            match usize::try_from(*n.get_ref()) {
                Ok(n) if n > 0 => tags.latest = Some(n),
                _ => sink.err(n.span(), ctx("tags.latest: must be a positive number")),
            }
        }
    }
    let mut platforms = Vec::new();
    for p in raw.platforms.iter().flatten() {
        let parts: Vec<&str> = p.get_ref().split('/').collect();
        match parts[..] {
            [os, arch] | [os, arch, _] if !os.is_empty() && !arch.is_empty() => platforms.push(Platform {
                os: os.to_owned(),
                architecture: arch.to_owned(),
                variant: parts.get(2).map(|v| (*v).to_owned()),
            }),
            _ => sink.err(p.span(), ctx(&format!("platforms: `{}` is not os/arch or os/arch/variant (e.g. linux/arm/v7)", p.get_ref()))),
        }
    }
    let mut require = Require::default();
    if let Some(r) = &raw.require {
        require.signature = r.signature.unwrap_or(false);
        require.annotations = r.annotations.clone();
        if let Some(a) = &r.min_age {
            match schedule::parse_interval(a.get_ref()) {
                Ok(d) => require.min_age = Some(d),
                Err(e) => sink.err(a.span(), ctx(&format!("require.min_age: {e}"))),
            }
        }
    }
    let max_delete = match raw.max_delete.as_ref().map(|m| (m.span(), m.get_ref())) {
        None => MaxDelete::Percent(10.0),
        Some((_, toml::Value::Integer(n))) if *n >= 0 => MaxDelete::Count(*n as usize),
        Some((span, toml::Value::String(s))) => match s.strip_suffix('%').and_then(|p| p.trim().parse::<f64>().ok()) {
            Some(p) if (0.0..=100.0).contains(&p) => MaxDelete::Percent(p),
            _ => {
                sink.err(span, ctx("max_delete: a number of tags or a percentage such as \"10%\""));
                MaxDelete::Percent(10.0)
            }
        },
        Some((span, _)) => {
            sink.err(span, ctx("max_delete: a number of tags or a percentage such as \"10%\""));
            MaxDelete::Percent(10.0)
        }
    };
    if sink.out.len() > before {
        return None;
    }
    Some(Policy {
        name,
        file: file.to_owned(),
        source: source?,
        targets,
        trigger,
        jitter,
        repositories: repositories?,
        target_repository,
        tags,
        overwrite: raw.overwrite.unwrap_or(true),
        referrers: raw.referrers.as_ref().is_some_and(|r| *r.get_ref()),
        platforms,
        require,
        delete: raw.delete.as_ref().is_some_and(|d| *d.get_ref()),
        max_delete,
    })
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn repo_selector(raw: &RawPolicy, ctx: &dyn Fn(&str) -> String, sink: &mut Sink) -> Option<RepoSelector> {
    let mut exact = Vec::new();
    let mut globs = Vec::new();
    let mut set = GlobSetBuilder::new();
    if raw.repositories.get_ref().is_empty() {
        sink.err(raw.repositories.span(), ctx("repositories: name at least one repository or glob"));
    }
    for r in raw.repositories.get_ref() {
        let s = r.get_ref();
        if s.contains(['*', '?', '[', '{']) {
            match glob(s) {
                Ok(g) => {
                    set.add(g);
                    globs.push(s.clone());
                }
                Err(e) => sink.err(r.span(), ctx(&format!("repositories: invalid glob: {}", e.kind()))),
            }
        } else {
            match s.parse::<RepoName>() {
                Ok(n) => exact.push(n),
                Err(e) => sink.err(r.span(), ctx(&format!("repositories: {e}"))),
            }
        }
    }
    let mut ex = GlobSetBuilder::new();
    for r in &raw.exclude_repositories {
        match glob(r.get_ref()) {
            Ok(g) => {
                ex.add(g);
            }
            Err(e) => sink.err(r.span(), ctx(&format!("exclude_repositories: invalid glob: {}", e.kind()))),
        }
    }
    Some(RepoSelector { exact, globs, glob_set: set.build().ok()?, exclude: ex.build().ok()? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_render() {
        let src: RepoName = "team/app".parse().unwrap();
        assert_eq!(render_template("mirror/{name}", &src).unwrap().as_str(), "mirror/app");
        assert_eq!(render_template("{repository}", &src).unwrap().as_str(), "team/app");
        assert!(render_template("Bad/{name}", &src).is_err());
    }

    #[test]
    fn globs_respect_path_parts() {
        let g = glob("base/*").unwrap().compile_matcher();
        assert!(g.is_match("base/alpine") && !g.is_match("base/a/b"));
        assert!(glob("apps/**").unwrap().compile_matcher().is_match("apps/a/b"));
    }

    #[test]
    fn diagnostics_have_line_and_column() {
        let d = Diagnostic::at(Path::new("p.toml"), "a = 1\nbb = 2\n", 7..8, "boom");
        assert_eq!(d.to_string(), "p.toml:2:2: boom");
    }
}
