//! Policy files: every `[[policy]]` table of every `*.toml` in the policy folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use globset::{Glob, GlobBuilder, GlobSetBuilder};
use regex::Regex;
use toml::Spanned;

use super::check::one_line;
use super::diag::{Diagnostic, Sink};
use super::raw::{RawPolicy, RawPolicyFile, RawRegistry};
use super::read_bounded;
use super::registries::{registry_ref, RegistrySpec};
use super::require;
use super::schedule;
use super::types::{
    render_template, MaxDelete, Platform, Policy, RepoSelector, Require, TagRules, Trigger,
};
use crate::model::RepoName;
use crate::verify::TrustedRoot;

/// Policy files in name order, so diagnostics and runs come out in a stable order.
fn policy_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => "the policy folder does not exist: create it and put \
                 [[policy]] tables in *.toml files there, or name another with daemon.policies"
                .to_owned(),
            _ => format!("cannot read policy folder: {e}"),
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    Ok(files)
}

/// The `name` of every `[[policy]]` in `dir`'s files that parse, in file order.
pub(super) fn names(dir: &Path) -> Vec<String> {
    let files = policy_files(dir).unwrap_or_default();
    let tables = files.iter().filter_map(|f| {
        let text = read_bounded(f).ok()?;
        toml::from_str::<toml::Table>(&text).ok()
    });
    let mut out = Vec::new();
    for t in tables {
        for p in t
            .get("policy")
            .and_then(|p| p.as_array())
            .into_iter()
            .flatten()
        {
            if let Some(name) = p.get("name").and_then(|n| n.as_str()) {
                out.push(name.to_owned());
            }
        }
    }
    out
}

/// Why a tag pattern is probably a glob written where a regular expression goes, if it is:
/// a `*` right after a letter, digit, `-` or `_` (`v*` as a regex is "zero or more v",
/// which every tag matches) in a pattern with no other regex syntax but `.`. The hint is
/// the glob's meaning as a regex.
fn looks_like_a_glob(p: &str) -> Option<String> {
    // Any other regex syntax means the writer meant a regex.
    let regexy = p.contains(['\\', '^', '$', '[', '(', '+', '?', '{', '|']);
    let globby = p
        .as_bytes()
        .windows(2)
        .any(|w| w[1] == b'*' && (w[0].is_ascii_alphanumeric() || w[0] == b'-' || w[0] == b'_'));
    if regexy || !globby {
        return None;
    }
    let mut regex = String::from("^");
    for c in p.chars() {
        match c {
            '*' => regex.push_str(".*"),
            c => regex.push_str(&regex::escape(c.encode_utf8(&mut [0; 4]))),
        }
    }
    regex.push('$');
    Some(format!(
        "is a regular expression, not a glob: its `*` repeats the character before it, so \
         it matches more than it seems; as a glob it would be '{regex}'"
    ))
}

/// Every valid policy, each with where its name is written (for problems found across policies).
pub(super) fn load_policies(
    dir: &Path,
    named: &BTreeMap<String, Spanned<RawRegistry>>,
    registries: &mut BTreeMap<String, RegistrySpec>,
    root: Option<&Arc<TrustedRoot>>,
    diags: &mut Vec<Diagnostic>,
    warnings: &mut Vec<Diagnostic>,
) -> (Vec<Policy>, Vec<Diagnostic>) {
    let files = match policy_files(dir) {
        Ok(f) => f,
        Err(e) => {
            diags.push(Diagnostic::file(dir, e));
            return (Vec::new(), Vec::new());
        }
    };
    let mut policies = Vec::new();
    let mut places = Vec::new();
    let mut seen: BTreeMap<String, Diagnostic> = BTreeMap::new();
    for file in files {
        let src = match read_bounded(&file) {
            Ok(s) => s,
            Err(e) => {
                diags.push(Diagnostic::file(&file, e));
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
        let mut sink = Sink {
            file: &file,
            src: &src,
            out: diags,
            warned: warnings,
        };
        for (i, raw) in parsed.policy.iter().enumerate() {
            let name = raw.get_ref().name.get_ref().clone();
            let here = Diagnostic::at(&file, &src, raw.get_ref().name.span(), "");
            if let Some(first) = seen.get(&name) {
                sink.err(
                    raw.get_ref().name.span(),
                    format!(
                        "duplicate policy name `{name}` (first defined at {}:{}:{})",
                        first.file.display(),
                        first.line,
                        first.col
                    ),
                );
                continue;
            }
            seen.insert(name, here.clone());
            if let Some(mut p) = policy(raw.get_ref(), &file, named, registries, root, &mut sink) {
                // A table's span may be its header alone: the text runs to the next policy.
                let end = parsed
                    .policy
                    .get(i + 1)
                    .map_or(src.len(), |next| next.span().start);
                p.fingerprint = fingerprint(&src[raw.span().start..end], &p, registries);
                policies.push(p);
                places.push(here);
            }
        }
    }
    (policies, places)
}

/// What cluster members compare to find a policy defined differently on two of them: its
/// text and the URLs its registry names stand for.
fn fingerprint(text: &str, p: &Policy, registries: &BTreeMap<String, RegistrySpec>) -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(text.as_bytes());
    for r in std::iter::once(&p.source).chain(&p.targets) {
        h.update([0]);
        h.update(
            registries
                .get(r)
                .map_or(r.as_str(), |s| s.url.as_str())
                .as_bytes(),
        );
    }
    hex::encode(&h.finalize()[..8])
}

pub(super) fn glob(pattern: &str) -> Result<Glob, globset::Error> {
    // `*` stays within one path part; `**` crosses parts, as in .gitignore.
    GlobBuilder::new(pattern).literal_separator(true).build()
}

fn policy(
    raw: &RawPolicy,
    file: &Path,
    named: &BTreeMap<String, Spanned<RawRegistry>>,
    registries: &mut BTreeMap<String, RegistrySpec>,
    root: Option<&Arc<TrustedRoot>>,
    sink: &mut Sink,
) -> Option<Policy> {
    let name = raw.name.get_ref().clone();
    let ctx = |f: &str| format!("policy `{name}`: {f}");
    let before = sink.out.len();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        sink.err(
            raw.name.span(),
            ctx("name: use letters, digits, `-`, `_` and `.` only"),
        );
    }
    let source = registry_ref(&raw.source, &ctx("source"), named, registries, sink);
    let targets: Vec<String> = raw
        .targets
        .get_ref()
        .iter()
        .filter_map(|t| registry_ref(t, &ctx("targets"), named, registries, sink))
        .collect();
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
            sink.err(
                i.span(),
                ctx("interval: give schedule or interval, not both"),
            );
            Trigger::Manual
        }
        (Some(s), None) => match schedule::parse_schedule(s.get_ref()) {
            Ok(c) => {
                let tz = match &raw.timezone {
                    Some(z) => schedule::parse_timezone(z.get_ref()).unwrap_or_else(|e| {
                        sink.err(z.span(), ctx(&format!("timezone: {e}")));
                        jiff::tz::TimeZone::UTC
                    }),
                    None => jiff::tz::TimeZone::UTC,
                };
                Trigger::Cron(Box::new(schedule::Cron::new(c, tz, s.get_ref())))
            }
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
    if let (Some(z), None) = (&raw.timezone, &raw.schedule) {
        sink.err(
            z.span(),
            ctx("timezone: applies to a schedule; this policy has none"),
        );
    }
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
            let bad_var = t
                .get_ref()
                .split('{')
                .skip(1)
                .find(|p| !(p.starts_with("repository}") || p.starts_with("name}")));
            if let Some(v) = bad_var {
                sink.err(
                    t.span(),
                    ctx(&format!(
                        "target_repository: unknown placeholder `{{{}`; use {{repository}} or {{name}}",
                        v.split('}').next().unwrap_or(v)
                    )),
                );
            } else {
                // Each name the policy lists, or an example when it lists only globs: a template
                // that gives an invalid name (uppercase, `..`, empty) for any of them is refused.
                let example: RepoName = "example/app".parse().expect("valid");
                let names = raw
                    .repositories
                    .get_ref()
                    .iter()
                    .filter_map(|r| r.get_ref().parse::<RepoName>().ok());
                if let Some(e) = names
                    .chain([example])
                    .find_map(|n| render_template(t.get_ref(), &n).err())
                {
                    sink.err(t.span(), ctx(&e.to_string()));
                }
            }
            t.get_ref().clone()
        }
        None => "{repository}".to_owned(),
    };
    let mut tags = TagRules::default();
    if let Some(t) = &raw.tags {
        for (list, out, f) in [
            (&t.include, &mut tags.include, "tags.include"),
            (&t.exclude, &mut tags.exclude, "tags.exclude"),
        ] {
            for r in list {
                if let Some(why) = looks_like_a_glob(r.get_ref()) {
                    sink.warn(r.span(), ctx(&format!("{f}: `{}` {why}", r.get_ref())));
                }
                match Regex::new(r.get_ref()) {
                    Ok(re) => out.push(re),
                    Err(e) => sink.err(
                        r.span(),
                        ctx(&format!("{f}: invalid regex: {}", one_line(&e.to_string()))),
                    ),
                }
            }
        }
        if let Some(v) = &t.semver {
            match semver::VersionReq::parse(v.get_ref()) {
                Ok(req) => tags.semver = Some(req),
                Err(e) => sink.err(
                    v.span(),
                    ctx(&format!(
                        "tags.semver: invalid range `{}`: {e}",
                        v.get_ref()
                    )),
                ),
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
            [os, arch] | [os, arch, _] if !os.is_empty() && !arch.is_empty() => {
                platforms.push(Platform {
                    os: os.to_owned(),
                    architecture: arch.to_owned(),
                    variant: parts.get(2).map(|v| (*v).to_owned()),
                })
            }
            _ => sink.err(
                p.span(),
                ctx(&format!(
                    "platforms: `{}` is not os/arch or os/arch/variant (e.g. linux/arm/v7)",
                    p.get_ref()
                )),
            ),
        }
    }
    let require = raw.require.as_ref().map_or_else(Require::default, |r| {
        require::require(r, file, root, sink, &ctx)
    });
    let max_delete = match raw.max_delete.as_ref().map(|m| (m.span(), m.get_ref())) {
        None => MaxDelete::Percent(10.0),
        Some((_, toml::Value::Integer(n))) if *n >= 0 => MaxDelete::Count(*n as usize),
        Some((span, toml::Value::String(s))) => match s
            .strip_suffix('%')
            .and_then(|p| p.trim().parse::<f64>().ok())
        {
            Some(p) if (0.0..=100.0).contains(&p) => MaxDelete::Percent(p),
            _ => {
                sink.err(
                    span,
                    ctx("max_delete: a number of tags or a percentage such as \"10%\""),
                );
                MaxDelete::Percent(10.0)
            }
        },
        Some((span, _)) => {
            sink.err(
                span,
                ctx("max_delete: a number of tags or a percentage such as \"10%\""),
            );
            MaxDelete::Percent(10.0)
        }
    };
    let verify_interval = match &raw.verify_interval {
        None => Duration::from_secs(24 * 3600),
        Some(v)
            if v.get_ref().trim().starts_with('0')
                && v.get_ref()
                    .trim()
                    .trim_end_matches(['s', 'm', 'h', 'd'])
                    .trim_start_matches('0')
                    .is_empty() =>
        {
            Duration::ZERO
        }
        Some(v) => schedule::parse_interval(v.get_ref()).unwrap_or_else(|e| {
            sink.err(
                v.span(),
                ctx(&format!(
                    "verify_interval: {e} (\"0s\": ask the target every run)"
                )),
            );
            Duration::ZERO
        }),
    };
    let events = raw.events.as_ref().is_some_and(|e| *e.get_ref());
    if let (Some(e), Some(s)) = (raw.events.as_ref().filter(|_| events), source.as_ref()) {
        if !named.contains_key(s) {
            sink.err(e.span(), ctx("events: webhooks name their registry, so the source must be a [registries] entry, not a bare URL"));
        }
    }
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
        prune: raw.prune.as_ref().is_some_and(|d| *d.get_ref()),
        max_delete,
        events,
        verify_interval,
        fingerprint: String::new(),
    })
}

fn repo_selector(
    raw: &RawPolicy,
    ctx: &dyn Fn(&str) -> String,
    sink: &mut Sink,
) -> Option<RepoSelector> {
    let mut exact = Vec::new();
    let mut globs = Vec::new();
    let mut set = GlobSetBuilder::new();
    if raw.repositories.get_ref().is_empty() {
        sink.err(
            raw.repositories.span(),
            ctx("repositories: name at least one repository or glob"),
        );
    }
    for r in raw.repositories.get_ref() {
        let s = r.get_ref();
        if s.contains(['*', '?', '[', '{']) {
            match glob(s) {
                Ok(g) => {
                    set.add(g);
                    globs.push(s.clone());
                }
                Err(e) => sink.err(
                    r.span(),
                    ctx(&format!("repositories: invalid glob: {}", e.kind())),
                ),
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
            Err(e) => sink.err(
                r.span(),
                ctx(&format!("exclude_repositories: invalid glob: {}", e.kind())),
            ),
        }
    }
    Some(RepoSelector {
        exact,
        globs,
        glob_set: set.build().ok()?,
        exclude: ex.build().ok()?,
    })
}
