//! ferry: policy-driven OCI image replication. See DESIGN.md §5 for the layering:
//! model ← config, registry, state ← plan ← copy ← app ← cli.

#![forbid(unsafe_code)]

pub mod app;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod copy;
pub mod daemon;
pub mod events;
pub mod model;
pub mod notify;
pub mod plan;
pub mod registry;
pub mod state;
pub mod telemetry;

#[cfg(test)]
mod props;
