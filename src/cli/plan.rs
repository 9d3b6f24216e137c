use std::path::Path;
use std::process::ExitCode;

use crate::model::ByteSize;
use crate::plan::TagAction;

use super::PlanArgs;

pub async fn run(config: &Path, args: &PlanArgs) -> ExitCode {
    // The state store, when free (not held by a running daemon), lets plan see what it
    // remembers: first-seen times for require.min_age, filtered indexes.
    let app = match super::open(config, super::StateUse::Existing) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let policies = match app.select(&args.policies) {
        Ok(p) => p,
        Err(e) => return super::fail(e, 2),
    };
    let mut plans = Vec::new();
    for p in policies {
        plans.extend(app.runner().plan_policy(p).await);
    }
    let failed = plans.iter().filter(|p| p.error.is_some()).count();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&plans).expect("plans serialize")
        );
    } else {
        let mut policy = "";
        let mut told = crate::run::Told::default();
        for p in &plans {
            if p.policy != policy {
                policy = &p.policy;
                println!("policy {policy}:");
            }
            print!("  {}", told.brief(&p.to_string()));
        }
        let count = |a| plans.iter().map(|p| p.count(a)).sum::<usize>();
        let (bytes, mounts) = crate::plan::sending(&plans);
        println!(
            "plan: {} tags to create, {} to move, {} in sync, {} conflicts, {} held, {} to delete; {} to send{}; {} could not be read",
            count(TagAction::Create),
            count(TagAction::Move),
            count(TagAction::InSync),
            count(TagAction::Conflict),
            count(TagAction::Held),
            count(TagAction::Delete),
            ByteSize(bytes),
            match mounts {
                0 => String::new(),
                n => format!(", {} to mount", super::counted(n, "blob", "blobs")),
            },
            super::counted(failed, "repository", "repositories")
        );
    }
    // Planning records first-seen times and filtered indexes; keep them.
    if let Some(s) = app.runner().state() {
        if let Err(e) = s.flush().await {
            return super::fail(e, 1);
        }
    }
    if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
