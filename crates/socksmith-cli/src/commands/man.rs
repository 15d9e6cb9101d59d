//! `socksmith man [COMMAND]`: prints a manual page in roff (clap_mangen), generated from the
//! same definitions as `--help`: socksmith(1), or socksmith-COMMAND(1) for one command.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::CommandFactory as _;

use crate::cli::Cli;

/// Arguments of `socksmith man`.
#[derive(Debug, clap::Args)]
#[command(
    after_long_help = "Read it with `socksmith man | man -l -`, or install it:\n  \
    socksmith man > /usr/local/share/man/man1/socksmith.1\n  \
    socksmith man serve > /usr/local/share/man/man1/socksmith-serve.1"
)]
pub struct Args {
    /// The command whose page to print (serve, connect, ...); none: the main page.
    #[arg(value_name = "COMMAND")]
    pub command: Option<String>,
}

/// Writes the page on stdout.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let main = Cli::command();
    let (page, title) = match &args.command {
        None => (main, "socksmith".to_owned()),
        Some(name) => {
            let names: Vec<String> = main
                .get_subcommands()
                .map(|c| c.get_name().to_owned())
                .collect();
            let sub = main
                .find_subcommand(name)
                .with_context(|| {
                    format!("no command {name:?}; the commands are {}", names.join(", "))
                })?
                .clone();
            // The page's title and its synopsis name the full command: socksmith-serve(1),
            // `socksmith serve [OPTIONS]`.
            let title = format!("socksmith-{}", sub.get_name());
            (
                sub.name(title.clone())
                    .bin_name(format!("socksmith {name}")),
                title,
            )
        }
    };
    let mut out = Vec::new();
    clap_mangen::Man::new(page)
        .title(title)
        .section("1")
        .render(&mut out)?;
    std::io::stdout().lock().write_all(&out)?;
    Ok(ExitCode::SUCCESS)
}
