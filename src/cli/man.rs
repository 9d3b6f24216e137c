//! `ferry man`: one page, ferry(1), with every command, the config keys (from
//! docs/config.md, so the page and the reference cannot disagree), the environment and
//! examples. One page because one is what `ferry man` can install; clap_mangen's default
//! would point at ferry-plan(1) and others that nothing generates.

use std::fmt::Write as _;
use std::process::ExitCode;

use clap::Command;

const CONFIG_REFERENCE: &str = include_str!("../../docs/config.md");

const ENVIRONMENT: &str = r#".SH ENVIRONMENT
.TP
.B FERRY_CONFIG
the main config when \-\-config is not given (default /etc/ferry/ferry.toml)
.TP
.B RUST_LOG
the log filter, in tracing's EnvFilter syntax (e.g. ferry=debug); overrides \-v and \-q
.TP
.I any variable a *_env key names
a secret: password_env, api_token_env, read_token_env, webhook_token_env and the like; an
unset or empty one is a config error naming the file, line and key
.TP
.B DOCKER_CONFIG\fR, \fBHOME
where credentials = "docker" finds config.json ($DOCKER_CONFIG, else ~/.docker)
.TP
.B NOTIFY_SOCKET
set by systemd for Type=notify: the daemon reports readiness and its status there
.TP
.B MALLOC_ARENA_MAX
when unset (and GLIBC_TUNABLES too), ferry limits glibc to two malloc arenas
"#;

const EXAMPLES: &str = r#".SH EXAMPLES
Write a first config, check it, and copy once:
.PP
.nf
.RS
ferry init site \-\-example mirror
ferry \-\-config site/ferry.toml validate \-\-online
ferry \-\-config site/ferry.toml plan
ferry \-\-config site/ferry.toml sync
.RE
.fi
.PP
One policy, asking every target tag again instead of trusting what ferry wrote:
.PP
.nf
.RS
ferry sync \-\-policy prod \-\-verify
.RE
.fi
.PP
What the last runs did, for a script:
.PP
.nf
.RS
ferry status \-\-json | jq '.policies[] | {policy, outcome}'
.RE
.fi
.PP
Keep the registries in step, with completions for the shell:
.PP
.nf
.RS
ferry daemon
ferry completions bash > /etc/bash_completion.d/ferry
.RE
.fi
"#;

const EXIT_STATUS: &str = r#".SH "EXIT STATUS"
.TP
0
everything copied (for plan: every registry could be read); conflicts with overwrite = false do not change it
.TP
1
something failed or was interrupted; the rest still copied, and the summary and ferry status say what
.TP
2
bad config or policy, each problem printed as FILE:LINE:COL: message
.SH FILES
.TP
/etc/ferry/ferry.toml
the main config (\-\-config, FERRY_CONFIG); policies in the folder it names (daemon.policies)
.TP
/var/lib/ferry
the state store (daemon.state_dir): upload checkpoints, run history, what ferry learnt of registries
.SH "SEE ALSO"
The README and docs/config.md in ferry's source; the systemd units in its systemd/ folder.
"#;

/// The roff page.
pub fn page(cmd: &Command) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let man = clap_mangen::Man::new(cmd.clone());
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    out.extend_from_slice(commands(cmd).as_bytes());
    out.extend_from_slice(config_section(CONFIG_REFERENCE).as_bytes());
    out.extend_from_slice(ENVIRONMENT.as_bytes());
    out.extend_from_slice(EXAMPLES.as_bytes());
    out.extend_from_slice(EXIT_STATUS.as_bytes());
    Ok(out)
}

/// Every visible command with what it does and its own options (the global ones are above).
fn commands(cmd: &Command) -> String {
    let mut out = String::from(".SH COMMANDS\n");
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        let mut usage = format!("ferry {}", sub.get_name());
        for a in sub.get_positionals() {
            let name = a
                .get_value_names()
                .and_then(|v| v.first())
                .map_or_else(|| a.get_id().as_str().to_uppercase(), |v| v.to_string());
            let _ = write!(
                usage,
                " {}",
                if a.is_required_set() {
                    format!("<{name}>")
                } else {
                    format!("[{name}]")
                }
            );
        }
        let _ = writeln!(out, ".SS \"{}\"", roff(&usage));
        let about = sub
            .get_long_about()
            .or(sub.get_about())
            .map(|a| a.to_string());
        let _ = writeln!(out, "{}", roff(&about.unwrap_or_default()));
        for a in sub
            .get_arguments()
            .filter(|a| !a.is_hide_set() && !a.is_global_set() && !a.is_positional())
        {
            let flag = match (a.get_short(), a.get_long().map(roff)) {
                (Some(s), Some(l)) => format!("\\-{s}, \\-\\-{l}"),
                (None, Some(l)) => format!("\\-\\-{l}"),
                (Some(s), None) => format!("\\-{s}"),
                (None, None) => continue,
            };
            let value = match a.get_action().takes_values() {
                true => a
                    .get_value_names()
                    .and_then(|v| v.first())
                    .map(|v| format!(" \\fI{v}\\fR"))
                    .unwrap_or_default(),
                false => String::new(),
            };
            let help = a.get_long_help().or(a.get_help()).map(|h| h.to_string());
            let _ = writeln!(
                out,
                ".TP\n\\fB{flag}\\fR{value}\n{}",
                roff(&help.unwrap_or_default())
            );
        }
    }
    out
}

/// docs/config.md as roff: each table a section of tagged paragraphs (key, then its type,
/// default and whether it is required, then what it does); prose as paragraphs.
fn config_section(md: &str) -> String {
    let mut out = String::from(".SH CONFIGURATION\n");
    let mut para = false;
    for line in md.lines() {
        let line = line.trim_end();
        if let Some(h) = line.strip_prefix("## ").or(line.strip_prefix("### ")) {
            let _ = writeln!(out, ".SS \"{}\"", roff(&plain(h)));
            para = false;
        } else if line.starts_with("# ") {
            continue;
        } else if let Some(row) = line.strip_prefix('|') {
            let cells: Vec<String> = row
                .split(" | ")
                .map(|c| plain(c.trim_matches('|').trim()))
                .collect();
            if cells.len() < 5 || cells[0] == "key" || cells[0].starts_with("---") {
                continue;
            }
            let _ = writeln!(
                out,
                ".TP\n\\fB{}\\fR ({}; default {}; required: {})\n{}",
                roff(&cells[0]),
                roff(&cells[1]),
                roff(&cells[2]),
                roff(&cells[3]),
                roff(&cells[4..].join(" | "))
            );
            para = false;
        } else if line.is_empty() {
            para = false;
        } else {
            if !para {
                out.push_str(".PP\n");
                para = true;
            }
            let _ = writeln!(out, "{}", roff(&plain(line)));
        }
    }
    out
}

/// Markdown's inline marks gone: backticks, emphasis, links as their text.
fn plain(s: &str) -> String {
    let s = s.replace('`', "").replace("**", "");
    let mut out = String::with_capacity(s.len());
    let mut rest = s.as_str();
    while let Some(open) = rest.find('[') {
        match rest[open..]
            .find("](")
            .and_then(|mid| rest[open + mid..].find(')').map(|close| (mid, mid + close)))
        {
            Some((mid, close)) => {
                out.push_str(&rest[..open]);
                out.push_str(&rest[open + 1..open + mid]);
                rest = &rest[open + close + 1..];
            }
            None => break,
        }
    }
    out.push_str(rest);
    out
}

/// Text safe in roff: backslashes and hyphens escaped, no line starting with a control
/// character.
fn roff(s: &str) -> String {
    let s = s.replace('\\', "\\e").replace('-', "\\-");
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

pub fn print(cmd: &Command) -> ExitCode {
    match page(cmd).and_then(|out| std::io::Write::write_all(&mut std::io::stdout(), &out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: cannot write the man page: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn config_tables_become_tagged_paragraphs() {
        let md = "# Config keys\n\nPaths are `relative`, see [docs](x.md).\n\n## `[daemon]`\n\n| key | type | default | required | what |\n| --- | --- | --- | --- | --- |\n| `state_dir` | path | `/var/lib/ferry` | no | the store |\n";
        let got = super::config_section(md);
        assert_eq!(
            got,
            ".SH CONFIGURATION\n.PP\nPaths are relative, see docs.\n.SS \"[daemon]\"\n.TP\n\\fBstate_dir\\fR (path; default /var/lib/ferry; required: no)\nthe store\n"
        );
    }
}
