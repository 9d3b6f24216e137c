//! A Sigstore `trusted_root.json` (protobuf-specs `TrustedRoot`, JSON form): the Fulcio CAs
//! keyless certificates chain to, and the Rekor keys log entries are signed with. Read
//! once at config load; everything after is offline.

use base64::Engine as _;
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use serde::Deserialize;
use sha2::Digest as _;

use super::x509::CODE_SIGNING;
use super::TrustedKey;

/// A trusted root is a few KiB; more CAs or keys than this is not one.
const MAX_AUTHORITIES: usize = 64;
const MAX_CHAIN: usize = 8;

#[derive(Debug)]
pub struct TrustedRoot {
    cas: Vec<Authority>,
    logs: Vec<LogKey>,
    /// `sha256:<hex>` of the file: a changed root re-verifies what the old one verified.
    pub digest: String,
}

#[derive(Debug)]
struct Authority {
    anchor: TrustAnchor<'static>,
    intermediates: Vec<CertificateDer<'static>>,
    valid: Window,
}

#[derive(Debug)]
struct LogKey {
    id: Vec<u8>,
    key: TrustedKey,
    valid: Window,
}

/// `validFor`: unix seconds, either end open.
#[derive(Debug, Default, Clone, Copy)]
struct Window {
    start: Option<i64>,
    end: Option<i64>,
}

impl Window {
    fn holds(&self, t: i64) -> bool {
        self.start.is_none_or(|s| s <= t) && self.end.is_none_or(|e| t <= e)
    }
}

/// Why a trusted root is refused: where in the file, when serde can say.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{msg}")]
pub struct RootError {
    /// 1-based line and column in the JSON; 0 when the problem is the file as a whole.
    pub line: usize,
    pub col: usize,
    pub msg: String,
}

impl RootError {
    fn whole(msg: impl Into<String>) -> Self {
        RootError {
            line: 0,
            col: 0,
            msg: msg.into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRoot {
    #[serde(default)]
    tlogs: Vec<RawLog>,
    #[serde(default)]
    certificate_authorities: Vec<RawCa>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawLog {
    public_key: RawKey,
    log_id: Option<RawLogId>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawKey {
    raw_bytes: String,
    valid_for: Option<RawWindow>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawLogId {
    key_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawCa {
    cert_chain: RawChain,
    valid_for: Option<RawWindow>,
}

#[derive(Deserialize)]
struct RawChain {
    certificates: Vec<RawCert>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawCert {
    raw_bytes: String,
}

#[derive(Deserialize)]
struct RawWindow {
    start: Option<String>,
    end: Option<String>,
}

impl TrustedRoot {
    /// Parse a `trusted_root.json`'s text.
    ///
    /// # Errors
    /// Not JSON or not a trusted root (with line and column), a certificate or key that does
    /// not parse, a time that is not RFC 3339, more CAs or chain certificates than a root has.
    pub fn parse(text: &str) -> Result<Self, RootError> {
        let raw: RawRoot = serde_json::from_str(text).map_err(|e| RootError {
            line: e.line(),
            col: e.column(),
            msg: format!("not a Sigstore trusted root: {e}"),
        })?;
        let b64 = base64::engine::general_purpose::STANDARD;
        if raw.certificate_authorities.len() > MAX_AUTHORITIES || raw.tlogs.len() > MAX_AUTHORITIES
        {
            return Err(RootError::whole(format!(
                "more than {MAX_AUTHORITIES} certificate authorities or logs"
            )));
        }
        let mut cas = Vec::new();
        for (i, ca) in raw.certificate_authorities.iter().enumerate() {
            let where_ = format!("certificateAuthorities[{i}]");
            let certs = &ca.cert_chain.certificates;
            if certs.is_empty() || certs.len() > MAX_CHAIN {
                return Err(RootError::whole(format!(
                    "{where_}: a chain of 1 to {MAX_CHAIN} certificates"
                )));
            }
            let mut ders = Vec::new();
            for c in certs {
                let der = b64.decode(&c.raw_bytes).map_err(|_| {
                    RootError::whole(format!("{where_}: a certificate that is not base64"))
                })?;
                ders.push(CertificateDer::from(der));
            }
            let root = ders.pop().expect("not empty");
            let anchor = webpki::anchor_from_trusted_cert(&root)
                .map_err(|e| RootError::whole(format!("{where_}: its last certificate: {e:?}")))?
                .to_owned();
            cas.push(Authority {
                anchor,
                intermediates: ders,
                valid: window(ca.valid_for.as_ref(), &where_)?,
            });
        }
        let mut logs = Vec::new();
        for (i, l) in raw.tlogs.iter().enumerate() {
            let where_ = format!("tlogs[{i}]");
            let spki = b64
                .decode(&l.public_key.raw_bytes)
                .map_err(|_| RootError::whole(format!("{where_}: a key that is not base64")))?;
            let key = TrustedKey::from_spki(&spki)
                .map_err(|e| RootError::whole(format!("{where_}: its key {e}")))?;
            let id = match &l.log_id {
                Some(id) => b64.decode(&id.key_id).map_err(|_| {
                    RootError::whole(format!("{where_}: a logId that is not base64"))
                })?,
                None => sha2::Sha256::digest(&spki).to_vec(),
            };
            logs.push(LogKey {
                id,
                key,
                valid: window(l.public_key.valid_for.as_ref(), &where_)?,
            });
        }
        Ok(TrustedRoot {
            cas,
            logs,
            digest: format!("sha256:{}", hex::encode(sha2::Sha256::digest(text))),
        })
    }

    /// Whether any CA has this many certificates at all (a root with none trusts no one).
    pub fn has_cas(&self) -> bool {
        !self.cas.is_empty()
    }

    /// The Rekor key with this log ID that was valid at `at`.
    pub fn log_key(&self, id: &[u8], at: i64) -> Option<&TrustedKey> {
        self.logs
            .iter()
            .find(|l| l.id == id && l.valid.holds(at))
            .map(|l| &l.key)
    }

    /// Check that `leaf` (with the intermediates a signature carried) chains to a Fulcio CA
    /// that was valid at `at`, every certificate valid at `at`, none barred from code
    /// signing (the leaf's own code-signing usage is `x509::Leaf::code_signing`).
    ///
    /// # Errors
    /// Why not, in words.
    pub fn chain(&self, leaf: &[u8], carried: &[Vec<u8>], at: i64) -> Result<(), String> {
        let leaf = CertificateDer::from(leaf);
        let ee = webpki::EndEntityCert::try_from(&leaf)
            .map_err(|e| format!("a certificate webpki cannot read ({e:?})"))?;
        let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            u64::try_from(at).map_err(|_| "a signature time before 1970".to_owned())?,
        ));
        let mut last = "no Fulcio CA of the trusted root was valid at the signature time".into();
        for ca in self.cas.iter().filter(|ca| ca.valid.holds(at)) {
            let mut intermediates = ca.intermediates.clone();
            intermediates.extend(
                carried
                    .iter()
                    .take(MAX_CHAIN)
                    .map(|c| CertificateDer::from(c.clone())),
            );
            match ee.verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                std::slice::from_ref(&ca.anchor),
                &intermediates,
                time,
                webpki::KeyUsage::required_if_present(CODE_SIGNING),
                None,
                None,
            ) {
                Ok(_) => return Ok(()),
                Err(e) => last = said(&e),
            }
        }
        Err(last)
    }
}

fn said(e: &webpki::Error) -> String {
    use webpki::Error as E;
    match e {
        E::CertExpired { .. } => "its certificate had expired at the signature time".into(),
        E::CertNotValidYet { .. } => {
            "its certificate was not yet valid at the signature time".into()
        }
        E::UnknownIssuer => {
            "its certificate does not chain to a Fulcio CA of the trusted root".into()
        }
        E::MaximumPathDepthExceeded
        | E::MaximumSignatureChecksExceeded
        | E::MaximumPathBuildCallsExceeded => "its certificate chain is too deep or loops".into(),
        E::RequiredEkuNotFoundContext(_) => "its certificate is not for code signing".into(),
        other => format!("its certificate chain does not verify ({other:?})"),
    }
}

fn window(w: Option<&RawWindow>, where_: &str) -> Result<Window, RootError> {
    let Some(w) = w else {
        return Ok(Window::default());
    };
    let at = |s: &Option<String>| -> Result<Option<i64>, RootError> {
        s.as_deref()
            .map(|s| {
                s.parse::<jiff::Timestamp>()
                    .map(|t| t.as_second())
                    .map_err(|_| {
                        RootError::whole(format!(
                            "{where_}.validFor: `{s}` is not an RFC 3339 time"
                        ))
                    })
            })
            .transpose()
    };
    Ok(Window {
        start: at(&w.start)?,
        end: at(&w.end)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_roots_are_refused_with_a_position() {
        let e = TrustedRoot::parse("{\n  \"tlogs\": 3\n}").unwrap_err();
        assert_eq!((e.line, e.col > 0), (2, true), "{e:?}");
        let e = TrustedRoot::parse(
            r#"{"certificateAuthorities":[{"certChain":{"certificates":[{"rawBytes":"%%"}]}}]}"#,
        )
        .unwrap_err();
        assert!(e.msg.contains("not base64"), "{e:?}");
        let e = TrustedRoot::parse(
            r#"{"certificateAuthorities":[{"certChain":{"certificates":[{"rawBytes":"AAAA"}]}}]}"#,
        )
        .unwrap_err();
        assert!(e.msg.contains("last certificate"), "{e:?}");
        let e = TrustedRoot::parse(
            r#"{"tlogs":[{"publicKey":{"rawBytes":"AAAA","validFor":{"start":"yesterday"}}}]}"#,
        )
        .unwrap_err();
        assert!(e.msg.contains("its key"), "{e:?}");
        assert!(TrustedRoot::parse("{}").is_ok_and(|r| !r.has_cas()));
    }
}
