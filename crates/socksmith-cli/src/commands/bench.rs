//! `socksmith bench`.

use std::process::ExitCode;

/// Arguments of `socksmith bench`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `socksmith bench`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`socksmith bench` is not built yet")
}
