//! `socksmith bench`: measures any SOCKS5 proxy (ours or not) against the bench's own
//! loopback targets, or the same load without a proxy (`--direct`).
//!
//! Owns the command line of the bench and the order of its phases; the load generators are
//! in [`phases`], the targets in [`targets`], the SOCKS5 client side in [`route`], `/proc`
//! readings in [`procfs`], statistics in [`stats`] and the table and JSON in [`report`].
//! Progress goes to stderr, the table (or `--json`) to stdout.

mod phases;
mod procfs;
mod report;
mod route;
mod stats;
mod targets;

use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::ValueEnum;

use phases::{Direction, IdlePlan};
use report::{Metric, Report};
use route::{ProxySpec, Route};
use stats::Summary;
use targets::Targets;

/// Arguments of `socksmith bench`.
///
/// The proxy must be able to reach the bench's loopback targets, so it runs on this machine.
/// Every phase is bounded in count and in time.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The proxy to measure: socks5://[user:pass@]host:port.
    #[arg(long, required_unless_present = "direct", conflicts_with = "direct")]
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

    /// Seconds of each timed measurement window (throughput, request/response, UDP) and the
    /// time bound of the connection-rate phase.
    #[arg(long, default_value = "2", value_parser = seconds)]
    pub duration: Duration,

    /// Seconds of warm-up before each measurement window.
    #[arg(long, default_value = "0.5", value_parser = seconds)]
    pub warmup: Duration,

    /// Parallel tunnels of the multi-tunnel throughput measurement.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub parallel: u64,

    /// Concurrent workers of the connection-rate phase.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub connrate_concurrency: u64,

    /// Most connection cycles started per connection-rate repeat.
    #[arg(long, default_value_t = 200_000)]
    pub connrate_max: u64,

    /// Established tunnels of the request/response phase.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub rr_tunnels: u64,

    /// Most round trips per tunnel per request/response repeat.
    #[arg(long, default_value_t = 1_000_000)]
    pub rr_max: u64,

    /// Datagrams in flight in the UDP phase.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub udp_in_flight: u64,

    /// Tunnels the idle phase opens and holds.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=200_000))]
    pub idle_tunnels: u64,

    /// Opens in flight at once in the idle phase.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub idle_concurrency: u64,

    /// Seconds the idle phase may spend opening tunnels.
    #[arg(long, default_value = "60", value_parser = seconds)]
    pub idle_timeout: Duration,

    /// Seconds between the last idle tunnel opened and the measurement.
    #[arg(long, default_value = "2", value_parser = seconds)]
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
    /// Connect, handshake, CONNECT, one-byte round trip, close, at concurrency 64.
    Connrate,
    /// 64-byte ping-pong over established tunnels.
    Rr,
    /// 512-byte datagrams through UDP ASSOCIATE.
    Udp,
    /// Many idle tunnels; the proxy's memory and descriptors per tunnel.
    Idle,
}

fn seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not seconds"))?;
    if !(0.0..=3600.0).contains(&secs) {
        return Err("seconds must be between 0 and 3600".into());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Runs `socksmith bench`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.target_ip.is_loopback(),
        "--target-ip {} is not a loopback address: the bench only sends traffic to this machine",
        args.target_ip
    );
    let route = match &args.proxy {
        Some(url) => Route::Proxy(ProxySpec::parse(url).with_context(|| format!("--proxy {url}"))?),
        None => Route::Direct,
    };
    let runtime = super::runtime()?;
    let report = runtime.block_on(bench(&args, &route))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(ExitCode::SUCCESS)
}

fn progress(label: &str, what: &str) {
    eprintln!("bench [{label}] {what}");
}

/// Samples of one metric over the repeats, and why a repeat had none.
#[derive(Default)]
struct Samples {
    values: Vec<f64>,
    note: Option<String>,
}

impl Samples {
    fn push(&mut self, value: f64) {
        self.values.push(value);
    }
    fn missing(&mut self, why: String) {
        self.note.get_or_insert(why);
    }
}

const THROUGHPUT: [(&str, &str, bool, Direction); 4] = [
    (
        "throughput_1_up",
        "throughput, 1 tunnel, upload",
        false,
        Direction::Upload,
    ),
    (
        "throughput_1_down",
        "throughput, 1 tunnel, download",
        false,
        Direction::Download,
    ),
    (
        "throughput_n_up",
        "throughput, N tunnels, upload",
        true,
        Direction::Upload,
    ),
    (
        "throughput_n_down",
        "throughput, N tunnels, download",
        true,
        Direction::Download,
    ),
];

async fn bench(args: &Args, route: &Route) -> anyhow::Result<Report> {
    let label = args.label.clone().unwrap_or_else(|| match route {
        Route::Direct => "direct".to_owned(),
        Route::Proxy(p) => p.display.clone(),
    });
    let selected = |phase: Phase| args.only.is_empty() || args.only.contains(&phase);
    let targets = Targets::start(args.target_ip)
        .await
        .context("starting the loopback targets")?;
    progress(
        &label,
        &format!(
            "targets: sink {}, source {}, echo {}, udp echo {}",
            targets.sink, targets.source, targets.echo, targets.udp_echo
        ),
    );
    let mut notes = Vec::new();
    let mut tput: [Samples; 4] = Default::default();
    let [mut cr, mut cr_p50, mut cr_p99, mut cr_err]: [Samples; 4] = Default::default();
    let [mut rr, mut rr_p50, mut rr_p99]: [Samples; 3] = Default::default();
    let [mut udp, mut udp_lost]: [Samples; 2] = Default::default();

    for rep in 1..=args.repeat {
        let tag = format!("{rep}/{}", args.repeat);
        if selected(Phase::Throughput) {
            for (i, (_, name, parallel, direction)) in THROUGHPUT.iter().enumerate() {
                let tunnels = if *parallel { args.parallel as usize } else { 1 };
                let name = name.replace('N', &tunnels.to_string());
                match phases::throughput(
                    route,
                    &targets,
                    tunnels,
                    *direction,
                    args.warmup,
                    args.duration,
                )
                .await
                {
                    Ok(gbps) => {
                        progress(&label, &format!("{tag} {name}: {gbps:.2} Gbit/s"));
                        tput[i].push(gbps);
                    }
                    Err(e) => {
                        progress(&label, &format!("{tag} {name}: failed: {e}"));
                        tput[i].missing(format!("failed: {e}"));
                    }
                }
            }
        }
        if selected(Phase::Connrate) {
            let r = phases::connection_rate(
                route,
                targets.echo,
                args.connrate_concurrency as usize,
                args.connrate_max,
                args.duration,
            )
            .await;
            progress(
                &label,
                &format!(
                    "{tag} connection rate: {:.0} tunnels/s, handshake p50 {:.0} us, p99 {:.0} us, {} errors{}",
                    r.per_sec,
                    r.p50_us,
                    r.p99_us,
                    r.errors,
                    r.first_error.as_deref().map(|e| format!(" (first: {e})")).unwrap_or_default()
                ),
            );
            if r.completed > 0 {
                cr.push(r.per_sec);
                cr_p50.push(r.p50_us);
                cr_p99.push(r.p99_us);
            } else {
                let why = format!("no cycle completed: {}", r.first_error.unwrap_or_default());
                cr.missing(why.clone());
                cr_p50.missing(why.clone());
                cr_p99.missing(why);
            }
            cr_err.push(r.errors as f64);
        }
        if selected(Phase::Rr) {
            match phases::request_response(
                route,
                targets.echo,
                args.rr_tunnels as usize,
                args.warmup,
                args.duration,
                args.rr_max as usize,
            )
            .await
            {
                Ok(r) => {
                    progress(
                        &label,
                        &format!(
                            "{tag} request/response: {:.0} round trips/s, p50 {:.1} us, p99 {:.1} us, {} tunnel errors",
                            r.per_sec, r.p50_us, r.p99_us, r.errors
                        ),
                    );
                    rr.push(r.per_sec);
                    rr_p50.push(r.p50_us);
                    rr_p99.push(r.p99_us);
                }
                Err(e) => {
                    progress(&label, &format!("{tag} request/response: failed: {e}"));
                    for s in [&mut rr, &mut rr_p50, &mut rr_p99] {
                        s.missing(format!("failed: {e}"));
                    }
                }
            }
        }
        if selected(Phase::Udp) {
            match phases::udp(
                route,
                args.target_ip,
                targets.udp_echo,
                args.udp_in_flight as usize,
                args.warmup,
                args.duration,
            )
            .await
            {
                Ok(Ok(r)) => {
                    progress(
                        &label,
                        &format!(
                            "{tag} UDP: {:.0} datagrams/s back, {} lost",
                            r.per_sec, r.lost
                        ),
                    );
                    udp.push(r.per_sec);
                    udp_lost.push(r.lost as f64);
                }
                Ok(Err(why)) => {
                    progress(&label, &format!("{tag} UDP: unsupported: {why}"));
                    udp.missing(format!("unsupported: {why}"));
                    udp_lost.missing("unsupported".into());
                }
                Err(e) => {
                    progress(&label, &format!("{tag} UDP: failed: {e}"));
                    udp.missing(format!("failed: {e}"));
                    udp_lost.missing(format!("failed: {e}"));
                }
            }
        }
    }

    let idle = if selected(Phase::Idle) {
        Some(run_idle(args, route, &targets, &label, &mut notes).await?)
    } else {
        None
    };
    if let Route::Proxy(_) = route {
        if args.proxy_pid.is_empty() && selected(Phase::Idle) {
            notes.push("no --proxy-pid: the idle phase measured no memory or descriptors".into());
        }
    }

    let metric = |key, label, unit, higher_is_better, samples: &Samples| Metric {
        key,
        label,
        unit,
        higher_is_better,
        summary: Summary::of(&samples.values),
        note: samples.note.clone().or_else(|| {
            samples
                .values
                .is_empty()
                .then(|| "phase not selected".into())
        }),
    };
    let mut metrics = Vec::new();
    for (i, (key, name, _, _)) in THROUGHPUT.iter().enumerate() {
        let name: &'static str = match *key {
            "throughput_n_up" | "throughput_n_down" if args.parallel == 8 => {
                if *key == "throughput_n_up" {
                    "throughput, 8 tunnels, upload"
                } else {
                    "throughput, 8 tunnels, download"
                }
            }
            _ => name,
        };
        metrics.push(metric(key, name, "Gbit/s", true, &tput[i]));
    }
    metrics.push(metric(
        "connrate",
        "connection rate (connect..1-byte echo..close)",
        "tunnels/s",
        true,
        &cr,
    ));
    metrics.push(metric(
        "connrate_p50_us",
        "connection rate: handshake latency p50",
        "us",
        false,
        &cr_p50,
    ));
    metrics.push(metric(
        "connrate_p99_us",
        "connection rate: handshake latency p99",
        "us",
        false,
        &cr_p99,
    ));
    metrics.push(metric(
        "connrate_errors",
        "connection rate: errors",
        "count",
        false,
        &cr_err,
    ));
    metrics.push(metric(
        "rr",
        "request/response (64 B ping-pong)",
        "round trips/s",
        true,
        &rr,
    ));
    metrics.push(metric(
        "rr_p50_us",
        "request/response: round trip p50",
        "us",
        false,
        &rr_p50,
    ));
    metrics.push(metric(
        "rr_p99_us",
        "request/response: round trip p99",
        "us",
        false,
        &rr_p99,
    ));
    metrics.push(metric(
        "udp",
        "UDP echo (512 B datagrams)",
        "datagrams/s",
        true,
        &udp,
    ));
    metrics.push(metric("udp_lost", "UDP: lost", "count", false, &udp_lost));
    let mut idle_metric = |key, label, unit, value: Option<f64>, why: &str| {
        metrics.push(Metric {
            key,
            label,
            unit,
            higher_is_better: false,
            summary: value.and_then(|v| Summary::of(&[v])),
            note: value.is_none().then(|| why.to_owned()),
        });
    };
    let no_pid = if idle.is_some() {
        "no --proxy-pid"
    } else {
        "phase not selected"
    };
    idle_metric(
        "idle_kib_per_tunnel",
        "idle: resident memory per tunnel",
        "KiB",
        idle.as_ref().and_then(|i| i.kib_per_tunnel),
        no_pid,
    );
    idle_metric(
        "idle_fds_per_tunnel",
        "idle: descriptors per tunnel",
        "fds",
        idle.as_ref().and_then(|i| i.fds_per_tunnel),
        no_pid,
    );
    metrics.push(Metric {
        key: "idle_open",
        label: "idle: tunnels open",
        unit: "tunnels",
        higher_is_better: true,
        summary: idle.as_ref().and_then(|i| Summary::of(&[i.opened as f64])),
        note: idle.is_none().then(|| "phase not selected".into()),
    });

    Ok(Report {
        label,
        proxy: match route {
            Route::Direct => "direct".into(),
            Route::Proxy(p) => p.display.clone(),
        },
        authenticated: matches!(route, Route::Proxy(p) if p.credentials.is_some()),
        repeat: args.repeat,
        settings: serde_json::json!({
            "duration_s": args.duration.as_secs_f64(),
            "warmup_s": args.warmup.as_secs_f64(),
            "parallel_tunnels": args.parallel,
            "connrate_concurrency": args.connrate_concurrency,
            "connrate_max": args.connrate_max,
            "rr_tunnels": args.rr_tunnels,
            "rr_message_bytes": phases::RR_MESSAGE,
            "udp_payload_bytes": phases::UDP_PAYLOAD,
            "udp_in_flight": args.udp_in_flight,
            "idle_tunnels": args.idle_tunnels,
            "idle_settle_s": args.idle_settle.as_secs_f64(),
            "proxy_pids": args.proxy_pid,
            "workers": std::thread::available_parallelism().map_or(1, |n| n.get()),
        }),
        metrics,
        idle,
        notes,
    })
}

async fn run_idle(
    args: &Args,
    route: &Route,
    targets: &Targets,
    label: &str,
    notes: &mut Vec<String>,
) -> anyhow::Result<phases::Idle> {
    // Each tunnel costs the bench two descriptors (client end and accepted target end), plus
    // a few for the runtime, the listeners and stdio.
    const RESERVE: u64 = 64;
    let mut count = args.idle_tunnels as usize;
    let need = 2 * args.idle_tunnels + RESERVE;
    let limit = procfs::raise_own_nofile(need).context("raising RLIMIT_NOFILE")?;
    if limit < need {
        count = (limit.saturating_sub(RESERVE) / 2) as usize;
        let note = format!(
            "the bench's own open-file limit is {limit} (hard limit, and no privilege to raise \
             it): the idle phase opens {count} tunnels instead of {}",
            args.idle_tunnels
        );
        progress(label, &note);
        notes.push(note);
    }
    for &pid in &args.proxy_pid {
        // Two sockets per tunnel is the floor for any proxy (client side and target side).
        if let Some(proxy_limit) = procfs::open_file_limit(pid) {
            let proxy_need = 2 * count as u64 + RESERVE;
            if proxy_limit < proxy_need {
                let note = format!(
                    "process {pid} may open at most {proxy_limit} files; a single-process proxy \
                     needs about {proxy_need} for {count} tunnels: raise its limit \
                     (`prlimit --pid {pid} --nofile={proxy_need}:{proxy_need}`) or expect \
                     failed tunnels"
                );
                progress(label, &note);
                notes.push(note);
            }
        }
    }
    progress(label, &format!("idle: opening {count} tunnels"));
    let report_progress = |open: usize| progress(label, &format!("idle: {open} tunnels open"));
    let idle = phases::idle(
        route,
        targets.echo,
        IdlePlan {
            count,
            concurrency: args.idle_concurrency as usize,
            open_timeout: args.idle_timeout,
            settle: args.idle_settle,
            pids: &args.proxy_pid,
            progress: &report_progress,
        },
    )
    .await
    .context("measuring the proxy's processes (is --proxy-pid right?)")?;
    progress(
        label,
        &format!(
            "idle: {} open ({} failed{}) in {:.1} s; {}/{} probed alive; {}",
            idle.opened,
            idle.failed,
            idle.first_error
                .as_deref()
                .map(|e| format!(", first: {e}"))
                .unwrap_or_default(),
            idle.open_secs,
            idle.alive,
            idle.probed,
            match (idle.kib_per_tunnel, idle.fds_per_tunnel) {
                (Some(k), Some(f)) => format!("{k:.2} KiB and {f:.2} descriptors per tunnel"),
                _ => "no proxy figures (no --proxy-pid)".into(),
            }
        ),
    );
    Ok(idle)
}
