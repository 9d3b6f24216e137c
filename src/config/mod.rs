//! The main config and the policy files: TOML → validated types, every problem reported
//! as `FILE:LINE:COL: message`. Imports only `model`.
//!
//! One file per part: `daemon` (`[daemon]`), `registries` (`[registries.*]` and bare URLs),
//! `policies` (the policy folder), `types` (what a policy is), `check` (shared validation).

mod check;
mod daemon;
mod diag;
mod policies;
mod raw;
mod registries;
pub mod schedule;
mod types;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use daemon::DaemonSettings;
pub use diag::Diagnostic;
use diag::Sink;
use raw::RawConfig;
pub use registries::RegistrySpec;
pub use types::{MaxDelete, Platform, Policy, RepoSelector, Require, TagRules, Trigger};

pub struct Config {
    pub file: PathBuf,
    pub daemon: DaemonSettings,
    /// Named registries, plus one anonymous entry per bare URL used in a policy (keyed by the URL).
    pub registries: BTreeMap<String, RegistrySpec>,
    pub policies: Vec<Policy>,
    /// Things that work but are probably not what was meant; `validate` prints them, nothing refuses them.
    pub warnings: Vec<Diagnostic>,
}

/// Read and check the main config and every policy file. Returns every problem found.
pub fn load(path: &Path) -> Result<Config, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let src = std::fs::read_to_string(path).map_err(|e| vec![Diagnostic::file(path, format!("cannot read: {e}"))])?;
    let raw: RawConfig = toml::from_str(&src).map_err(|e| vec![Diagnostic::from_toml(path, &src, &e)])?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut sink = Sink { file: path, src: &src, out: &mut diags };
    let daemon = daemon::daemon_settings(&raw, base, &mut sink);
    let mut registries = BTreeMap::new();
    for (name, reg) in &raw.registries {
        if let Some(spec) = registries::registry_spec(name, reg, base, &mut sink) {
            registries.insert(name.clone(), spec);
        }
    }
    let mut warnings = Vec::new();
    let policies = policies::load_policies(&daemon.policies_dir, &raw.registries, &mut registries, &mut diags);
    if daemon.api_token.is_none() {
        if let Some(p) = policies.iter().find(|p| p.events) {
            warnings.push(Diagnostic::file(
                path,
                format!(
                    "policy `{}` has events = true, but the daemon API has no token, so webhooks are refused (403): set daemon.api_token_env or daemon.api_token_file",
                    p.name
                ),
            ));
        }
    }
    if diags.is_empty() {
        Ok(Config { file: path.to_owned(), daemon, registries, policies, warnings })
    } else {
        Err(diags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RepoName;

    #[test]
    fn templates_render() {
        let src: RepoName = "team/app".parse().unwrap();
        assert_eq!(types::render_template("mirror/{name}", &src).unwrap().as_str(), "mirror/app");
        assert_eq!(types::render_template("{repository}", &src).unwrap().as_str(), "team/app");
        assert!(types::render_template("Bad/{name}", &src).is_err());
    }

    #[test]
    fn globs_respect_path_parts() {
        let g = policies::glob("base/*").unwrap().compile_matcher();
        assert!(g.is_match("base/alpine") && !g.is_match("base/a/b"));
        assert!(policies::glob("apps/**").unwrap().compile_matcher().is_match("apps/a/b"));
    }

    #[test]
    fn diagnostics_have_line_and_column() {
        let d = Diagnostic::at(Path::new("p.toml"), "a = 1\nbb = 2\n", 7..8, "boom");
        assert_eq!(d.to_string(), "p.toml:2:2: boom");
    }
}
