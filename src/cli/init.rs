//! `ferry init [DIR] [--example …]`: a commented first config that validates, so a new user
//! edits something that works instead of starting from the README.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{InitArgs, InitExample};

/// The main config and the one policy file of each example.
fn files(example: InitExample) -> (&'static str, &'static str, &'static str) {
    match example {
        InitExample::Mirror => (
            include_str!("init/mirror.ferry.toml"),
            "mirror.toml",
            include_str!("init/mirror.policy.toml"),
        ),
        InitExample::Promote => (
            include_str!("init/promote.ferry.toml"),
            "promote.toml",
            include_str!("init/promote.policy.toml"),
        ),
        InitExample::Edge => (
            include_str!("init/edge.ferry.toml"),
            "edge.toml",
            include_str!("init/edge.policy.toml"),
        ),
        InitExample::Airgap => (
            include_str!("init/airgap.ferry.toml"),
            "airgap.toml",
            include_str!("init/airgap.policy.toml"),
        ),
    }
}

pub fn run(a: &InitArgs) -> ExitCode {
    let dir = a.dir.clone().unwrap_or_else(|| PathBuf::from("."));
    let (config, policy_name, policy) = files(a.example);
    let config_path = dir.join("ferry.toml");
    let policy_path = dir.join("policies").join(policy_name);
    // Nothing is written unless everything can be: an existing file is never replaced.
    for p in [&config_path, &policy_path] {
        if p.symlink_metadata().is_ok() {
            eprintln!(
                "error: {} already exists: ferry init changes nothing there (pick another folder, or edit it)",
                p.display()
            );
            return ExitCode::from(1);
        }
    }
    // The air-gap example's layout folder goes beside the config, written absolute.
    let layout = std::path::absolute(dir.join("airgap")).unwrap_or_else(|_| dir.join("airgap"));
    let config = config.replace("{LAYOUT}", &layout.display().to_string());
    if let Err(e) = write(&config_path, &config).and_then(|()| write(&policy_path, policy)) {
        eprintln!("error: {e}");
        return ExitCode::from(1);
    }
    let shown = shown(&config_path);
    println!(
        "wrote {} and {}\nnext:\n  ferry --config {shown} validate\n  ferry --config {shown} plan\n  ferry --config {shown} sync",
        config_path.display(),
        policy_path.display(),
    );
    // What init writes must validate; a template that does not is a bug here, not the user's.
    match crate::config::load(&config_path) {
        Ok(_) => ExitCode::SUCCESS,
        Err(diags) => {
            for d in diags {
                eprintln!("{d}");
            }
            ExitCode::from(1)
        }
    }
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(fail)?;
    }
    // create_new: a file that appeared since the check is not replaced either.
    use std::io::Write as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(fail)
}

/// The config path as the user would type it next.
fn shown(p: &Path) -> String {
    let s = p.display().to_string();
    if s.contains(char::is_whitespace) {
        format!("'{s}'")
    } else {
        s
    }
}
