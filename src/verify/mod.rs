//! What counts as signed: keys and signature formats, checked offline over bytes the caller
//! fetched. No I/O here; `plan` reads the signature manifests and blobs (bounded) and asks.
//! Every format ends in a `Finding`, and a tag is promoted only on `Finding::Verified`.

pub mod bundle;
pub mod dsse;
pub mod keys;
pub mod legacy;

use serde::Serialize;

pub use keys::{KeyError, TrustedKey};

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
    /// It signs exactly this digest, under the key with this fingerprint.
    Verified(String),
    /// It verifies under none of the keys (another key, or altered bytes).
    UnknownKey,
    /// It verifies, but over a payload naming another digest.
    OtherDigest,
    /// It is not a signature; why.
    NotSignature(String),
}

/// Which signature verified a tag: shown by `plan --json`, kept in the run history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Evidence {
    /// `SHA256:<hex>` of the key's SubjectPublicKeyInfo.
    pub key: String,
    /// The digest of the signature manifest.
    pub signature: Digest,
}

/// The findings on one digest, for the held reason when none verified.
#[derive(Debug, Default)]
pub struct Tally {
    unknown_key: usize,
    other_digest: usize,
    not_signature: usize,
    first_not: Option<String>,
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
        }
    }

    /// "no signature verifies under signed_by: 1 by an unknown key, 1 for another digest, 1
    /// not a signature (a layer of type …)".
    pub fn reason(&self) -> String {
        let mut parts = Vec::new();
        if self.unknown_key > 0 {
            parts.push(format!("{} by an unknown key", self.unknown_key));
        }
        if self.other_digest > 0 {
            parts.push(format!("{} for another digest", self.other_digest));
        }
        if self.not_signature > 0 {
            let why = self.first_not.as_deref().unwrap_or("");
            parts.push(format!("{} not a signature ({why})", self.not_signature));
        }
        if parts.is_empty() {
            return "no signature verifies under signed_by: none found".into();
        }
        format!(
            "no signature verifies under signed_by: {}",
            parts.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_held_reason_counts_what_was_found() {
        let mut t = Tally::default();
        assert_eq!(
            t.reason(),
            "no signature verifies under signed_by: none found"
        );
        t.add(&Finding::UnknownKey);
        t.add(&Finding::OtherDigest);
        t.add(&Finding::NotSignature("a layer of type \"x\"".into()));
        t.add(&Finding::NotSignature("later".into()));
        assert_eq!(
            t.reason(),
            "no signature verifies under signed_by: 1 by an unknown key, 1 for another digest, 2 not a signature (a layer of type \"x\")"
        );
    }
}
