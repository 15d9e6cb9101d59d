//! [`Session`]: what one decoded request is about (who asks, for what, where to).
//!
//! The neutral description that the server fills in, the policy judges, the egress serves
//! and the accounting counts; none of them owns it, so none of them imports another for it.

use std::net::SocketAddr;

use socksmith_proto::{Command, TargetAddr, Version};

/// What the server knows about a session once its request is decoded: what the policy
/// decides on and what the log line reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The client's address (from a PROXY protocol header when the server is behind a load
    /// balancer).
    pub client: SocketAddr,
    /// The server address the client connected to.
    pub local: SocketAddr,
    /// The RFC 1929 user that authenticated, or the SOCKS4 user id (an unverified claim, see
    /// `version`); `None` for anonymous SOCKS5 and an empty SOCKS4 user id. Invalid UTF-8 is
    /// replaced and control characters are escaped (`\n`, `\u{1b}`), as in a domain name's
    /// `Display`: the name goes into log lines, which it must not be able to forge.
    pub user: Option<String>,
    /// The protocol version the client speaks (SOCKS4 includes SOCKS4a). For an HTTP proxy
    /// request (see `http`) `V5`, the SOCKS version with the same semantics (target names,
    /// checked credentials).
    pub version: Version,
    /// The request came as an HTTP proxy request (CONNECT, or an absolute-form request
    /// forwarded by the server) rather than over SOCKS; the log line says `version=HTTP`.
    /// A field beside `version` rather than a third `Version`: that enum is the SOCKS
    /// codec's, which knows nothing of HTTP.
    pub http: bool,
    /// What the client asks for.
    pub command: Command,
    /// The target as the client sent it (a name is not resolved yet).
    pub target: TargetAddr,
}
