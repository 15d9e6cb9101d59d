//! The load generator behind `socksmith bench`: measures any SOCKS5 or HTTP CONNECT proxy
//! (ours or not) against its own loopback targets, or the same load without a proxy
//! ([`Route::Direct`]).
//!
//! [`run`] owns the order of the phases and turns their repeats into a [`Report`]; the load
//! generators are in `phases`, the targets in [`targets`] (shared with the testkit), the
//! route to a proxy in [`route`] (the `socksmith` client library's URL parsing and CONNECT),
//! batched UDP syscalls in `batch`, the pattern every byte is checked against in [`payload`],
//! `/proc` readings in `procfs`, statistics in [`stats`] and the table and JSON in
//! [`report`]. It prints nothing itself: progress goes to the caller's callback.
//!
//! Every phase is bounded in count and in time, and sends traffic only to the targets it
//! started on a loopback address.

mod batch;
pub mod payload;
pub mod phases;
pub mod procfs;
pub mod report;
pub mod route;
pub mod stats;
pub mod targets;

use std::net::IpAddr;
use std::time::Duration;

pub use phases::{Direction, Idle};
pub use report::{Metric, Report};
pub use route::{Route, RouteError, TunnelError};

use phases::{ConnRatePlan, IdlePlan, UdpPlan};
use stats::Summary;
use targets::Targets;

/// A phase of the bench.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// Everything a run needs. [`Settings::default`] gives the command line's defaults.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Straight to the targets or through a proxy.
    pub route: Route,
    /// The proxy's process IDs; each is measured with its descendants in the idle phase.
    pub proxy_pids: Vec<u32>,
    /// Phases to run; all when empty.
    pub only: Vec<Phase>,
    /// Repeats of every timed phase (the idle phase runs once).
    pub repeat: u32,
    /// Name of what is measured (default: the proxy URL or "direct").
    pub label: Option<String>,
    /// Each timed measurement window, and the connection-rate phase's.
    pub duration: Duration,
    /// Warm-up before each measurement window, the connection-rate phase's too.
    pub warmup: Duration,
    /// Parallel tunnels of the multi-tunnel throughput measurement.
    pub parallel: u64,
    /// Connection cycles in flight in the connection-rate phase.
    pub connrate_concurrency: u64,
    /// Most connection cycles measured per connection-rate repeat.
    pub connrate_max: u64,
    /// Established tunnels of the request/response phase.
    pub rr_tunnels: u64,
    /// Most round trips per tunnel per request/response repeat.
    pub rr_max: u64,
    /// UDP associations of the UDP phase.
    pub udp_associations: u64,
    /// Datagrams in flight per association.
    pub udp_in_flight: u64,
    /// Tunnels the idle phase opens and holds.
    pub idle_tunnels: u64,
    /// Opens in flight at once in the idle phase.
    pub idle_concurrency: u64,
    /// Time the idle phase may spend opening tunnels.
    pub idle_timeout: Duration,
    /// Wait between the last idle tunnel opened and the measurement.
    pub idle_settle: Duration,
    /// Loopback address the targets listen on.
    pub target_ip: IpAddr,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            route: Route::Direct,
            proxy_pids: Vec::new(),
            only: Vec::new(),
            repeat: 3,
            label: None,
            duration: Duration::from_secs(2),
            warmup: Duration::from_millis(500),
            parallel: 8,
            connrate_concurrency: 64,
            connrate_max: 200_000,
            rr_tunnels: 16,
            rr_max: 1_000_000,
            udp_associations: 4,
            udp_in_flight: 16,
            idle_tunnels: 10_000,
            idle_concurrency: 128,
            idle_timeout: Duration::from_secs(60),
            idle_settle: Duration::from_secs(2),
            target_ip: IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        }
    }
}

/// Why a run could not produce a report (a phase that fails is a note in the report instead).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// The targets must be on this machine.
    #[error("{0} is not a loopback address: the bench only sends traffic to this machine")]
    NotLoopback(IpAddr),
    /// The loopback targets could not start.
    #[error("starting the loopback targets: {0}")]
    Targets(#[source] std::io::Error),
    /// Our own open-file limit could not be read or raised.
    #[error("raising RLIMIT_NOFILE: {0}")]
    FileLimit(#[source] std::io::Error),
    /// The proxy's processes could not be read (wrong `--proxy-pid`, or it died).
    #[error("measuring the proxy's processes (is --proxy-pid right?): {0}")]
    ProxyProcess(#[source] std::io::Error),
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

/// Runs the bench: starts the targets, runs the selected phases `repeat` times (the idle
/// phase once, last) and summarizes them. `progress` gets one line per step, for stderr.
pub async fn run(settings: &Settings, progress: &dyn Fn(&str)) -> Result<Report, BenchError> {
    let s = settings;
    if !s.target_ip.is_loopback() {
        return Err(BenchError::NotLoopback(s.target_ip));
    }
    let route = &s.route;
    let label = s.label.clone().unwrap_or_else(|| route.display());
    let say = |what: &str| progress(&format!("bench [{label}] {what}"));
    let selected = |phase: Phase| s.only.is_empty() || s.only.contains(&phase);
    let targets = Targets::start(s.target_ip)
        .await
        .map_err(BenchError::Targets)?;
    say(&format!(
        "targets: sink {}, source {}, echo {}, udp echo {}",
        targets.sink, targets.source, targets.echo, targets.udp_echo
    ));
    let mut notes = Vec::new();
    let mut tput: [Samples; 4] = Default::default();
    let [mut cr, mut cr_p50, mut cr_p99, mut cr_err]: [Samples; 4] = Default::default();
    let [mut rr, mut rr_p50, mut rr_p99, mut rr_err]: [Samples; 4] = Default::default();
    let [mut udp, mut udp_p99, mut udp_lost, mut udp_bad]: [Samples; 4] = Default::default();

    for rep in 1..=s.repeat {
        let tag = format!("{rep}/{}", s.repeat);
        if selected(Phase::Throughput) {
            for (i, (_, name, parallel, direction)) in THROUGHPUT.iter().enumerate() {
                let tunnels = if *parallel { s.parallel as usize } else { 1 };
                let name = name.replace('N', &tunnels.to_string());
                let measured =
                    phases::throughput(route, &targets, tunnels, *direction, s.warmup, s.duration)
                        .await;
                match measured {
                    Ok(t) => {
                        say(&format!("{tag} {name}: {:.2} Gbit/s", t.gbps));
                        tput[i].push(t.gbps);
                    }
                    Err(e) => {
                        say(&format!("{tag} {name}: failed: {e}"));
                        tput[i].missing(format!("failed: {e}"));
                    }
                }
            }
        }
        if selected(Phase::Connrate) {
            let plan = ConnRatePlan {
                concurrency: s.connrate_concurrency as usize,
                max: s.connrate_max,
                warmup: s.warmup,
                window: s.duration,
            };
            let r = phases::connection_rate(route, &targets.echo_pool, plan).await;
            say(&format!(
                "{tag} connection rate: {:.0} tunnels/s, handshake p50 {:.0} us, p99 {:.0} us, \
                 {} errors{}",
                r.per_sec,
                r.p50_us,
                r.p99_us,
                r.errors,
                r.first_error
                    .as_deref()
                    .map(|e| format!(" (first: {e})"))
                    .unwrap_or_default()
            ));
            if r.completed > 0 {
                cr.push(r.per_sec);
                cr_p50.push(r.p50_us);
                cr_p99.push(r.p99_us);
            } else {
                let why = format!("no cycle completed: {}", r.first_error.unwrap_or_default());
                for samples in [&mut cr, &mut cr_p50, &mut cr_p99] {
                    samples.missing(why.clone());
                }
            }
            cr_err.push(r.errors as f64);
        }
        if selected(Phase::Rr) {
            let measured = phases::request_response(
                route,
                targets.echo,
                s.rr_tunnels as usize,
                s.warmup,
                s.duration,
                s.rr_max as usize,
            )
            .await;
            match measured {
                Ok(r) => {
                    say(&format!(
                        "{tag} request/response: {:.0} round trips/s, p50 {:.1} us, p99 {:.1} \
                         us, {} tunnel errors",
                        r.per_sec, r.p50_us, r.p99_us, r.errors
                    ));
                    rr.push(r.per_sec);
                    rr_p50.push(r.p50_us);
                    rr_p99.push(r.p99_us);
                    rr_err.push(r.errors as f64);
                }
                Err(e) => {
                    say(&format!("{tag} request/response: failed: {e}"));
                    for samples in [&mut rr, &mut rr_p50, &mut rr_p99, &mut rr_err] {
                        samples.missing(format!("failed: {e}"));
                    }
                }
            }
        }
        if selected(Phase::Udp) {
            let plan = UdpPlan {
                bind_ip: s.target_ip,
                echo: targets.udp_echo,
                associations: s.udp_associations as usize,
                in_flight: s.udp_in_flight as usize,
                warmup: s.warmup,
                window: s.duration,
            };
            match phases::udp(route, plan).await {
                Ok(Ok(r)) => {
                    say(&format!(
                        "{tag} UDP: {:.0} datagrams/s back, p99 {:.0} us, {} lost, {} corrupted",
                        r.per_sec, r.p99_us, r.lost, r.corrupted
                    ));
                    udp.push(r.per_sec);
                    udp_p99.push(r.p99_us);
                    udp_lost.push(r.lost as f64);
                    udp_bad.push(r.corrupted as f64);
                }
                Ok(Err(why)) => {
                    say(&format!("{tag} UDP: unsupported: {why}"));
                    for samples in [&mut udp, &mut udp_p99, &mut udp_lost, &mut udp_bad] {
                        samples.missing(format!("unsupported: {why}"));
                    }
                }
                Err(e) => {
                    say(&format!("{tag} UDP: failed: {e}"));
                    for samples in [&mut udp, &mut udp_p99, &mut udp_lost, &mut udp_bad] {
                        samples.missing(format!("failed: {e}"));
                    }
                }
            }
        }
    }

    let idle = if selected(Phase::Idle) {
        Some(run_idle(s, &targets, &say, &mut notes).await?)
    } else {
        None
    };
    if matches!(route, Route::Proxy(_)) && s.proxy_pids.is_empty() && selected(Phase::Idle) {
        notes.push("no --proxy-pid: the idle phase measured no memory or descriptors".into());
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
        let name: &'static str = match (*key, s.parallel) {
            ("throughput_n_up", 8) => "throughput, 8 tunnels, upload",
            ("throughput_n_down", 8) => "throughput, 8 tunnels, download",
            _ => name,
        };
        metrics.push(metric(key, name, "Gbit/s", true, &tput[i]));
    }
    metrics.extend([
        metric(
            "connrate",
            "connection rate (connect..1-byte echo..close)",
            "tunnels/s",
            true,
            &cr,
        ),
        metric(
            "connrate_p50_us",
            "connection rate: handshake latency p50",
            "us",
            false,
            &cr_p50,
        ),
        metric(
            "connrate_p99_us",
            "connection rate: handshake latency p99",
            "us",
            false,
            &cr_p99,
        ),
        metric(
            "connrate_errors",
            "connection rate: errors",
            "count",
            false,
            &cr_err,
        ),
        metric(
            "rr",
            "request/response (64 B ping-pong)",
            "round trips/s",
            true,
            &rr,
        ),
        metric(
            "rr_p50_us",
            "request/response: round trip p50",
            "us",
            false,
            &rr_p50,
        ),
        metric(
            "rr_p99_us",
            "request/response: round trip p99",
            "us",
            false,
            &rr_p99,
        ),
        metric(
            "rr_errors",
            "request/response: failed tunnels",
            "count",
            false,
            &rr_err,
        ),
        metric(
            "udp",
            "UDP echo (512 B datagrams)",
            "datagrams/s",
            true,
            &udp,
        ),
        metric("udp_p99_us", "UDP: round trip p99", "us", false, &udp_p99),
        metric("udp_lost", "UDP: lost", "count", false, &udp_lost),
        metric(
            "udp_corrupted",
            "UDP: came back different",
            "count",
            false,
            &udp_bad,
        ),
    ]);
    let no_pid = match &idle {
        None => "phase not selected",
        Some(i) if i.after.is_none() => "no --proxy-pid",
        Some(_) => "no second half: the proxy took no more tunnels",
    };
    let idle_figure = |key, label, unit, value: Option<f64>| Metric {
        key,
        label,
        unit,
        higher_is_better: false,
        summary: value.and_then(|v| Summary::of(&[v])),
        note: value.is_none().then(|| no_pid.to_owned()),
    };
    metrics.extend([
        idle_figure(
            "idle_kib_per_tunnel",
            "idle: memory (PSS) per tunnel",
            "KiB",
            idle.as_ref().and_then(|i| i.kib_per_tunnel),
        ),
        idle_figure(
            "idle_kib_per_tunnel_all",
            "idle: memory (PSS) per tunnel, all tunnels",
            "KiB",
            idle.as_ref().and_then(|i| i.kib_per_tunnel_all),
        ),
        idle_figure(
            "idle_rss_kib_per_tunnel",
            "idle: resident memory (RSS) per tunnel",
            "KiB",
            idle.as_ref().and_then(|i| i.rss_kib_per_tunnel),
        ),
        idle_figure(
            "idle_fds_per_tunnel",
            "idle: descriptors per tunnel",
            "fds",
            idle.as_ref().and_then(|i| i.fds_per_tunnel),
        ),
    ]);
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
        proxy: route.display(),
        authenticated: route.authenticated(),
        repeat: s.repeat,
        settings: serde_json::json!({
            "duration_s": s.duration.as_secs_f64(),
            "warmup_s": s.warmup.as_secs_f64(),
            "parallel_tunnels": s.parallel,
            "connrate_concurrency": s.connrate_concurrency,
            "connrate_max": s.connrate_max,
            "rr_tunnels": s.rr_tunnels,
            "rr_message_bytes": phases::RR_MESSAGE,
            "udp_payload_bytes": phases::UDP_PAYLOAD,
            "udp_associations": s.udp_associations,
            "udp_in_flight": s.udp_in_flight,
            "idle_tunnels": s.idle_tunnels,
            "idle_settle_s": s.idle_settle.as_secs_f64(),
            "proxy_pids": s.proxy_pids,
            "workers": std::thread::available_parallelism().map_or(1, |n| n.get()),
        }),
        metrics,
        idle,
        notes,
    })
}

async fn run_idle(
    s: &Settings,
    targets: &Targets,
    say: &dyn Fn(&str),
    notes: &mut Vec<String>,
) -> Result<Idle, BenchError> {
    // Each tunnel costs the bench two descriptors (client end and accepted target end), plus
    // a few for the runtime, the listeners and stdio.
    const RESERVE: u64 = 64;
    let mut count = s.idle_tunnels as usize;
    let need = 2 * s.idle_tunnels + RESERVE;
    let limit = procfs::raise_own_nofile(need).map_err(BenchError::FileLimit)?;
    if limit < need {
        count = (limit.saturating_sub(RESERVE) / 2) as usize;
        let note = format!(
            "the bench's own open-file limit is {limit} (hard limit, and no privilege to raise \
             it): the idle phase opens {count} tunnels instead of {}",
            s.idle_tunnels
        );
        say(&note);
        notes.push(note);
    }
    for &pid in &s.proxy_pids {
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
                say(&note);
                notes.push(note);
            }
        }
    }
    say(&format!("idle: opening {count} tunnels"));
    let report_progress = |open: usize| say(&format!("idle: {open} tunnels open"));
    let idle = phases::idle(
        &s.route,
        targets.echo,
        IdlePlan {
            count,
            concurrency: s.idle_concurrency as usize,
            open_timeout: s.idle_timeout,
            settle: s.idle_settle,
            pids: &s.proxy_pids,
            progress: &report_progress,
        },
    )
    .await
    .map_err(BenchError::ProxyProcess)?;
    if idle.stalled {
        say(&format!(
            "idle: none opened for {} s, so the proxy takes no more tunnels (its session \
             limit?): measured over the {} open",
            phases::IDLE_STALL.as_secs(),
            idle.opened
        ));
    }
    say(&format!(
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
        match (
            idle.kib_per_tunnel,
            idle.kib_per_tunnel_all,
            idle.fds_per_tunnel
        ) {
            (Some(k), Some(all), Some(f)) => format!(
                "{k:.2} KiB (PSS) and {f:.2} descriptors per tunnel of the second half \
                 ({all:.2} KiB over all tunnels)"
            ),
            _ if idle.after.is_none() => "no proxy figures (no --proxy-pid)".into(),
            _ => "no figures for the second half: no tunnel of it opened".into(),
        }
    ));
    Ok(idle)
}
