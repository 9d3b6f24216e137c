//! Logging setup. Logs go to stderr; stdout belongs to command output (`--json`).
//!
//! Field vocabulary: policy, target, repo, tag, digest, bytes, offset, size, attempt, error.
//! No secret, token, Authorization header or upload URL is ever a field.

use std::io::IsTerminal;

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `verbosity`: 0 = the command's default, positive = more, negative = less.
/// `RUST_LOG` overrides everything, in EnvFilter syntax.
pub fn init(format: LogFormat, verbosity: i8, default_level: &str) {
    let level = match verbosity {
        i8::MIN..=-2 => "error",
        -1 => "warn",
        0 => default_level,
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("ferry={level},warn")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
