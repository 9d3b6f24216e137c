//! What counts as signed: keys and signature formats, checked offline over bytes the caller
//! fetched. No I/O here; `plan` reads the signature manifests and blobs (bounded) and asks.
//! Every format ends in a `Finding`, and a tag is promoted only on `Finding::Verified`.

pub mod bundle;
mod der;
pub mod dsse;
pub mod keys;
pub mod legacy;
pub mod root;
pub mod tlog;
pub mod trust;
mod x509;

use serde::{Deserialize, Serialize};

pub use keys::{KeyError, TrustedKey};
pub use root::{RootError, TrustedRoot};
pub use trust::{Identity, Material, Signer, Trust, Verifier};

use crate::model::Digest;

/// Signature payloads and bundles are read only up to this size.
pub const MAX_SIGNATURE_BLOB: u64 = 1 << 20;

/// The legacy cosign signature tag of `d`.
pub fn sig_tag(d: &Digest) -> String {
    format!("sha256-{}.sig", d.hex())
}

/// What one signature says about the image being promoted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    /// It signs exactly this digest, by this key or identity.
    Verified(Verifier),
    /// It verifies under none of the keys (another key, or altered bytes).
    UnknownKey,
    /// A genuine keyless signature, by an identity no signer names ("SAN from issuer").
    OtherIdentity(String),
    /// Its certificate or log entry does not hold up under the trusted root; why.
    Unproven(String),
    /// It verifies, but over a payload naming another digest.
    OtherDigest,
    /// It is not a signature; why.
    NotSignature(String),
}

/// Which signature verified a tag: shown by `plan --json`, kept in the run history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// `{"key": …}` or `{"identity": …, "issuer": …}`.
    #[serde(flatten)]
    pub by: Verifier,
    /// The digest of the signature manifest.
    pub signature: Digest,
}

/// `key SHA256:… (signature sha256:…)` or `identity … from … (signature …)`: the run
/// history's line.
impl std::fmt::Display for Evidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.by {
            Verifier::Key { key } => write!(f, "key {key}")?,
            Verifier::Identity { identity, issuer } => {
                write!(f, "identity {identity} from {issuer}")?;
            }
        }
        write!(f, " (signature {})", self.signature)
    }
}

/// The findings on one digest, for the held reason when none verified.
#[derive(Debug, Default)]
pub struct Tally {
    unknown_key: usize,
    other_digest: usize,
    not_signature: usize,
    first_not: Option<String>,
    other_identity: usize,
    first_identity: Option<String>,
    unproven: usize,
    first_unproven: Option<String>,
}

impl Tally {
    pub fn add(&mut self, f: &Finding) {
        match f {
            Finding::Verified(_) => {}
            Finding::UnknownKey => self.unknown_key += 1,
            Finding::OtherDigest => self.other_digest += 1,
            Finding::NotSignature(why) => {
                self.not_signature += 1;
                self.first_not.get_or_insert_with(|| why.clone());
            }
            Finding::OtherIdentity(who) => {
                self.other_identity += 1;
                self.first_identity.get_or_insert_with(|| who.clone());
            }
            Finding::Unproven(why) => {
                self.unproven += 1;
                self.first_unproven.get_or_insert_with(|| why.clone());
            }
        }
    }

    /// "no signature verifies under signed_by: 1 by an unknown key, 1 for another digest, 1
    /// not a signature (a layer of type …)"; `what` and `under` name the thing and the rule.
    pub fn reason(&self, what: &str, under: &str) -> String {
        let mut parts = Vec::new();
        if self.unknown_key > 0 {
            parts.push(format!("{} by an unknown key", self.unknown_key));
        }
        if self.other_identity > 0 {
            let who = self.first_identity.as_deref().unwrap_or("");
            parts.push(format!(
                "{} by another identity ({who})",
                self.other_identity
            ));
        }
        if self.unproven > 0 {
            let why = self.first_unproven.as_deref().unwrap_or("");
            parts.push(format!("{} not proven ({why})", self.unproven));
        }
        if self.other_digest > 0 {
            parts.push(format!("{} for another digest", self.other_digest));
        }
        if self.not_signature > 0 {
            let why = self.first_not.as_deref().unwrap_or("");
            parts.push(format!("{} not a signature ({why})", self.not_signature));
        }
        let found = if parts.is_empty() {
            "none found".to_owned()
        } else {
            parts.join(", ")
        };
        format!("no {what} verifies under {under}: {found}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_held_reason_counts_what_was_found() {
        let mut t = Tally::default();
        assert_eq!(
            t.reason("signature", "signed_by"),
            "no signature verifies under signed_by: none found"
        );
        t.add(&Finding::UnknownKey);
        t.add(&Finding::OtherDigest);
        t.add(&Finding::NotSignature("a layer of type \"x\"".into()));
        t.add(&Finding::NotSignature("later".into()));
        assert_eq!(
            t.reason("signature", "signed_by"),
            "no signature verifies under signed_by: 1 by an unknown key, 1 for another digest, 2 not a signature (a layer of type \"x\")"
        );
        t.add(&Finding::OtherIdentity("a@b from c".into()));
        t.add(&Finding::Unproven("no transparency-log entry".into()));
        assert!(t
            .reason("signature", "signer")
            .ends_with("1 by another identity (a@b from c), 1 not proven (no transparency-log entry), 1 for another digest, 2 not a signature (a layer of type \"x\")"));
    }
}
