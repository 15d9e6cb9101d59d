//! `socksmith serve`.

use std::process::ExitCode;

/// Arguments of `socksmith serve`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `socksmith serve`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`socksmith serve` is not built yet")
}
