//! `socksmith forward`.

use std::process::ExitCode;

/// Arguments of `socksmith forward`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `socksmith forward`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`socksmith forward` is not built yet")
}
