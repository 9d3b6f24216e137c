//! What a policy trusts a signature to be from: public keys (`signed_by`), keyless
//! identities (`[[policy.require.signer]]`, judged under a Sigstore trusted root), and
//! whether a transparency-log entry is required. One judgement for every format: the
//! format modules say what was signed and what material came with it, `Trust` says by whom.

use std::sync::Arc;

use base64::Engine as _;
use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Digest as _;

use super::keys::pem_blocks;
use super::root::TrustedRoot;
use super::tlog::{Entry, Signed};
use super::{x509, Finding, TrustedKey};

/// Who verified a signature: shown in `plan --json`, kept in the run history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Verifier {
    /// `SHA256:<hex>` of the key's SubjectPublicKeyInfo.
    Key { key: String },
    /// A keyless signer: the certificate's SAN and OIDC issuer.
    Identity { identity: String, issuer: String },
}

/// A keyless signer a policy trusts.
#[derive(Clone, Debug)]
pub struct Signer {
    pub issuer: String,
    pub identity: Identity,
}

#[derive(Clone, Debug)]
pub enum Identity {
    Exact(String),
    /// Matched against the whole SAN (anchored), unlike cosign's unanchored regexp: a
    /// pattern meant for one repository must not also admit a fork's longer name.
    Regex(Regex),
}

impl Identity {
    fn accepts(&self, san: &str) -> bool {
        match self {
            Identity::Exact(s) => s == san,
            Identity::Regex(r) => r
                .find(san)
                .is_some_and(|m| m.start() == 0 && m.end() == san.len()),
        }
    }

    fn said(&self) -> String {
        match self {
            Identity::Exact(s) => s.clone(),
            Identity::Regex(r) => format!("regex {}", r.as_str()),
        }
    }
}

/// Everything a gate trusts, for one rule.
#[derive(Clone, Debug, Default)]
pub struct Trust {
    pub keys: Vec<TrustedKey>,
    pub signers: Vec<Signer>,
    /// `[daemon] sigstore_trusted_root`: needed by signers and by `require_tlog`.
    pub root: Option<Arc<TrustedRoot>>,
    pub require_tlog: bool,
}

/// Intermediates a signature may carry; Fulcio's chains have one.
const MAX_CARRIED: usize = 8;

/// What came with a signature besides its bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Material {
    /// The certificate and any intermediates, DER, leaf first; empty: signed with a key.
    pub chain: Vec<Vec<u8>>,
    /// The transparency-log entry carried, or why what is carried is not one.
    pub tlog: Option<Result<Entry, String>>,
}

impl Material {
    /// A legacy `.sig` (or `.att`) layer's annotations: `dev.sigstore.cosign/certificate`,
    /// `…/chain` (PEM) and `…/bundle` (the SET).
    pub fn from_annotations(annotations: Option<&Value>) -> Self {
        let get = |k: &str| annotations.and_then(|a| a.get(k)).and_then(Value::as_str);
        let mut chain = get("dev.sigstore.cosign/certificate")
            .map(|p| pem_blocks(p, "CERTIFICATE"))
            .unwrap_or_default();
        chain.truncate(1);
        if !chain.is_empty() {
            // A real chain is one or two intermediates; a longer list is only work for the
            // path builder.
            let rest = get("dev.sigstore.cosign/chain").map(|p| pem_blocks(p, "CERTIFICATE"));
            chain.extend(rest.unwrap_or_default().into_iter().take(MAX_CARRIED));
        }
        Material {
            chain,
            tlog: get("dev.sigstore.cosign/bundle").map(Entry::from_annotation),
        }
    }

    /// A Sigstore bundle's `verificationMaterial`: `certificate` (v0.3) or
    /// `x509CertificateChain` (v0.1, v0.2), and the first of `tlogEntries`.
    pub fn from_bundle(bundle: &Value) -> Self {
        let b64 = base64::engine::general_purpose::STANDARD;
        let vm = bundle.get("verificationMaterial");
        let raw = |c: &Value| {
            c.get("rawBytes")
                .and_then(Value::as_str)
                .and_then(|s| b64.decode(s).ok())
        };
        let chain = match vm.and_then(|v| v.get("certificate")) {
            Some(c) => raw(c).into_iter().collect(),
            None => vm
                .and_then(|v| v.pointer("/x509CertificateChain/certificates"))
                .and_then(Value::as_array)
                .map(|cs| cs.iter().take(MAX_CARRIED + 1).filter_map(raw).collect())
                .unwrap_or_default(),
        };
        let tlog = vm
            .and_then(|v| v.pointer("/tlogEntries/0"))
            .map(Entry::from_bundle);
        Material { chain, tlog }
    }
}

impl Trust {
    pub fn any(&self) -> bool {
        !self.keys.is_empty() || !self.signers.is_empty()
    }

    /// What the held reason says a signature must verify under.
    pub fn under(&self) -> &'static str {
        match (self.keys.is_empty(), self.signers.is_empty()) {
            (false, true) => "signed_by",
            (true, false) => "signer",
            _ => "signed_by or signer",
        }
    }

    /// A fingerprint of everything trusted: a changed key, signer or root re-verifies.
    pub fn fingerprint(&self) -> String {
        let mut h = sha2::Sha256::new();
        for k in &self.keys {
            h.update(k.fingerprint.as_bytes());
            h.update(b"\n");
        }
        for s in &self.signers {
            h.update(format!("{}\t{}\n", s.issuer, s.identity.said()).as_bytes());
        }
        if let Some(r) = &self.root {
            h.update(r.digest.as_bytes());
        }
        h.update([u8::from(self.require_tlog)]);
        hex::encode(h.finalize())
    }

    /// Who made `sig` over `msg`, by the policy's lights. `signed` is what a log entry must
    /// record (the message, or a DSSE payload).
    ///
    /// # Errors
    /// The finding to count.
    pub fn judge(
        &self,
        msg: &[u8],
        sig: &[u8],
        signed: Signed<'_>,
        material: &Material,
    ) -> Result<Verifier, Finding> {
        let Some(leaf_der) = material.chain.first() else {
            let key = self
                .keys
                .iter()
                .find(|k| k.verifies(msg, sig))
                .ok_or(Finding::UnknownKey)?;
            if self.require_tlog {
                self.logged(material, signed, sig, &key.spki)?;
            }
            return Ok(Verifier::Key {
                key: key.fingerprint.clone(),
            });
        };
        if self.signers.is_empty() {
            return Err(Finding::UnknownKey);
        }
        let leaf = x509::leaf(leaf_der)
            .map_err(|why| Finding::NotSignature(format!("a certificate that is {why}")))?;
        if !leaf.code_signing {
            return Err(Finding::Unproven(
                "its certificate is not for code signing".into(),
            ));
        }
        let key = TrustedKey::from_spki(&leaf.spki)
            .map_err(|e| Finding::NotSignature(format!("a certificate whose key {e}")))?;
        if !key.verifies(msg, sig) {
            return Err(Finding::UnknownKey);
        }
        // Fulcio certificates live minutes: the log's integrated time is the only trusted
        // time they can be judged at, so keyless always needs the entry.
        let at = self.logged(material, signed, sig, leaf_der)?;
        let root = self.root.as_ref().ok_or_else(|| {
            Finding::Unproven("no sigstore_trusted_root to check its certificate".into())
        })?;
        root.chain(leaf_der, &material.chain[1..], at)
            .map_err(Finding::Unproven)?;
        let issuer = leaf.issuer.clone().unwrap_or_default();
        // The SAN reported is the one a signer of this very issuer accepted.
        let matched = self
            .signers
            .iter()
            .filter(|s| s.issuer == issuer)
            .find_map(|s| leaf.identities.iter().find(|san| s.identity.accepts(san)));
        match matched {
            Some(san) => Ok(Verifier::Identity {
                identity: san.clone(),
                issuer,
            }),
            None => Err(Finding::OtherIdentity(format!(
                "{} from {}",
                leaf.identities
                    .first()
                    .map_or("no identity", String::as_str),
                if issuer.is_empty() {
                    "no issuer"
                } else {
                    &issuer
                }
            ))),
        }
    }

    /// The verified log entry's integrated time, once it is shown to record this signature.
    fn logged(
        &self,
        material: &Material,
        signed: Signed<'_>,
        sig: &[u8],
        verifier: &[u8],
    ) -> Result<i64, Finding> {
        let entry = match &material.tlog {
            None => return Err(Finding::Unproven("no transparency-log entry".into())),
            Some(Err(why)) => return Err(Finding::Unproven(why.clone())),
            Some(Ok(e)) => e,
        };
        let root = self.root.as_ref().ok_or_else(|| {
            Finding::Unproven("no sigstore_trusted_root to check its log entry".into())
        })?;
        let at = entry.verify(root).map_err(Finding::Unproven)?;
        entry
            .binds(signed, sig, verifier)
            .map_err(Finding::Unproven)?;
        Ok(at)
    }
}
