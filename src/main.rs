use std::process::ExitCode;

use clap::Parser;
use ferry::cli::{self, Cli};

/// Return freed heap to the system every 30 s, for the daemon: glibc keeps what a busy run
/// freed (a first copy, a burst of events) as the process's own, so an idle daemon would stay
/// at its high-water mark for good. A plain thread: it never touches the async runtime.
fn give_back_memory_periodically() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    std::thread::spawn(|| loop {
        std::thread::sleep(std::time::Duration::from_secs(30));
        // SAFETY: malloc_trim only releases free pages, and is thread-safe in glibc.
        unsafe {
            libc::malloc_trim(0);
        }
    });
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, cli::Command::Daemon) {
        give_back_memory_periodically();
    }
    ferry::telemetry::init(cli.log_format, cli.verbosity(), cli.default_level());
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(cli::run(cli));
    // Not dropped: that would stop the worker threads, and tasks still parked on them (idle
    // pooled connections) are dropped while those threads' thread-locals are being torn down.
    // At trace level such a drop logs, tracing-subscriber's formatting buffer (a thread-local)
    // is already gone, and the process aborts. Every command has flushed what it keeps by now.
    std::mem::forget(runtime);
    code
}
