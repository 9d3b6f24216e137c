//! Signing as cosign does, with real keys (ECDSA P-256, as `cosign generate-key-pair`), for
//! the signature gate's tests. The output is checked against sigstore-rs's published vector
//! (`tests/e2e/signed.rs`), so the fixtures are known to be what cosign writes.

use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_ASN1_SIGNING};
use serde_json::json;

use super::images::{Blob, Format, Image};

/// SubjectPublicKeyInfo up to the EC point: id-ecPublicKey, prime256v1, BIT STRING.
pub const P256_SPKI_PREFIX: &str = "3059301306072a8648ce3d020106082a8648ce3d030107034200";
pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

pub struct Signer {
    pair: EcdsaKeyPair,
    rng: SystemRandom,
    /// The public key, PEM `PUBLIC KEY` (what `cosign.pub` holds).
    pub pem: String,
    /// `SHA256:<hex>` of the SPKI, as ferry names keys.
    pub fingerprint: String,
    /// The private key, PKCS#8 PEM (for the "a private key is refused" test).
    pub private_pem: String,
}

pub fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

impl Signer {
    pub fn new() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let mut spki = hex::decode(P256_SPKI_PREFIX).unwrap();
        spki.extend_from_slice(pair.public_key().as_ref());
        use sha2::Digest as _;
        Signer {
            pem: pem("PUBLIC KEY", &spki),
            fingerprint: format!("SHA256:{}", hex::encode(sha2::Sha256::digest(&spki))),
            private_pem: pem("PRIVATE KEY", pkcs8.as_ref()),
            pair,
            rng,
        }
    }

    /// A DER ECDSA signature over `msg`, base64 (the annotation's form).
    pub fn sign(&self, msg: &[u8]) -> String {
        let sig = self.pair.sign(&self.rng, msg).unwrap();
        base64::engine::general_purpose::STANDARD.encode(sig.as_ref())
    }

    /// A legacy `.sig` image with one signature naming `named` (normally the subject).
    pub fn legacy(&self, named: &str) -> Image {
        let p = payload(named, "ferry.test/app");
        let sig = self.sign(&p);
        legacy_image(&[(p, Some(sig))])
    }
}

/// cosign's simple-signing payload, serialized as cosign serializes it (the published
/// vector's exact bytes for its digest and reference).
pub fn payload(digest: &str, reference: &str) -> Vec<u8> {
    // Field order as cosign's Go structs: critical{identity, image, type}, optional.
    format!(
        r#"{{"critical":{{"identity":{{"docker-reference":{}}},"image":{{"docker-manifest-digest":{}}},"type":"cosign container image signature"}},"optional":null}}"#,
        json!(reference),
        json!(digest)
    )
    .into_bytes()
}

/// A `.sig` image with a layer per (payload, signature annotation).
pub fn legacy_image(layers: &[(Vec<u8>, Option<String>)]) -> Image {
    let layers: Vec<(Vec<u8>, Value)> = layers
        .iter()
        .map(|(p, sig)| {
            let a = sig
                .as_ref()
                .map_or(Value::Null, |s| json!({ SIGNATURE_ANNOTATION: s }));
            (p.clone(), a)
        })
        .collect();
    annotated_legacy_image(&layers)
}

/// A `.sig` image with a layer per (payload, annotations): keyless layers carry their
/// certificate, chain and log entry beside the signature.
pub fn annotated_legacy_image(layers: &[(Vec<u8>, Value)]) -> Image {
    layered_image(SIMPLE_SIGNING, layers)
}

/// cosign's tag-scheme image (`.sig`, `.att`): one layer of `layer_type` per (blob,
/// annotations), over the empty-ish config cosign writes.
fn layered_image(layer_type: &str, layers: &[(Vec<u8>, Value)]) -> Image {
    let config = Blob::new(
        b"{\"architecture\":\"\",\"os\":\"\",\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}"
            .to_vec(),
    );
    let mut blobs = vec![config];
    let mut descs = Vec::new();
    for (p, annotations) in layers {
        let b = Blob::new(p.clone());
        let mut d = json!({ "mediaType": layer_type, "digest": b.digest, "size": b.bytes.len() });
        if !annotations.is_null() {
            d["annotations"] = annotations.clone();
        }
        descs.push(d);
        blobs.push(b);
    }
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": Format::Oci.manifest(),
        "config": { "mediaType": Format::Oci.config(), "digest": blobs[0].digest, "size": blobs[0].bytes.len() },
        "layers": descs,
    });
    let manifest = serde_json::to_vec(&manifest).unwrap();
    Image {
        media_type: Format::Oci.manifest(),
        digest: super::images::sha256(&manifest),
        manifest,
        blobs,
        platform: Default::default(),
    }
}

pub const BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
pub const COSIGN_SIGN: &str = "https://sigstore.dev/cosign/sign/v1";

/// DSSE's pre-authentication encoding.
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

impl Signer {
    /// A cosign v3 bundle referrer of `subject`: a DSSE envelope around an in-toto statement
    /// of `predicate_type` about it, as `cosign sign` (or `cosign attest`) writes it.
    pub fn dsse_bundle(&self, subject: &Image, predicate_type: &str, predicate: Value) -> Image {
        let body = statement(subject, predicate_type, predicate);
        let b64 = base64::engine::general_purpose::STANDARD;
        let sig = self.sign(&pae("application/vnd.in-toto+json", &body));
        let bundle = json!({
            "mediaType": BUNDLE,
            "verificationMaterial": { "publicKey": { "hint": self.fingerprint } },
            "dsseEnvelope": { "payload": b64.encode(&body), "payloadType": "application/vnd.in-toto+json",
                              "signatures": [{ "sig": sig, "keyid": "" }] },
        });
        bundle_referrer(
            subject,
            &serde_json::to_vec(&bundle).unwrap(),
            "dsse-envelope",
        )
    }

    /// A `.att` image as `cosign attest` (tag scheme) writes it: a DSSE envelope layer
    /// around a statement of `predicate_type` about `subject`.
    pub fn att_image(&self, subject: &Image, predicate_type: &str, predicate: Value) -> Image {
        let body = statement(subject, predicate_type, predicate);
        let b64 = base64::engine::general_purpose::STANDARD;
        let envelope = json!({ "payloadType": "application/vnd.in-toto+json", "payload": b64.encode(&body),
                               "signatures": [{ "keyid": "", "sig": self.sign(&pae("application/vnd.in-toto+json", &body)) }] });
        layered_image(
            "application/vnd.dsse.envelope.v1+json",
            &[(
                serde_json::to_vec(&envelope).unwrap(),
                json!({ "predicateType": predicate_type }),
            )],
        )
    }

    /// A bundle with a message signature over the subject manifest's bytes.
    pub fn message_bundle(&self, subject: &Image) -> Image {
        use sha2::Digest as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let bundle = json!({
            "mediaType": BUNDLE,
            "verificationMaterial": { "publicKey": { "hint": self.fingerprint } },
            "messageSignature": {
                "messageDigest": { "algorithm": "SHA2_256", "digest": b64.encode(sha2::Sha256::digest(&subject.manifest)) },
                "signature": self.sign(&subject.manifest),
            },
        });
        bundle_referrer(
            subject,
            &serde_json::to_vec(&bundle).unwrap(),
            "message-signature",
        )
    }
}

use serde_json::Value;

/// An in-toto v1 statement of `predicate_type` about `subject`, serialized.
pub fn statement(subject: &Image, predicate_type: &str, predicate: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{ "name": "ferry.test/app", "digest": { "sha256": subject.digest.trim_start_matches("sha256:") } }],
        "predicateType": predicate_type,
        "predicate": predicate,
    }))
    .unwrap()
}

/// The referrer manifest cosign v3 pushes for a bundle: the empty config, one bundle layer,
/// `subject` set.
pub fn bundle_referrer(subject: &Image, bundle: &[u8], content: &str) -> Image {
    let empty = Blob::new(b"{}".to_vec());
    let layer = Blob::new(bundle.to_vec());
    let m = json!({
        "schemaVersion": 2,
        "mediaType": Format::Oci.manifest(),
        "artifactType": BUNDLE,
        "config": { "mediaType": "application/vnd.oci.empty.v1+json", "digest": empty.digest, "size": 2 },
        "layers": [{ "mediaType": BUNDLE, "digest": layer.digest, "size": layer.bytes.len(),
                     "annotations": { "org.opencontainers.image.title": format!("{}.sigstore.json", subject.digest.replace(':', "-")) } }],
        "subject": { "mediaType": subject.media_type, "digest": subject.digest, "size": subject.manifest.len() },
        "annotations": { "dev.sigstore.bundle.content": content, "org.opencontainers.image.created": "2026-01-01T00:00:00Z" },
    });
    let manifest = serde_json::to_vec(&m).unwrap();
    Image {
        media_type: Format::Oci.manifest(),
        digest: super::images::sha256(&manifest),
        manifest,
        blobs: vec![empty, layer],
        platform: Default::default(),
    }
}

/// The fallback index cosign keeps under `sha256-<hex>` on a registry without the API.
pub fn fallback_index(refs: &[&Image]) -> Vec<u8> {
    let entries: Vec<Value> = refs
        .iter()
        .map(|r| {
            let m: Value = serde_json::from_slice(&r.manifest).unwrap();
            json!({ "mediaType": r.media_type, "digest": r.digest, "size": r.manifest.len(),
                    "artifactType": m["artifactType"], "annotations": m["annotations"] })
        })
        .collect();
    serde_json::to_vec(&json!({ "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries }))
    .unwrap()
}
