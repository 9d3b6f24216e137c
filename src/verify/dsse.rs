//! DSSE envelopes (in cosign v3 bundles and `.att` layers): the signature is over the PAE
//! `DSSEv1 SP len(type) SP type SP len(body) SP body`, and the body is an in-toto
//! Statement whose subject must name the image.

use base64::Engine as _;
use serde_json::Value;

use super::tlog::Signed;
use super::{Finding, Material, Trust, Verifier};
use crate::model::Digest;

pub const IN_TOTO: &str = "application/vnd.in-toto+json";

/// The pre-authentication encoding of a DSSE payload.
pub fn pae(payload_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// A verified in-toto statement: its predicate type and predicate.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    pub predicate_type: String,
    pub predicate: Value,
}

/// Check an envelope (`{payload, payloadType, signatures: [{sig}]}`) under `trust`, with the
/// certificate and log entry that came with it, and that its statement is about `subject`.
/// `Ok` carries who signed it and the statement.
///
/// # Errors
/// The finding to count when it does not verify.
pub fn check(
    envelope: &Value,
    subject: &Digest,
    trust: &Trust,
    material: &Material,
) -> Result<(Verifier, Statement), Finding> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let not = |why: &str| Finding::NotSignature(why.to_owned());
    let payload_type = envelope
        .get("payloadType")
        .and_then(Value::as_str)
        .ok_or_else(|| not("a DSSE envelope without payloadType"))?;
    let body = envelope
        .get("payload")
        .and_then(Value::as_str)
        .and_then(|p| b64.decode(p).ok())
        .ok_or_else(|| not("a DSSE payload that is not base64"))?;
    let sigs = envelope
        .get("signatures")
        .and_then(Value::as_array)
        .ok_or_else(|| not("a DSSE envelope without signatures"))?;
    let message = pae(payload_type, &body);
    // The first signature that verifies decides; the best finding otherwise (a genuine
    // keyless signature by the wrong identity says more than "unknown key").
    let mut best = Finding::UnknownKey;
    let mut by = None;
    for sig in sigs
        .iter()
        .take(16)
        .filter_map(|s| s.get("sig").and_then(Value::as_str))
        .filter_map(|s| b64.decode(s).ok())
    {
        match trust.judge(&message, &sig, Signed::Dsse(&body), material) {
            Ok(v) => {
                by = Some(v);
                break;
            }
            Err(Finding::UnknownKey) => {}
            Err(f) => best = f,
        }
    }
    let by = by.ok_or(best)?;
    if payload_type != IN_TOTO {
        return Err(not("a DSSE payload that is not an in-toto statement"));
    }
    let st: Value =
        serde_json::from_slice(&body).map_err(|_| not("an in-toto statement that is not JSON"))?;
    let names = st
        .get("subject")
        .and_then(Value::as_array)
        .is_some_and(|s| {
            s.iter()
                .any(|x| x.pointer("/digest/sha256").and_then(Value::as_str) == Some(subject.hex()))
        });
    if !names {
        return Err(Finding::OtherDigest);
    }
    let predicate_type = st
        .get("predicateType")
        .and_then(Value::as_str)
        .ok_or_else(|| not("an in-toto statement without predicateType"))?
        .to_owned();
    Ok((
        by,
        Statement {
            predicate_type,
            predicate: st.get("predicate").cloned().unwrap_or(Value::Null),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_is_the_specs_encoding() {
        // The DSSE spec's example: type "http://example.com/HelloWorld", body "hello world".
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn envelopes_that_are_not_are_named() {
        let d = Digest::of(b"x");
        for e in [
            serde_json::json!({}),
            serde_json::json!({"payloadType": IN_TOTO, "payload": "%%"}),
            serde_json::json!({"payloadType": IN_TOTO, "payload": "e30="}),
        ] {
            assert!(
                matches!(
                    check(&e, &d, &Trust::default(), &Material::default()),
                    Err(Finding::NotSignature(_))
                ),
                "{e}"
            );
        }
        let e = serde_json::json!({"payloadType": IN_TOTO, "payload": "e30=", "signatures": [{"sig": "AAAA"}]});
        assert_eq!(
            check(&e, &d, &Trust::default(), &Material::default()),
            Err(Finding::UnknownKey)
        );
    }
}
