//! `socksmith check`: probes a proxy (the last hop of the chain) and prints what it supports,
//! as a table or as JSON. Exit status 0 when the proxy carries a CONNECT the way its URL asks
//! (`socks5h://`: SOCKS5 with a name; the other versions are reported, not judged), so that a
//! script can validate a configured URL; else one of [`super::exit_status`]'s: 3 unreachable,
//! 4 credentials wanted or refused, 5 that CONNECT does not work. An `http://` proxy gets the
//! HTTP probes (CONNECT, any port, Basic auth).
//!
//! A proxy on loopback is probed against echo servers this command starts on loopback; any
//! other proxy needs `--target HOST:PORT`, and nothing else is contacted. The probing itself
//! is the library's ([`socksmith::client::probe`]); this module only formats.

use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::json;
use socksmith::client::probe::{self, Finding, ProbeReport, ProbeTargets};
use socksmith::client::{parse_target, Protocol};
use socksmith_bench::targets::LoopbackEchoes;

use super::connect::ChainArgs;
use super::exit_status::{self, Failure, Usage, EXIT_STATUS_HELP};

/// Arguments of `socksmith check`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_STATUS_HELP)]
pub struct Args {
    #[command(flatten)]
    chain: ChainArgs,

    /// A target to probe CONNECT with (HOST:PORT), for a proxy that is not on loopback. Its
    /// kind (IPv4, IPv6 or name) decides which CONNECT probes run; no data is sent to it.
    #[arg(long, value_name = "HOST:PORT")]
    target: Option<String>,

    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs `socksmith check`; see the module docs for its exit statuses.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    exit_status::finish(check(args))
}

fn check(args: Args) -> anyhow::Result<ExitCode> {
    // No NO_PROXY here: the point is the proxy.
    let client = args.chain.proxy_client()?;
    let given = args
        .target
        .as_deref()
        .map(parse_target)
        .transpose()
        .context("--target")?;
    let last = client.last_hop().clone();
    if given.is_none() && !probe::is_loopback(&last) {
        return Err(anyhow::anyhow!(
            "{last} is not on loopback: give --target HOST:PORT, a target it may connect to"
        ))
        .context(Usage);
    }
    let runtime = super::runtime()?;
    let report = runtime.block_on(async {
        match given {
            Some(t) => Ok::<_, anyhow::Error>(probe::probe(&client, &ProbeTargets::Given(t)).await),
            None => {
                let echoes = LoopbackEchoes::start()
                    .await
                    .context("starting the loopback echo targets")?;
                Ok(probe::probe(&client, &ProbeTargets::Loopback(&echoes.targets)).await)
            }
        }
    })?;
    if let (Some(why), false) = (&report.unreachable, args.json) {
        eprintln!("socksmith: {why}");
        return Ok(Failure::ProxyUnreachable.exit_code());
    }
    let text = if args.json {
        serde_json::to_string_pretty(&to_json(&report, last.protocol()))? + "\n"
    } else {
        table(&report, last.protocol())
    };
    {
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
            .context("writing the report")?;
    }
    Ok(if url_connect(&report, last.protocol()).works() {
        ExitCode::SUCCESS
    } else if report.unreachable.is_some() {
        Failure::ProxyUnreachable.exit_code()
    } else if wants_credentials(&report) {
        Failure::Authentication.exit_code()
    } else {
        Failure::TargetRefused.exit_code()
    })
}

/// The finding for a CONNECT the way a URL of `protocol` makes it.
fn url_connect(report: &ProbeReport, protocol: Protocol) -> &Finding {
    match (protocol, &report.http) {
        (Protocol::Socks4, _) => &report.socks4,
        (Protocol::Socks4a, _) => &report.socks4a,
        (Protocol::Socks5, _) => &report.socks5,
        (Protocol::Socks5h, _) => &report.remote_dns,
        (Protocol::Http, Some(http)) => &http.connect,
        (Protocol::Http, None) => &report.socks5,
    }
}

/// Whether a proxy through which no CONNECT works wants credentials it did not get or
/// refused the ones it got: an HTTP proxy whose Basic auth finding is "no", or a SOCKS5
/// proxy that accepts username/password but not "no authentication".
fn wants_credentials(report: &ProbeReport) -> bool {
    if let Some(http) = &report.http {
        return http.basic_auth.support == probe::Support::No;
    }
    let accepted = report.accepted_methods();
    accepted.contains(&socksmith_proto::AuthMethod::UsernamePassword)
        && !accepted.contains(&socksmith_proto::AuthMethod::NoAuth)
}

fn latency_ms(f: &Finding) -> Option<f64> {
    f.latency.map(|d| (d.as_secs_f64() * 1e5).round() / 100.0)
}

fn finding_json(f: &Finding) -> serde_json::Value {
    json!({
        "support": f.support.to_string(),
        "detail": f.detail,
        "latency_ms": latency_ms(f),
    })
}

/// The report as JSON: `capabilities` keyed by snake_case names (for an `http://` proxy also
/// `http_connect`, `any_port` and `basic_auth`), `auth_methods` with each method's code and
/// verdict, `accepted_methods`, `connect_works` (in any version) and `url_connect_works` (the
/// way the URL asks: the exit status).
fn to_json(report: &ProbeReport, protocol: Protocol) -> serde_json::Value {
    let keys = [
        ("socks5", &report.socks5),
        ("socks4", &report.socks4),
        ("socks4a", &report.socks4a),
        ("remote_dns", &report.remote_dns),
        ("ipv6_target", &report.ipv6_target),
        ("bind", &report.bind),
        ("udp_associate", &report.udp_associate),
        ("resolve", &report.resolve),
    ];
    let mut capabilities: serde_json::Map<String, serde_json::Value> = keys
        .iter()
        .map(|(k, f)| ((*k).to_owned(), finding_json(f)))
        .collect();
    if let Some(http) = &report.http {
        for (k, f) in [
            ("http_connect", &http.connect),
            ("any_port", &http.any_port),
            ("basic_auth", &http.basic_auth),
        ] {
            capabilities.insert(k.to_owned(), finding_json(f));
        }
    }
    let methods: Vec<serde_json::Value> = report
        .auth_methods
        .iter()
        .map(|(m, f)| {
            json!({
                "method": m.to_string(),
                "code": m.as_u8(),
                "support": f.support.to_string(),
                "detail": f.detail,
            })
        })
        .collect();
    let accepted: Vec<String> = report
        .accepted_methods()
        .iter()
        .map(ToString::to_string)
        .collect();
    json!({
        "proxy": report.proxy,
        "unreachable": report.unreachable,
        "connect_works": report.connect_works(),
        "url_connect_works": url_connect(report, protocol).works(),
        "capabilities": capabilities,
        "auth_methods": methods,
        "accepted_methods": accepted,
    })
}

/// The report as an aligned table.
fn table(report: &ProbeReport, protocol: Protocol) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "proxy          {}", report.proxy);
    let _ = writeln!(
        out,
        "{:<14} {:<9} {:>10}  detail",
        "capability", "support", "latency"
    );
    for (name, f) in report.rows() {
        let latency = latency_ms(f).map_or_else(|| "-".to_owned(), |ms| format!("{ms:.2} ms"));
        let _ = writeln!(
            out,
            "{name:<14} {:<9} {latency:>10}  {}",
            f.support, f.detail
        );
    }
    let list = |yes: bool| -> String {
        let names: Vec<String> = report
            .auth_methods
            .iter()
            .filter(|(_, f)| (f.support == probe::Support::Yes) == yes)
            .map(|(m, _)| m.to_string())
            .collect();
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    };
    // An HTTP proxy has no SOCKS5 methods: its "Basic auth" row says what it wants.
    if report.http.is_none() {
        let _ = writeln!(
            out,
            "{:<14} accepted: {}; refused: {}",
            "auth methods",
            list(true),
            list(false)
        );
    }
    let scheme = protocol.scheme();
    let verdict = if url_connect(report, protocol).works() {
        format!("CONNECT works ({scheme}://)")
    } else if report.connect_works() {
        format!("CONNECT as {scheme}:// does not work (another version does, above)")
    } else {
        "CONNECT does not work".to_owned()
    };
    let _ = writeln!(out, "{:<14} {verdict}", "verdict");
    out
}
