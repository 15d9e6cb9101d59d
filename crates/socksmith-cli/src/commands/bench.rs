//! `socksmith bench`: the command line of the load generator in the `socksmith-bench` crate.
//! It parses the options into [`socksmith_bench::Settings`], runs the bench on the usual
//! runtime, prints progress on stderr and the table (or `--json`) on stdout.

use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::ValueEnum;
use socksmith_bench::{Route, Settings};

use crate::duration::{parse_duration, parse_positive_duration};

/// Arguments of `socksmith bench`.
///
/// The proxy must be able to reach the bench's loopback targets, so it runs on this machine.
/// Every phase is bounded in count and in time.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The proxy to measure: socks5://[user:pass@]IP:PORT (socks5h:// too), or an HTTP
    /// CONNECT proxy, http://[user:pass@]IP:PORT (no UDP phase: HTTP carries CONNECT only).
    #[arg(
        short = 'x',
        long,
        value_name = "URL",
        required_unless_present = "direct",
        conflicts_with = "direct"
    )]
    pub proxy: Option<String>,

    /// Run the same load straight to the targets: the loopback limit ratios are read against.
    #[arg(long)]
    pub direct: bool,

    /// The proxy's process IDs (comma-separated); each is measured with all its descendants
    /// for the idle phase's memory and descriptor figures.
    #[arg(long, value_delimiter = ',')]
    pub proxy_pid: Vec<u32>,

    /// Phases to run (comma-separated); all by default.
    #[arg(long, value_delimiter = ',', value_enum)]
    pub only: Vec<Phase>,

    /// Repeats of every timed phase; medians and spreads are reported. The idle phase runs
    /// once (a second round would reuse memory the proxy's allocator kept from the first).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub repeat: u32,

    /// Print JSON on stdout instead of the table.
    #[arg(long)]
    pub json: bool,

    /// Name of what is measured, for the report (default: the proxy URL or "direct").
    #[arg(long)]
    pub label: Option<String>,

    /// Each timed measurement window (throughput, connection rate, request/response, UDP),
    /// e.g. 2s or 500ms.
    #[arg(long, default_value = "2s", value_parser = window)]
    pub duration: Duration,

    /// Warm-up before each measurement window, e.g. 500ms (0 for none).
    #[arg(long, default_value = "500ms", value_parser = up_to_an_hour)]
    pub warmup: Duration,

    /// Parallel tunnels of the multi-tunnel throughput measurement.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub parallel: u64,

    /// Connection cycles kept in flight in the connection-rate phase.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub connrate_concurrency: u64,

    /// Most connection cycles measured per connection-rate repeat.
    #[arg(long, default_value_t = 200_000)]
    pub connrate_max: u64,

    /// Established tunnels of the request/response phase.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub rr_tunnels: u64,

    /// Most round trips per tunnel per request/response repeat.
    #[arg(long, default_value_t = 1_000_000)]
    pub rr_max: u64,

    /// UDP associations of the UDP phase, each with its own socket.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub udp_associations: u64,

    /// Datagrams in flight per UDP association.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub udp_in_flight: u64,

    /// Tunnels the idle phase opens and holds.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=200_000))]
    pub idle_tunnels: u64,

    /// Opens in flight at once in the idle phase.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub idle_concurrency: u64,

    /// Time the idle phase may spend opening tunnels, e.g. 60s.
    #[arg(long, default_value = "60s", value_parser = window)]
    pub idle_timeout: Duration,

    /// Wait between the last idle tunnel opened and the measurement, e.g. 2s.
    #[arg(long, default_value = "2s", value_parser = up_to_an_hour)]
    pub idle_settle: Duration,

    /// Loopback address the targets listen on (127.0.0.0/8 or ::1).
    #[arg(long, default_value = "127.0.0.1")]
    pub target_ip: IpAddr,
}

/// A phase of the bench.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Phase {
    /// Bulk throughput, 1 and N tunnels, upload and download.
    Throughput,
    /// Connect, handshake, CONNECT, one-byte round trip, close, many in flight.
    Connrate,
    /// 64-byte ping-pong over established tunnels.
    Rr,
    /// 512-byte datagrams through UDP ASSOCIATE.
    Udp,
    /// Many idle tunnels; the proxy's memory and descriptors per tunnel.
    Idle,
}

impl From<Phase> for socksmith_bench::Phase {
    fn from(phase: Phase) -> Self {
        match phase {
            Phase::Throughput => socksmith_bench::Phase::Throughput,
            Phase::Connrate => socksmith_bench::Phase::Connrate,
            Phase::Rr => socksmith_bench::Phase::Rr,
            Phase::Udp => socksmith_bench::Phase::Udp,
            Phase::Idle => socksmith_bench::Phase::Idle,
        }
    }
}

/// Every bench duration is bounded: a phase may not run longer than an hour.
const LONGEST: Duration = Duration::from_secs(3600);

fn up_to_an_hour(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d > LONGEST {
        return Err(format!("{text:?}: at most 1h"));
    }
    Ok(d)
}

fn window(text: &str) -> Result<Duration, String> {
    parse_positive_duration(text).and_then(|_| up_to_an_hour(text))
}

/// Runs `socksmith bench`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let route = match &args.proxy {
        Some(url) => Route::proxy(url).with_context(|| format!("--proxy {url}"))?,
        None => Route::Direct,
    };
    let settings = Settings {
        route,
        proxy_pids: args.proxy_pid,
        only: args.only.into_iter().map(Into::into).collect(),
        repeat: args.repeat,
        label: args.label,
        duration: args.duration,
        warmup: args.warmup,
        parallel: args.parallel,
        connrate_concurrency: args.connrate_concurrency,
        connrate_max: args.connrate_max,
        rr_tunnels: args.rr_tunnels,
        rr_max: args.rr_max,
        udp_associations: args.udp_associations,
        udp_in_flight: args.udp_in_flight,
        idle_tunnels: args.idle_tunnels,
        idle_concurrency: args.idle_concurrency,
        idle_timeout: args.idle_timeout,
        idle_settle: args.idle_settle,
        target_ip: args.target_ip,
    };
    let runtime = super::runtime()?;
    let report = runtime.block_on(socksmith_bench::run(&settings, &|line| eprintln!("{line}")))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_the_syntax_of_every_other_command() {
        assert_eq!(window("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(window("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(window("0.2"), Ok(Duration::from_millis(200)));
        assert!(window("0").is_err(), "a window must be longer than 0");
        assert_eq!(up_to_an_hour("0"), Ok(Duration::ZERO));
        assert!(up_to_an_hour("2h").is_err());
        assert!(window("soon").is_err());
    }
}
