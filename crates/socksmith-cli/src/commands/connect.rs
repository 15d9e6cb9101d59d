//! `socksmith connect`: a netcat-like pipe between stdin/stdout and HOST:PORT through one proxy
//! or a chain. EOF on stdin shuts down the tunnel's write side (unless `--no-shutdown`); when
//! the target closes its side, stdout ends and what stdin still holds is sent on before the
//! command exits (at once if stdin is a terminal, where nothing can be pending; with a failure
//! if the target stops reading too, as that part of stdin is lost). A reader of stdout that
//! stops early (`| head`) ends the command quietly, as with netcat.
//!
//! Also owns [`ChainArgs`], the `--proxy`/`--noproxy`/`--timeout` options that `forward` and
//! `check` share, with curl's `all_proxy`/`ALL_PROXY` fallback and `no_proxy`/`NO_PROXY` bypass
//! list (read by the library: [`socksmith::client::NoProxy`]). Exit statuses are in
//! [`super::exit_status`]. No protocol code: the library does the work.

use std::convert::Infallible;
use std::fmt;
use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use socksmith::client::{
    parse_target, proxy_url_from_env, redact_url, Client, ClientBuilder, ClientError, NoProxy,
    Proxy, Timeouts,
};
use tokio::io::{AsyncWriteExt, BufWriter};

use super::exit_status::{self, Usage, EXIT_STATUS_HELP};
use crate::duration::parse_positive_duration;

/// The proxy chain options shared by `connect`, `forward` and `check`.
#[derive(Debug, Clone, clap::Args)]
pub struct ChainArgs {
    /// A proxy: socks4://, socks4a://, socks5://, socks5h:// or
    /// http://[USER[:PASSWORD]@]HOST[:PORT] (port 1080 by default, as in curl; socks4a, socks5h
    /// and http let the proxy resolve names; an http:// proxy is asked with HTTP CONNECT and
    /// Basic auth). Repeat for a chain, first hop first, in any mix:
    /// `-x http://corp:3128 -x socks5h://far:1080`. Default: the `all_proxy` or `ALL_PROXY`
    /// environment variable.
    #[arg(long = "proxy", short = 'x', value_name = "URL")]
    pub proxies: Vec<ProxyArg>,

    /// Targets to reach directly instead of through the proxies, as curl's NO_PROXY: a
    /// comma-separated list of host names (`example.com` also matches `www.example.com`; a
    /// leading dot means the same), IP addresses, CIDR blocks (`10.0.0.0/8`), or `*` for all.
    /// Names are not resolved to match addresses. Default: the `no_proxy` or `NO_PROXY`
    /// environment variable. `check` ignores it (it probes the proxy itself).
    #[arg(long = "noproxy", value_name = "LIST")]
    pub no_proxy: Option<String>,

    /// Time allowed for each step: connecting to the first proxy and each handshake step with
    /// each hop (500ms, 10s, 5m, 1h; a plain number is seconds).
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "10s",
        value_parser = parse_positive_duration
    )]
    pub timeout: Duration,
}

/// A proxy URL as given on the command line, kept as text: it is parsed with the others in
/// [`ChainArgs::client`], so that an error names where the URL came from (and clap, which
/// quotes the values it refuses, never sees a password). `Debug` redacts the password.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyArg(String);

impl FromStr for ProxyArg {
    type Err = Infallible;

    fn from_str(s: &str) -> Result<Self, Infallible> {
        Ok(ProxyArg(s.to_owned()))
    }
}

impl fmt::Debug for ProxyArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ProxyArg")
            .field(&redact_url(&self.0))
            .finish()
    }
}

impl ChainArgs {
    /// The proxy URLs: `--proxy` options, else `all_proxy`, else `ALL_PROXY` (as curl reads
    /// them; an empty variable counts as unset).
    pub fn urls(&self) -> anyhow::Result<Vec<(String, &'static str)>> {
        if !self.proxies.is_empty() {
            return Ok(self
                .proxies
                .iter()
                .map(|u| (u.0.clone(), "--proxy"))
                .collect());
        }
        match proxy_url_from_env() {
            Some((var, url)) => Ok(vec![(url, var)]),
            None => Err(ClientError::NoProxy).context("give --proxy URL or set ALL_PROXY"),
        }
    }

    /// The targets reached directly: `--noproxy`, else `no_proxy`/`NO_PROXY`.
    pub fn no_proxy(&self) -> NoProxy {
        match &self.no_proxy {
            Some(list) => NoProxy::parse(list),
            None => NoProxy::from_env(),
        }
    }

    /// The step deadline.
    pub fn step_timeout(&self) -> Duration {
        self.timeout
    }

    /// The client for the chain, with the `--noproxy`/`NO_PROXY` bypass list.
    pub fn client(&self) -> anyhow::Result<Client> {
        Ok(self.builder()?.no_proxy(self.no_proxy()).build()?)
    }

    /// The client for the chain without any bypass: what `check` probes.
    pub fn proxy_client(&self) -> anyhow::Result<Client> {
        Ok(self.builder()?.build()?)
    }

    fn builder(&self) -> anyhow::Result<ClientBuilder> {
        let mut builder = Client::builder();
        for (url, origin) in self.urls()? {
            let proxy: Proxy = url.parse().with_context(|| format!("in {origin}"))?;
            builder = builder.proxy(proxy);
        }
        let step = self.step_timeout();
        Ok(builder.timeouts(Timeouts {
            connect: step,
            handshake: step,
            resolve: step,
            bind_accept: Timeouts::default().bind_accept,
        }))
    }
}

/// Arguments of `socksmith connect`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_STATUS_HELP)]
pub struct Args {
    #[command(flatten)]
    chain: ChainArgs,

    /// Keep the tunnel's write side open at the end of stdin instead of half-closing it (as
    /// ncat's --no-shutdown), for proxies or targets that close both ways on a half-close.
    #[arg(long)]
    no_shutdown: bool,

    /// Where to connect: HOST:PORT, [IPv6]:PORT.
    #[arg(value_name = "HOST:PORT")]
    target: String,
}

/// Runs `socksmith connect`; a failure exits with its [`exit_status`].
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    exit_status::finish(connect(args))
}

fn connect(args: Args) -> anyhow::Result<ExitCode> {
    let target = parse_target(&args.target).context(Usage)?;
    let client = args.chain.client()?;
    if client.bypasses(&target) {
        tracing::debug!(%target, "NO_PROXY matches the target: connecting directly");
    }
    let runtime = super::runtime()?;
    let result = runtime.block_on(pipe(client, target, args.no_shutdown));
    // Reading stdin blocks a thread that only returns at the next line or EOF: do not wait
    // for it once the target has closed.
    runtime.shutdown_background();
    result.map(|()| ExitCode::SUCCESS)
}

async fn pipe(
    client: Client,
    target: socksmith_proto::TargetAddr,
    no_shutdown: bool,
) -> anyhow::Result<()> {
    let stream = client.connect(target.clone()).await?;
    tracing::debug!(target = %target, bound = %stream.bound_addr(), "tunnel open");
    let parts = stream.into_parts();
    let (mut from_target, mut to_target) = parts.io.into_split();
    let mut stdout = BufWriter::new(tokio::io::stdout());
    let upload = tokio::spawn(async move {
        let mut stdin = tokio::io::stdin();
        let copied = tokio::io::copy(&mut stdin, &mut to_target).await;
        if !no_shutdown {
            // EOF on stdin (or an error reading it): half-close, the target may still answer
            // and must not wait for more.
            let _ = to_target.shutdown().await;
        }
        // Handed back, not dropped: dropping the write half would shut it down.
        (copied, to_target)
    });
    let download = async {
        // Bytes that came in with the proxy's reply go out at once: a target that speaks
        // first (an SMTP or SSH banner) must not wait in the buffer for more to arrive.
        stdout.write_all(&parts.read_buf).await?;
        stdout.flush().await?;
        // `copy` flushes whenever the tunnel has nothing more to read yet, so interactive
        // answers are not held back in the buffer.
        let copied = tokio::io::copy(&mut from_target, &mut stdout).await;
        // What arrived before the tunnel failed (a reset) still reaches stdout.
        let flushed = stdout.flush().await;
        copied?;
        flushed
    };
    match download.await {
        Ok(()) => {}
        // Whoever read stdout stopped (`| head`): nothing more is wanted.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            tracing::debug!("stdout closed by its reader");
            upload.abort();
            return Ok(());
        }
        Err(e) => {
            upload.abort();
            return Err(e).context("relaying from the target to stdout");
        }
    }
    // The target closed its side, and may still be reading: what stdin holds goes on until
    // its end. A terminal holds nothing yet; waiting for its user would only hang.
    if std::io::stdin().is_terminal() {
        upload.abort();
        return Ok(());
    }
    // Meanwhile stdout ends, as the target's stream did: a reader that waits for that end
    // before it closes our stdin (ssh's ProxyCommand, a parent process) goes on.
    release_stdout();
    match upload.await {
        Ok((Ok(_), _)) => Ok(()),
        // The target stopped reading too (it closed the connection): the rest of stdin was
        // not delivered, and the exit status says so (everything the target sent has been
        // written to stdout).
        Ok((Err(e), _))
            if matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ) =>
        {
            Err(e).context("the target closed the connection before the end of stdin")
        }
        Ok((Err(e), _)) => Err(e).context("relaying from stdin to the target"),
        Err(join) => Err(join).context("relaying from stdin to the target"),
    }
}

/// Ends stdout for its reader while the process goes on: `/dev/null` takes the place of
/// descriptor 1, so that this process no longer holds the reader's pipe. Best effort.
#[cfg(unix)]
fn release_stdout() {
    let released = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .and_then(|null| rustix::stdio::dup2_stdout(&null).map_err(std::io::Error::from));
    if let Err(e) = released {
        tracing::debug!(error = %e, "cannot end stdout before stdin ends");
    }
}

/// Elsewhere stdout ends with the process.
#[cfg(not(unix))]
fn release_stdout() {}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Command {
        #[command(flatten)]
        chain: ChainArgs,
    }

    #[test]
    fn debug_never_shows_a_password() {
        let cmd = Command::try_parse_from([
            "test",
            "-x",
            "socks5://alice:s3cr/etPW@127.0.0.1",
            "--proxy",
            "socks5h://bob:hunter2@[::1]:1081",
        ])
        .expect("valid arguments");
        assert_eq!(cmd.chain.step_timeout(), Duration::from_secs(10));
        let debug = format!("{cmd:?}");
        for secret in ["s3cr", "etPW", "hunter2"] {
            assert!(!debug.contains(secret), "{debug}");
        }
        assert!(debug.contains("socks5://alice:***@127.0.0.1"), "{debug}");
        assert!(debug.contains("socks5h://bob:***@[::1]:1081"), "{debug}");
    }

    #[test]
    fn timeout_takes_units_and_plain_seconds() {
        for (text, expected) in [
            ("5s", Duration::from_secs(5)),
            ("500ms", Duration::from_millis(500)),
            ("2m", Duration::from_secs(120)),
            ("7", Duration::from_secs(7)),
            ("0.5", Duration::from_millis(500)),
        ] {
            let cmd = Command::try_parse_from(["test", "--timeout", text]).expect(text);
            assert_eq!(cmd.chain.step_timeout(), expected, "{text}");
        }
        for text in ["0", "0s", "never", "5x", "-1"] {
            assert!(
                Command::try_parse_from(["test", "--timeout", text]).is_err(),
                "{text}"
            );
        }
    }
}
