use std::path::Path;
use std::process::ExitCode;

pub async fn run(config: &Path, args: &super::ValidateArgs) -> ExitCode {
    let cfg = match super::load(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let online = args.online;
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
    if online {
        return self::online(cfg).await;
    }
    ExitCode::SUCCESS
}

/// Every registry asked at once, one line each, in name order.
async fn online(cfg: crate::config::Config) -> ExitCode {
    let specs: Vec<(String, bool, Vec<String>)> = cfg
        .registries
        .iter()
        .map(|(key, spec)| {
            let globbing = cfg
                .policies
                .iter()
                .filter(|p| &p.source == key && p.repositories.needs_catalog())
                .map(|p| format!("`{}`", p.name))
                .collect();
            (key.clone(), spec.credentials.is_some(), globbing)
        })
        .collect();
    let app = match crate::app::App::new(cfg, None) {
        Ok(a) => a,
        Err(e) => return super::fail(e, 1),
    };
    let runner = app.runner();
    let checks = specs.iter().filter_map(|(key, creds, globbing)| {
        let registry = runner.registry_named(key)?;
        let globbing: Vec<&str> = globbing.iter().map(String::as_str).collect();
        Some(async move { crate::probe::reached(registry, key, *creds, &globbing).await })
    });
    let reached = futures_util::future::join_all(checks).await;
    for r in &reached {
        println!("{}", r.line);
    }
    if reached.iter().all(|r| r.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
