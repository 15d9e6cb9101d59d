//! The command-line shape: global flags and the subcommands, each defined in its own module.

use clap::{Parser, Subcommand, ValueEnum};

use crate::commands;

/// socksmith: a SOCKS4, SOCKS4a and SOCKS5 server, client and benchmark.
///
/// Start a local proxy with `socksmith serve`, reach a target through one with
/// `socksmith connect -x socks5h://127.0.0.1:1080 example.com:80`, and see `socksmith help
/// COMMAND` for each command's options.
#[derive(Debug, Parser)]
#[command(name = "socksmith", version)]
pub struct Cli {
    /// More log output (-v: debug, -vv: trace). `RUST_LOG` overrides it.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text,
          env = "SOCKSMITH_LOG_FORMAT")]
    pub log_format: LogFormat,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a SOCKS4/4a/5 server (default 127.0.0.1:1080, no authentication, loopback only).
    Serve(Box<commands::serve::Args>),
    /// Pipe stdin/stdout to HOST:PORT through one proxy or a chain of them (like netcat).
    Connect(commands::connect::Args),
    /// Forward local ports to remote targets through one proxy or a chain of them.
    Forward(commands::forward::Args),
    /// Probe a proxy and report what it supports.
    Check(commands::check::Args),
    /// Measure a SOCKS5 or HTTP CONNECT proxy: throughput, connection rate, latency, idle cost, UDP.
    Bench(Box<commands::bench::Args>),
    /// Add a user to a users file (`serve --users FILE`), change their password, or remove them.
    Passwd(commands::passwd::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(commands::completions::Args),
    /// Print the manual page (roff), of socksmith or of one command.
    Man(commands::man::Args),
}
