//! `socksmith completions SHELL`: prints the shell's completion script for every command and
//! option (clap_complete), generated from the same definitions the parser uses.

use std::process::ExitCode;

use clap::CommandFactory as _;
use clap_complete::Shell;

use crate::cli::Cli;

/// Arguments of `socksmith completions`.
#[derive(Debug, clap::Args)]
#[command(after_long_help = "Install, for example:\n  \
    bash: socksmith completions bash > /etc/bash_completion.d/socksmith\n  \
    zsh:  socksmith completions zsh > \"${fpath[1]}/_socksmith\"\n  \
    fish: socksmith completions fish > ~/.config/fish/completions/socksmith.fish")]
pub struct Args {
    /// The shell to write the completion script for.
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: Shell,
}

/// Writes the script on stdout.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut command = Cli::command();
    clap_complete::generate(
        args.shell,
        &mut command,
        "socksmith",
        &mut std::io::stdout(),
    );
    Ok(ExitCode::SUCCESS)
}
