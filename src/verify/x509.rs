//! What a keyless signature's leaf certificate says: its key, its subject alternative names
//! and the OIDC issuer Fulcio stamped into it. Read only from a certificate whose chain
//! webpki has validated (`root::TrustedRoot::chain`), so the bytes are the CA's; webpki
//! itself does not hand out URI or e-mail SANs or private extensions.

use super::der;

const SAN: &[u8] = &[0x55, 0x1d, 0x11];
const EKU: &[u8] = &[0x55, 0x1d, 0x25];
/// id-kp-codeSigning (1.3.6.1.5.5.7.3.3), which every Fulcio leaf carries.
pub const CODE_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];
/// Fulcio's issuer extension, v1: the extension value is the issuer's bytes, not DER.
const ISSUER_V1: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0x83, 0xbf, 0x30, 0x01, 0x01];
/// v2 (1.3.6.1.4.1.57264.1.8): a DER UTF8String.
const ISSUER_V2: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0x83, 0xbf, 0x30, 0x01, 0x08];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leaf {
    /// The SubjectPublicKeyInfo DER: the key the signature must verify under.
    pub spki: Vec<u8>,
    /// URI and e-mail SANs, as Fulcio writes the signer's identity.
    pub identities: Vec<String>,
    /// The OIDC issuer (the v2 extension wins over v1, as cosign reads them).
    pub issuer: Option<String>,
    /// Its extended key usage names code signing. Checked here, on the leaf only: webpki's
    /// required EKU would also demand it of every CA, which a private Fulcio need not set.
    pub code_signing: bool,
}

/// Read a certificate's key, SANs and issuer.
///
/// # Errors
/// What is not a certificate, said in a few words.
pub fn leaf(cert: &[u8]) -> Result<Leaf, &'static str> {
    let (c, _) = der::expect(cert, 0x30).ok_or("not a certificate")?;
    let (tbs, _) = der::expect(c, 0x30).ok_or("no TBSCertificate")?;
    let fields = der::items(tbs).ok_or("a malformed TBSCertificate")?;
    // version [0], serial, signature, issuer, validity, subject, spki, then [1] [2] [3].
    let fields = match fields.first() {
        Some(f) if f.tag == 0xa0 => &fields[1..],
        _ => &fields[..],
    };
    let spki = fields
        .get(5)
        .filter(|f| f.tag == 0x30)
        .ok_or("no public key")?;
    let mut out = Leaf {
        spki: spki.whole.to_vec(),
        identities: Vec::new(),
        issuer: None,
        code_signing: false,
    };
    let Some(ext) = fields[6..].iter().find(|f| f.tag == 0xa3) else {
        return Ok(out);
    };
    let (list, _) = der::expect(ext.value, 0x30).ok_or("malformed extensions")?;
    let mut v1 = None;
    for e in der::items(list).ok_or("malformed extensions")? {
        let parts = der::items(e.value).ok_or("a malformed extension")?;
        let (Some(oid), Some(value)) = (parts.first(), parts.last()) else {
            continue;
        };
        if oid.tag != 0x06 || value.tag != 0x04 {
            continue;
        }
        match oid.value {
            SAN => out.identities = sans(value.value).ok_or("a malformed SAN")?,
            EKU => {
                out.code_signing = der::expect(value.value, 0x30)
                    .and_then(|(l, _)| der::items(l))
                    .is_some_and(|oids| {
                        oids.iter()
                            .any(|o| o.tag == 0x06 && o.value == CODE_SIGNING)
                    });
            }
            ISSUER_V1 => v1 = String::from_utf8(value.value.to_vec()).ok(),
            ISSUER_V2 => {
                out.issuer = der::expect(value.value, 0x0c)
                    .and_then(|(s, _)| String::from_utf8(s.to_vec()).ok());
            }
            _ => {}
        }
    }
    out.issuer = out.issuer.or(v1);
    Ok(out)
}

/// rfc822Name [1] and uniformResourceIdentifier [6] of a GeneralNames.
fn sans(der_value: &[u8]) -> Option<Vec<String>> {
    let (names, _) = der::expect(der_value, 0x30)?;
    let mut out = Vec::new();
    for n in der::items(names)? {
        if n.tag == 0x81 || n.tag == 0x86 {
            out.push(String::from_utf8(n.value.to_vec()).ok()?);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_not_a_certificate_is_said_not_panicked_on() {
        assert!(leaf(b"").is_err());
        assert!(leaf(&[0x30, 0x03, 0x30, 0x01, 0x02]).is_err());
        assert!(leaf(&[0x30; 200]).is_err());
    }
}
