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

/// mimalloc instead of the C library's allocator: every session task and socket registration
/// is a 128-byte-aligned allocation (tokio's task cell, 768 bytes for a tunnel; two
/// `ScheduledIo`s of 256), which glibc's `memalign` serves with padding around each one.
///
/// mimalloc's version 2 (`v2`), not 3: version 3 starts the blocks of a size class that is not
/// a power of two right after the page's header, so no 768-byte block is 128-aligned and each
/// task cell is over-allocated into the 896-byte class; version 2 starts such pages aligned,
/// so the cell takes exactly 768 bytes (an idle tunnel: 2.05 KiB with glibc, 1.68 with
/// mimalloc 3 and an 896-byte cell, 1.31 KiB of live allocations now). Built with `no_thp`:
/// with transparent huge pages its eagerly committed arena costs 8 MiB of resident memory at
/// start.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
