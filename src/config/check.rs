//! Validation helpers shared by every part of the config.

use std::ops::Range;
use std::path::Path;

use toml::Spanned;

use super::diag::Sink;
use crate::model::{ByteSize, Secret};

/// A secret given as `<name>_env` (an environment variable) or `<name>_file` (a file, relative
/// to the config; the trailing newline `echo pw > file` leaves is not part of it), never both.
/// `field` is the full name without the suffix (`registries.hub.password`). Also the span it
/// came from, for checks the caller makes on the value.
pub(super) fn secret(
    env: Option<&Spanned<String>>,
    file: Option<&Spanned<String>>,
    field: &str,
    base: &Path,
    sink: &mut Sink,
) -> Option<(Secret, Range<usize>)> {
    match (env, file) {
        (Some(_), Some(f)) => {
            sink.err(
                f.span(),
                format!("{field}_file: give {field}_env or {field}_file, not both"),
            );
            None
        }
        (Some(e), None) => match std::env::var(e.get_ref()) {
            Ok(v) if !v.is_empty() => Some((Secret::new(v), e.span())),
            found => {
                let why = match found {
                    Ok(_) => "is set but empty",
                    Err(std::env::VarError::NotUnicode(_)) => "is not valid UTF-8",
                    Err(std::env::VarError::NotPresent) => "is not set",
                };
                sink.err(
                    e.span(),
                    format!("{field}_env: environment variable `{}` {why}", e.get_ref()),
                );
                None
            }
        },
        (None, Some(f)) => match std::fs::read_to_string(base.join(f.get_ref())) {
            Ok(v) => {
                if let Some(mode) = shared_mode(&base.join(f.get_ref())) {
                    sink.warn(
                        f.span(),
                        format!(
                            "{field}_file: `{}` is readable by other users (mode {mode:04o}): chmod 600 it",
                            f.get_ref()
                        ),
                    );
                }
                Some((Secret::new(v.trim_end_matches(['\n', '\r'])), f.span()))
            }
            Err(e) => {
                sink.err(
                    f.span(),
                    format!("{field}_file: cannot read `{}`: {e}", f.get_ref()),
                );
                None
            }
        },
        (None, None) => None,
    }
}

/// `username` with `password_env` or `password_file` under `section` (`registries.hub`,
/// `cluster`): both, or neither. `span`: the section's, for a password without a username.
pub(super) fn login(
    username: Option<&Spanned<String>>,
    env: Option<&Spanned<String>>,
    file: Option<&Spanned<String>>,
    section: &str,
    span: Range<usize>,
    base: &Path,
    sink: &mut Sink,
) -> Option<(String, Secret)> {
    let password = secret(env, file, &format!("{section}.password"), base, sink).map(|(p, _)| p);
    match (username, password) {
        (Some(u), Some(p)) => Some((u.get_ref().clone(), p)),
        (Some(u), None) if env.is_none() && file.is_none() => {
            sink.err(
                u.span(),
                format!("{section}.username: needs password_env or password_file"),
            );
            None
        }
        (None, Some(_)) => {
            sink.err(
                span,
                format!("{section}: a password is given but no username"),
            );
            None
        }
        _ => None,
    }
}

pub(super) fn positive(n: &Spanned<i64>, field: &str, sink: &mut Sink) -> Option<usize> {
    match usize::try_from(*n.get_ref()) {
        Ok(v) if (1..=1024).contains(&v) => Some(v),
        _ => {
            sink.err(n.span(), format!("{field}: must be between 1 and 1024"));
            None
        }
    }
}

pub(super) fn rate(b: &Spanned<String>, field: &str, sink: &mut Sink) -> Option<ByteSize> {
    let s = b.get_ref().trim();
    match s.strip_suffix("/s").unwrap_or(s).parse::<ByteSize>() {
        Ok(v) if v.0 > 0 => Some(v),
        Ok(_) => {
            sink.err(b.span(), format!("{field}: must be more than 0"));
            None
        }
        Err(e) => {
            sink.err(b.span(), format!("{field}: {e}"));
            None
        }
    }
}

// The problem is a diagnostic's text (see the config module doc).
pub(super) fn parse_url(s: &str) -> Result<url::Url, String> {
    // A folder of OCI image layouts (air-gapped sites): `oci:/absolute/path`.
    if let Some(path) = s.strip_prefix("oci:") {
        if !path.starts_with('/') || path.contains("/../") || path.ends_with("/..") {
            return Err(format!(
                "`{s}`: an OCI layout folder is written oci:/absolute/path"
            ));
        }
        return url::Url::parse(&format!("oci:{}", path.trim_end_matches('/')))
            .map_err(|e| format!("`{s}` is not a path: {e}"));
    }
    let url = url::Url::parse(s).map_err(|e| format!("`{s}` is not a URL: {e}"))?;
    if !url.username().is_empty() || url.password().is_some() {
        // Never echo it: the password is in it. A URL is printed by validate, plan, status
        // and metrics labels, so credentials belong in their own fields.
        let mut bare = url.clone();
        let _ = bare.set_username("");
        let _ = bare.set_password(None);
        return Err(format!(
            "`{bare}` was given with a user and password in it; URLs are printed (plan, status, \
             metrics), so name the registry by its bare URL and put the credentials in \
             username and password_env or password_file (or docker_config = true)"
        ));
    }
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!("`{s}` must be an http:// or https:// URL with a host, or oci:/path for a folder of OCI layouts"));
    }
    if url.path() != "/" || url.query().is_some() {
        return Err(format!(
            "`{s}` must be the registry's root (no path or query)"
        ));
    }
    Ok(url)
}

pub(super) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A PEM bundle of CA certificates (`ca_file`), relative to the config.
pub(super) fn pem_file(
    f: &Spanned<String>,
    field: &str,
    base: &Path,
    sink: &mut Sink,
) -> Option<Vec<u8>> {
    match std::fs::read(base.join(f.get_ref())) {
        Ok(pem) if pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") => Some(pem),
        Ok(_) => {
            sink.err(
                f.span(),
                format!("{field}: `{}` holds no PEM certificate", f.get_ref()),
            );
            None
        }
        Err(e) => {
            sink.err(
                f.span(),
                format!("{field}: cannot read `{}`: {e}", f.get_ref()),
            );
            None
        }
    }
}

/// The permission bits of a secret's file when its group or others may read it.
fn shared_mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o7777;
    (mode & 0o044 != 0).then_some(mode)
}
