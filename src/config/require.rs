//! `[policy.require]`: promotion gates, and whom a signature must be from: keys
//! (`signed_by`) and keyless identities (`signer`, under `[daemon] sigstore_trusted_root`).

use std::path::Path;
use std::sync::Arc;

use regex::Regex;
use toml::Spanned;

use super::diag::Sink;
use super::raw::{RawRequire, RawSigner};
use super::schedule;
use super::types::{AttestationRule, Require, Want};
use crate::verify::{Identity, Signer, Trust, TrustedKey, TrustedRoot};

/// A key file is a few hundred bytes; anything past this is not one.
const MAX_KEY_FILE: u64 = 64 << 10;

pub(super) fn require(
    r: &RawRequire,
    policy_file: &Path,
    root: Option<&Arc<TrustedRoot>>,
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
    let tlog = r.require_tlog.as_ref().is_some_and(|t| *t.get_ref());
    if let Some(t) = r.require_tlog.as_ref().filter(|t| *t.get_ref()) {
        if root.is_none() {
            sink.err(
                t.span(),
                ctx("require.require_tlog: log entries are checked against the Rekor keys of [daemon] sigstore_trusted_root, which is not set"),
            );
        }
    }
    let scope = Scope { base, root, tlog };
    require.signature = trust(&r.signed_by, &r.signer, &scope, "require", sink, ctx);
    for a in r.attestation.iter().flatten() {
        let field = "require.attestation";
        if a.signed_by.is_none() && a.signer.is_none() {
            sink.err(
                a.predicate_type.span(),
                ctx(&format!("{field}: name whom its statement must be signed by: signed_by = [\"keys/builder.pub\"] or a [[policy.require.attestation.signer]]")),
            );
            continue;
        }
        let trust = trust(&a.signed_by, &a.signer, &scope, field, sink, ctx);
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
            trust,
            matches,
        });
    }
    if let Some(s) = &r.signature {
        if *s.get_ref() && r.signed_by.is_none() && r.signer.is_none() {
            sink.err(
                s.span(),
                ctx(
                    "require.signature = true alone proves nothing: anyone who can push to \
                     the source can push a tag named like a signature. Name the keys a \
                     signature must verify under instead: signed_by = [\"keys/release.pub\"] \
                     (PEM public keys, relative to this file), or a keyless identity in \
                     [[policy.require.signer]]",
                ),
            );
        }
    }
    require
}

/// What every rule of one policy shares: where key files are, the trusted root, and
/// whether log entries are required.
struct Scope<'a> {
    base: &'a Path,
    root: Option<&'a Arc<TrustedRoot>>,
    tlog: bool,
}

/// One rule's `signed_by` and `signer`, each problem at its entry.
fn trust(
    signed_by: &Option<Spanned<Vec<Spanned<String>>>>,
    signer: &Option<Vec<RawSigner>>,
    scope: &Scope<'_>,
    field: &str,
    sink: &mut Sink,
    ctx: &dyn Fn(&str) -> String,
) -> Trust {
    let keys = signed_by.as_ref().map_or_else(Vec::new, |list| {
        keys(list, scope.base, &format!("{field}.signed_by"), sink, ctx)
    });
    let signers = signer
        .iter()
        .flatten()
        .filter_map(|s| self::signer(s, scope, &format!("{field}.signer"), sink, ctx))
        .collect();
    Trust {
        keys,
        signers,
        root: scope.root.cloned(),
        require_tlog: scope.tlog,
    }
}

fn signer(
    s: &RawSigner,
    scope: &Scope<'_>,
    field: &str,
    sink: &mut Sink,
    ctx: &dyn Fn(&str) -> String,
) -> Option<Signer> {
    let mut ok = true;
    if scope.root.is_none() {
        sink.err(
            s.issuer.span(),
            ctx(&format!("{field}: keyless certificates are checked against [daemon] sigstore_trusted_root, which is not set (a Sigstore trusted_root.json, e.g. from `cosign trusted-root create` or the TUF repository)")),
        );
        ok = false;
    }
    let issuer = s.issuer.get_ref().trim();
    if issuer.is_empty() {
        sink.err(s.issuer.span(), ctx(&format!("{field}.issuer is empty: name the OIDC issuer, e.g. https://token.actions.githubusercontent.com")));
        ok = false;
    }
    let identity = match (&s.identity, &s.identity_regex) {
        (Some(i), None) if !i.get_ref().is_empty() => Some(Identity::Exact(i.get_ref().clone())),
        (None, Some(r)) => match Regex::new(r.get_ref()) {
            Ok(re) => Some(Identity::Regex(re)),
            Err(e) => {
                sink.err(r.span(), ctx(&format!("{field}.identity_regex: {e}")));
                None
            }
        },
        (Some(_), Some(r)) => {
            sink.err(
                r.span(),
                ctx(&format!(
                    "{field}: give identity or identity_regex, not both"
                )),
            );
            None
        }
        _ => {
            sink.err(s.issuer.span(), ctx(&format!("{field}: name the certificate identity (its SAN) with identity = \"…\" or identity_regex = \"…\"")));
            None
        }
    };
    Some(Signer {
        issuer: issuer.to_owned(),
        identity: identity.filter(|_| ok)?,
    })
}

/// The keys of a `signed_by` list, each file's problem at its entry.
fn keys(
    list: &Spanned<Vec<Spanned<String>>>,
    base: &Path,
    field: &str,
    sink: &mut Sink,
    ctx: &dyn Fn(&str) -> String,
) -> Vec<TrustedKey> {
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
            Ok(key) => out.push(key),
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
