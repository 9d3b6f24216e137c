//! Leaf value types: valid by construction, so no layer above re-checks them.
//! Imports nothing from this crate.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Largest manifest we accept; the distribution spec asks registries to accept at least 4 MiB.
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

pub const OCI_MANIFEST: &str = oci_client::manifest::OCI_IMAGE_MEDIA_TYPE;
pub const OCI_INDEX: &str = oci_client::manifest::OCI_IMAGE_INDEX_MEDIA_TYPE;
pub const DOCKER_MANIFEST: &str = oci_client::manifest::IMAGE_MANIFEST_MEDIA_TYPE;
pub const DOCKER_LIST: &str = oci_client::manifest::IMAGE_MANIFEST_LIST_MEDIA_TYPE;
/// Every manifest type ferry copies; sent as `Accept` so registries never down-convert.
pub const MANIFEST_TYPES: [&str; 4] = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

/// A content address. Only sha256 is accepted: it is the only algorithm registries use in practice,
/// and refusing the rest keeps verification honest (we never "trust" a digest we cannot check).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl Digest {
    pub fn of(bytes: &[u8]) -> Self {
        Self::from_sha256(Sha256::digest(bytes).into())
    }
    pub fn from_sha256(hash: [u8; 32]) -> Self {
        Digest(format!("sha256:{}", hex::encode(hash)))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }
}

impl FromStr for Digest {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        let hex = s.strip_prefix("sha256:").ok_or_else(|| {
            Invalid(format!(
                "unsupported digest `{s}` (only sha256 is supported)"
            ))
        })?;
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(Invalid(format!("malformed digest `{s}`")));
        }
        Ok(Digest(s.to_owned()))
    }
}
impl TryFrom<String> for Digest {
    type Error = Invalid;
    fn try_from(s: String) -> Result<Self, Invalid> {
        s.parse()
    }
}
impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.0
    }
}
impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // 19 chars are enough to tell digests apart in logs and keep lines readable.
        write!(f, "{}", &self.0[..19.min(self.0.len())])
    }
}

/// A value that is not what it must be (a name, digest, size or manifest), with the reason
/// as a user should read it. The model's only error: whoever parses decides what it costs.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(String);

impl Invalid {
    pub fn new(reason: impl Into<String>) -> Self {
        Invalid(reason.into())
    }
}

/// What kind of failure an error is: the `kind` label of `ferry_failures_total`, and what
/// tells an operator where to look. Every typed error of the lower layers says its kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Credentials missing or refused.
    Auth,
    /// The connection failed, was reset, timed out or stalled.
    Transport,
    /// Content did not match its digest or size.
    Digest,
    /// The registry answered something unexpected, or refused the request.
    Protocol,
    /// The registry counts requests and the budget is spent.
    RateLimit,
    /// A layout folder's file system (full, read-only, not a layout).
    Storage,
    /// This cluster member no longer holds the policy.
    Fence,
    /// A promotion gate could not be evaluated.
    Gate,
    /// A delete the policy's safety limits refused.
    Guard,
    /// The target repository or project does not exist and must be created first.
    Missing,
    /// The target refused to move a tag (immutable tags).
    Conflict,
    /// The policy cannot be applied to what the source holds (a template, a missing
    /// repository, an image too deep or too large).
    Policy,
    /// The audit ledger could not announce the write, so it was not made.
    Ledger,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::Transport => "transport",
            Self::Digest => "digest",
            Self::Protocol => "protocol",
            Self::RateLimit => "rate_limit",
            Self::Storage => "storage",
            Self::Fence => "fence",
            Self::Gate => "gate",
            Self::Guard => "guard",
            Self::Missing => "missing",
            Self::Conflict => "conflict",
            Self::Policy => "policy",
            Self::Ledger => "ledger",
        }
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// This machine's host name (`localhost` when the kernel will not say).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Streaming sha256 with a byte count, so size and digest are checked together.
#[derive(Default, Clone)]
pub struct Hasher {
    hash: Sha256,
    pub len: u64,
}
impl Hasher {
    pub fn update(&mut self, bytes: &[u8]) {
        self.hash.update(bytes);
        self.len += bytes.len() as u64;
    }
    pub fn finish(self) -> Digest {
        Digest::from_sha256(self.hash.finalize().into())
    }
}

macro_rules! name_type {
    ($name:ident, $check:expr, $what:literal) => {
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);
        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl FromStr for $name {
            type Err = Invalid;
            fn from_str(s: &str) -> Result<Self, Invalid> {
                if $check(s) {
                    Ok($name(s.to_owned()))
                } else {
                    Err(Invalid(format!("invalid {} `{s}`", $what)))
                }
            }
        }
        impl TryFrom<String> for $name {
            type Error = Invalid;
            fn try_from(s: String) -> Result<Self, Invalid> {
                s.parse()
            }
        }
        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.0)
            }
        }
    };
}

name_type!(RepoName, valid_repo, "repository name");
name_type!(Tag, valid_tag, "tag");

/// The distribution spec's grammar: lowercase path components separated by `/`,
/// each `[a-z0-9]+` joined by `.`, `_`, `__` or runs of `-`.
fn valid_repo(s: &str) -> bool {
    !s.is_empty() && s.len() <= 255 && s.split('/').all(valid_component)
}
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}
fn valid_tag(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'))
}

impl RepoName {
    /// Last path part: `{name}` in `target_repository` templates.
    pub fn last(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }
}

/// What a manifest is, decided from its media type (the `Content-Type`, else the JSON `mediaType`,
/// else the shape of the JSON).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManifestKind {
    Image,
    Index,
}

/// What a manifest points at: blobs (config and layers) or child manifests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct References {
    pub blobs: Vec<(Digest, u64)>,
    pub manifests: Vec<(Digest, u64)>,
}

#[derive(Deserialize)]
struct Probe {
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    manifests: Option<serde::de::IgnoredAny>,
}

/// The media type of a manifest body, trusting the body over a header (registries may
/// answer `application/octet-stream` or `application/json`).
pub fn manifest_media_type(body: &[u8], header: Option<&str>) -> Result<String, Invalid> {
    let probe: Probe =
        serde_json::from_slice(body).map_err(|e| Invalid(format!("manifest is not JSON: {e}")))?;
    if let Some(mt) = probe.media_type {
        return Ok(mt);
    }
    match header {
        Some(h) if MANIFEST_TYPES.contains(&h) => Ok(h.to_owned()),
        _ if probe.manifests.is_some() => Ok(OCI_INDEX.to_owned()),
        _ => Ok(OCI_MANIFEST.to_owned()),
    }
}

pub fn manifest_kind(media_type: &str) -> Result<ManifestKind, Invalid> {
    match media_type {
        OCI_MANIFEST | DOCKER_MANIFEST => Ok(ManifestKind::Image),
        OCI_INDEX | DOCKER_LIST => Ok(ManifestKind::Index),
        other => Err(Invalid(format!(
            "unsupported manifest media type `{other}`"
        ))),
    }
}

/// Parse the descriptors a manifest references. Sizes and digests are checked here,
/// so nothing downstream deals with a negative size or a foreign algorithm.
pub fn manifest_references(media_type: &str, body: &[u8]) -> Result<References, Invalid> {
    let desc = |d: &str, size: i64| -> Result<(Digest, u64), Invalid> {
        let size = u64::try_from(size).map_err(|_| Invalid(format!("negative size for {d}")))?;
        Ok((d.parse()?, size))
    };
    let mut refs = References::default();
    match manifest_kind(media_type)? {
        ManifestKind::Image => {
            let m: oci_client::manifest::OciImageManifest = serde_json::from_slice(body)
                .map_err(|e| Invalid(format!("bad image manifest: {e}")))?;
            refs.blobs.push(desc(&m.config.digest, m.config.size)?);
            for l in &m.layers {
                // Foreign layers live elsewhere (their `urls`); registries refuse to hold them.
                if l.urls.as_ref().is_some_and(|u| !u.is_empty()) {
                    continue;
                }
                refs.blobs.push(desc(&l.digest, l.size)?);
            }
        }
        ManifestKind::Index => {
            let m: oci_client::manifest::OciImageIndex =
                serde_json::from_slice(body).map_err(|e| Invalid(format!("bad index: {e}")))?;
            for c in &m.manifests {
                refs.manifests.push(desc(&c.digest, c.size)?);
            }
        }
    }
    // A blob used twice in one manifest (empty layers) is copied once.
    let mut seen = std::collections::HashSet::new();
    refs.blobs.retain(|(d, _)| seen.insert(d.clone()));
    Ok(refs)
}

/// The version a tag names: `v1.2.3`, `1.2.3`, `1.2.3-rc.1`, and the short forms `1.2` and
/// `v1` (padded with zeros) that image repositories commonly use.
pub fn tag_version(tag: &str) -> Option<semver::Version> {
    let t = tag.strip_prefix(['v', 'V']).unwrap_or(tag);
    if let Ok(v) = semver::Version::parse(t) {
        return Some(v);
    }
    let (core, rest) = t.find(['-', '+']).map_or((t, ""), |i| t.split_at(i));
    let parts: Vec<&str> = core.split('.').collect();
    if parts.is_empty()
        || parts.len() > 2
        || parts
            .iter()
            .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let padded = format!("{}{}{rest}", core, ".0".repeat(3 - parts.len()));
    semver::Version::parse(&padded).ok()
}

/// A byte count written as `16MiB`, `512KB`, `1GiB` or a plain number of bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        let t = s.trim();
        let split = t
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            u => {
                return Err(Invalid(format!(
                    "unknown size unit `{u}` (use B, KiB, MiB, GiB, KB, MB, GB)"
                )))
            }
        };
        let n: f64 = num
            .parse()
            .map_err(|_| Invalid(format!("invalid size `{s}`")))?;
        if !n.is_finite() || n < 0.0 {
            return Err(Invalid(format!("invalid size `{s}`")));
        }
        Ok(ByteSize((n * mult as f64) as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0 as f64;
        match self.0 {
            n if n >= 1 << 30 => write!(f, "{:.1} GiB", b / (1u64 << 30) as f64),
            n if n >= 1 << 20 => write!(f, "{:.1} MiB", b / (1u64 << 20) as f64),
            n if n >= 1 << 10 => write!(f, "{:.1} KiB", b / 1024.0),
            n => write!(f, "{n} B"),
        }
    }
}

/// How a blob goes up to a registry. They differ in what registries accept (the quirks
/// catalogue, rule 3), and in what a cut costs: only chunks resume.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UploadStrategy {
    /// POST, PATCHes of one chunk each with `Content-Range`, checkpointed; the last chunk in
    /// the PUT. Resumable across restarts.
    Chunked,
    /// POST, one PATCH streaming the whole blob without `Content-Range`, an empty PUT: what
    /// docker and skopeo send, taken where chunks are not (GAR, GHCR).
    Stream,
    /// POST, then one PUT streaming the whole blob.
    Monolithic,
}

impl UploadStrategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Chunked => "chunked",
            Self::Stream => "stream",
            Self::Monolithic => "monolithic",
        }
    }
}

impl std::fmt::Display for UploadStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a registry's credentials come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credentials {
    /// A username and password (or token): from the config, the environment, or docker's
    /// `auths`.
    Password(String, Secret),
    /// A username and a password read from a file, and read again when the registry refuses
    /// it: a sidecar that renews short-lived passwords (ECR's last 12 hours) rewrites the file.
    PasswordFile {
        username: String,
        path: std::path::PathBuf,
        password: Secret,
    },
    /// A docker credential helper program, asked for `server` when the registry first wants
    /// credentials, and again after it refuses them.
    Helper { program: String, server: String },
}

/// A password or token. Its `Debug` and `Display` never show it, so a stray `{:?}` cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);
impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}
impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}
impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_names_follow_the_spec() {
        for ok in ["a", "library/alpine", "a-b/c__d/e.f", "a---b"] {
            assert!(ok.parse::<RepoName>().is_ok(), "{ok}");
        }
        for bad in ["", "A", "a/", "/a", "a..b", "a_-b", "-a", "a b"] {
            assert!(bad.parse::<RepoName>().is_err(), "{bad}");
        }
        assert_eq!("team/app".parse::<RepoName>().unwrap().last(), "app");
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!("16MiB".parse::<ByteSize>().unwrap().0, 16 << 20);
        assert_eq!("1.5KB".parse::<ByteSize>().unwrap().0, 1500);
        assert_eq!("42".parse::<ByteSize>().unwrap().0, 42);
        assert!("3 parsecs".parse::<ByteSize>().is_err());
    }

    #[test]
    fn digests_are_checked() {
        let d = Digest::of(b"hello");
        assert_eq!(d.as_str().parse::<Digest>().unwrap(), d);
        assert!("sha512:abcd".parse::<Digest>().is_err());
        assert!("sha256:XYZ".parse::<Digest>().is_err());
    }

    #[test]
    fn tag_versions() {
        let v = |t: &str| tag_version(t).map(|v| v.to_string());
        assert_eq!(v("v1.2.3").as_deref(), Some("1.2.3"));
        assert_eq!(v("1.2.3-rc.1").as_deref(), Some("1.2.3-rc.1"));
        assert_eq!(v("3.20").as_deref(), Some("3.20.0"));
        assert_eq!(v("v2").as_deref(), Some("2.0.0"));
        assert_eq!(v("latest"), None);
        assert_eq!(v("1.2.3.4"), None);
        assert_eq!(v("sha256-abc.sig"), None);
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?} {s}").contains("hunter2"));
    }

    #[test]
    fn media_type_falls_back_to_shape() {
        assert_eq!(
            manifest_media_type(br#"{"manifests":[]}"#, None).unwrap(),
            OCI_INDEX
        );
        assert_eq!(
            manifest_media_type(br#"{"layers":[]}"#, Some(DOCKER_MANIFEST)).unwrap(),
            DOCKER_MANIFEST
        );
    }
}
