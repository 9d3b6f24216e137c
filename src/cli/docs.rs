//! `ferry completions SHELL` and `ferry man`: generated from the same clap definitions the
//! parser uses, so they cannot drift from the real options.

use std::process::ExitCode;

use clap::CommandFactory;

use super::Cli;

pub fn completions(shell: clap_complete::Shell) -> ExitCode {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "ferry", &mut std::io::stdout());
    ExitCode::SUCCESS
}

const EXIT_STATUS: &str = r#".SH "EXIT STATUS"
.TP
0
everything copied (for plan: every registry could be read)
.TP
1
something failed or was interrupted; the rest still copied, and the summary and ferry status say what
.TP
2
bad config or policy, each problem printed as FILE:LINE:COL: message
.SH FILES
.TP
/etc/ferry/ferry.toml
the main config (\-\-config, FERRY_CONFIG); policies in the folder it names
"#;

/// The roff page of `ferry` with a section per subcommand.
pub fn man() -> ExitCode {
    let cmd = Cli::command();
    let mut out = Vec::new();
    let page = clap_mangen::Man::new(cmd.clone());
    let rendered = page.render(&mut out).and_then(|()| {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            out.extend_from_slice(
                format!(".SH \"FERRY {}\"\n", sub.get_name().to_uppercase()).as_bytes(),
            );
            let man = clap_mangen::Man::new(sub.clone());
            man.render_description_section(&mut out)?;
            if sub
                .get_arguments()
                .any(|a| !a.is_hide_set() && !a.is_global_set())
            {
                man.render_options_section(&mut out)?;
            }
        }
        out.extend_from_slice(EXIT_STATUS.as_bytes());
        Ok(())
    });
    match rendered.and_then(|()| std::io::Write::write_all(&mut std::io::stdout(), &out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: cannot write the man page: {e}");
            ExitCode::from(1)
        }
    }
}
