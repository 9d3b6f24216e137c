//! `[policy.require]`: promotion gates, and the keys a signature must verify under.

use std::path::Path;

use regex::Regex;

use super::diag::Sink;
use super::raw::RawRequire;
use super::schedule;
use super::types::{AttestationRule, Require, SignedBy, Want};
use crate::verify::TrustedKey;

/// A key file is a few hundred bytes; anything past this is not one.
const MAX_KEY_FILE: u64 = 64 << 10;

pub(super) fn require(
    r: &RawRequire,
    policy_file: &Path,
    sink: &mut Sink,
    ctx: &dyn Fn(&str) -> String,
) -> Require {
    let mut require = Require {
        annotations: r.annotations.clone(),
        ..Require::default()
    };
    if let Some(a) = &r.min_age {
        match schedule::parse_interval(a.get_ref()) {
            Ok(d) => require.min_age = Some(d),
            Err(e) => sink.err(a.span(), ctx(&format!("require.min_age: {e}"))),
        }
    }
    let base = policy_file.parent().unwrap_or(Path::new("."));
    if let Some(list) = &r.signed_by {
        require.signed_by = keys(list, base, "require.signed_by", sink, ctx);
    }
    for a in r.attestation.iter().flatten() {
        let field = "require.attestation";
        let Some(list) = &a.signed_by else {
            sink.err(
                a.predicate_type.span(),
                ctx(&format!("{field}: signed_by is required (the keys its statement must verify under; keyless signers are not supported yet)")),
            );
            continue;
        };
        let signed_by = keys(list, base, "require.attestation.signed_by", sink, ctx);
        let mut matches = Vec::new();
        for (pointer, want) in &a.matches {
            if !pointer.starts_with('/') {
                sink.err(
                    a.predicate_type.span(),
                    ctx(&format!(
                        "{field}.match: `{pointer}` is not a JSON pointer (it starts with /)"
                    )),
                );
                continue;
            }
            let want = match want.strip_prefix("regex:") {
                None => Want::Exact(want.clone()),
                Some(re) => match Regex::new(re) {
                    Ok(re) => Want::Regex(re),
                    Err(e) => {
                        sink.err(
                            a.predicate_type.span(),
                            ctx(&format!("{field}.match `{pointer}`: {e}")),
                        );
                        continue;
                    }
                },
            };
            matches.push((pointer.clone(), want));
        }
        require.attestations.push(AttestationRule {
            predicate_type: a.predicate_type.get_ref().clone(),
            signed_by,
            matches,
        });
    }
    if let Some(s) = &r.signature {
        if *s.get_ref() && r.signed_by.is_none() {
            sink.err(
                s.span(),
                ctx(
                    "require.signature = true alone proves nothing: anyone who can push to \
                     the source can push a tag named like a signature. Name the keys a \
                     signature must verify under instead: signed_by = [\"keys/release.pub\"] \
                     (PEM public keys, relative to this file)",
                ),
            );
        }
    }
    require
}

/// The keys of a `signed_by` list, each file's problem at its entry.
fn keys(
    list: &toml::Spanned<Vec<toml::Spanned<String>>>,
    base: &Path,
    field: &str,
    sink: &mut Sink,
    ctx: &dyn Fn(&str) -> String,
) -> Vec<SignedBy> {
    if list.get_ref().is_empty() {
        sink.err(
            list.span(),
            ctx(&format!(
                "{field} is empty: name at least one public key file"
            )),
        );
    }
    let mut out = Vec::new();
    for f in list.get_ref() {
        let path = base.join(f.get_ref());
        match read_key(&path) {
            Ok(key) => out.push(SignedBy { file: path, key }),
            Err(why) => sink.err(f.span(), ctx(&format!("{field}: {}: {why}", f.get_ref()))),
        }
    }
    out
}

/// The key in a PEM file; the reason otherwise, never the file's content.
fn read_key(path: &Path) -> Result<TrustedKey, String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read it: {e}"))?;
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return Err("not a regular file".into());
    }
    let mut text = String::new();
    file.take(MAX_KEY_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|_| "not a text file".to_owned())?;
    if text.len() as u64 > MAX_KEY_FILE {
        return Err("larger than a public key file can be (64 KiB)".into());
    }
    TrustedKey::from_pem(&text).map_err(|e| e.to_string())
}
