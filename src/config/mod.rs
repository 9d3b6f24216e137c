//! The main config and the policy files: TOML → validated types, every problem reported
//! as `FILE:LINE:COL: message`. Imports only `model`.
//!
//! One file per part: `daemon` (`[daemon]`), `registries` (`[registries.*]` and bare URLs),
//! `policies` (the policy folder), `cluster` (`[cluster]`), `types` (what a policy is),
//! `check` (shared validation).
//!
//! The checks here return a problem as text (`Result<_, String>`): it becomes a diagnostic
//! with its position at once, all problems are printed together, and nothing matches on
//! them. Parsed values are typed; only the problems are words.

mod check;
mod cluster;
mod daemon;
mod diag;
mod flows;
mod hint;
mod notify;
mod policies;
mod raw;
mod registries;
mod require;
pub mod schedule;
mod tls;
mod types;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use cluster::ClusterSettings;
pub use daemon::DaemonSettings;
pub use diag::Diagnostic;
use diag::Sink;
pub use notify::{NotifyOn, NotifySpec};
use raw::RawConfig;
pub use registries::RegistrySpec;
pub use tls::ListenerTls;
pub use types::{
    AttestationRule, MaxDelete, Platform, Policy, RepoSelector, Require, TagRules, Trigger, Want,
};

pub struct Config {
    pub file: PathBuf,
    pub daemon: DaemonSettings,
    /// Named registries, plus one anonymous entry per bare URL used in a policy (keyed by the URL).
    pub registries: BTreeMap<String, RegistrySpec>,
    pub policies: Vec<Policy>,
    pub notify: Vec<NotifySpec>,
    /// `[cluster]`: coordinate with other daemons through etcd; `None`: this daemon runs alone.
    pub cluster: Option<ClusterSettings>,
    /// Things that work but are probably not what was meant; `validate` prints them, nothing refuses them.
    pub warnings: Vec<Diagnostic>,
    /// The environment variables secrets come from (`*_env`).
    pub secret_env: Vec<String>,
}

/// Read and check the main config and every policy file. Returns every problem found.
pub fn load(path: &Path) -> Result<Config, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let src = read_bounded(path).map_err(|e| {
        let hint = if path.exists() {
            ""
        } else {
            "; name the config with --config FILE or FERRY_CONFIG, or write a first one with `ferry init`"
        };
        vec![Diagnostic::file(path, format!("{e}{hint}"))]
    })?;
    let raw: RawConfig =
        toml::from_str(&src).map_err(|e| vec![Diagnostic::from_toml(path, &src, &e)])?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut warnings = Vec::new();
    let mut sink = Sink {
        file: path,
        src: &src,
        out: &mut diags,
        warned: &mut warnings,
    };
    let daemon = daemon::daemon_settings(&raw, base, &mut sink);
    let notify = notify::notify_specs(&raw, base, &mut sink);
    let cluster = cluster::cluster_settings(&raw, base, &mut sink);
    let mut registries = BTreeMap::new();
    for (name, reg) in &raw.registries {
        if let Some(spec) = registries::registry_spec(name, reg, base, &mut sink) {
            registries.insert(name.clone(), spec);
        }
    }
    let (policies, places) = policies::load_policies(
        &daemon.policies_dir,
        &raw.registries,
        &mut registries,
        daemon.trusted_root.as_ref(),
        &mut diags,
        &mut warnings,
    );
    flows::check(&policies, &places, &registries, &mut diags, &mut warnings);
    cleartext(path, &registries, &notify, cluster.as_ref(), &mut warnings);
    if !daemon.listen.ip().is_loopback() && daemon.tls.is_none() {
        warnings.push(Diagnostic::file(
            path,
            format!(
                "daemon.listen = {} is reachable from other hosts without TLS: tokens and status cross the network in clear; set daemon.tls_cert_file and tls_key_file",
                daemon.listen
            ),
        ));
    }
    if (daemon.tls.as_ref()).is_some_and(|t| t.mutual && t.client_identity.is_none()) {
        warnings.push(Diagnostic::file(
            path,
            "daemon.tls_client_ca_file: `ferry sync` and `ferry status` beside this daemon have no certificate to present; set daemon.tls_client_cert_file and tls_client_key_file for them",
        ));
    }
    for p in policies.iter().filter(|p| p.events) {
        let own = registries
            .get(&p.source)
            .is_some_and(|r| r.webhook_token.is_some());
        let msg = match (own, daemon.api_token.is_some()) {
            (true, _) => continue,
            (false, false) => format!(
                "policy `{}` has events = true, but neither registries.{src}.webhook_token nor the daemon's api_token is set, so its webhooks are refused (403)",
                p.name,
                src = p.source
            ),
            (false, true) => format!(
                "policy `{}`: webhooks from `{src}` authenticate with the admin api_token, which also runs policies and forces deletes; give the sender its own token: [registries.{src}] webhook_token_file",
                p.name,
                src = p.source
            ),
        };
        warnings.push(Diagnostic::file(path, msg));
        break;
    }
    if diags.is_empty() {
        Ok(Config {
            file: path.to_owned(),
            daemon,
            registries,
            policies,
            notify,
            cluster,
            warnings,
            secret_env: raw.secret_env(),
        })
    } else {
        Err(diags)
    }
}

/// The policy names the config's policy folder defines, for shell completion: read without
/// checking anything else (the shell completing them may lack the credentials), and empty
/// when the config cannot be read.
pub fn policy_names(path: &Path) -> Vec<String> {
    let Ok(src) = read_bounded(path) else {
        return Vec::new();
    };
    let Ok(raw) = toml::from_str::<RawConfig>(&src) else {
        return Vec::new();
    };
    let base = path.parent().unwrap_or(Path::new("."));
    let mut sink = Sink {
        file: path,
        src: &src,
        out: &mut Vec::new(),
        warned: &mut Vec::new(),
    };
    policies::names(&daemon::daemon_settings(&raw, base, &mut sink).policies_dir)
}

/// Credentials configured for a plain-http endpoint off this machine cross the network in
/// clear: allowed (a lab, a sidecar), said by `validate`.
fn cleartext(
    path: &Path,
    registries: &BTreeMap<String, RegistrySpec>,
    notify: &[NotifySpec],
    cluster: Option<&ClusterSettings>,
    warnings: &mut Vec<Diagnostic>,
) {
    let remote_http = |u: &url::Url| {
        u.scheme() == "http"
            && !matches!(u.host(), Some(url::Host::Domain("localhost")))
            && !u
                .host_str()
                .and_then(|h| h.trim_matches(['[', ']']).parse::<std::net::IpAddr>().ok())
                .is_some_and(|ip| ip.is_loopback())
    };
    let mut said = |what: String| warnings.push(Diagnostic::file(path, what));
    for (name, r) in registries {
        if r.credentials.is_some() && remote_http(&r.url) {
            said(format!(
                "registries.{name}: credentials are sent over plain http to {}; use https://",
                r.url.origin().ascii_serialization()
            ));
        }
    }
    for (i, n) in notify.iter().enumerate() {
        if (n.bearer_token.is_some() || !n.headers.is_empty()) && remote_http(&n.url) {
            said(format!(
                "notify[{i}]: its token or headers are sent over plain http to {}; use https://",
                n.url.origin().ascii_serialization()
            ));
        }
    }
    if let Some(c) = cluster.filter(|c| c.login.is_some()) {
        for e in c
            .etcd
            .iter()
            .filter_map(|e| url::Url::parse(e).ok())
            .filter(|u| remote_http(u))
        {
            said(format!("cluster: the etcd password is sent over plain http to {}; use https:// with ca_file", e.origin().ascii_serialization()));
        }
    }
}

/// Largest config or policy file read: far beyond any real one, small enough that a file
/// generated by mistake (or `/dev/zero` behind a symlink) is refused instead of filling memory.
const MAX_FILE: u64 = 8 << 20;

/// A config file's text: a regular file (a FIFO would block `validate` for good), at most
/// MAX_FILE bytes, UTF-8. Symlink loops fail in `metadata` with the OS's own words.
// The problem is a diagnostic's text (see the module doc).
fn read_bounded(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    if !meta.is_file() {
        return Err("cannot read: not a regular file".into());
    }
    let mut buf = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_FILE + 1).read_to_end(&mut buf))
        .map_err(|e| format!("cannot read: {e}"))?;
    if buf.len() as u64 > MAX_FILE {
        return Err(format!(
            "cannot read: larger than {} MiB; a config file is a few KiB",
            MAX_FILE >> 20
        ));
    }
    String::from_utf8(buf).map_err(|e| {
        format!(
            "cannot read: not UTF-8 text (byte {})",
            e.utf8_error().valid_up_to()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RepoName;

    #[test]
    fn templates_render() {
        let src: RepoName = "team/app".parse().unwrap();
        assert_eq!(
            types::render_template("mirror/{name}", &src)
                .unwrap()
                .as_str(),
            "mirror/app"
        );
        assert_eq!(
            types::render_template("{repository}", &src)
                .unwrap()
                .as_str(),
            "team/app"
        );
        assert!(types::render_template("Bad/{name}", &src).is_err());
    }

    #[test]
    fn globs_respect_path_parts() {
        let g = policies::glob("base/*").unwrap().compile_matcher();
        assert!(g.is_match("base/alpine") && !g.is_match("base/a/b"));
        assert!(policies::glob("apps/**")
            .unwrap()
            .compile_matcher()
            .is_match("apps/a/b"));
    }

    #[test]
    fn diagnostics_have_line_and_column() {
        let d = Diagnostic::at(Path::new("p.toml"), "a = 1\nbb = 2\n", 7..8, "boom");
        assert_eq!(d.to_string(), "p.toml:2:2: boom");
    }
}
