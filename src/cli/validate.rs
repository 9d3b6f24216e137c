use std::path::Path;
use std::process::ExitCode;

use crate::config::Trigger;

pub fn run(config: &Path) -> ExitCode {
    let cfg = match super::load(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    for p in &cfg.policies {
        let trigger = match &p.trigger {
            Trigger::Cron(s) => format!("schedule `{}`", s.source()),
            Trigger::Every(d) => format!("every {}s", d.as_secs()),
            Trigger::Manual => "manual".to_owned(),
        };
        println!("policy {}: {} → {} ({trigger}) [{}]", p.name, p.source, p.targets.join(", "), p.file.display());
    }
    println!("{}: ok, {} registries, {} policies", config.display(), cfg.registries.len(), cfg.policies.len());
    ExitCode::SUCCESS
}
