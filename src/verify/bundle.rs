//! Sigstore bundles (v0.3, what cosign v3 attaches as a referrer): a `messageSignature` over
//! the image manifest's bytes, or a `dsseEnvelope` around an in-toto statement about it.
//! Its `verificationMaterial` holds a key hint, or a Fulcio certificate and the log entry.

use base64::Engine as _;
use serde_json::Value;

use super::dsse::{self, Statement};
use super::tlog::Signed;
use super::{Finding, Material, Trust, Verifier};
use crate::model::Digest;

/// The artifact type of a cosign v3 bundle referrer.
pub const BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// What `cosign sign` states in a DSSE bundle (not an attestation).
pub const COSIGN_SIGN: &str = "https://sigstore.dev/cosign/sign/v1";

/// Check a bundle's bytes about `subject` (whose manifest bytes are `subject_bytes`): who
/// signed it, and the statement for DSSE.
///
/// # Errors
/// The finding to count.
pub fn check(
    bundle: &[u8],
    subject: &Digest,
    subject_bytes: &[u8],
    trust: &Trust,
) -> Result<(Verifier, Option<Statement>), Finding> {
    let not = |why: &str| Finding::NotSignature(why.to_owned());
    let b: Value = serde_json::from_slice(bundle).map_err(|_| not("a bundle that is not JSON"))?;
    if !b
        .get("mediaType")
        .and_then(Value::as_str)
        .is_some_and(|m| m.starts_with("application/vnd.dev.sigstore.bundle"))
    {
        return Err(not("a bundle without a Sigstore bundle mediaType"));
    }
    let material = Material::from_bundle(&b);
    if let Some(env) = b.get("dsseEnvelope") {
        let (by, st) = dsse::check(env, subject, trust, &material)?;
        return Ok((by, Some(st)));
    }
    let ms = b
        .get("messageSignature")
        .ok_or_else(|| not("a bundle with neither messageSignature nor dsseEnvelope"))?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let sig = ms
        .get("signature")
        .and_then(Value::as_str)
        .and_then(|s| b64.decode(s).ok())
        .ok_or_else(|| not("a message signature that is not base64"))?;
    let digest = ms
        .pointer("/messageDigest/digest")
        .and_then(Value::as_str)
        .and_then(|s| b64.decode(s).ok());
    let by = trust.judge(
        subject_bytes,
        &sig,
        Signed::Message(subject_bytes),
        &material,
    )?;
    match digest {
        Some(d) if hex::encode(&d) == subject.hex() => Ok((by, None)),
        _ => Err(Finding::OtherDigest),
    }
}
