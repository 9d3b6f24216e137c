//! ferry: policy-driven OCI image replication. `docs/architecture.md` is the map: which
//! module owns what, the layer table the imports follow (checked by
//! `tests/e2e/architecture.rs`), and the path of a sync and of a webhook through the code.

#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod copy;
pub mod daemon;
pub mod events;
pub mod ledger;
pub mod model;
pub mod notify;
pub mod plan;
pub mod probe;
pub mod registry;
pub mod run;
pub mod signals;
pub mod state;
pub mod telemetry;
pub mod verify;

#[cfg(test)]
mod props;
