//! Composition root: validated config → one `Registry` per endpoint, the state store, the
//! shared copy limits and the notifier, handed to the [`Runner`]. The only place where config
//! meets the registry and copy layers; it builds things and carries them over a reload, and
//! runs nothing itself.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::{Config, Policy};
use crate::copy::{CopyOptions, CopyShared};
use crate::ledger::{Ledger, Retention};
use crate::notify::Notifier;
use crate::registry::{Endpoint, Registry, RegistryError, RetryPolicy};
use crate::run::Runner;
use crate::state::{StateError, StateStore};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("no policy named `{0}` (see `ferry validate` for the list)")]
    UnknownPolicy(String),
}

pub struct App {
    pub config: Config,
    runner: Runner,
}

impl App {
    /// Open the state store named by the config, creating its folder.
    ///
    /// # Errors
    /// When the folder cannot be created or another ferry process holds the store.
    pub fn open_state(config: &Config) -> Result<StateStore, AppError> {
        Ok(StateStore::open(Self::state_dir(config)?)?)
    }

    /// As [`App::open_state`], without waiting for a store another process holds.
    ///
    /// # Errors
    /// As [`App::open_state`].
    pub fn try_open_state(config: &Config) -> Result<StateStore, AppError> {
        Ok(StateStore::try_open(Self::state_dir(config)?)?)
    }

    fn state_dir(config: &Config) -> Result<&std::path::Path, StateError> {
        let dir = &config.daemon.state_dir;
        std::fs::create_dir_all(dir).map_err(|e| StateError::Open {
            path: dir.display().to_string(),
            source: e.into(),
        })?;
        Ok(dir)
    }

    /// Build one registry client per endpoint. `state` is needed to run policies, not to plan.
    ///
    /// # Errors
    /// A registry client that cannot be built (bad CA).
    pub fn new(config: Config, state: Option<StateStore>) -> Result<Self, AppError> {
        crate::registry::keep_from_helpers(&config.secret_env);
        let mut registries = BTreeMap::new();
        for (key, spec) in &config.registries {
            registries.insert(key.clone(), Registry::new(endpoint(spec))?);
        }
        let d = &config.daemon;
        let shared = CopyShared::new(CopyOptions {
            chunk_size: d.chunk_size.0,
            max_concurrent_blobs: d.max_concurrent_blobs,
            bandwidth_limit: d.bandwidth_limit.map(|b| b.0),
        });
        let notifier = Notifier::new(config.notify.clone());
        let ledger = state.as_ref().map(|s| {
            Arc::new(Ledger::new(
                s.clone(),
                Retention {
                    max_age: d.audit_retention,
                    max_entries: d.audit_max_entries,
                    archive: d.audit_archive.clone(),
                },
            ))
        });
        let member = match &config.cluster {
            Some(c) => c.member.clone(),
            None => crate::model::hostname(),
        };
        let runner = Runner::new(registries, state, shared, notifier, d.run_history)
            .recording(ledger, member);
        Ok(App { config, runner })
    }

    /// The audit ledger (none without a state store).
    pub fn ledger(&self) -> Option<&Arc<Ledger>> {
        self.runner.ledger()
    }

    /// The config after a reload, keeping what `older` learnt that is still true (see
    /// [`Runner::carry_over`]).
    pub fn after(mut self, older: &App) -> Self {
        let same_notify = self.config.notify == older.config.notify;
        self.runner.carry_over(&older.runner, same_notify);
        self
    }

    /// What runs policies for this config.
    pub fn runner(&self) -> &Runner {
        &self.runner
    }

    /// The named policies, or all of them when `names` is empty.
    ///
    /// # Errors
    /// A name that matches no policy.
    pub fn select(&self, names: &[String]) -> Result<Vec<&Policy>, AppError> {
        if names.is_empty() {
            return Ok(self.config.policies.iter().collect());
        }
        names
            .iter()
            .map(|n| {
                self.policy(n)
                    .ok_or_else(|| AppError::UnknownPolicy(n.clone()))
            })
            .collect()
    }

    pub fn policy(&self, name: &str) -> Option<&Policy> {
        self.config.policies.iter().find(|p| p.name == name)
    }
}

/// How to reach a configured registry.
fn endpoint(spec: &crate::config::RegistrySpec) -> Endpoint {
    Endpoint {
        name: spec.name.clone(),
        url: spec.url.clone(),
        credentials: spec.credentials.clone(),
        ca_pem: spec.ca_pem.clone(),
        max_concurrent: spec.max_concurrent,
        bandwidth_limit: spec.bandwidth_limit.map(|b| b.0),
        retry: spec
            .retry_timeout
            .map_or_else(RetryPolicy::default, RetryPolicy::lasting),
        request_timeout: spec.request_timeout,
        stall_timeout: spec.stall_timeout,
        list_limit: spec.list_limit,
        list_timeout: spec.list_timeout,
        rate_limit_reserve: spec.rate_limit_reserve,
        rate_limit_max_wait: spec.rate_limit_max_wait,
        upload: spec.upload,
        trusted_origins: spec.trusted_origins.clone(),
        layout_shared: spec.layout_shared,
    }
}
