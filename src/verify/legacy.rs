//! cosign's legacy signatures: the tag `sha256-<hex>.sig`, one image manifest (OCI or Docker
//! typed) with a layer per signature. The layer's blob is a simple-signing payload; its
//! annotation `dev.cosignproject.cosign/signature` the base64 DER signature over those bytes.

use base64::Engine as _;
use serde_json::Value;

use super::tlog::Signed;
use super::{Finding, Material, Trust};
use crate::model::Digest;

pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
const SIGNATURE_TYPE: &str = "cosign container image signature";

/// One layer of a `.sig` manifest: the payload to fetch, and its signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigLayer {
    pub digest: Digest,
    pub size: u64,
    /// The decoded signature, or why the annotation is not one.
    pub signature: Result<Vec<u8>, String>,
    /// A keyless signature's certificate and log entry, from the layer's annotations.
    pub material: Material,
}

/// The signature layers of a `.sig` manifest; a layer of another media type is not a
/// signature (and is counted so by the caller).
///
/// # Errors
/// Why the manifest is not a cosign signature manifest at all.
pub fn layers(manifest: &[u8]) -> Result<Vec<Result<SigLayer, String>>, String> {
    let v: Value = serde_json::from_slice(manifest).map_err(|e| format!("not JSON: {e}"))?;
    let layers = v
        .get("layers")
        .and_then(Value::as_array)
        .ok_or("an image manifest with no layers")?;
    Ok(layers.iter().map(layer).collect())
}

fn layer(l: &Value) -> Result<SigLayer, String> {
    let media_type = l.get("mediaType").and_then(Value::as_str).unwrap_or("");
    if media_type != SIMPLE_SIGNING {
        return Err(format!("a layer of type {media_type:?}"));
    }
    let digest: Digest = l
        .get("digest")
        .and_then(Value::as_str)
        .ok_or("a layer without a digest")?
        .parse()
        .map_err(|e| format!("a layer digest: {e}"))?;
    let size = l
        .get("size")
        .and_then(Value::as_u64)
        .ok_or("a layer without a size")?;
    let signature = match l
        .pointer("/annotations")
        .and_then(|a| a.get(SIGNATURE_ANNOTATION))
    {
        Some(Value::String(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64.split_whitespace().collect::<String>())
            .map_err(|_| "a signature annotation that is not base64".to_owned()),
        Some(_) => Err("a signature annotation that is not a string".to_owned()),
        None => Err(format!("no {SIGNATURE_ANNOTATION} annotation")),
    };
    Ok(SigLayer {
        digest,
        size,
        signature,
        material: Material::from_annotations(l.get("annotations")),
    })
}

/// What one signature layer says about `subject`, given its payload bytes.
pub fn check(layer: &SigLayer, payload: &[u8], subject: &Digest, trust: &Trust) -> Finding {
    let sig = match &layer.signature {
        Ok(s) => s,
        Err(why) => return Finding::NotSignature(why.clone()),
    };
    let by = match trust.judge(payload, sig, Signed::Message(payload), &layer.material) {
        Ok(by) => by,
        Err(f) => return f,
    };
    match payload_digest(payload) {
        Ok(d) if d == subject.as_str() => Finding::Verified(by),
        Ok(_) => Finding::OtherDigest,
        Err(why) => Finding::NotSignature(why),
    }
}

/// `critical.image.docker-manifest-digest` of a simple-signing payload whose type is cosign's.
/// Keys are matched without regard to case, as cosign's Go decoder matches them (it reads
/// `Docker-manifest-digest` as well); `docker-reference` is ignored, as cosign ignores it
/// (mirrors rename repositories).
fn payload_digest(payload: &[u8]) -> Result<String, String> {
    let v: Value =
        serde_json::from_slice(payload).map_err(|_| "a payload that is not JSON".to_owned())?;
    let critical = field(&v, "critical").ok_or("a payload without `critical`")?;
    match field(critical, "type").and_then(Value::as_str) {
        Some(t) if t == SIGNATURE_TYPE => {}
        _ => return Err(format!("a payload whose type is not {SIGNATURE_TYPE:?}")),
    }
    field(critical, "image")
        .and_then(|i| field(i, "docker-manifest-digest"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| "a payload without critical.image.docker-manifest-digest".to_owned())
}

/// A JSON object's member by case-insensitive name; the exact spelling wins, as in Go.
fn field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    let o = v.as_object()?;
    o.get(name).or_else(|| {
        o.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

#[cfg(test)]
mod tests {
    use super::super::keys::tests::{VECTOR_KEY, VECTOR_PAYLOAD, VECTOR_SIG};
    use super::super::TrustedKey;
    use super::*;

    fn vector_layer() -> SigLayer {
        SigLayer {
            digest: Digest::of(VECTOR_PAYLOAD.as_bytes()),
            size: VECTOR_PAYLOAD.len() as u64,
            signature: base64::engine::general_purpose::STANDARD
                .decode(VECTOR_SIG)
                .map_err(|e| e.to_string()),
            material: Material::default(),
        }
    }

    #[test]
    fn the_published_vector_verifies_for_its_digest_only() {
        let key = TrustedKey::from_pem(VECTOR_KEY).unwrap();
        let fingerprint = key.fingerprint.clone();
        let keys = Trust {
            keys: vec![key],
            ..Trust::default()
        };
        let subject: Digest =
            "sha256:f3cfc9d0dbf931d3db4685ec659b7ac68e2a578219da4aae65427886e649b06b"
                .parse()
                .unwrap();
        let l = vector_layer();
        assert_eq!(
            check(&l, VECTOR_PAYLOAD.as_bytes(), &subject, &keys),
            Finding::Verified(super::super::Verifier::Key { key: fingerprint })
        );
        let other = Digest::of(b"another image");
        assert_eq!(
            check(&l, VECTOR_PAYLOAD.as_bytes(), &other, &keys),
            Finding::OtherDigest
        );
        assert_eq!(
            check(&l, VECTOR_PAYLOAD.as_bytes(), &subject, &Trust::default()),
            Finding::UnknownKey
        );
    }

    #[test]
    fn both_spellings_of_the_digest_key_are_read() {
        let p = br#"{"critical":{"type":"cosign container image signature","image":{"Docker-manifest-digest":"sha256:ab"}}}"#;
        assert_eq!(payload_digest(p).unwrap(), "sha256:ab");
        let p = br#"{"critical":{"type":"something else","image":{"docker-manifest-digest":"sha256:ab"}}}"#;
        assert!(payload_digest(p).is_err());
        assert!(payload_digest(b"\xff not json").is_err());
    }

    #[test]
    fn garbage_manifests_and_annotations_are_named_not_panicked_on() {
        assert!(layers(b"[]").is_err());
        assert!(layers(b"{\"layers\": 3}").is_err());
        let m = format!(
            r#"{{"layers":[
                {{"mediaType":"{SIMPLE_SIGNING}","digest":"sha256:{h}","size":2,"annotations":{{"{SIGNATURE_ANNOTATION}":"%%%"}}}},
                {{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:{h}","size":2}},
                {{"mediaType":"{SIMPLE_SIGNING}","digest":"sha256:../../x","size":2}}
            ]}}"#,
            h = "a".repeat(64)
        );
        let got = layers(m.as_bytes()).unwrap();
        assert_eq!(got.len(), 3);
        assert!(got[0].as_ref().unwrap().signature.is_err());
        assert!(got[1].is_err() && got[2].is_err());
    }
}
