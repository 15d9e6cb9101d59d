//! `socksmith check`.

use std::process::ExitCode;

/// Arguments of `socksmith check`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `socksmith check`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`socksmith check` is not built yet")
}
