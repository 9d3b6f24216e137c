//! `ferry completions SHELL` and the command definition they, `ferry man` and the parser
//! share, so none of them can drift from the real options.

use std::process::ExitCode;

use clap::CommandFactory;

use super::Cli;

/// Commands the global options mean nothing to: they are accepted there, not offered.
const WITHOUT_GLOBALS: [&str; 4] = ["init", "completions", "man", "version"];
const GLOBALS: [&str; 4] = ["config", "log_format", "verbose", "quiet"];

/// The command line as parsed, helped, completed and documented.
pub fn command() -> clap::Command {
    let globals: Vec<clap::Arg> = Cli::command()
        .get_arguments()
        .filter(|a| GLOBALS.contains(&a.get_id().as_str()))
        .map(|a| a.clone().global(false).hide(true))
        .collect();
    // A subcommand's own argument of the same name keeps the global one out of it: these
    // accept the options (a wrapper may pass --config to every command) without offering
    // them in help or completion.
    let mut cmd = Cli::command();
    for name in WITHOUT_GLOBALS {
        cmd = cmd.mut_subcommand(name, |sub| sub.args(globals.clone()));
    }
    cmd
}

/// The command line the completion scripts describe: clap's generators offer hidden
/// options and commands too, so this one is assembled without them (the globals only where
/// they mean something, no `complete-policies`).
fn offered() -> clap::Command {
    let full = Cli::command();
    let globals: Vec<clap::Arg> = full
        .get_arguments()
        .filter(|a| GLOBALS.contains(&a.get_id().as_str()))
        .map(|a| a.clone().global(false))
        .collect();
    let mut cmd = clap::Command::new("ferry")
        .version(super::VERSION)
        .args(globals.clone());
    for sub in full.get_subcommands().filter(|s| !s.is_hide_set()) {
        let own = WITHOUT_GLOBALS.contains(&sub.get_name());
        cmd = cmd.subcommand(match own {
            true => sub.clone(),
            false => sub.clone().args(globals.clone()),
        });
    }
    cmd
}

pub fn completions(shell: clap_complete::Shell) -> ExitCode {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut offered(), "ferry", &mut script);
    let script = with_policy_names(shell, &String::from_utf8_lossy(&script));
    print!("{script}");
    ExitCode::SUCCESS
}

/// `--policy <TAB>` offers the policies of the config the command line names (or the
/// default one), by asking `ferry complete-policies`; clap's scripts would offer files.
/// Elvish and PowerShell keep clap's script.
fn with_policy_names(shell: clap_complete::Shell, script: &str) -> String {
    use clap_complete::Shell;
    match shell {
        Shell::Bash => script.replace(
            "--policy)\n                    COMPREPLY=($(compgen -f \"${cur}\"))",
            "--policy)\n                    COMPREPLY=($(compgen -W \"$(_ferry_policy_names)\" -- \"${cur}\"))",
        ) + BASH_NAMES,
        Shell::Zsh => {
            let mut out = String::new();
            for line in script.lines() {
                match line.contains("--policy=[") {
                    true => out.push_str(&line.replace(":NAME:_default'", ":NAME:_ferry_policy_names'")),
                    false => out.push_str(line),
                }
                out.push('\n');
            }
            out.replacen("#compdef ferry\n", &format!("#compdef ferry\n{ZSH_NAMES}"), 1)
        }
        Shell::Fish => {
            let mut out = String::from(FISH_NAMES);
            for line in script.lines() {
                out.push_str(line);
                if line.contains(" -l policy ") {
                    out.push_str(" -f -a \"(__fish_ferry_policy_names)\"");
                }
                out.push('\n');
            }
            out
        }
        _ => script.to_owned(),
    }
}

const BASH_NAMES: &str = r#"
_ferry_policy_names() {
    local i config=()
    for ((i = 1; i < ${#COMP_WORDS[@]} - 1; i++)); do
        case "${COMP_WORDS[i]}" in
            --config) config=(--config "${COMP_WORDS[i+1]}") ;;
            --config=*) config=(--config "${COMP_WORDS[i]#--config=}") ;;
        esac
    done
    "${COMP_WORDS[0]}" "${config[@]}" complete-policies 2>/dev/null
}
"#;

const ZSH_NAMES: &str = r#"
_ferry_policy_names() {
    local -a names config
    local i=${words[(I)--config]}
    (( i )) && config=(--config ${words[i+1]})
    names=(${(f)"$(${words[1]} $config complete-policies 2>/dev/null)"})
    _describe 'policy' names
}
"#;

const FISH_NAMES: &str = r#"function __fish_ferry_policy_names
    set -l tokens (commandline -opc)
    set -l config
    set -l i (contains -i -- --config $tokens)
    and set config --config $tokens[(math $i + 1)]
    $tokens[1] $config complete-policies 2>/dev/null
end
"#;

pub fn man() -> ExitCode {
    super::man::print(&command())
}

/// The policy names for the completion scripts, one per line.
pub fn policy_names(config: &std::path::Path) -> ExitCode {
    for name in crate::config::policy_names(config) {
        println!("{name}");
    }
    ExitCode::SUCCESS
}
