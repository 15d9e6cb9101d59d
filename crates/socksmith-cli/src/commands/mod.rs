//! One module per subcommand; each exposes `Args` (its clap arguments) and `run`.

pub mod bench;
pub mod check;
pub mod completions;
pub mod connect;
pub mod exit_status;
pub mod forward;
pub mod man;
pub mod passwd;
pub mod serve;

use std::process::ExitCode;

use crate::cli::Command;

/// Runs one subcommand to completion.
pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => serve::run(*args),
        Command::Connect(args) => connect::run(args),
        Command::Forward(args) => forward::run(args),
        Command::Check(args) => check::run(args),
        Command::Bench(args) => bench::run(*args),
        Command::Passwd(args) => passwd::run(args),
        Command::Completions(args) => completions::run(args),
        Command::Man(args) => man::run(args),
    }
}

/// Builds the tokio runtime every subcommand runs on: one worker per core the process may use
/// (`taskset` and cgroup limits are honoured by `available_parallelism`).
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    runtime_with(None)
}

/// [`runtime`] with `threads` workers instead (`serve --threads`); one is a current-thread
/// runtime: no work-stealing, no cross-thread wake-ups.
///
/// Why one multi-thread runtime and not one current-thread runtime per core, each with its
/// own `SO_REUSEPORT` listener: measured on 2 cores (bench/README.md, "Threads"), the
/// reuseport design did not serve more connections per second, and a multi-thread runtime
/// keeps one accept loop, one session limit and one reload path.
pub fn runtime_with(threads: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let workers = threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let runtime = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()?
    };
    Ok(runtime)
}
