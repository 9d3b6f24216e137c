//! Public keys named in `signed_by`: PEM `PUBLIC KEY` (SubjectPublicKeyInfo) files, parsed
//! into what `ring` verifies with. ring takes raw keys, not SPKI, so the SPKI is read here:
//! a fixed two-level DER structure, small enough to check by hand rather than pull in an
//! ASN.1 stack for it.

use base64::Engine as _;
use ring::signature::{self, UnparsedPublicKey};
use sha2::Digest as _;

use super::der;

const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
const ED25519: &[u8] = &[0x2b, 0x65, 0x70];
const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    EcdsaP256,
    EcdsaP384,
    Ed25519,
    Rsa,
}

/// A key a signature may verify under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedKey {
    /// `SHA256:<hex>` of the SPKI DER: what evidence names.
    pub fingerprint: String,
    pub algorithm: Algorithm,
    /// The raw key ring takes: an EC point, an Ed25519 key, an RSAPublicKey.
    raw: Vec<u8>,
    /// The SubjectPublicKeyInfo DER, to compare with what a log entry names.
    pub spki: Vec<u8>,
}

/// Why a key file is refused. Never carries the file's content (it may be a private key).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("is a private key; signed_by takes the public half (`cosign public-key`, or `openssl pkey -pubout`)")]
    PrivateKey,
    #[error("holds no PEM `PUBLIC KEY` block")]
    NotPem,
    #[error("is not a SubjectPublicKeyInfo: {0}")]
    NotSpki(&'static str),
    #[error("uses an algorithm ferry does not verify (ECDSA P-256/P-384, Ed25519 and RSA are)")]
    Unsupported,
}

impl TrustedKey {
    /// The first `PUBLIC KEY` block of a PEM text.
    ///
    /// # Errors
    /// A private key, no such block, bad base64 or DER, an unsupported algorithm.
    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        if text.contains("PRIVATE KEY-----") {
            return Err(KeyError::PrivateKey);
        }
        let der = pem_blocks(text, "PUBLIC KEY")
            .into_iter()
            .next()
            .ok_or(KeyError::NotPem)?;
        Self::from_spki(&der)
    }

    /// # Errors
    /// Not an SPKI, or an algorithm not supported.
    pub fn from_spki(encoded: &[u8]) -> Result<Self, KeyError> {
        let (spki, rest) =
            der::expect(encoded, 0x30).ok_or(KeyError::NotSpki("no outer SEQUENCE"))?;
        if !rest.is_empty() {
            return Err(KeyError::NotSpki("bytes after the key"));
        }
        let (alg, rest) =
            der::expect(spki, 0x30).ok_or(KeyError::NotSpki("no AlgorithmIdentifier"))?;
        let (bits, rest) = der::expect(rest, 0x03).ok_or(KeyError::NotSpki("no BIT STRING"))?;
        if !rest.is_empty() {
            return Err(KeyError::NotSpki("bytes after the BIT STRING"));
        }
        let raw = match bits.split_first() {
            Some((0, raw)) => raw.to_vec(),
            _ => return Err(KeyError::NotSpki("a BIT STRING with unused bits")),
        };
        let (oid, params) = der::expect(alg, 0x06).ok_or(KeyError::NotSpki("no algorithm OID"))?;
        let algorithm = match oid {
            EC_PUBLIC_KEY => match der::expect(params, 0x06) {
                Some((P256, [])) => Algorithm::EcdsaP256,
                Some((P384, [])) => Algorithm::EcdsaP384,
                _ => return Err(KeyError::Unsupported),
            },
            ED25519 => Algorithm::Ed25519,
            RSA => Algorithm::Rsa,
            _ => return Err(KeyError::Unsupported),
        };
        Ok(TrustedKey {
            fingerprint: format!("SHA256:{}", hex::encode(sha2::Sha256::digest(encoded))),
            algorithm,
            raw,
            spki: encoded.to_vec(),
        })
    }

    /// Whether `sig` (DER for ECDSA, as cosign writes it) signs `msg` under this key.
    pub fn verifies(&self, msg: &[u8], sig: &[u8]) -> bool {
        let check = |alg: &'static dyn signature::VerificationAlgorithm| {
            UnparsedPublicKey::new(alg, &self.raw)
                .verify(msg, sig)
                .is_ok()
        };
        match self.algorithm {
            Algorithm::EcdsaP256 => check(&signature::ECDSA_P256_SHA256_ASN1),
            Algorithm::EcdsaP384 => check(&signature::ECDSA_P384_SHA384_ASN1),
            Algorithm::Ed25519 => check(&signature::ED25519),
            Algorithm::Rsa => {
                check(&signature::RSA_PKCS1_2048_8192_SHA256)
                    || check(&signature::RSA_PSS_2048_8192_SHA256)
            }
        }
    }
}

/// The DER of every well-formed `label` block of a PEM text, in order (a block that is not
/// base64 is skipped).
pub fn pem_blocks(text: &str, label: &str) -> Vec<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let mut out = Vec::new();
    let mut rest = text;
    while let Some((_, after)) = rest.split_once(begin.as_str()) {
        let Some((body, after)) = after.split_once(end.as_str()) else {
            break;
        };
        let b64: String = body.split_whitespace().collect();
        if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(b64) {
            out.push(der);
        }
        rest = after;
    }
    out
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// sigstore-rs's published vector (src/crypto/verification_key.rs,
    /// `verify_signature_success`): a cosign signature over a simple-signing payload.
    pub const VECTOR_KEY: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAENptdY/l3nB0yqkXLBWkZWQwo6+cu
OSWS1X9vPavpiQOoTTGC0xX57OojUadxF1cdQmrsiReWg2Wn4FneJfa8xw==
-----END PUBLIC KEY-----";
    pub const VECTOR_SIG: &str = "MEUCIQD6q/COgzOyW0YH1Dk+CCYSt4uAhm3FDHUwvPI55zwnlwIgE0ZK58ZOWpZw8YVmBapJhBqCfdPekIknimuO0xH8Jh8=";
    pub const VECTOR_PAYLOAD: &str = r#"{"critical":{"identity":{"docker-reference":"registry-testing.svc.lan/busybox"},"image":{"docker-manifest-digest":"sha256:f3cfc9d0dbf931d3db4685ec659b7ac68e2a578219da4aae65427886e649b06b"},"type":"cosign container image signature"},"optional":null}"#;

    #[test]
    fn the_published_cosign_vector_verifies_and_a_changed_byte_does_not() {
        let key = TrustedKey::from_pem(VECTOR_KEY).unwrap();
        assert_eq!(key.algorithm, Algorithm::EcdsaP256);
        let sig = base64::engine::general_purpose::STANDARD
            .decode(VECTOR_SIG)
            .unwrap();
        assert!(key.verifies(VECTOR_PAYLOAD.as_bytes(), &sig));
        let changed = VECTOR_PAYLOAD.replace("busybox", "busyb0x");
        assert!(!key.verifies(changed.as_bytes(), &sig));
    }

    #[test]
    fn private_keys_garbage_and_other_curves_are_refused() {
        let private =
            "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEI...\n-----END EC PRIVATE KEY-----\n";
        assert_eq!(TrustedKey::from_pem(private), Err(KeyError::PrivateKey));
        assert_eq!(TrustedKey::from_pem("hello"), Err(KeyError::NotPem));
        let bad = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----";
        assert!(matches!(
            TrustedKey::from_pem(bad),
            Err(KeyError::NotSpki(_))
        ));
        // A length past the end, and 100 nested lengths, end as errors, not panics.
        assert!(TrustedKey::from_spki(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(TrustedKey::from_spki(&[0x30; 100]).is_err());
    }
}
