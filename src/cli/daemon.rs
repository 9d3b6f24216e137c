use std::path::Path;
use std::process::ExitCode;

pub async fn run(config: &Path) -> ExitCode {
    let cfg = match super::load(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match crate::daemon::run(config, cfg).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => super::fail(e, 1),
    }
}
