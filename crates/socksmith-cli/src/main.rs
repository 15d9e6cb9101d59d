//! The `socksmith` binary: a thin command-line front over the `socksmith` library.
//!
//! It parses the command line, sets up logging, dispatches to one module per subcommand in
//! [`commands`] and turns the result into an exit code. No protocol code lives here.

mod admin;
mod cli;
mod commands;
mod config_file;
mod duration;
mod logging;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    logging::init(cli.verbose, cli.log_format);
    match commands::run(cli.command) {
        Ok(code) => code,
        Err(error) => {
            // `{:#}` prints the whole context chain on one line: "reading config: ...: ...".
            eprintln!("socksmith: {error:#}");
            ExitCode::FAILURE
        }
    }
}
