//! A test Sigstore, offline: a Fulcio-like CA issuing short-lived code-signing certificates
//! with the OIDC issuer extensions, a Rekor-like log key signing entry timestamps (SETs) over
//! RFC 8785 canonical JSON, and the `trusted_root.json` that names both. Signatures made
//! with it are laid out as cosign writes keyless ones: legacy `.sig` layers with certificate,
//! chain and bundle annotations, and v0.3 bundles with a certificate and a tlog entry.
//! The SET bytes are checked against sigstore-rs's published Rekor entry (`keyless.rs`).

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, CustomExtension, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
    PKCS_ECDSA_P256_SHA256,
};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use serde_json::{json, Value};
use sha2::Digest as _;

use super::cosign::{self, SIGNATURE_ANNOTATION};
use super::images::Image;

/// 2026-01-01T00:00:00Z: certificates are issued then, long expired by the time tests run,
/// as Fulcio's ten-minute certificates always are when a replicator sees them.
pub const ISSUED: i64 = 1_767_225_600;
/// Fulcio's certificate lifetime.
pub const LIFETIME: i64 = 600;
pub const GITHUB: &str = "https://token.actions.githubusercontent.com";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Move a validity bound (which rcgen sets at `ISSUED`) by `secs`.
fn shift<T: std::ops::AddAssign<Duration> + std::ops::SubAssign<Duration>>(t: &mut T, secs: i64) {
    if secs >= 0 {
        *t += Duration::from_secs(secs as u64);
    } else {
        *t -= Duration::from_secs(secs.unsigned_abs());
    }
}

/// DER UTF8String, as Fulcio encodes the issuer extension 1.3.6.1.4.1.57264.1.8.
fn utf8_string(s: &str) -> Vec<u8> {
    assert!(s.len() < 128, "short form lengths only");
    let mut out = vec![0x0c, s.len() as u8];
    out.extend_from_slice(s.as_bytes());
    out
}

/// An ECDSA P-256 key pair usable both by rcgen (to be certified) and by ring (to sign).
fn key_pair() -> (KeyPair, EcdsaKeyPair) {
    let kp = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let ring = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_ASN1_SIGNING,
        &kp.serialize_der(),
        &SystemRandom::new(),
    )
    .unwrap();
    (kp, ring)
}

fn ca_params(name: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "ferry.test");
    dn.push(DnType::CommonName, name);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(2040, 1, 1);
    p
}

/// A Fulcio-like certificate for `identity` (a URI SAN, or an email when it has an `@` and
/// no `:`) from OIDC `issuer`, valid `[ISSUED + from, ISSUED + from + LIFETIME]`.
fn leaf_by(
    identity: &str,
    issuer: &str,
    from: i64,
    by: &Issuer<'_, impl rcgen::SigningKey>,
) -> Leaf {
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.subject_alt_names = vec![if identity.contains('@') && !identity.contains(':') {
        SanType::Rfc822Name(identity.try_into().unwrap())
    } else {
        SanType::URI(identity.try_into().unwrap())
    }];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
    p.custom_extensions = vec![
        CustomExtension::from_oid_content(
            &[1, 3, 6, 1, 4, 1, 57264, 1, 1],
            issuer.as_bytes().to_vec(),
        ),
        CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 57264, 1, 8], utf8_string(issuer)),
    ];
    p.not_before = rcgen::date_time_ymd(2026, 1, 1);
    p.not_after = p.not_before;
    shift(&mut p.not_before, from);
    shift(&mut p.not_after, from + LIFETIME);
    let (kp, key) = key_pair();
    let cert = p.signed_by(&kp, by).unwrap();
    Leaf {
        der: cert.der().to_vec(),
        pem: cert.pem(),
        key,
        rng: SystemRandom::new(),
    }
}

/// The test Sigstore: one Fulcio CA (a root and an intermediate, as the public instance has)
/// and one Rekor key.
pub struct Sigstore {
    root: CertifiedIssuer<'static, KeyPair>,
    intermediate: CertifiedIssuer<'static, KeyPair>,
    rekor: EcdsaKeyPair,
    rekor_spki: Vec<u8>,
    rng: SystemRandom,
}

/// A keyless signer's certificate and its private key (Fulcio's ephemeral key).
pub struct Leaf {
    pub der: Vec<u8>,
    pub pem: String,
    key: EcdsaKeyPair,
    rng: SystemRandom,
}

impl Leaf {
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        self.key.sign(&self.rng, msg).unwrap().as_ref().to_vec()
    }
}

/// What a log entry proves, in the two layouts cosign writes.
pub struct Logged {
    /// The canonicalized body, base64.
    pub body: String,
    pub integrated_time: i64,
    pub log_index: i64,
    pub log_id: Vec<u8>,
    pub set: Vec<u8>,
}

impl Logged {
    /// The legacy `dev.sigstore.cosign/bundle` annotation.
    pub fn annotation(&self) -> String {
        json!({
            "SignedEntryTimestamp": b64(&self.set),
            "Payload": { "body": self.body, "integratedTime": self.integrated_time,
                         "logIndex": self.log_index, "logID": hex::encode(&self.log_id) },
        })
        .to_string()
    }

    /// A bundle's `tlogEntries[0]` (int64s as strings, per the protobuf JSON mapping).
    pub fn bundle_entry(&self, kind: &str) -> Value {
        json!({
            "logIndex": self.log_index.to_string(),
            "logId": { "keyId": b64(&self.log_id) },
            "kindVersion": { "kind": kind, "version": "0.0.1" },
            "integratedTime": self.integrated_time.to_string(),
            "inclusionPromise": { "signedEntryTimestamp": b64(&self.set) },
            "canonicalizedBody": self.body,
        })
    }
}

/// The bytes a SET signs: RFC 8785 canonical JSON of the four members. Built from a sorted
/// map by serde_json, independently of ferry's own formatting.
pub fn set_message(body: &str, integrated_time: i64, log_id_hex: &str, log_index: i64) -> Vec<u8> {
    let mut m = BTreeMap::new();
    m.insert("body", Value::from(body));
    m.insert("integratedTime", Value::from(integrated_time));
    m.insert("logID", Value::from(log_id_hex));
    m.insert("logIndex", Value::from(log_index));
    serde_json::to_vec(&m).unwrap()
}

impl Sigstore {
    pub fn new() -> Self {
        let (root_key, _) = key_pair();
        let root = CertifiedIssuer::self_signed(ca_params("test fulcio root"), root_key).unwrap();
        let (int_key, _) = key_pair();
        let intermediate =
            CertifiedIssuer::signed_by(ca_params("test fulcio intermediate"), int_key, &root)
                .unwrap();
        let (rekor_kp, rekor) = key_pair();
        Sigstore {
            rekor_spki: rcgen::PublicKeyData::subject_public_key_info(&rekor_kp),
            root,
            intermediate,
            rekor,
            rng: SystemRandom::new(),
        }
    }

    fn log_id(&self) -> Vec<u8> {
        sha2::Sha256::digest(&self.rekor_spki).to_vec()
    }

    /// `trusted_root.json` as Sigstore's TUF repository serves it: the CA chain (intermediate
    /// first, root last), the Rekor key, and an empty CT log list.
    pub fn trusted_root(&self) -> String {
        serde_json::to_string_pretty(&json!({
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [{
                "baseUrl": "https://rekor.ferry.test",
                "hashAlgorithm": "SHA2_256",
                "publicKey": { "rawBytes": b64(&self.rekor_spki), "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                               "validFor": { "start": "2020-01-01T00:00:00Z" } },
                "logId": { "keyId": b64(&self.log_id()) },
            }],
            "certificateAuthorities": [{
                "subject": { "organization": "ferry.test", "commonName": "test fulcio" },
                "uri": "https://fulcio.ferry.test",
                "certChain": { "certificates": [
                    { "rawBytes": b64(self.intermediate.der()) },
                    { "rawBytes": b64(self.root.der()) },
                ] },
                "validFor": { "start": "2020-01-01T00:00:00Z" },
            }],
            "ctlogs": [],
            "timestampAuthorities": [],
        }))
        .unwrap()
    }

    /// A certificate for `identity` from `issuer`, valid for `LIFETIME` from `ISSUED + from`,
    /// issued by the intermediate.
    pub fn leaf(&self, identity: &str, issuer: &str, from: i64) -> Leaf {
        leaf_by(identity, issuer, from, &self.intermediate)
    }

    /// The intermediate and root, PEM, as `dev.sigstore.cosign/chain` carries them.
    pub fn chain_pem(&self) -> String {
        format!("{}{}", self.intermediate.pem(), self.root.pem())
    }

    /// Log `body` at `ISSUED + at`: the SET over its canonical form.
    pub fn log(&self, body: &Value, at: i64) -> Logged {
        let body = b64(&serde_json::to_vec(body).unwrap());
        let (time, index) = (ISSUED + at, 4242);
        let msg = set_message(&body, time, &hex::encode(self.log_id()), index);
        Logged {
            set: self.rekor.sign(&self.rng, &msg).unwrap().as_ref().to_vec(),
            body,
            integrated_time: time,
            log_index: index,
            log_id: self.log_id(),
        }
    }

    /// A `hashedrekord` entry of `sig` over `msg` by the certificate or public key `pem`.
    pub fn log_message(&self, pem: &str, msg: &[u8], sig: &[u8], at: i64) -> Logged {
        let body = json!({
            "apiVersion": "0.0.1", "kind": "hashedrekord",
            "spec": {
                "data": { "hash": { "algorithm": "sha256", "value": hex::encode(sha2::Sha256::digest(msg)) } },
                "signature": { "content": b64(sig), "publicKey": { "content": b64(pem.as_bytes()) } },
            },
        });
        self.log(&body, at)
    }

    /// A keyless legacy `.sig` image for `digest`: the signature, certificate and chain
    /// annotations, and the log entry logged at `logged_at` (none: `--tlog-upload=false`).
    pub fn legacy(&self, leaf: &Leaf, digest: &str, logged_at: Option<i64>) -> Image {
        let p = cosign::payload(digest, "ferry.test/app");
        let sig = leaf.sign(&p);
        let mut a = json!({
            SIGNATURE_ANNOTATION: b64(&sig),
            "dev.sigstore.cosign/certificate": leaf.pem,
            "dev.sigstore.cosign/chain": self.chain_pem(),
        });
        if let Some(t) = logged_at {
            a["dev.sigstore.cosign/bundle"] =
                self.log_message(&leaf.pem, &p, &sig, t).annotation().into();
        }
        cosign::annotated_legacy_image(&[(p, a)])
    }

    /// A cosign v3 keyless bundle referrer with a message signature over `subject`.
    pub fn message_bundle(&self, leaf: &Leaf, subject: &Image, logged_at: i64) -> Image {
        let sig = leaf.sign(&subject.manifest);
        let logged = self.log_message(&leaf.pem, &subject.manifest, &sig, logged_at);
        let bundle = json!({
            "mediaType": cosign::BUNDLE,
            "verificationMaterial": {
                "certificate": { "rawBytes": b64(&leaf.der) },
                "tlogEntries": [logged.bundle_entry("hashedrekord")],
            },
            "messageSignature": {
                "messageDigest": { "algorithm": "SHA2_256", "digest": b64(&sha2::Sha256::digest(&subject.manifest)) },
                "signature": b64(&sig),
            },
        });
        cosign::bundle_referrer(
            subject,
            &serde_json::to_vec(&bundle).unwrap(),
            "message-signature",
        )
    }

    /// A keyless attestation bundle: DSSE around a statement of `predicate_type`, logged as
    /// a `dsse` entry.
    pub fn attestation_bundle(
        &self,
        leaf: &Leaf,
        subject: &Image,
        predicate_type: &str,
        predicate: Value,
        logged_at: i64,
    ) -> Image {
        let body = cosign::statement(subject, predicate_type, predicate);
        let sig = leaf.sign(&cosign::pae("application/vnd.in-toto+json", &body));
        let envelope = json!({ "payload": b64(&body), "payloadType": "application/vnd.in-toto+json",
                               "signatures": [{ "sig": b64(&sig), "keyid": "" }] });
        let entry = json!({
            "apiVersion": "0.0.1", "kind": "dsse",
            "spec": {
                "envelopeHash": { "algorithm": "sha256", "value": hex::encode(sha2::Sha256::digest(envelope.to_string())) },
                "payloadHash": { "algorithm": "sha256", "value": hex::encode(sha2::Sha256::digest(&body)) },
                "signatures": [{ "signature": b64(&sig), "verifier": b64(leaf.pem.as_bytes()) }],
            },
        });
        let logged = self.log(&entry, logged_at);
        let bundle = json!({
            "mediaType": cosign::BUNDLE,
            "verificationMaterial": {
                "certificate": { "rawBytes": b64(&leaf.der) },
                "tlogEntries": [logged.bundle_entry("dsse")],
            },
            "dsseEnvelope": envelope,
        });
        cosign::bundle_referrer(
            subject,
            &serde_json::to_vec(&bundle).unwrap(),
            "dsse-envelope",
        )
    }

    /// A keyless `.sig` layer whose chain annotation holds `n` intermediates, each issued by
    /// the next, the last by the real intermediate: a path too deep to be a Fulcio chain.
    pub fn deep_legacy(&self, identity: &str, digest: &str, n: usize) -> Image {
        let mut issuers: Vec<CertifiedIssuer<'static, KeyPair>> = Vec::new();
        for i in 0..n {
            let by: &Issuer<'_, KeyPair> = issuers.last().map_or(&self.intermediate, |x| x);
            let next =
                CertifiedIssuer::signed_by(ca_params(&format!("deep {i}")), key_pair().0, by);
            issuers.push(next.unwrap());
        }
        let chain: Vec<String> = issuers.iter().rev().map(|c| c.pem()).collect();
        self.legacy_under(identity, digest, issuers.last().unwrap(), &chain.concat())
    }

    /// A keyless `.sig` layer whose chain loops: two CAs, each issued by the other, and
    /// neither by the trusted root.
    pub fn looping_legacy(&self, identity: &str, digest: &str) -> Image {
        let ((ka, _), (kb, _)) = (key_pair(), key_pair());
        let (pa, pb) = (ca_params("loop a"), ca_params("loop b"));
        let (ia, ib) = (Issuer::from_params(&pa, &ka), Issuer::from_params(&pb, &kb));
        let a = pa.signed_by(&ka, &ib).unwrap();
        let b = pb.signed_by(&kb, &ia).unwrap();
        self.legacy_under(identity, digest, &ia, &format!("{}{}", a.pem(), b.pem()))
    }

    /// A keyless `.sig` image signed under a leaf `by` issues, carrying `chain`, logged.
    fn legacy_under(
        &self,
        identity: &str,
        digest: &str,
        by: &Issuer<'_, impl rcgen::SigningKey>,
        chain: &str,
    ) -> Image {
        let leaf = leaf_by(identity, GITHUB, 0, by);
        let p = cosign::payload(digest, "ferry.test/app");
        let sig = leaf.sign(&p);
        let a = json!({
            SIGNATURE_ANNOTATION: b64(&sig),
            "dev.sigstore.cosign/certificate": leaf.pem,
            "dev.sigstore.cosign/chain": chain,
            "dev.sigstore.cosign/bundle": self.log_message(&leaf.pem, &p, &sig, 60).annotation(),
        });
        cosign::annotated_legacy_image(&[(p, a)])
    }
}
