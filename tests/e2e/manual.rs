//! What a user reads and tabs through: help, completion scripts, the man page.

use crate::support::Ferry;

const REGS: &str = "[registries.central]\nurl = \"http://127.0.0.1:5000\"\n\n[registries.edge]\nurl = \"http://127.0.0.1:5001\"\n";
const TWO: &str = "[[policy]]\nname = \"mirror-base\"\nsource = \"central\"\ntargets = [\"edge\"]\nrepositories = [\"base/*\"]\n\n[[policy]]\nname = \"mirror-apps\"\nsource = \"central\"\ntargets = [\"edge\"]\nrepositories = [\"apps/*\"]\n";

/// What bash's completion offers for `words` (the last one being completed).
fn bash_completes(script: &std::path::Path, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let program = format!(
        "source {}; COMP_WORDS=({}); COMP_CWORD={}; _ferry ferry '{}' '{}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display(),
        quoted.join(" "),
        words.len() - 1,
        words[words.len() - 1],
        words[words.len() - 2],
    );
    let path = format!(
        "{}:/usr/bin:/bin",
        crate::support::ferry_bin().parent().unwrap().display()
    );
    crate::support::succeeded(
        std::process::Command::new("bash")
            .arg("-c")
            .arg(program)
            .env("PATH", path),
    )
    .lines()
    .filter(|l| !l.is_empty())
    .map(str::to_owned)
    .collect()
}

#[test]
fn bash_completes_policy_names_from_the_config_and_not_globals_where_they_mean_nothing() {
    let f = Ferry::new(REGS, "1MiB", &[("p.toml", TWO)]);
    let bash = f.run(&["completions", "bash"]);
    bash.assert_code(0);
    let script = f.path().join("ferry.bash");
    std::fs::write(&script, &bash.stdout).unwrap();
    let cfg = f.config().display().to_string();
    let got = bash_completes(
        &script,
        &["ferry", "--config", &cfg, "sync", "--policy", ""],
    );
    assert_eq!(got, ["mirror-base", "mirror-apps"]);
    let got = bash_completes(
        &script,
        &["ferry", "--config", &cfg, "plan", "--policy", "mirror-a"],
    );
    assert_eq!(got, ["mirror-apps"]);
    // A config that cannot be read offers nothing rather than an error on the terminal.
    let got = bash_completes(
        &script,
        &[
            "ferry",
            "--config",
            "/nonexistent.toml",
            "sync",
            "--policy",
            "",
        ],
    );
    assert!(got.is_empty(), "{got:?}");
    let sync = bash_completes(&script, &["ferry", "sync", "--"]);
    assert!(sync.contains(&"--config".to_owned()), "{sync:?}");
    let man = bash_completes(&script, &["ferry", "man", "--"]);
    assert!(!man.contains(&"--config".to_owned()), "{man:?}");
    // Accepted there all the same, as a wrapper passing --config everywhere would.
    f.run(&["man", "--config", &cfg]).assert_code(0);

    for (shell, hook) in [
        ("zsh", ":NAME:_ferry_policy_names'"),
        ("fish", "-l policy -d 'Only this policy (repeatable); default all' -r -f -a \"(__fish_ferry_policy_names)\""),
    ] {
        let out = f.run(&["completions", shell]);
        out.assert_code(0);
        // plan, sync and audit take --policy.
        let want = if shell == "zsh" { 3 } else { 2 };
        assert_eq!(out.stdout.matches(hook).count(), want, "{shell}: {}", out.stdout);
    }
    f.run(&["completions", "tcsh"]).assert_code(2);
}

#[test]
fn help_puts_a_commands_own_options_first_and_shows_examples() {
    let f = Ferry::new(REGS, "1MiB", &[("p.toml", TWO)]);
    let help = f.run(&["status", "--help"]);
    help.assert_code(0);
    let at = |s: &str| {
        help.stdout
            .find(s)
            .unwrap_or_else(|| panic!("{s} in {}", help.stdout))
    };
    assert!(at("--json") < at("Global options:"));
    assert!(at("Global options:") < at("--config"));
    assert!(at("--config") < at("Examples:"));
    assert!(
        help.stdout.contains("or from the daemon that holds it"),
        "{}",
        help.stdout
    );
    for cmd in ["init", "validate", "plan", "sync", "probe"] {
        let h = f.run(&[cmd, "--help"]);
        h.assert_code(0);
        assert!(
            h.stdout.contains("Examples:\n  ferry "),
            "{cmd}: {}",
            h.stdout
        );
    }
    let man = f.run(&["man", "--help"]);
    assert!(!man.stdout.contains("--config"), "{}", man.stdout);
    assert!(!f.path().join("policies/mirror.toml").exists());
    // `init --help` is help, not an init.
    let init = f.run(&["init", "--help"]);
    init.assert_code(0);
    assert!(!f.path().join("ferry.toml.new").exists() && init.stdout.contains("Usage: ferry init"));
}

#[test]
fn the_man_page_is_one_page_with_every_command_every_key_the_environment_and_examples() {
    let f = Ferry::new(REGS, "1MiB", &[("p.toml", TWO)]);
    let man = f.run(&["man"]);
    man.assert_code(0);
    let page = &man.stdout;
    assert!(page.contains(".TH ferry 1"), "{}", &page[..300]);
    assert!(
        !page.contains("ferry\\-plan(1)") && !page.contains("ferry-plan(1)"),
        "points at pages nothing installs"
    );
    let mut last = 0;
    for section in [
        ".SH COMMANDS",
        ".SH CONFIGURATION",
        ".SH ENVIRONMENT",
        ".SH EXAMPLES",
        ".SH \"EXIT STATUS\"",
        ".SH \"SEE ALSO\"",
    ] {
        let at = page
            .find(section)
            .unwrap_or_else(|| panic!("{section} missing"));
        assert!(at > last, "{section} out of order");
        last = at;
    }
    for cmd in [
        "init [DIR]",
        "validate",
        "plan",
        "sync",
        "daemon",
        "status",
        "probe <REGISTRY>",
        "completions <SHELL>",
    ] {
        assert!(page.contains(&format!(".SS \"ferry {cmd}\"")), "{cmd}");
    }
    assert!(page.contains("\\fB\\-\\-force\\-delete\\fR"));
    assert!(
        !page.contains("complete\\-policies"),
        "a hidden command is not documented"
    );
    // Every key of the reference, from the same file.
    let reference =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/config.md")).unwrap();
    let keys: Vec<&str> = reference
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .collect();
    assert!(keys.len() > 60, "{}", keys.len());
    for key in keys {
        let roff = key.replace('-', "\\-");
        assert!(page.contains(&format!("\\fB{roff}")), "key {key} missing");
    }
    for var in ["FERRY_CONFIG", "RUST_LOG", "DOCKER_CONFIG"] {
        assert!(page.contains(&format!(".B {var}")), "{var}");
    }
    // No line may start a roff request by accident (a key or sentence beginning with a dot).
    for line in page.lines().filter(|l| l.starts_with('.')) {
        let req = line[1..].split_whitespace().next().unwrap_or("");
        assert!(
            [
                "TH", "SH", "SS", "TP", "PP", "B", "I", "RS", "RE", "nf", "fi", "ie", "el", "IP",
                "br", "sp", "in", "ti", "LP", "P", "HP", "ds", "nr", "de", "if", ".", "ad", "nh",
                "na", "hy", "\\\""
            ]
            .contains(&req)
                || req.starts_with("\\\""),
            "unexpected request: {line}"
        );
    }
}
