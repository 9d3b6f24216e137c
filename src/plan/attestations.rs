//! The attestation gate (`[[policy.require.attestation]]`): a signed in-toto statement of
//! the wanted predicate type about the exact digest, whose predicate has what `match` asks.
//! Statements come from cosign's `.att` tag (DSSE layers) and from v3 bundle referrers.

use serde_json::Value;

use super::reads::SourceReads;
use super::referrers;
use super::signatures::{bundle_check, digest_and_size, payload};
use super::PlanError;
use crate::config::AttestationRule;
use crate::model::{Digest, RepoName, Tag};
use crate::verify::dsse::{self, Statement};
use crate::verify::{bundle, Evidence, Finding, Material, Tally, Verifier};

const DSSE_LAYER: &str = "application/vnd.dsse.envelope.v1+json";

/// The evidence that `subject` carries an attestation meeting `rule`, or why not.
///
/// # Errors
/// A source that cannot be read.
pub(super) async fn attested(
    source: &SourceReads<'_>,
    repo: &RepoName,
    src_tags: &[Tag],
    subject: &Digest,
    rule: &AttestationRule,
) -> Result<Result<Evidence, String>, PlanError> {
    let trust = &rule.trust;
    let mut tally = Tally::default();
    let mut judge = |found: Result<(Verifier, Option<Statement>), Finding>, sig: &Digest| {
        let f = match found {
            Ok((by, Some(st))) if st.predicate_type == rule.predicate_type => {
                match mismatch(rule, &st.predicate) {
                    None => {
                        return Some(Evidence {
                            by,
                            signature: sig.clone(),
                        })
                    }
                    Some(why) => Finding::NotSignature(why),
                }
            }
            Ok((_, Some(st))) => {
                Finding::NotSignature(format!("a statement of {}", st.predicate_type))
            }
            Ok((_, None)) => Finding::NotSignature("a signature, not an attestation".into()),
            Err(f) => f,
        };
        tally.add(&f);
        None
    };
    let att = format!("sha256-{}.att", subject.hex());
    if src_tags.iter().any(|t| t.as_str() == att) {
        if let Some(m) = source.get_manifest(repo, &att).await? {
            let v: Value = serde_json::from_slice(&m.bytes).unwrap_or(Value::Null);
            for l in v
                .get("layers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if l.get("mediaType").and_then(Value::as_str) != Some(DSSE_LAYER) {
                    continue;
                }
                let Some((d, size)) = digest_and_size(l) else {
                    continue;
                };
                let found = match payload(source, repo, &d, size).await? {
                    Err(why) => Err(Finding::NotSignature(why)),
                    Ok(b) => match serde_json::from_slice::<Value>(&b) {
                        Err(_) => Err(Finding::NotSignature("an envelope that is not JSON".into())),
                        Ok(env) => dsse::check(
                            &env,
                            subject,
                            trust,
                            &Material::from_annotations(l.get("annotations")),
                        )
                        .map(|(by, st)| (by, Some(st))),
                    },
                };
                if let Some(e) = judge(found, &m.digest) {
                    return Ok(Ok(e));
                }
            }
        }
    }
    for r in referrers::of(source, repo, subject, src_tags).await? {
        let Some(m) = source.get_manifest(repo, r.as_str()).await? else {
            continue;
        };
        let Ok(v) = serde_json::from_slice::<Value>(&m.bytes) else {
            continue;
        };
        if v.pointer("/subject/digest").and_then(Value::as_str) != Some(subject.as_str())
            || v.get("artifactType").and_then(Value::as_str) != Some(bundle::BUNDLE)
        {
            continue;
        }
        let found = bundle_check(source, repo, &v, subject, trust).await?;
        if let Some(e) = judge(found, &m.digest) {
            return Ok(Ok(e));
        }
    }
    Ok(Err(tally.reason(
        &format!("attestation of {}", rule.predicate_type),
        trust.under(),
    )))
}

/// The first `match` the predicate fails, said.
fn mismatch(rule: &AttestationRule, predicate: &Value) -> Option<String> {
    rule.matches.iter().find_map(|(pointer, want)| {
        match predicate.pointer(pointer).and_then(Value::as_str) {
            Some(got) if want.accepts(got) => None,
            Some(got) => Some(format!("a predicate whose {pointer} is {got:?}")),
            None => Some(format!("a predicate without {pointer}")),
        }
    })
}
