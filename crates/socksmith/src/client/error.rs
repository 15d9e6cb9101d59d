//! The client's errors: [`ClientError`] says which hop failed, at which [`Step`], and why
//! ([`HopErrorKind`]), on one readable line:
//!
//! ```text
//! hop 2 (socks5://10.0.0.1:1080): CONNECT 10.0.0.9:80: connection refused (reply 0x05)
//! ```
//!
//! Proxy URLs in messages always have their password redacted. This module owns no I/O.

use std::fmt;
use std::io;
use std::time::Duration;

use socksmith_proto::{
    Command, Denied, Incompatible, ProtocolError, ReplyCode, TargetAddr, V4ReplyCode,
};

use super::target::TargetError;
use super::url::UrlError;
use crate::dial::DialError;
use crate::resolve::ResolveError;

/// Where in the exchange with one proxy something went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// Opening the TCP connection to the first proxy (its host name resolved here).
    Connect,
    /// Resolving this hop's target on this side (a `socks4`/`socks5` hop gets addresses: the
    /// next hop's, or the final target's).
    Resolve,
    /// SOCKS5 method negotiation (greeting and method choice).
    Greeting,
    /// RFC 1929 username/password sub-negotiation.
    Auth,
    /// Sending the request and waiting for its (first) reply.
    Request {
        /// The command.
        command: Command,
        /// The target as sent.
        target: TargetAddr,
    },
    /// BIND: waiting for the second reply (a peer connecting to the proxy).
    BindPeer,
    /// Setting up the local side of a UDP association.
    Udp,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Connect => f.write_str("connecting to the proxy"),
            Step::Resolve => f.write_str("resolving on this side"),
            Step::Greeting => f.write_str("method negotiation"),
            Step::Auth => f.write_str("username/password authentication"),
            Step::Request { command, target } => write!(f, "{command} {target}"),
            Step::BindPeer => f.write_str("waiting for the BIND peer"),
            Step::Udp => f.write_str("UDP association"),
        }
    }
}

/// Why one hop failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HopErrorKind {
    /// The proxy answered the request with a failure reply.
    #[error("{}", rejection(*.code, *.v4_code))]
    Rejected {
        /// The SOCKS5 reply code (for SOCKS4, the closest SOCKS5 code).
        code: ReplyCode,
        /// For SOCKS4, the code received.
        v4_code: Option<V4ReplyCode>,
    },
    /// The proxy refused the username and password.
    #[error("authentication failed (status 0x{status:02x}): wrong username or password")]
    AuthenticationFailed {
        /// The RFC 1929 STATUS byte.
        status: u8,
    },
    /// The proxy accepts none of the authentication methods offered.
    #[error("the proxy accepts none of the offered authentication methods{}",
        if *.offered_credentials { "" } else { " (it may require a username and password)" })]
    NoAcceptableMethod {
        /// Whether username/password was among them.
        offered_credentials: bool,
    },
    /// The proxy closed the connection before answering.
    #[error("the proxy closed the connection")]
    Closed,
    /// No answer within the step's deadline.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Reading from or writing to the proxy failed.
    #[error("{0}")]
    Io(io::Error),
    /// Connecting to the first proxy failed.
    #[error("{0}")]
    Dial(DialError),
    /// Resolving a name on this side failed.
    #[error("{0}")]
    Resolve(ResolveError),
    /// A name resolved only to addresses this hop's protocol cannot carry (IPv6 over SOCKS4).
    #[error("{name} has no IPv4 address, and {protocol} carries only IPv4")]
    NoUsableAddress {
        /// The name.
        name: String,
        /// The hop's protocol.
        protocol: &'static str,
    },
    /// A well-formed answer that makes no sense for the request (a RESOLVE answered with a
    /// name, a BIND answered once).
    #[error("unexpected answer: {0}")]
    UnexpectedAnswer(String),
    /// The proxy's answer broke the protocol, or the request cannot be expressed in the
    /// hop's protocol (an IPv6 target over SOCKS4, say).
    #[error("{0}")]
    Protocol(ProtocolError),
    /// An `http://` hop refused the CONNECT or answered with something that is not HTTP.
    #[error("{0}")]
    Http(HttpError),
}

/// Why an `http://` hop's CONNECT failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// `407 Proxy Authentication Required` (or `401`, tinyproxy's answer to wrong
    /// credentials): no credentials, or wrong ones.
    #[error("HTTP {status} {reason}: {}",
        if *.offered_credentials { "wrong username or password" }
        else { "the proxy requires a username and password (http://USER:PASSWORD@HOST)" })]
    AuthenticationRequired {
        /// 407 or 401.
        status: u16,
        /// The reason phrase, control characters escaped.
        reason: String,
        /// Whether the request carried `Proxy-Authorization`.
        offered_credentials: bool,
    },
    /// Any other status but 2xx: the proxy would not or could not open the tunnel.
    #[error("refused with HTTP {status} {reason}")]
    Refused {
        /// The status code.
        status: u16,
        /// The reason phrase, control characters escaped.
        reason: String,
    },
    /// The answer is not an HTTP/1.x response head.
    #[error("malformed HTTP response: {0}")]
    Malformed(String),
    /// The response head did not end within the size limit.
    #[error("HTTP response head larger than {limit} bytes")]
    HeadTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The target's name has characters an HTTP request line cannot carry.
    #[error("the target name {0:?} cannot be sent in an HTTP CONNECT request")]
    InvalidTargetName(String),
}

impl HttpError {
    /// The SOCKS5 reply closest to a refusal's status, for a server that passes it on: 403
    /// is "not allowed by ruleset", 404 (tinyproxy's answer for a name that does not resolve),
    /// 502 and 503 "host unreachable", 504 "TTL expired" (as a SOCKS server's own timeout),
    /// anything else "general failure". `None` for a 407 (the chain's own credentials are
    /// wrong, not the target) and for answers that are not HTTP.
    pub fn reply_code(&self) -> Option<ReplyCode> {
        match self {
            HttpError::Refused { status, .. } => Some(match status {
                403 => ReplyCode::NotAllowed,
                404 | 502 | 503 => ReplyCode::HostUnreachable,
                504 => ReplyCode::TtlExpired,
                _ => ReplyCode::GeneralFailure,
            }),
            _ => None,
        }
    }
}

fn rejection(code: ReplyCode, v4_code: Option<V4ReplyCode>) -> String {
    match v4_code {
        Some(v4) => format!("{v4} (reply 0x{:02x})", v4.as_u8()),
        None => format!("{code} (reply 0x{:02x})", code.as_u8()),
    }
}

impl HopErrorKind {
    /// Sorts a handshake machine error: rejections, failed authentication and "no acceptable
    /// method" get their own variants, everything else is [`HopErrorKind::Protocol`].
    pub(crate) fn from_protocol(e: ProtocolError, offered_credentials: bool) -> Self {
        match e {
            ProtocolError::Denied(Denied::Rejected { code, v4_code }) => {
                HopErrorKind::Rejected { code, v4_code }
            }
            ProtocolError::Denied(Denied::AuthenticationFailed { status }) => {
                HopErrorKind::AuthenticationFailed { status }
            }
            ProtocolError::Incompatible(Incompatible::NoAcceptableMethod) => {
                HopErrorKind::NoAcceptableMethod {
                    offered_credentials,
                }
            }
            other => HopErrorKind::Protocol(other),
        }
    }

    /// An I/O error, with "closed" told apart.
    pub(crate) fn from_io(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::UnexpectedEof => HopErrorKind::Closed,
            _ => HopErrorKind::Io(e),
        }
    }
}

/// Any failure of the client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// A proxy URL did not parse.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// A target did not parse.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// A client with no proxy.
    #[error("no proxy given")]
    NoProxy,
    /// A proxy of the chain that no handshake could use, found when the client is built
    /// (before any connection): credentials the protocol cannot carry (a SOCKS5 user without
    /// a password, a name or password longer than 255 bytes), or a later hop's host name that
    /// cannot go in the previous hop's request.
    #[error("hop {hop} ({proxy}): {problem}")]
    InvalidProxy {
        /// The hop's position in the chain, from 1.
        hop: usize,
        /// The hop's URL, password redacted.
        proxy: String,
        /// What is wrong with it.
        problem: socksmith_proto::ProtocolError,
    },
    /// A command the chosen protocol cannot carry, refused before anything was sent.
    #[error("{command} is not possible over {protocol} ({hop_url})")]
    Unsupported {
        /// The command.
        command: Command,
        /// The protocol of the hop that would have to carry it.
        protocol: &'static str,
        /// That hop, password redacted.
        hop_url: String,
    },
    /// One hop failed (boxed: the details are large and the error path is cold).
    #[error("{0}")]
    Hop(Box<HopError>),
    /// A target that bypasses the proxies (it matches the client's `NO_PROXY` rules) could
    /// not be reached directly.
    #[error("{target} (direct, NO_PROXY matches it): {kind}")]
    Direct {
        /// The target.
        target: TargetAddr,
        /// Why (a resolver or dial error, or a timeout).
        kind: HopErrorKind,
    },
}

/// Which hop failed, at which step, and why.
#[derive(Debug, thiserror::Error)]
#[error("hop {hop} ({proxy}): {step}: {kind}")]
#[non_exhaustive]
pub struct HopError {
    /// The hop's position in the chain, from 1.
    pub hop: usize,
    /// The hop's URL, password redacted.
    pub proxy: String,
    /// What the client was doing.
    pub step: Step,
    /// What went wrong.
    pub kind: HopErrorKind,
}

impl From<HopError> for ClientError {
    fn from(e: HopError) -> Self {
        ClientError::Hop(Box::new(e))
    }
}

impl ClientError {
    /// The failing hop's position in the chain (from 1), if a hop failed.
    pub fn hop(&self) -> Option<usize> {
        match self {
            ClientError::Hop(e) => Some(e.hop),
            ClientError::InvalidProxy { hop, .. } => Some(*hop),
            _ => None,
        }
    }

    /// The step that failed, if a hop failed.
    pub fn step(&self) -> Option<&Step> {
        match self {
            ClientError::Hop(e) => Some(&e.step),
            _ => None,
        }
    }

    /// Why the hop failed, if a hop failed, or why a direct connection (`NO_PROXY`) failed.
    pub fn kind(&self) -> Option<&HopErrorKind> {
        match self {
            ClientError::Hop(e) => Some(&e.kind),
            ClientError::Direct { kind, .. } => Some(kind),
            _ => None,
        }
    }

    /// The failure reply a proxy sent, if that is what happened (for SOCKS4, the closest
    /// SOCKS5 code; for an HTTP refusal, the one [`HttpError::reply_code`] gives). A server
    /// chaining through upstream proxies can pass it on.
    pub fn reply_code(&self) -> Option<ReplyCode> {
        match self.kind() {
            Some(HopErrorKind::Rejected { code, .. }) => Some(*code),
            Some(HopErrorKind::Http(e)) => e.reply_code(),
            _ => None,
        }
    }

    /// Whether a deadline ran out.
    pub fn is_timeout(&self) -> bool {
        matches!(
            self.kind(),
            Some(HopErrorKind::Timeout(_) | HopErrorKind::Dial(DialError::TimedOut { .. }))
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_hop_step_and_reply_code() {
        let err = ClientError::from(HopError {
            hop: 2,
            proxy: "socks5://10.0.0.1:1080".into(),
            step: Step::Request {
                command: Command::Connect,
                target: TargetAddr::Ip("10.0.0.9:80".parse().expect("addr")),
            },
            kind: HopErrorKind::from_protocol(
                Denied::Rejected {
                    code: ReplyCode::ConnectionRefused,
                    v4_code: None,
                }
                .into(),
                false,
            ),
        });
        assert_eq!(
            err.to_string(),
            "hop 2 (socks5://10.0.0.1:1080): CONNECT 10.0.0.9:80: connection refused (reply 0x05)"
        );
        assert_eq!(err.reply_code(), Some(ReplyCode::ConnectionRefused));
        assert_eq!(err.hop(), Some(2));

        let v4 = HopErrorKind::from_protocol(
            Denied::Rejected {
                code: ReplyCode::GeneralFailure,
                v4_code: Some(V4ReplyCode::Rejected),
            }
            .into(),
            false,
        );
        assert_eq!(v4.to_string(), "request rejected or failed (reply 0x5b)");
        let auth =
            HopErrorKind::from_protocol(Denied::AuthenticationFailed { status: 1 }.into(), true);
        assert_eq!(
            auth.to_string(),
            "authentication failed (status 0x01): wrong username or password"
        );
    }

    #[test]
    fn eof_is_reported_as_closed() {
        let kind = HopErrorKind::from_io(io::ErrorKind::UnexpectedEof.into());
        assert_eq!(kind.to_string(), "the proxy closed the connection");
    }
}
