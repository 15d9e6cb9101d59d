//! The exit statuses of the client commands (`connect`, `forward`, `check`), so that a script
//! can tell a proxy that is down from a wrong password or a target the proxy refused, instead of
//! seeing 1 for everything. [`EXIT_STATUS_HELP`] is the table `--help` shows and the README
//! repeats; [`Failure::of`] sorts an error into it by the [`ClientError`] in its chain.

use std::fmt;
use std::process::ExitCode;

use socksmith::client::{ClientError, HopErrorKind, HttpError, Step, TargetError, UrlError};
use socksmith_proto::{InvalidInput, ProtocolError, ReplyCode, V4ReplyCode};

/// The table shown after each client command's `--help`.
pub const EXIT_STATUS_HELP: &str = "\
Exit status:
  0  success
  1  any other failure (a local socket, stdin/stdout, the tunnel breaking after it opened)
  2  usage or configuration error (a bad option, proxy URL or target, or a target a hop's
     protocol cannot carry, such as IPv6 over SOCKS4; no proxy given)
  3  could not reach the first proxy (its name did not resolve, the connection was refused)
  4  authentication failed (username or password refused or missing; HTTP 401/407)
  5  the proxy refused the target (a SOCKS failure reply, an HTTP refusal such as 403), or a
     target name did not resolve here; `check`: CONNECT the way the URL asks does not work
  6  a deadline ran out (--timeout), at any step
  7  a proxy broke the protocol or hung up during the handshake";

/// Why a client command failed, as its exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// 1: anything not listed below.
    Other = 1,
    /// 2: a bad option, URL or target, or no proxy.
    Usage = 2,
    /// 3: the first proxy could not be reached.
    ProxyUnreachable = 3,
    /// 4: a proxy refused the credentials or wants some.
    Authentication = 4,
    /// 5: a proxy refused the target (or the next hop), or its name did not resolve.
    TargetRefused = 5,
    /// 6: a deadline ran out.
    Timeout = 6,
    /// 7: a proxy's answer broke the protocol, or it closed the connection.
    ProxyProtocol = 7,
}

impl Failure {
    /// The exit code.
    pub fn exit_code(self) -> ExitCode {
        ExitCode::from(self as u8)
    }

    /// The failure behind `err`: the first [`ClientError`], [`Usage`] marker, URL or target
    /// error in its chain; [`Failure::Other`] without any.
    pub fn of(err: &anyhow::Error) -> Self {
        // A context is found by downcasting the error itself, whatever its depth.
        if err.downcast_ref::<Usage>().is_some() {
            return Failure::Usage;
        }
        for cause in err.chain() {
            if cause.downcast_ref::<UrlError>().is_some()
                || cause.downcast_ref::<TargetError>().is_some()
            {
                return Failure::Usage;
            }
            if let Some(client) = cause.downcast_ref::<ClientError>() {
                return Failure::of_client(client);
            }
        }
        Failure::Other
    }

    /// The failure a client error stands for.
    pub fn of_client(err: &ClientError) -> Self {
        match err {
            ClientError::Url(_)
            | ClientError::Target(_)
            | ClientError::NoProxy
            | ClientError::InvalidProxy { .. }
            | ClientError::Unsupported { .. } => return Failure::Usage,
            _ if err.is_timeout() => return Failure::Timeout,
            ClientError::Direct { .. } => return Failure::TargetRefused,
            _ => {}
        }
        let (Some(step), Some(kind)) = (err.step(), err.kind()) else {
            return Failure::Other;
        };
        match (step, kind) {
            (Step::Connect, _) => Failure::ProxyUnreachable,
            (
                _,
                HopErrorKind::AuthenticationFailed { .. }
                | HopErrorKind::NoAcceptableMethod { .. }
                | HopErrorKind::Http(HttpError::AuthenticationRequired { .. }),
            ) => Failure::Authentication,
            (_, HopErrorKind::Http(HttpError::InvalidTargetName(_))) => Failure::Usage,
            // Found here before anything was sent: what was asked cannot be said in the
            // hop's protocol (an IPv6 target over SOCKS4, an empty password).
            (_, HopErrorKind::Protocol(ProtocolError::InvalidInput(input))) => match input {
                InvalidInput::UsernameLength(_) | InvalidInput::PasswordLength(_) => {
                    Failure::Authentication
                }
                _ => Failure::Usage,
            },
            // A reply code the protocol does not define (an echo server mistaken for a
            // proxy answers the greeting back) is the proxy breaking the protocol.
            (
                _,
                HopErrorKind::Rejected {
                    v4_code: Some(V4ReplyCode::Unknown(_)),
                    ..
                }
                | HopErrorKind::Rejected {
                    code: ReplyCode::Unknown(_),
                    v4_code: None,
                },
            ) => Failure::ProxyProtocol,
            (
                _,
                HopErrorKind::Rejected { .. }
                | HopErrorKind::Http(HttpError::Refused { .. })
                | HopErrorKind::Resolve(_)
                | HopErrorKind::NoUsableAddress { .. },
            ) => Failure::TargetRefused,
            (
                _,
                HopErrorKind::Protocol(_)
                | HopErrorKind::Closed
                | HopErrorKind::Io(_)
                | HopErrorKind::UnexpectedAnswer(_)
                | HopErrorKind::Http(_),
            ) => Failure::ProxyProtocol,
            _ => Failure::Other,
        }
    }
}

/// Marks an error as a usage error (exit status 2) in an `anyhow` chain: attach it with
/// `.context(Usage)`. It reads "invalid arguments" in the message.
#[derive(Debug, Clone, Copy)]
pub struct Usage;

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid arguments")
    }
}

/// A client command's outcome as the process's: its own exit code on success, else the error
/// printed as `main` prints errors and the status [`Failure::of`] gives.
pub fn finish(result: anyhow::Result<ExitCode>) -> anyhow::Result<ExitCode> {
    result.or_else(|err| {
        // The same line `main` prints for every other command's error.
        eprintln!("socksmith: {err:#}");
        Ok(Failure::of(&err).exit_code())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;
    use socksmith::client::{parse_target, Client, Proxy};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The failure of a CONNECT through `url` to a proxy that answers `answer` to whatever it
    /// gets first (in memory), then keeps the connection open until the client is done; with
    /// `answer` `None` it hangs up at once.
    async fn failure_against(url: &str, answer: Option<&'static [u8]>) -> Failure {
        failure_of_connect(url, "10.0.0.1:80", answer).await
    }

    /// [`failure_against`] for a CONNECT to `target`.
    async fn failure_of_connect(url: &str, target: &str, answer: Option<&'static [u8]>) -> Failure {
        let client = Client::builder()
            .proxy(url.parse().expect("valid URL"))
            .handshake_timeout(Duration::from_millis(200))
            .build()
            .expect("one proxy");
        let (ours, mut theirs) = tokio::io::duplex(4096);
        let peer = tokio::spawn(async move {
            let Some(answer) = answer else {
                return;
            };
            let mut first = [0u8; 512];
            if theirs.read(&mut first).await.unwrap_or(0) > 0 && !answer.is_empty() {
                let _ = theirs.write_all(answer).await;
            }
            let mut rest = Vec::new();
            let _ = theirs.read_to_end(&mut rest).await;
        });
        let err = client
            .connect_over(ours, target)
            .await
            .expect_err("the scripted proxy refuses");
        let failure = Failure::of(&anyhow::Error::new(err).context("through the chain"));
        peer.abort();
        failure
    }

    #[tokio::test]
    async fn each_client_failure_has_its_status() {
        let socks5 = "socks5://127.0.0.1:1080";
        let with_password = "socks5://u:p@127.0.0.1:1080";
        let http = "http://127.0.0.1:3128";
        for (url, answer, expected) in [
            (socks5, Some(&b"\x05\xff"[..]), Failure::Authentication),
            (
                with_password,
                Some(b"\x05\x02\x01\x01"),
                Failure::Authentication,
            ),
            (
                socks5,
                Some(b"\x05\x00\x05\x05\x00\x01\x00\x00\x00\x00\x00\x00"),
                Failure::TargetRefused,
            ),
            (socks5, Some(b"\x04\x5a"), Failure::ProxyProtocol),
            // Reply codes no version defines: 0x09 (SOCKS5), 0x01 (SOCKS4, an echo's answer).
            (
                socks5,
                Some(b"\x05\x00\x05\x09\x00\x01\x00\x00\x00\x00\x00\x00"),
                Failure::ProxyProtocol,
            ),
            (
                "socks4://127.0.0.1:1080",
                Some(b"\x00\x01\x00\x00\x00\x00\x00\x00"),
                Failure::ProxyProtocol,
            ),
            (
                "socks4://127.0.0.1:1080",
                Some(b"\x00\x5b\x00\x00\x00\x00\x00\x00"),
                Failure::TargetRefused,
            ),
            (socks5, None, Failure::ProxyProtocol),
            (socks5, Some(b""), Failure::Timeout),
            (
                http,
                Some(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n"),
                Failure::Authentication,
            ),
            (
                http,
                Some(b"HTTP/1.0 401 Unauthorized\r\n\r\n"),
                Failure::Authentication,
            ),
            (
                http,
                Some(b"HTTP/1.1 403 Forbidden\r\n\r\n"),
                Failure::TargetRefused,
            ),
            (
                http,
                Some(b"HTTP/1.1 502 Bad Gateway\r\n\r\n"),
                Failure::TargetRefused,
            ),
            (http, Some(b"SSH-2.0-x\r\n\r\n"), Failure::ProxyProtocol),
        ] {
            let answer_text = answer.map(String::from_utf8_lossy);
            assert_eq!(
                failure_against(url, answer).await,
                expected,
                "{url} answering {answer_text:?}"
            );
        }
    }

    #[tokio::test]
    async fn what_the_hop_cannot_carry_is_found_here_and_is_not_the_proxys_fault() {
        let silent: Option<&'static [u8]> = Some(b"");
        for (url, target, answer, expected) in [
            (
                "socks4a://127.0.0.1:1080",
                "[::1]:80",
                silent,
                Failure::Usage,
            ),
            (
                "socks4://127.0.0.1:1080",
                "0.0.0.5:80",
                silent,
                Failure::Usage,
            ),
        ] {
            assert_eq!(
                failure_of_connect(url, target, answer).await,
                expected,
                "{url} to {target}"
            );
        }
        // A SOCKS5 user without a password is found when the client is built, before any
        // connection: a usage error, not the proxy refusing.
        let err = Client::builder()
            .proxy("socks5://alice@127.0.0.1:1080".parse().expect("valid URL"))
            .build()
            .expect_err("no password to give");
        assert_eq!(
            Failure::of(&anyhow::Error::new(err).context("building the chain")),
            Failure::Usage
        );
    }

    #[tokio::test]
    async fn an_unreachable_first_proxy_is_3() {
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let client = Client::from_url(&format!("socks5://{dead}")).expect("valid URL");
        let err = client
            .connect("10.0.0.1:80")
            .await
            .expect_err("nothing listens");
        assert_eq!(
            Failure::of(&anyhow::Error::new(err)),
            Failure::ProxyUnreachable
        );
    }

    #[test]
    fn usage_errors_are_2_and_anything_else_1() {
        for err in [
            anyhow::anyhow!("x").context(Usage).context("in -L"),
            anyhow::Error::new("ftp://h".parse::<Proxy>().expect_err("unsupported scheme"))
                .context("in --proxy"),
            anyhow::Error::new(parse_target("no-port").expect_err("no port")),
            anyhow::Error::new(socksmith::client::ClientError::NoProxy),
        ] {
            assert_eq!(Failure::of(&err), Failure::Usage, "{err:#}");
        }
        assert_eq!(
            Failure::of(&anyhow::anyhow!("stdout closed")),
            Failure::Other
        );
    }

    #[test]
    fn the_help_table_lists_every_status_and_usage_reads_well() {
        for status in 0..=7 {
            assert!(
                EXIT_STATUS_HELP.contains(&format!("\n  {status}  ")),
                "{status}"
            );
        }
        let with_context: anyhow::Result<()> = Err(anyhow::anyhow!("bad")).context(Usage);
        assert_eq!(
            format!("{:#}", with_context.expect_err("an error")),
            "invalid arguments: bad"
        );
        assert_eq!(Failure::Timeout.exit_code(), ExitCode::from(6));
    }
}
