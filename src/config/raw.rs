//! Serde mirror of the TOML files. Unknown keys are errors; every field keeps its span so
//! validation can point at the line.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

type S<T> = Spanned<T>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub daemon: RawDaemon,
    #[serde(default)]
    pub registries: BTreeMap<String, S<RawRegistry>>,
    #[serde(default)]
    pub notify: Vec<S<RawNotify>>,
    pub cluster: Option<S<RawCluster>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    pub etcd: S<Vec<S<String>>>,
    pub member: Option<S<String>>,
    pub lease_ttl: Option<S<String>>,
    pub prefix: Option<S<String>>,
    pub ca_file: Option<S<String>>,
    pub username: Option<S<String>>,
    pub password_env: Option<S<String>>,
    pub password_file: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotify {
    pub url: Option<S<String>>,
    /// The URL is itself the secret for some endpoints (Slack's incoming webhooks).
    pub url_env: Option<S<String>>,
    pub url_file: Option<S<String>>,
    pub on: S<Vec<S<String>>>,
    pub bearer_token_env: Option<S<String>>,
    pub bearer_token_file: Option<S<String>>,
    #[serde(default)]
    pub headers: BTreeMap<String, S<String>>,
    /// Header name → the environment variable, or the file, holding its value.
    #[serde(default)]
    pub headers_env: BTreeMap<String, S<String>>,
    #[serde(default)]
    pub headers_file: BTreeMap<String, S<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDaemon {
    pub state_dir: Option<S<String>>,
    pub policies: Option<S<String>>,
    pub listen: Option<S<String>>,
    pub chunk_size: Option<S<String>>,
    pub max_concurrent_blobs: Option<S<i64>>,
    pub bandwidth_limit: Option<S<String>>,
    pub stop_timeout: Option<S<String>>,
    pub api_token_env: Option<S<String>>,
    pub api_token_file: Option<S<String>>,
    pub read_token_env: Option<S<String>>,
    pub read_token_file: Option<S<String>>,
    pub tls_cert_file: Option<S<String>>,
    pub tls_key_file: Option<S<String>>,
    pub tls_client_ca_file: Option<S<String>>,
    pub tls_ca_file: Option<S<String>>,
    pub tls_client_cert_file: Option<S<String>>,
    pub tls_client_key_file: Option<S<String>>,
    pub public_url: Option<S<String>>,
    pub max_pending_events: Option<S<i64>>,
    pub run_history: Option<S<i64>>,
    pub audit_retention: Option<S<String>>,
    pub audit_max_entries: Option<S<i64>>,
    pub audit_archive: Option<S<String>>,
    pub sigstore_trusted_root: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRegistry {
    pub url: S<String>,
    pub username: Option<S<String>>,
    pub password_env: Option<S<String>>,
    pub password_file: Option<S<String>>,
    pub docker_config: Option<S<bool>>,
    pub ca_file: Option<S<String>>,
    pub max_concurrent: Option<S<i64>>,
    pub bandwidth_limit: Option<S<String>>,
    pub rate_limit_reserve: Option<S<i64>>,
    pub rate_limit_max_wait: Option<S<String>>,
    pub request_timeout: Option<S<String>>,
    pub retry_timeout: Option<S<String>>,
    pub stall_timeout: Option<S<String>>,
    pub list_limit: Option<S<i64>>,
    pub list_timeout: Option<S<String>>,
    pub upload: Option<S<String>>,
    pub trusted_origins: Option<Vec<S<String>>>,
    pub webhook_token_env: Option<S<String>>,
    pub webhook_token_file: Option<S<String>>,
    pub layout_mode: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicyFile {
    #[serde(default)]
    pub policy: Vec<S<RawPolicy>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    pub name: S<String>,
    pub source: S<String>,
    pub targets: S<Vec<S<String>>>,
    pub schedule: Option<S<String>>,
    pub timezone: Option<S<String>>,
    pub interval: Option<S<String>>,
    pub jitter: Option<S<String>>,
    pub repositories: S<Vec<S<String>>>,
    #[serde(default)]
    pub exclude_repositories: Vec<S<String>>,
    pub target_repository: Option<S<String>>,
    pub overwrite: Option<bool>,
    pub tags: Option<RawTags>,
    pub platforms: Option<Vec<S<String>>>,
    pub referrers: Option<S<bool>>,
    pub delete: Option<S<bool>>,
    pub prune: Option<S<bool>>,
    pub max_delete: Option<S<toml::Value>>,
    pub require: Option<RawRequire>,
    pub events: Option<S<bool>>,
    pub verify_interval: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRequire {
    pub signature: Option<S<bool>>,
    pub signed_by: Option<S<Vec<S<String>>>>,
    pub signer: Option<Vec<RawSigner>>,
    pub require_tlog: Option<S<bool>>,
    pub attestation: Option<Vec<RawAttestation>>,
    pub min_age: Option<S<String>>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// `[[policy.require.signer]]`: a keyless (Sigstore) identity.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSigner {
    pub issuer: S<String>,
    pub identity: Option<S<String>>,
    pub identity_regex: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTags {
    #[serde(default)]
    pub include: Vec<S<String>>,
    #[serde(default)]
    pub exclude: Vec<S<String>>,
    pub semver: Option<S<String>>,
    pub latest: Option<S<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAttestation {
    pub predicate_type: S<String>,
    pub signed_by: Option<S<Vec<S<String>>>>,
    pub signer: Option<Vec<RawSigner>>,
    #[serde(rename = "match", default)]
    pub matches: BTreeMap<String, String>,
}

impl RawConfig {
    /// The environment variables the config reads secrets from: kept from the credential
    /// helpers ferry starts, which need none of them.
    pub fn secret_env(&self) -> Vec<String> {
        let d = &self.daemon;
        let mut out: Vec<&Option<S<String>>> = vec![&d.api_token_env, &d.read_token_env];
        for r in self.registries.values() {
            out.extend([&r.get_ref().password_env, &r.get_ref().webhook_token_env]);
        }
        for n in &self.notify {
            out.extend([&n.get_ref().bearer_token_env, &n.get_ref().url_env]);
        }
        if let Some(c) = &self.cluster {
            out.push(&c.get_ref().password_env);
        }
        out.into_iter()
            .flatten()
            .map(|v| v.get_ref().clone())
            .collect()
    }
}
