//! Rekor transparency-log entries, checked offline: the signed entry timestamp (SET, the
//! log's promise to include the entry) over the RFC 8785 canonical JSON of
//! `{body, integratedTime, logID, logIndex}`, under a Rekor key of the trusted root; then
//! that the entry's body is about this very signature, not another one's reattached.
//! The integrated time is the signature time a keyless certificate is judged at.

use base64::Engine as _;
use serde_json::Value;
use sha2::Digest as _;

use super::keys::pem_blocks;
use super::root::TrustedRoot;

/// One log entry as a signature carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The canonicalized body, base64, exactly as logged (the SET covers this string).
    body: String,
    integrated_time: i64,
    log_index: i64,
    log_id: Vec<u8>,
    set: Option<Vec<u8>>,
}

/// What the log entry must say was signed.
#[derive(Clone, Copy, Debug)]
pub enum Signed<'a> {
    /// A signature over these bytes (a `hashedrekord` of their SHA-256).
    Message(&'a [u8]),
    /// A DSSE envelope with this payload (a `dsse` or `intoto` entry of its SHA-256).
    Dsse(&'a [u8]),
}

impl Entry {
    /// cosign's legacy `dev.sigstore.cosign/bundle` annotation:
    /// `{"SignedEntryTimestamp", "Payload": {body, integratedTime, logIndex, logID}}`.
    ///
    /// # Errors
    /// What is missing or malformed.
    pub fn from_annotation(text: &str) -> Result<Self, String> {
        let v: Value =
            serde_json::from_str(text).map_err(|_| "a log bundle that is not JSON".to_owned())?;
        let p = v.get("Payload").ok_or("a log bundle without Payload")?;
        let b64 = base64::engine::general_purpose::STANDARD;
        Ok(Entry {
            body: str_at(p, "body")?.to_owned(),
            integrated_time: p
                .get("integratedTime")
                .and_then(Value::as_i64)
                .ok_or("a log bundle without integratedTime")?,
            log_index: p
                .get("logIndex")
                .and_then(Value::as_i64)
                .ok_or("a log bundle without logIndex")?,
            log_id: hex::decode(str_at(p, "logID")?)
                .map_err(|_| "a logID that is not hex".to_owned())?,
            set: Some(
                b64.decode(str_at(&v, "SignedEntryTimestamp")?)
                    .map_err(|_| "a SignedEntryTimestamp that is not base64".to_owned())?,
            ),
        })
    }

    /// A Sigstore bundle's `verificationMaterial.tlogEntries[i]` (int64s are JSON strings).
    ///
    /// # Errors
    /// What is missing or malformed.
    pub fn from_bundle(e: &Value) -> Result<Self, String> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let int = |name: &str| -> Result<i64, String> {
            e.get(name)
                .and_then(|v| v.as_str().and_then(|s| s.parse().ok()).or(v.as_i64()))
                .ok_or_else(|| format!("a log entry without {name}"))
        };
        let set = match e.pointer("/inclusionPromise/signedEntryTimestamp") {
            None => None,
            Some(s) => Some(
                s.as_str()
                    .and_then(|s| b64.decode(s).ok())
                    .ok_or("a signedEntryTimestamp that is not base64")?,
            ),
        };
        Ok(Entry {
            body: str_at(e, "canonicalizedBody")?.to_owned(),
            integrated_time: int("integratedTime")?,
            log_index: int("logIndex")?,
            log_id: e
                .pointer("/logId/keyId")
                .and_then(Value::as_str)
                .and_then(|s| b64.decode(s).ok())
                .ok_or("a log entry without a base64 logId.keyId")?,
            set,
        })
    }

    /// The bytes the SET signs: RFC 8785 canonical JSON of the four members. Their shape is
    /// fixed (two strings, two integers, keys already in code-unit order), so serde_json's
    /// string escaping, which is RFC 8785's for these, is all the canonicalization needed.
    fn canonical(&self) -> Vec<u8> {
        format!(
            "{{\"body\":{},\"integratedTime\":{},\"logID\":{},\"logIndex\":{}}}",
            Value::from(self.body.as_str()),
            self.integrated_time,
            Value::from(hex::encode(&self.log_id)),
            self.log_index
        )
        .into_bytes()
    }

    /// Check the SET under the trusted root's Rekor key for this log; the integrated time.
    ///
    /// # Errors
    /// No promise, no such log key, a SET that does not verify.
    pub fn verify(&self, root: &TrustedRoot) -> Result<i64, String> {
        let Some(set) = &self.set else {
            return Err("a log entry with no inclusion promise (ferry checks signed entry timestamps, not inclusion proofs)".into());
        };
        let key = root
            .log_key(&self.log_id, self.integrated_time)
            .ok_or("a log entry from a log the trusted root does not hold")?;
        if !key.verifies(&self.canonical(), set) {
            return Err("a log entry whose signed entry timestamp does not verify".into());
        }
        Ok(self.integrated_time)
    }

    /// Check that the logged body records this signature by `verifier` (a certificate or an
    /// SPKI, DER) over what `signed` says.
    ///
    /// # Errors
    /// The body is about something else, or of a kind ferry does not read.
    pub fn binds(&self, signed: Signed<'_>, sig: &[u8], verifier: &[u8]) -> Result<(), String> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let body: Value = b64
            .decode(&self.body)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or("a log entry whose body is not base64 JSON")?;
        let kind = body.get("kind").and_then(Value::as_str).unwrap_or("");
        let decode = |v: Option<&Value>| v.and_then(Value::as_str).and_then(|s| b64.decode(s).ok());
        let names = |pem: Option<Vec<u8>>| {
            pem.and_then(|p| String::from_utf8(p).ok())
                .is_some_and(|p| {
                    pem_blocks(&p, "CERTIFICATE")
                        .into_iter()
                        .chain(pem_blocks(&p, "PUBLIC KEY"))
                        .any(|d| d == verifier)
                })
        };
        let other = || Err("a log entry about another signature".to_owned());
        let envelope_logged = |payload: &[u8],
                               spec: &str,
                               sigs: &str,
                               (sig_at, key_at): (&str, &str),
                               times: usize| {
            let hash = hex::encode(sha2::Sha256::digest(payload));
            let decoded = |v: Option<&Value>| {
                (1..times).try_fold(decode(v)?, |once, _| b64.decode(once).ok())
            };
            let ok = body
                .pointer(&format!("{spec}/payloadHash/value"))
                .and_then(Value::as_str)
                == Some(&hash)
                && body
                    .pointer(&format!("{spec}/{sigs}"))
                    .and_then(Value::as_array)
                    .is_some_and(|ss| {
                        ss.iter().any(|s| {
                            decoded(s.get(sig_at)).as_deref() == Some(sig)
                                && names(decoded(s.get(key_at)))
                        })
                    });
            if ok {
                Ok(())
            } else {
                other()
            }
        };
        match (kind, signed) {
            ("hashedrekord", Signed::Message(m)) => {
                let hash = hex::encode(sha2::Sha256::digest(m));
                let s = body.pointer("/spec/signature");
                if body
                    .pointer("/spec/data/hash/value")
                    .and_then(Value::as_str)
                    != Some(&hash)
                    || decode(s.and_then(|s| s.get("content"))).as_deref() != Some(sig)
                    || !names(decode(s.and_then(|s| s.pointer("/publicKey/content"))))
                {
                    return other();
                }
                Ok(())
            }
            // Both log the payload's hash and the envelope's signatures with their keys;
            // intoto 0.0.2 encodes signature and key in base64 twice.
            ("dsse", Signed::Dsse(p)) => {
                envelope_logged(p, "/spec", "signatures", ("signature", "verifier"), 1)
            }
            ("intoto", Signed::Dsse(p)) => envelope_logged(
                p,
                "/spec/content",
                "envelope/signatures",
                ("sig", "publicKey"),
                2,
            ),
            (k, _) => Err(format!(
                "a log entry of kind {k:?}, which does not record this signature"
            )),
        }
    }
}

fn str_at<'a>(v: &'a Value, name: &str) -> Result<&'a str, String> {
    v.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("a log entry without {name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// sigstore-rs's published SET (src/cosign/bundle.rs, `bundle_new_verified_success`), a
    /// real entry of the public Rekor log, and Rekor's public key.
    pub const REKOR_KEY_B64: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE2G2Y+2tabdTV5BcGiBIx0a9fAFwrkBbmLSGtks4L3qX6yYY0zufBnhC8Ur/iy55GhWP/9A/bY2LhC30M9+RYtw==";
    const VECTOR: &str = r#"{"SignedEntryTimestamp":"MEUCIDx9M+yRpD0O47/Mzm8NAPCbtqy4uiTkLWWexW0bo4jZAiEA1wwueIW8XzJWNkut5y9snYj7UOfbMmUXp7fH3CzJmWg=","Payload":{"body":"eyJhcGlWZXJzaW9uIjoiMC4wLjEiLCJraW5kIjoicmVrb3JkIiwic3BlYyI6eyJkYXRhIjp7Imhhc2giOnsiYWxnb3JpdGhtIjoic2hhMjU2IiwidmFsdWUiOiIzYWY0NDE0ZDIwYzllMWNiNzZjY2M3MmFhZThiMjQyMTY2ZGFiZTZhZjUzMWE0YTc5MGRiOGUyZjBlNWVlN2M5In19LCJzaWduYXR1cmUiOnsiY29udGVudCI6Ik1FWUNJUURXV3hQUWEzWEZVc1BieVRZK24rYlp1LzZQd2hnNVd3eVlEUXRFZlFobzl3SWhBUGtLVzdldWI4YjdCWCtZYmJSYWM4VHd3SXJLNUt4dmR0UTZOdW9EK2l2VyIsImZvcm1hdCI6Ing1MDkiLCJwdWJsaWNLZXkiOnsiY29udGVudCI6IkxTMHRMUzFDUlVkSlRpQlFWVUpNU1VNZ1MwVlpMUzB0TFMwS1RVWnJkMFYzV1VoTGIxcEplbW93UTBGUldVbExiMXBKZW1vd1JFRlJZMFJSWjBGRlRFdG9SRGRHTlU5TGVUYzNXalU0TWxrMmFEQjFNVW96UjA1Qkt3cHJkbFZ6YURSbFMzQmtNV3gzYTBSQmVtWkdSSE0zZVZoRlJYaHpSV3RRVUhWcFVVcENaV3hFVkRZNGJqZFFSRWxYUWk5UlJWazNiWEpCUFQwS0xTMHRMUzFGVGtRZ1VGVkNURWxESUV0RldTMHRMUzB0Q2c9PSJ9fX19","integratedTime":1634714179,"logIndex":783606,"logID":"c0d23d6ad406973f9559f3ba2d1ca01f84147d8ffc5b8445c224f98b9591801d"}}"#;

    fn rekor_root() -> TrustedRoot {
        TrustedRoot::parse(&format!(
            r#"{{"tlogs":[{{"publicKey":{{"rawBytes":"{REKOR_KEY_B64}","validFor":{{"start":"2021-01-12T11:53:27Z"}}}}}}]}}"#
        ))
        .unwrap()
    }

    #[test]
    fn the_published_rekor_set_verifies_and_a_changed_member_does_not() {
        let root = rekor_root();
        let e = Entry::from_annotation(VECTOR).unwrap();
        assert_eq!(e.verify(&root), Ok(1_634_714_179));
        let mut moved = e.clone();
        moved.integrated_time += 1;
        assert!(moved.verify(&root).is_err());
        let mut other = e.clone();
        other.log_index += 1;
        assert!(other.verify(&root).is_err());
        let mut unknown = e;
        unknown.log_id[0] ^= 1;
        assert!(unknown.verify(&root).unwrap_err().contains("does not hold"));
    }

    /// A `dsse` entry logs the signature and key once encoded, an `intoto` 0.0.2 entry twice;
    /// both bind only this payload, this signature and this key.
    #[test]
    fn dsse_and_intoto_entries_bind_their_own_envelope() {
        let b64 = base64::engine::general_purpose::STANDARD;
        let (payload, sig, key) = (
            b"statement".as_slice(),
            b"sig-bytes".as_slice(),
            b"key-der".as_slice(),
        );
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            b64.encode(key)
        );
        let hash = hex::encode(sha2::Sha256::digest(payload));
        let entry = |body: Value| Entry {
            body: b64.encode(body.to_string()),
            integrated_time: 0,
            log_index: 0,
            log_id: vec![],
            set: None,
        };
        let dsse = entry(serde_json::json!({ "kind": "dsse", "spec": {
            "payloadHash": { "value": hash },
            "signatures": [{ "signature": b64.encode(sig), "verifier": b64.encode(&pem) }] } }));
        let twice = |b: &[u8]| b64.encode(b64.encode(b));
        let intoto = entry(serde_json::json!({ "kind": "intoto", "spec": { "content": {
            "payloadHash": { "value": hash },
            "envelope": { "signatures": [{ "sig": twice(sig), "publicKey": twice(pem.as_bytes()) }] } } } }));
        for e in [&dsse, &intoto] {
            assert_eq!(e.binds(Signed::Dsse(payload), sig, key), Ok(()));
            assert!(e.binds(Signed::Dsse(b"other"), sig, key).is_err());
            assert!(e.binds(Signed::Dsse(payload), b"other-sig", key).is_err());
            assert!(e.binds(Signed::Dsse(payload), sig, b"other-key").is_err());
        }
    }

    #[test]
    fn the_vector_entry_is_a_rekord_which_binds_nothing_here() {
        let e = Entry::from_annotation(VECTOR).unwrap();
        let err = e.binds(Signed::Message(b"x"), b"sig", b"key").unwrap_err();
        assert!(err.contains("\"rekord\""), "{err}");
        assert!(Entry::from_annotation("{").is_err());
        assert!(Entry::from_annotation(r#"{"Payload":{"body":"x"}}"#).is_err());
    }
}
