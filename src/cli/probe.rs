use std::path::Path;
use std::process::ExitCode;

use crate::model::RepoName;
use crate::state::StateStore;

use super::ProbeArgs;

/// Exit 0 when the registry answered, 1 when it could not be reached, 2 for bad usage.
pub async fn run(config: &Path, args: &ProbeArgs) -> ExitCode {
    let use_state = match args.write {
        Some(_) => super::StateUse::Created,
        None => super::StateUse::Existing,
    };
    let app = match super::open(config, use_state) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let Some(registry) = app.runner().registry_named(&args.registry) else {
        let known: Vec<&str> = app.config.registries.keys().map(String::as_str).collect();
        return super::fail(
            format!(
                "no registry named `{}` in the config (there are: {})",
                args.registry,
                known.join(", ")
            ),
            2,
        );
    };
    let name = |flag: &str, r: &Option<String>| -> Result<Option<RepoName>, ExitCode> {
        r.as_deref()
            .map(|r| {
                r.parse()
                    .map_err(|e| super::fail(format!("{flag} {r}: {e}"), 2))
            })
            .transpose()
    };
    let (repo, write) = match (name("--repo", &args.repo), name("--write", &args.write)) {
        (Ok(r), Ok(w)) => (r, w),
        (Err(c), _) | (_, Err(c)) => return c,
    };
    // Learnt habits go to the state store; one a daemon holds is read through a scratch copy
    // instead, and what this probe learns is then not kept.
    let mut scratch = None;
    let state = match app.runner().state() {
        Some(s) => s.clone(),
        None => {
            let dir =
                std::env::temp_dir().join(format!("ferry-probe-state-{}", std::process::id()));
            let opened = StateStore::open(&dir);
            scratch = Some(dir);
            match opened {
                Ok(s) => {
                    if write.is_some() {
                        eprintln!("note: the state store is in use (a daemon?); what this probe learns is not kept");
                    }
                    s
                }
                Err(e) => return super::fail(e, 1),
            }
        }
    };
    let report = crate::probe::probe(
        registry,
        &args.registry,
        &state,
        repo.as_ref(),
        write.as_ref(),
    )
    .await;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("the report serializes")
        );
    } else {
        print!("{report}");
    }
    let flushed = state.flush().await;
    drop(state);
    if let Some(dir) = scratch {
        let _ = std::fs::remove_dir_all(dir);
    }
    if let Err(e) = flushed {
        return super::fail(e, 1);
    }
    if report.unreachable() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
