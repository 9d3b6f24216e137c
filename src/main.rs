use std::process::ExitCode;

use clap::Parser;
use ferry::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    ferry::telemetry::init(cli.log_format, cli.verbosity(), cli.default_level());
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(cli::run(cli))
}
