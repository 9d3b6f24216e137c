use std::path::Path;
use std::process::ExitCode;

pub fn run(config: &Path) -> ExitCode {
    let cfg = match super::load(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    for p in &cfg.policies {
        let events = if p.events { ", events" } else { "" };
        let trigger = crate::daemon::describe(&p.trigger);
        println!(
            "policy {}: {} → {} ({trigger}{events}) [{}]",
            p.name,
            p.source,
            p.targets.join(", "),
            p.file.display()
        );
    }
    for w in &cfg.warnings {
        eprintln!("warning: {w}");
    }
    if cfg.daemon.api_token.is_none() {
        println!(
            "daemon API: POST endpoints (webhooks, runs on request) are off; set daemon.api_token_env or daemon.api_token_file to enable them"
        );
    }
    if let Some(c) = &cfg.cluster {
        println!(
            "cluster: member `{}`, etcd {}, lease_ttl {}s, keys under {}",
            c.member,
            c.etcd.join(", "),
            c.lease_ttl.as_secs(),
            c.prefix
        );
    }
    println!(
        "{}: ok, {}, {}",
        config.display(),
        super::counted(cfg.registries.len(), "registry", "registries"),
        super::counted(cfg.policies.len(), "policy", "policies")
    );
    ExitCode::SUCCESS
}
