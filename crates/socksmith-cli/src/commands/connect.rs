//! `socksmith connect`.

use std::process::ExitCode;

/// Arguments of `socksmith connect`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `socksmith connect`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`socksmith connect` is not built yet")
}
