//! `socksmith forward`: local port forwarding through one proxy or a chain, like `ssh -L`.
//! Each `-L [BIND_ADDR:]PORT:HOST:PORT` listens locally (loopback by default) and sends every
//! connection it accepts to HOST:PORT through the chain; it prints `listening on ADDR` once
//! per listener, then serves until interrupted.
//!
//! Tunnels are relayed with the library's zero-copy relay (the chain's transport is the TCP
//! connection to the first proxy). Concurrency is bounded by `--max-connections`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::builder::RangedU64ValueParser;
use socksmith::client::{parse_target, Client};
use socksmith::relay::{relay, RelayOptions};
use socksmith_proto::TargetAddr;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::connect::ChainArgs;
use super::exit_status::{self, Usage, EXIT_STATUS_HELP};
use crate::duration::parse_optional_duration;

/// Arguments of `socksmith forward`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_STATUS_HELP)]
pub struct Args {
    #[command(flatten)]
    chain: ChainArgs,

    /// A forwarding: [BIND_ADDR:]PORT:HOST:PORT (IPv6 addresses in brackets). BIND_ADDR
    /// defaults to 127.0.0.1; PORT 0 picks a free port (see the `listening on` line).
    /// Repeatable.
    #[arg(short = 'L', long = "local", value_name = "SPEC", required = true)]
    forwards: Vec<String>,

    /// Most tunnels open at once, all forwardings together (1 to 1000000); more connections
    /// wait.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1024,
        value_parser = RangedU64ValueParser::<usize>::new().range(1..=MAX_CONNECTIONS)
    )]
    max_connections: usize,

    /// Close a tunnel after this long without traffic in either direction (500ms, 10s, 5m, 1h;
    /// a plain number is seconds; 0 or never: never).
    // `std::option::Option`: the parser yields the Option itself ("never" is a value), so clap
    // must not treat the field as an optional argument.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "never",
        value_parser = parse_optional_duration
    )]
    idle_timeout: std::option::Option<Duration>,
}

/// The most `--max-connections` takes: far beyond what the descriptor limit allows anyway.
const MAX_CONNECTIONS: u64 = 1_000_000;

/// One `-L`: where to listen and where to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// The local address.
    pub listen: SocketAddr,
    /// The target, reached through the chain.
    pub target: TargetAddr,
}

/// Parses `[BIND_ADDR:]PORT:HOST:PORT`.
pub fn parse_forward(spec: &str) -> anyhow::Result<Forward> {
    let fields = split_fields(spec);
    let (bind, port, host, host_port) = match fields.as_slice() {
        [port, host, host_port] => (None, *port, *host, *host_port),
        [bind, port, host, host_port] => (Some(*bind), *port, *host, *host_port),
        _ => anyhow::bail!("invalid forwarding {spec:?}: expected [BIND_ADDR:]PORT:HOST:PORT"),
    };
    let ip: IpAddr = match bind {
        None | Some("localhost") => Ipv4Addr::LOCALHOST.into(),
        Some(b) => b
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .with_context(|| format!("invalid bind address {b:?} in {spec:?}"))?,
    };
    let port: u16 = port
        .parse()
        .with_context(|| format!("invalid local port {port:?} in {spec:?}"))?;
    let target = parse_target(&format!("{host}:{host_port}"))
        .with_context(|| format!("invalid target in {spec:?}"))?;
    Ok(Forward {
        listen: SocketAddr::new(ip, port),
        target,
    })
}

/// Splits at ':' outside brackets, so `[::1]:80:[::1]:81` has four fields.
fn split_fields(spec: &str) -> Vec<&str> {
    let mut fields = Vec::new();
    let mut depth = 0u32;
    let mut start = 0;
    for (i, c) in spec.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            ':' if depth == 0 => {
                fields.push(spec.get(start..i).unwrap_or_default());
                start = i + 1;
            }
            _ => {}
        }
    }
    fields.push(spec.get(start..).unwrap_or_default());
    fields
}

/// Runs `socksmith forward`; a failure to start exits with its [`exit_status`] (a tunnel
/// that cannot be opened is logged, and the listener keeps serving).
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    exit_status::finish(forward(args))
}

fn forward(args: Args) -> anyhow::Result<ExitCode> {
    let forwards = args
        .forwards
        .iter()
        .map(|s| parse_forward(s))
        .collect::<anyhow::Result<Vec<_>>>()
        .context(Usage)?;
    let client = args.chain.client()?;
    // A target the chain can never carry (IPv6 over SOCKS4) is refused before listening,
    // not with every connection.
    for f in &forwards {
        if !client.bypasses(&f.target) {
            client
                .check_target(&f.target)
                .with_context(|| format!("-L {}:{}", f.listen, f.target))?;
        }
    }
    let relay_opts = match args.idle_timeout {
        None => RelayOptions::default(),
        Some(idle) => RelayOptions::with_idle_timeout(idle),
    };
    let limit = Arc::new(Semaphore::new(args.max_connections));
    let runtime = super::runtime()?;
    runtime.block_on(async move {
        let mut listeners = Vec::new();
        for f in &forwards {
            let listener = TcpListener::bind(f.listen)
                .await
                .with_context(|| format!("listening on {}", f.listen))?;
            let addr = listener.local_addr()?;
            // The line scripts and tests wait for; flushed at once (stdout may be a pipe).
            {
                use std::io::Write as _;
                let mut stdout = std::io::stdout().lock();
                writeln!(stdout, "listening on {addr}")?;
                stdout.flush()?;
            }
            tracing::info!(
                listen = %addr,
                target = %f.target,
                direct = client.bypasses(&f.target),
                "forwarding"
            );
            listeners.push((listener, f.target.clone()));
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (listener, target) in listeners {
            tasks.spawn(serve(
                listener,
                target,
                client.clone(),
                limit.clone(),
                relay_opts.clone(),
            ));
        }
        tokio::select! {
            _ = shutdown_signal() => tracing::info!("interrupted, stopping"),
            Some(done) = tasks.join_next() => {
                done.context("a listener task failed")??;
            }
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Accepts connections and spawns a tunnel for each.
async fn serve(
    listener: TcpListener,
    target: TargetAddr,
    client: Client,
    limit: Arc<Semaphore>,
    opts: RelayOptions,
) -> anyhow::Result<()> {
    loop {
        let permit = limit
            .clone()
            .acquire_owned()
            .await
            .context("the connection limit was closed")?;
        let (local, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors and the like: wait a little and keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (client, target, opts) = (client.clone(), target.clone(), opts.clone());
        tokio::spawn(async move {
            tunnel(local, peer, &client, &target, &opts).await;
            drop(permit);
        });
    }
}

async fn tunnel(
    mut local: TcpStream,
    peer: SocketAddr,
    client: &Client,
    target: &TargetAddr,
    opts: &RelayOptions,
) {
    let _ = local.set_nodelay(true);
    let stream = match client.connect(target.clone()).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%peer, %target, error = %e, "cannot open the tunnel");
            return;
        }
    };
    let parts = stream.into_parts();
    // Bytes the target sent along with the proxy's reply go to the local side first.
    if !parts.read_buf.is_empty() {
        if let Err(e) = local.write_all(&parts.read_buf).await {
            tracing::debug!(%peer, error = %e, "local connection failed");
            return;
        }
    }
    let outcome = relay(local, parts.io, &[], opts).await;
    let early = parts.read_buf.len() as u64;
    match outcome.result {
        Ok(()) => tracing::info!(
            %peer, %target,
            sent = outcome.client_to_target,
            received = outcome.target_to_client + early,
            "tunnel closed"
        ),
        Err(e) => tracing::info!(
            %peer, %target,
            sent = outcome.client_to_target,
            received = outcome.target_to_client + early,
            error = %e,
            "tunnel ended"
        ),
    }
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_with_and_without_bind_address() {
        let f = parse_forward("8080:example.com:80").expect("valid");
        assert_eq!(f.listen, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(f.target.to_string(), "example.com:80");
        let f = parse_forward("0.0.0.0:0:10.0.0.1:22").expect("valid");
        assert_eq!(f.listen, "0.0.0.0:0".parse().expect("addr"));
        let f = parse_forward("[::1]:9000:[2001:db8::1]:443").expect("valid");
        assert_eq!(f.listen, "[::1]:9000".parse().expect("addr"));
        assert_eq!(f.target.to_string(), "[2001:db8::1]:443");
        let f = parse_forward("localhost:1:h:2").expect("valid");
        assert_eq!(f.listen, "127.0.0.1:1".parse().expect("addr"));
    }

    #[test]
    fn bad_specs_are_refused() {
        for spec in [
            "",
            "80",
            "80:h",
            "x:80:h:80",
            "1:2:3:4:5",
            "80:h:port",
            "70000:h:1",
        ] {
            assert!(parse_forward(spec).is_err(), "{spec:?} should be refused");
        }
    }

    #[derive(Debug, clap::Parser)]
    struct Command {
        #[command(flatten)]
        args: Args,
    }

    fn parse(extra: &[&str]) -> Result<Args, clap::Error> {
        use clap::Parser as _;
        let base = [
            "forward",
            "-x",
            "socks5://127.0.0.1:1",
            "-L",
            "0:127.0.0.1:9",
        ];
        Command::try_parse_from(base.iter().chain(extra)).map(|c| c.args)
    }

    #[test]
    fn idle_timeout_takes_units_and_zero_or_never_turns_it_off() {
        assert_eq!(parse(&[]).expect("defaults").idle_timeout, None);
        for (text, expected) in [
            ("5m", Some(Duration::from_secs(300))),
            ("300ms", Some(Duration::from_millis(300))),
            ("30", Some(Duration::from_secs(30))),
            ("0", None),
            ("never", None),
        ] {
            let args = parse(&["--idle-timeout", text]).expect(text);
            assert_eq!(args.idle_timeout, expected, "{text}");
        }
        assert!(parse(&["--idle-timeout", "5 minutes"]).is_err());
    }

    #[test]
    fn max_connections_is_at_least_one() {
        assert_eq!(parse(&[]).expect("defaults").max_connections, 1024);
        assert_eq!(
            parse(&["--max-connections", "1"])
                .expect("one")
                .max_connections,
            1
        );
        for bad in ["0", "-1", "1000001", "many"] {
            let err = parse(&[&format!("--max-connections={bad}")]).expect_err(bad);
            assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation, "{bad}");
        }
    }
}
