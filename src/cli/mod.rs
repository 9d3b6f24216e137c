//! Command line: one file per command; each returns its exit code: 0 success, 1 something
//! failed (the rest still ran), 2 bad config or usage (the README's table).

mod audit;
mod daemon;
mod docs;
mod exposure;
mod init;
mod man;
mod plan;
mod probe;
mod remote;
mod status;
mod sync;
mod validate;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::Config;
use crate::telemetry::LogFormat;

/// `0.1.0 (commit 1a2b3c4d5e6f, built 2026-12-04)`: enough to tell two builds apart.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("FERRY_COMMIT"),
    ", built ",
    env!("FERRY_BUILD_DATE"),
    ")"
);

pub use docs::command;

#[derive(Parser)]
#[command(
    version = VERSION,
    about = "Policy-driven OCI image replication",
    after_help = "Examples:
  ferry init site                          a commented first config in site/
  ferry --config site/ferry.toml validate  every problem as FILE:LINE:COL
  ferry plan --policy prod                 what a sync of one policy would copy
  ferry sync                               copy what differs, once
  ferry status                             the last run of each policy

`ferry help COMMAND` for one command, `ferry man` for the whole manual."
)]
pub struct Cli {
    /// Main config file.
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        env = "FERRY_CONFIG",
        default_value = "/etc/ferry/ferry.toml"
    )]
    pub config: PathBuf,
    /// Log format on stderr.
    #[arg(long, global = true, help_heading = GLOBAL, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// More log output (repeat for more).
    #[arg(short, long, global = true, help_heading = GLOBAL, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Less log output (repeat for less).
    #[arg(short, long, global = true, help_heading = GLOBAL, action = clap::ArgAction::Count)]
    pub quiet: u8,
    #[command(subcommand)]
    pub command: Command,
}

const GLOBAL: &str = "Global options";

#[derive(Subcommand)]
pub enum Command {
    /// Write a commented first config (ferry.toml and policies/) that validates.
    #[command(after_help = "Examples:
  ferry init                       ./ferry.toml and ./policies/mirror.toml
  ferry init site --example edge   one central registry to two edge sites, in site/")]
    Init(InitArgs),
    /// Check the config and every policy; print FILE:LINE:COL: message per problem.
    #[command(after_help = "Examples:
  ferry validate            the files only: exit 2 on a problem
  ferry validate --online   and ask every registry once: reachable, credentials, catalog")]
    Validate(ValidateArgs),
    /// Show what a sync would copy, touching nothing.
    #[command(after_help = "Examples:
  ferry plan                     every policy
  ferry plan --policy prod       one policy (repeat --policy for more)
  ferry plan --json | jq '.[] | select(.error)'")]
    Plan(PlanArgs),
    /// Run policies once, now (through the daemon's API when a daemon holds the state store).
    #[command(after_help = "Examples:
  ferry sync                          every policy, once
  ferry sync --policy prod --verify   one policy, asking the target about every tag
  ferry sync --dry-run                what it would copy (as ferry plan)")]
    Sync(SyncArgs),
    /// Run every policy on its trigger until stopped; serve /metrics, /healthz, /readyz, /status.
    Daemon,
    /// The last runs of each policy, what is held or in conflict, and uploads in flight: from
    /// the state store, or from the daemon that holds it.
    #[command(after_help = "Examples:
  ferry status          a table, with failures, conflicts and holds under each policy
  ferry status --json   the document the daemon serves at /status")]
    Status(StatusArgs),
    /// What a configured registry does: catalog, referrers API, upload strategy, mounts,
    /// deletes, tokens. Read-only unless --write is given.
    #[command(after_help = "Examples:
  ferry probe dst                    what ferry learnt of registry dst, and its catalog
  ferry probe dst --write ferry-probe   push, mount and delete a small test image")]
    Probe(ProbeArgs),
    /// Every manifest ferry wrote and every tag it deleted, from the audit ledger.
    #[command(after_help = "Examples:
  ferry audit --since 24h                      the last day's writes and deletes
  ferry audit --digest sha256:… --json         what wrote or came from one digest
  ferry audit --verify                         check the hash chain; exit 1 at a break")]
    Audit(AuditArgs),
    /// The target tags ferry wrote whose image is DIGEST or contains it (a child, a config,
    /// a layer), from the state store: no registry is asked unless --check.
    #[command(after_help = "Examples:
  ferry where sha256:…             every site holding an image with this layer
  ferry where sha256:… --check     and ask each target whether it still holds it")]
    Where(WhereArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on stdout.
    Man,
    /// Print the version, the commit and the build date.
    Version,
    /// The policy names of the config, one per line, for the completion scripts.
    #[command(hide = true)]
    CompletePolicies,
}

#[derive(Args)]
pub struct ValidateArgs {
    /// Also ask every registry once: reachable, credentials accepted, catalog available
    /// (one line each; exit 1 when one is not).
    #[arg(long)]
    pub online: bool,
}

#[derive(Args)]
pub struct InitArgs {
    /// Folder to write ferry.toml and policies/ into (created when missing).
    pub dir: Option<PathBuf>,
    /// What the first policy does.
    #[arg(long, value_enum, default_value = "mirror")]
    pub example: InitExample,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum InitExample {
    /// Public images from Docker Hub into your registry.
    Mirror,
    /// Signed releases from dev to prod, tags immutable.
    Promote,
    /// One central registry to several edge sites.
    Edge,
    /// Releases into an OCI layout folder for an air-gapped site.
    Airgap,
}

#[derive(Args)]
pub struct PlanArgs {
    /// Only this policy (repeatable); default all.
    #[arg(long = "policy", value_name = "NAME")]
    pub policies: Vec<String>,
    /// Print the plan as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct SyncArgs {
    /// Only this policy (repeatable); default all.
    #[arg(long = "policy", value_name = "NAME")]
    pub policies: Vec<String>,
    /// Plan only: print what would be copied.
    #[arg(long)]
    pub dry_run: bool,
    /// Delete target tags gone from the source even beyond a policy's max_delete.
    #[arg(long)]
    pub force_delete: bool,
    /// Ask the target about every tag now, instead of trusting what ferry wrote there
    /// (as a run after the policy's verify_interval does).
    #[arg(long)]
    pub verify: bool,
}

#[derive(Args)]
pub struct ProbeArgs {
    /// The registry's name in the config (`[registries.NAME]`).
    pub registry: String,
    /// A repository to ask read-only questions about (the referrers API).
    #[arg(long, value_name = "REPO")]
    pub repo: Option<String>,
    /// Push a small test image to this repository (a 3 MiB blob in 1 MiB parts, then a tag
    /// `ferry-probe-…`), mount it, and delete the tag again: finds out the upload strategy
    /// (kept in the state store, as a copy learns it), mounts and deletes.
    #[arg(long, value_name = "REPO")]
    pub write: Option<String>,
    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct AuditArgs {
    /// From this time on: 2026-12-01T00:00:00Z, or an age such as 24h or 7d.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Before this time (same forms).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    #[arg(long, value_name = "NAME")]
    pub policy: Option<String>,
    /// The target registry's name in the config.
    #[arg(long, value_name = "NAME")]
    pub target: Option<String>,
    #[arg(long, value_name = "REPO")]
    pub repository: Option<String>,
    /// The digest written or deleted, or the source digest it came from.
    #[arg(long, value_name = "DIGEST", value_parser = digest_arg)]
    pub digest: Option<String>,
    /// Check the hash chain instead: the entries and the head hash, or the first break.
    #[arg(long)]
    pub verify: bool,
    /// Print JSON on stdout (one array of entries).
    #[arg(long)]
    pub json: bool,
}

/// A digest as clap checks it: a bad one is a usage error (exit 2) with the reason.
fn digest_arg(s: &str) -> Result<String, String> {
    s.parse::<crate::model::Digest>()
        .map(|d| d.to_string())
        .map_err(|e| e.to_string())
}

#[derive(Args)]
pub struct WhereArgs {
    /// A manifest, index, config or layer digest.
    #[arg(value_parser = digest_arg)]
    pub digest: String,
    /// Ask every target now whether it still holds each image under its tag.
    #[arg(long)]
    pub check: bool,
    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct StatusArgs {
    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

impl Cli {
    pub fn verbosity(&self) -> i8 {
        (self.verbose.min(3) as i8) - (self.quiet.min(3) as i8)
    }

    /// The default log level of each command: one-shot commands stay quiet unless asked.
    pub fn default_level(&self) -> &'static str {
        match self.command {
            // On a terminal, sync shows a progress line instead of a log line per tag.
            Command::Sync(_) if std::io::stderr().is_terminal() => "warn",
            Command::Sync(_) | Command::Daemon => "info",
            _ => "warn",
        }
    }
}

/// Run the parsed command line.
pub async fn run(cli: Cli) -> ExitCode {
    match &cli.command {
        Command::Init(a) => init::run(a),
        Command::Validate(a) => validate::run(&cli.config, a).await,
        Command::Plan(a) => plan::run(&cli.config, a).await,
        Command::Sync(a) if a.dry_run => {
            plan::run(
                &cli.config,
                &PlanArgs {
                    policies: a.policies.clone(),
                    json: false,
                },
            )
            .await
        }
        Command::Sync(a) => sync::run(&cli.config, a).await,
        Command::Daemon => daemon::run(&cli.config).await,
        Command::Status(a) => status::run(&cli.config, a).await,
        Command::Probe(a) => probe::run(&cli.config, a).await,
        Command::Audit(a) => audit::run(&cli.config, a).await,
        Command::Where(a) => exposure::run(&cli.config, a).await,
        Command::Completions { shell } => docs::completions(*shell),
        Command::Man => docs::man(),
        Command::CompletePolicies => docs::policy_names(&cli.config),
        Command::Version => {
            println!("ferry {VERSION}");
            ExitCode::SUCCESS
        }
    }
}

/// Load the config, printing every problem as FILE:LINE:COL: message.
fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    crate::config::load(path).map_err(|diags| {
        for d in &diags {
            eprintln!("{d}");
        }
        eprintln!(
            "{} problem{} found",
            diags.len(),
            if diags.len() == 1 { "" } else { "s" }
        );
        ExitCode::from(2)
    })
}

/// Which state store a command works with; none when a daemon holds it (it is locked).
#[derive(Clone, Copy)]
enum StateUse {
    /// One that is there already: a plan touches nothing, so it creates no folder.
    Existing,
    /// Created when missing: what the command learns is worth keeping.
    Created,
}

/// Load the config and build the app: exit 2 for a bad config, 1 for a registry client
/// that cannot be set up.
fn open(path: &std::path::Path, state: StateUse) -> Result<crate::app::App, ExitCode> {
    let cfg = load(path)?;
    let state = match state {
        StateUse::Existing if !cfg.daemon.state_dir.exists() => None,
        // Held by a daemon: do without it rather than wait for it.
        StateUse::Existing | StateUse::Created => crate::app::App::try_open_state(&cfg).ok(),
    };
    crate::app::App::new(cfg, state).map_err(|e| fail(e, 1))
}

fn fail(e: impl std::fmt::Display, code: u8) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(code)
}

/// `1 policy`, `2 policies`: counts as people write them.
pub(super) fn counted(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
