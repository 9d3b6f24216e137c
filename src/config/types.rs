//! What a validated policy is: the types the rest of ferry reads. Parsing lives in `policies`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use globset::GlobSet;
use regex::Regex;

use crate::model::{Invalid, RepoName};
use crate::verify::Trust;

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
    /// Delete target tags the policy's own tag rules exclude (`include`/`exclude`,
    /// `semver`, beyond `latest`), under the same guards as `delete`.
    pub prune: bool,
    pub max_delete: MaxDelete,
    /// React to webhook events from the source registry with targeted runs.
    pub events: bool,
    /// How long a target tag ferry wrote or checked is trusted without asking the target
    /// again (while the source digest is unchanged); zero: ask every run.
    pub verify_interval: Duration,
    /// A hash of the policy's text and of its registries' URLs (cluster members compare them).
    pub fingerprint: String,
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
    /// Whom one signature on the exact digest must be from (`signed_by` keys, `signer`
    /// identities); the gate `signature = true` is this, since presence alone proves nothing.
    pub signature: Trust,
    pub min_age: Option<Duration>,
    pub annotations: BTreeMap<String, String>,
    /// `[[policy.require.attestation]]`: each must be met by a signed in-toto statement.
    pub attestations: Vec<AttestationRule>,
}

impl Require {
    /// Everything the signature and attestation gates trust and ask: a verification
    /// recorded under one fingerprint says nothing under another.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(self.signature.fingerprint());
        for a in &self.attestations {
            h.update(format!("\n{}\t{}", a.predicate_type, a.trust.fingerprint()));
            for (pointer, want) in &a.matches {
                let want = match want {
                    Want::Exact(s) => format!("={s}"),
                    Want::Regex(r) => format!("~{}", r.as_str()),
                };
                h.update(format!("\t{pointer}{want}"));
            }
        }
        hex::encode(&h.finalize()[..16])
    }

    pub fn any(&self) -> bool {
        self.signature.any()
            || self.min_age.is_some()
            || !self.annotations.is_empty()
            || !self.attestations.is_empty()
    }
}

/// An attestation a promoted image must carry: a statement of `predicate_type` about its
/// digest, signed as `trust` asks, whose predicate has each `matches` value.
#[derive(Clone, Debug)]
pub struct AttestationRule {
    pub predicate_type: String,
    pub trust: Trust,
    /// JSON pointer into the predicate, and what the string there must be.
    pub matches: Vec<(String, Want)>,
}

/// A `match` value: the exact string, or `regex:…`.
#[derive(Clone, Debug)]
pub enum Want {
    Exact(String),
    Regex(Regex),
}

impl Want {
    pub fn accepts(&self, got: &str) -> bool {
        match self {
            Want::Exact(w) => w == got,
            Want::Regex(r) => r.is_match(got),
        }
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
            MaxDelete::Percent(p) => {
                deletes as f64 <= (target_tags as f64 * p / 100.0).floor().max(1.0)
            }
        }
    }
}

pub enum Trigger {
    Cron(Box<super::schedule::Cron>),
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
    /// Whether the policy replicates `repo`, decided without the catalog (for events).
    pub fn covers(&self, repo: &RepoName) -> bool {
        (self.exact.contains(repo) && !self.excluded(repo.as_str()))
            || self.matches_glob(repo.as_str())
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
    /// Why the include/exclude/semver rules drop `tag`; `None` when they keep it.
    pub fn dropped(&self, tag: &str) -> Option<String> {
        if let Some(r) = self.exclude.iter().find(|r| r.is_match(tag)) {
            return Some(format!("excluded by tags.exclude `{}`", r.as_str()));
        }
        if !self.include.is_empty() && !self.include.iter().any(|r| r.is_match(tag)) {
            return Some("matches no tags.include".into());
        }
        let req = self.semver.as_ref()?;
        match crate::model::tag_version(tag) {
            None => Some("not a semver tag (tags.semver is set)".into()),
            Some(v) if !req.matches(&v) => Some(format!("{v} is outside tags.semver `{req}`")),
            Some(_) => None,
        }
    }
}

impl Policy {
    /// The target repository for a source repository, from the `target_repository` template.
    pub fn target_repo(&self, source: &RepoName) -> Result<RepoName, Invalid> {
        render_template(&self.target_repository, source)
    }
}

pub(super) fn render_template(template: &str, source: &RepoName) -> Result<RepoName, Invalid> {
    let out = template
        .replace("{repository}", source.as_str())
        .replace("{name}", source.last());
    out.parse().map_err(|e| {
        Invalid::new(format!(
            "target_repository `{template}` gives {e} for `{source}`"
        ))
    })
}
