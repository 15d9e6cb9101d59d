//! The PROXY protocol header that a load balancer (HAProxy's `send-proxy` and `send-proxy-v2`,
//! and most L4 balancers) puts in front of each connection it forwards, so that the server
//! behind it learns the real client's address instead of the balancer's.
//!
//! This module owns reading that header from the start of a stream, both versions:
//!
//! ```text
//! v1 (text, at most 107 bytes):  "PROXY TCP4 192.0.2.7 198.51.100.1 51000 1080\r\n"
//!                                "PROXY TCP6 2001:db8::7 2001:db8::1 51000 1080\r\n"
//!                                "PROXY UNKNOWN\r\n"
//! v2 (binary):  +--------------------------------------+-----+-----+--------+-----------+
//!               | signature \r\n\r\n\0\r\nQUIT\n (12)  | ver | fam |  len   | addresses |
//!               |                                      | cmd | prot| (2, BE)| and TLVs  |
//!               +--------------------------------------+-----+-----+--------+-----------+
//!               ver/cmd 0x21: PROXY, 0x20: LOCAL (the balancer's own connection, such as a
//!               health check); fam/prot 0x11: TCP over IPv4 (12 address bytes), 0x21: TCP
//!               over IPv6 (36), 0x00: unspecified.
//! ```
//!
//! The header itself is decoded by the `ppp` crate; this module decides what is a header at
//! all, bounds how much is read ([`MAX_HEADER_LEN`]), applies a deadline, and hands back the
//! bytes read past the header (the client's first SOCKS bytes) so that none is lost.
//! [`serve`] is [`Server::serve`] for listeners behind a balancer: each connection's header is
//! read in its own task, and the session sees the real client's address (rules, logs,
//! accounting) through [`Server::serve_prefixed`].

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::server::connection::{deadline_after, Accepted};
use crate::server::per_client::PerClient;
use crate::server::stats::inc;
use crate::server::{listener, Server, ServerError};

/// The most bytes a header may take. A v1 header is at most 107 bytes; a v2 header is 16
/// bytes plus its addresses (at most 216, for Unix sockets) plus optional TLVs. HAProxy's own
/// TLVs (ALPN, authority, unique id, SSL details) fit well within this; anything longer is
/// treated as an attack on the server's memory, not as a header.
pub const MAX_HEADER_LEN: usize = 4096;

/// The v2 signature (12 bytes), then version/command, family/protocol and a 2-byte length.
const V2_FIXED_LEN: usize = 16;

/// The v1 header's longest form (the spec's 107 bytes, CRLF included).
const V1_MAX_LEN: usize = 107;

/// Which version of the protocol a header was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyVersion {
    /// The text form (`send-proxy`).
    V1,
    /// The binary form (`send-proxy-v2`).
    V2,
}

/// What the header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxiedAddr {
    /// The balancer forwarded a client: `source` is the real client, `destination` the address
    /// that client connected to (on the balancer).
    Proxied {
        /// The real client's address.
        source: SocketAddr,
        /// The address the client connected to.
        destination: SocketAddr,
    },
    /// v2 `LOCAL`: the balancer's own connection (HAProxy's health checks). The spec says the
    /// receiver accepts it and uses the connection's real endpoints.
    Local,
    /// v1 `UNKNOWN`, or v2 `PROXY` with an unspecified or Unix-socket family: the balancer did
    /// not know the client's address. As for `Local`, the connection's own peer is used.
    Unknown,
}

/// A decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    /// v1 or v2.
    pub version: ProxyVersion,
    /// The addresses it carries.
    pub addr: ProxiedAddr,
}

impl ProxyHeader {
    /// The client address to use for a connection whose own peer is `peer`: the header's
    /// source when it has one, else `peer`.
    pub fn client(&self, peer: SocketAddr) -> SocketAddr {
        match self.addr {
            ProxiedAddr::Proxied { source, .. } => source,
            ProxiedAddr::Local | ProxiedAddr::Unknown => peer,
        }
    }

    /// Whether the header says that the connection from `peer` to `local` is the
    /// balancer's own, not a client's: `LOCAL`, `UNKNOWN`, or addresses that name this very
    /// connection, both ends (what HAProxy's health checks send with v1 headers). A client
    /// behind a transparent balancer (`usesrc client`) comes from its own address too, but
    /// to the balancer's address, not this server's.
    pub fn is_balancers_own(&self, peer: SocketAddr, local: SocketAddr) -> bool {
        match self.addr {
            ProxiedAddr::Proxied {
                source,
                destination,
            } => source == peer && destination == local,
            ProxiedAddr::Local | ProxiedAddr::Unknown => true,
        }
    }
}

/// A header read from a stream, and the bytes that were read past it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadHeader {
    /// The header.
    pub header: ProxyHeader,
    /// What followed the header in the same reads (the client's first bytes): to be put back
    /// in front of the stream.
    pub rest: Vec<u8>,
}

/// Why a connection has no valid PROXY protocol header. Every case is the peer's fault (or
/// the network's); the connection gets no reply.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyHeaderError {
    /// The first byte can start neither version: the client spoke to the server directly
    /// (a SOCKS greeting starts with 0x04 or 0x05) instead of through the balancer.
    #[error("no PROXY protocol header: the connection starts with byte {0:#04x}")]
    Missing(u8),
    /// A v1 header that does not parse.
    #[error("malformed PROXY protocol v1 header: {0}")]
    V1(#[source] ppp::v1::BinaryParseError),
    /// A v2 header that does not parse.
    #[error("malformed PROXY protocol v2 header: {0}")]
    V2(#[source] ppp::v2::ParseError),
    /// A v2 header for a datagram (UDP) connection, on a stream.
    #[error("PROXY protocol v2 header for a datagram connection, on a TCP stream")]
    Datagram,
    /// Longer than [`MAX_HEADER_LEN`] (or, for v1, than its 107 bytes).
    #[error("PROXY protocol header longer than {max} bytes")]
    TooLong {
        /// The limit that was passed.
        max: usize,
    },
    /// No complete header within the deadline.
    #[error("no complete PROXY protocol header within {0:?}")]
    Timeout(Duration),
    /// The peer closed the connection before the header was complete (after this many bytes;
    /// 0 is a plain TCP health check that connects and closes).
    #[error("connection closed after {0} bytes, before a complete PROXY protocol header")]
    Closed(usize),
    /// Reading failed.
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] io::Error),
}

/// Decodes a header at the start of `input`: `Ok(None)` when more bytes are needed,
/// `Ok(Some((header, consumed)))` once it is complete (bytes past `consumed` belong to the
/// client's protocol). One byte at a time gives the same result as all at once.
pub fn decode(input: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyHeaderError> {
    match input.first() {
        None => Ok(None),
        Some(b'P') => decode_v1(input),
        Some(b'\r') => decode_v2(input),
        Some(&other) => Err(ProxyHeaderError::Missing(other)),
    }
}

fn decode_v1(input: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyHeaderError> {
    const PREFIX: &[u8] = b"PROXY ";
    // The frame is found here, and only a whole line goes to the parser: a partial line such
    // as "... 51000 " would otherwise read as a bad port rather than as "need more".
    if input.len() < PREFIX.len() && PREFIX.starts_with(input) {
        return Ok(None);
    }
    let line_end = if input.starts_with(PREFIX) {
        match input.iter().take(V1_MAX_LEN).position(|&b| b == b'\r') {
            // "A receiver may reject an incomplete line which does not contain the CRLF
            // sequence in the first 107 characters."
            None if input.len() >= V1_MAX_LEN => {
                return Err(ProxyHeaderError::TooLong { max: V1_MAX_LEN })
            }
            None => return Ok(None),
            // The CR is the last byte so far: its LF may be on the way.
            Some(cr) if cr + 1 == input.len() => return Ok(None),
            Some(cr) => cr + 2,
        }
    } else {
        // Not "PROXY ": let the parser name what is wrong, whatever follows (waiting for
        // a CR or counting to 107 here made the answer depend on how the bytes arrived).
        input.len().min(V1_MAX_LEN)
    };
    let header = ppp::v1::Header::try_from(&input[..line_end]).map_err(ProxyHeaderError::V1)?;
    let addr = match header.addresses {
        ppp::v1::Addresses::Tcp4(a) => ProxiedAddr::Proxied {
            source: SocketAddr::from((a.source_address, a.source_port)),
            destination: SocketAddr::from((a.destination_address, a.destination_port)),
        },
        ppp::v1::Addresses::Tcp6(a) => ProxiedAddr::Proxied {
            source: SocketAddr::from((a.source_address, a.source_port)),
            destination: SocketAddr::from((a.destination_address, a.destination_port)),
        },
        ppp::v1::Addresses::Unknown => ProxiedAddr::Unknown,
    };
    Ok(Some((
        ProxyHeader {
            version: ProxyVersion::V1,
            addr,
        },
        header.header.len(),
    )))
}

fn decode_v2(input: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyHeaderError> {
    use ppp::PartialResult as _;
    // The length is known from the fixed part on: refuse an oversized header before waiting
    // for (and buffering) its bytes.
    if let Some(len) = input.get(14..V2_FIXED_LEN) {
        let total = V2_FIXED_LEN + usize::from(u16::from_be_bytes([len[0], len[1]]));
        if total > MAX_HEADER_LEN {
            // A bad signature, version or family is reported as such, as it was for a
            // shorter prefix: the answer must not depend on how the bytes arrived.
            return match ppp::v2::Header::try_from(&input[..V2_FIXED_LEN]) {
                Err(e) if !e.is_incomplete() => Err(ProxyHeaderError::V2(e)),
                _ => Err(ProxyHeaderError::TooLong {
                    max: MAX_HEADER_LEN,
                }),
            };
        }
    }
    match ppp::v2::Header::try_from(input) {
        Ok(header) => {
            let addr = match (header.command, header.protocol, header.addresses) {
                (ppp::v2::Command::Local, _, _) => ProxiedAddr::Local,
                (_, ppp::v2::Protocol::Datagram, _) => return Err(ProxyHeaderError::Datagram),
                (_, _, ppp::v2::Addresses::IPv4(a)) => ProxiedAddr::Proxied {
                    source: SocketAddr::from((a.source_address, a.source_port)),
                    destination: SocketAddr::from((a.destination_address, a.destination_port)),
                },
                (_, _, ppp::v2::Addresses::IPv6(a)) => ProxiedAddr::Proxied {
                    source: SocketAddr::from((a.source_address, a.source_port)),
                    destination: SocketAddr::from((a.destination_address, a.destination_port)),
                },
                (_, _, ppp::v2::Addresses::Unspecified | ppp::v2::Addresses::Unix(_)) => {
                    ProxiedAddr::Unknown
                }
            };
            Ok(Some((
                ProxyHeader {
                    version: ProxyVersion::V2,
                    addr,
                },
                header.len(),
            )))
        }
        Err(e) if e.is_incomplete() => Ok(None),
        Err(e) => Err(ProxyHeaderError::V2(e)),
    }
}

/// Reads a header from the start of `stream`, within `deadline`. The stream is read in
/// chunks, so bytes the client sent right behind the header may come along: they are in
/// [`ReadHeader::rest`]. At most [`MAX_HEADER_LEN`] bytes are buffered.
pub async fn read_header<S: AsyncRead + Unpin>(
    stream: &mut S,
    deadline: Duration,
) -> Result<ReadHeader, ProxyHeaderError> {
    let until = deadline_after(Instant::now(), deadline);
    read_header_until(stream, until, deadline).await
}

/// [`read_header`] by `until`, which is `timeout` after the connection was accepted.
async fn read_header_until<S: AsyncRead + Unpin>(
    stream: &mut S,
    until: Instant,
    timeout: Duration,
) -> Result<ReadHeader, ProxyHeaderError> {
    let reading = async {
        let mut buf = Vec::with_capacity(256);
        loop {
            if let Some((header, consumed)) = decode(&buf)? {
                let rest = buf.split_off(consumed);
                return Ok(ReadHeader { header, rest });
            }
            if buf.len() >= MAX_HEADER_LEN {
                return Err(ProxyHeaderError::TooLong {
                    max: MAX_HEADER_LEN,
                });
            }
            let room = (MAX_HEADER_LEN - buf.len()).min(1024);
            let n = (&mut *stream).take(room as u64).read_buf(&mut buf).await?;
            if n == 0 {
                return Err(ProxyHeaderError::Closed(buf.len()));
            }
        }
    };
    tokio::time::timeout_at(until, reading)
        .await
        .unwrap_or(Err(ProxyHeaderError::Timeout(timeout)))
}

/// [`Server::serve`] for listeners behind a load balancer that sends the PROXY protocol
/// (HAProxy's `send-proxy` or `send-proxy-v2`): every connection must start with a header,
/// read within the handshake timeout. The header's source address is the client for the
/// policy, the log line and the accounting; v2 `LOCAL` (HAProxy's health checks) and v1
/// `UNKNOWN` are served as the balancer's own connection. A connection without a valid
/// header gets no byte, reaches no target, is closed and logged.
///
/// Like [`Server::serve`]: the open-proxy check first, the session limits
/// ([`Server::session_limits`], the per-client share by the header's client), accept errors
/// paused on, and on `shutdown` a grace period for running sessions.
pub async fn serve(
    server: &Server,
    listeners: Vec<TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    server.check_listeners(&listeners)?;
    listener::run(
        server.clone(),
        listeners,
        shutdown,
        listener::Front::ProxyProtocol,
    )
    .await;
    Ok(())
}

/// One connection from the balancer: its header, then the session as the real client's
/// (within that client's share of the sessions).
pub(crate) async fn serve_one(
    server: Server,
    per_client: Arc<PerClient>,
    mut stream: TcpStream,
    balancer: SocketAddr,
    deadline: Instant,
    timeout: Duration,
) {
    let stats = server.stats();
    match read_header_until(&mut stream, deadline, timeout).await {
        Ok(ReadHeader { header, rest }) => {
            let client = header.client(balancer);
            if header.addr == ProxiedAddr::Local {
                tracing::debug!(balancer = %balancer, "PROXY protocol LOCAL (a health check): served as the balancer's own connection");
            }
            // HAProxy's plain health check (`check check-send-proxy`) sends a LOCAL (v2) or
            // UNKNOWN (v1) header and closes: that is the whole check, not a client that gave
            // up in its handshake, so it is not served (nor counted) as a session. A check
            // that speaks SOCKS first (`tcp-check send-binary 050100`) is served, and its
            // close in the handshake is not counted either (`Accepted::balancers_own`).
            let balancers_own = stream
                .local_addr()
                .is_ok_and(|local| header.is_balancers_own(balancer, local));
            if balancers_own && rest.is_empty() && closes_without_a_byte(&stream, deadline).await {
                tracing::debug!(balancer = %balancer, "health check: a header, then closed");
                return;
            }
            let Some(_slot) = per_client.take(client.ip()) else {
                inc(&stats.sessions_refused_per_client);
                tracing::debug!(client = %client, limit = per_client.limit(), "connection closed: this client holds its share of the sessions");
                return;
            };
            inc(&stats.sessions_accepted);
            let accepted = Accepted {
                peer: client,
                local: None,
                nodelay_set: false,
                already_read: rest,
                balancers_own,
                // The header was the first part of the handshake: the rest gets what is left.
                deadline,
            };
            server.serve_accepted(stream, accepted).await;
        }
        // A TCP health check connects and closes without a byte: nothing to report.
        Err(ProxyHeaderError::Closed(0)) => {
            tracing::debug!(balancer = %balancer, "closed before any byte (a TCP health check)");
        }
        // Nothing is sent back: whoever connected without a header (straight past the
        // balancer, or a scanner) learns nothing about what listens here.
        Err(e) => tracing::info!(
            client = %balancer,
            error = %e,
            "connection closed: no valid PROXY protocol header"
        ),
    }
}

/// Whether `stream` ends (or sends nothing until `deadline`) before its first byte, which
/// stays unread.
async fn closes_without_a_byte(stream: &TcpStream, deadline: Instant) -> bool {
    let mut first = [0u8; 1];
    !matches!(
        tokio::time::timeout_at(deadline, stream.peek(&mut first)).await,
        Ok(Ok(1..))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("literal address")
    }

    /// A v2 header: signature, ver/cmd, fam/proto, then `body` with its length.
    fn v2(ver_cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(ver_cmd);
        out.push(fam);
        out.extend_from_slice(&u16::try_from(body.len()).expect("short").to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    /// v2 TCP over IPv4: 192.0.2.7:51000 -> 198.51.100.1:1080.
    fn v2_tcp4() -> Vec<u8> {
        v2(
            0x21,
            0x11,
            &[192, 0, 2, 7, 198, 51, 100, 1, 0xC7, 0x38, 0x04, 0x38],
        )
    }

    fn decode_all(input: &[u8]) -> (ProxyHeader, usize) {
        decode(input)
            .expect("valid header")
            .expect("complete header")
    }

    /// Every prefix shorter than the header is "need more", and the whole gives the header.
    fn assert_incremental(input: &[u8], consumed: usize) {
        for end in 0..consumed {
            assert!(
                matches!(decode(&input[..end]), Ok(None)),
                "{end} of {consumed} bytes: {:?}",
                decode(&input[..end])
            );
        }
        assert_eq!(decode_all(input).1, consumed);
    }

    #[test]
    fn v1_tcp4_and_tcp6_give_the_real_client() {
        let text = b"PROXY TCP4 192.0.2.7 198.51.100.1 51000 1080\r\n\x05\x01\x00";
        let (header, consumed) = decode_all(text);
        assert_eq!(
            consumed,
            text.len() - 3,
            "the SOCKS greeting is not consumed"
        );
        assert_eq!(header.version, ProxyVersion::V1);
        assert_eq!(
            header.addr,
            ProxiedAddr::Proxied {
                source: addr("192.0.2.7:51000"),
                destination: addr("198.51.100.1:1080"),
            }
        );
        assert_eq!(header.client(addr("127.0.0.1:9")), addr("192.0.2.7:51000"));
        assert_incremental(text, consumed);

        let text = b"PROXY TCP6 2001:db8::7 2001:db8::1 51000 1080\r\n";
        let (header, consumed) = decode_all(text);
        assert_eq!(consumed, text.len());
        assert_eq!(
            header.client(addr("127.0.0.1:9")),
            addr("[2001:db8::7]:51000")
        );
    }

    #[test]
    fn v1_unknown_keeps_the_connection_peer() {
        let text = b"PROXY UNKNOWN\r\n";
        let (header, consumed) = decode_all(text);
        assert_eq!(consumed, text.len());
        assert_eq!(header.addr, ProxiedAddr::Unknown);
        assert_eq!(header.client(addr("10.1.1.1:2")), addr("10.1.1.1:2"));
    }

    #[test]
    fn v1_errors() {
        for bad in [
            &b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n"[..],
            b"PROXY TCP4 1.2.3.400 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n",
            b"PROXY TCP4 ::1 ::1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r",
            b"PRXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
        ] {
            let result = decode(bad);
            assert!(
                matches!(result, Err(ProxyHeaderError::V1(_))),
                "{:?}: {result:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // No CRLF within the 107 bytes a v1 header may take.
        let mut long = b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2".to_vec();
        long.resize(200, b' ');
        assert!(matches!(
            decode(&long),
            Err(ProxyHeaderError::TooLong { max: 107 })
        ));
    }

    #[test]
    fn v2_proxy_gives_the_real_client_and_leaves_what_follows() {
        let mut bytes = v2_tcp4();
        let len = bytes.len();
        bytes.extend_from_slice(&[5, 1, 0]);
        let (header, consumed) = decode_all(&bytes);
        assert_eq!(consumed, len);
        assert_eq!(consumed, 28);
        assert_eq!(header.version, ProxyVersion::V2);
        assert_eq!(
            header.addr,
            ProxiedAddr::Proxied {
                source: addr("192.0.2.7:51000"),
                destination: addr("198.51.100.1:1080"),
            }
        );
        assert_incremental(&bytes, consumed);

        let mut body = Vec::new();
        body.extend_from_slice(
            &"2001:db8::7"
                .parse::<std::net::Ipv6Addr>()
                .expect("v6")
                .octets(),
        );
        body.extend_from_slice(
            &"2001:db8::1"
                .parse::<std::net::Ipv6Addr>()
                .expect("v6")
                .octets(),
        );
        body.extend_from_slice(&[0xC7, 0x38, 0x04, 0x38]);
        // A NOOP TLV after the addresses, as balancers may add: skipped.
        body.extend_from_slice(&[0x04, 0x00, 0x02, 0xAA, 0xBB]);
        let bytes = v2(0x21, 0x21, &body);
        let (header, consumed) = decode_all(&bytes);
        assert_eq!(consumed, bytes.len());
        assert_eq!(
            header.client(addr("127.0.0.1:9")),
            addr("[2001:db8::7]:51000")
        );
    }

    #[test]
    fn v2_local_is_a_health_check_on_the_connection_itself() {
        // What HAProxy sends on its health checks with `check-send-proxy`: LOCAL, no address.
        let bytes = v2(0x20, 0x00, &[]);
        assert_eq!(bytes.len(), 16);
        let (header, consumed) = decode_all(&bytes);
        assert_eq!(consumed, 16);
        assert_eq!(header.addr, ProxiedAddr::Local);
        assert_eq!(header.client(addr("127.0.0.1:9")), addr("127.0.0.1:9"));
        // LOCAL with addresses present: still LOCAL, addresses ignored.
        let (header, _) = decode_all(&v2(0x20, 0x11, &[1; 12]));
        assert_eq!(header.addr, ProxiedAddr::Local);
        // PROXY with an unspecified family: the balancer does not know; the peer is used.
        let (header, _) = decode_all(&v2(0x21, 0x00, &[]));
        assert_eq!(header.addr, ProxiedAddr::Unknown);
    }

    #[test]
    fn the_balancers_own_connections_are_told_from_its_clients() {
        let balancer = addr("127.0.0.1:40000");
        let server = addr("127.0.0.1:1080");
        let own = |line: &str| {
            let (header, _) = decode_all(line.as_bytes());
            header.is_balancers_own(balancer, server)
        };
        // HAProxy's v1 health check names its own connection.
        assert!(own("PROXY TCP4 127.0.0.1 127.0.0.1 40000 1080\r\n"));
        assert!(own("PROXY UNKNOWN\r\n"));
        assert!(!own("PROXY TCP4 192.0.2.7 127.0.0.1 40000 1080\r\n"));
        assert!(!own("PROXY TCP4 127.0.0.1 127.0.0.1 40001 1080\r\n"));
        // A client behind a transparent balancer: its own address, to the balancer's.
        assert!(!own("PROXY TCP4 127.0.0.1 192.0.2.80 40000 1080\r\n"));
        let (local, _) = decode_all(&v2(0x20, 0x00, &[]));
        assert!(local.is_balancers_own(balancer, server));
    }

    #[test]
    fn v2_errors() {
        let cases: [(Vec<u8>, &str); 5] = [
            (v2(0x11, 0x11, &[0; 12]), "version"),
            (v2(0x2F, 0x11, &[0; 12]), "command"),
            (v2(0x21, 0x51, &[0; 12]), "family"),
            (v2(0x21, 0x11, &[0; 4]), "short addresses"),
            (
                [b"\r\n\r\n\0\r\nQUIX\n".as_slice(), &[0x21, 0x11, 0, 0]].concat(),
                "signature",
            ),
        ];
        for (bytes, what) in cases {
            let result = decode(&bytes);
            assert!(
                matches!(result, Err(ProxyHeaderError::V2(_))),
                "{what}: {result:?}"
            );
        }
        assert!(matches!(
            decode(&v2(0x21, 0x12, &[0; 12])),
            Err(ProxyHeaderError::Datagram)
        ));
        // A length past the bound is refused from the fixed part alone, before the body.
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xFF, 0xFF]);
        assert!(matches!(
            decode(&huge),
            Err(ProxyHeaderError::TooLong {
                max: MAX_HEADER_LEN
            })
        ));
    }

    #[test]
    fn a_line_not_starting_with_proxy_is_malformed_however_it_arrives() {
        // Found by the proxy_header fuzz target: "P\xae\xb0\xa7\xaa\r" waited for an LF
        // all at once, where its first two bytes had already been refused.
        let mut long = b"PX".to_vec();
        long.resize(200, b'x');
        for input in [&b"P\xae\xb0\xa7\xaa\r"[..], b"PROX\r", &long] {
            let first_bad = if input.starts_with(b"PROX") { 5 } else { 2 };
            for end in first_bad..=input.len() {
                assert!(
                    matches!(decode(&input[..end]), Err(ProxyHeaderError::V1(_))),
                    "{end} bytes of {input:02x?}: {:?}",
                    decode(&input[..end])
                );
            }
        }
    }

    #[test]
    fn a_broken_fixed_part_with_a_huge_length_is_malformed_however_it_arrives() {
        // Found by the proxy_header fuzz target: the length was checked before the signature
        // and version, so all at once gave "too long" where a shorter prefix had already
        // been refused as malformed.
        let mut bad_signature = V2_SIGNATURE[..11].to_vec();
        bad_signature.extend_from_slice(&[0x1f, 0x1f, 0x1f, 0x1f, 0x1f]);
        let mut bad_version = V2_SIGNATURE.to_vec();
        bad_version.extend_from_slice(&[0x31, 0x11, 0xFF, 0xFF]);
        // The bytes it takes to see what is wrong: ppp checks the signature from the 12th
        // byte on, the version only once the 16-byte fixed part is there.
        for (input, first_bad) in [(bad_signature, 12), (bad_version, 16)] {
            for end in first_bad..=input.len() {
                assert!(
                    matches!(decode(&input[..end]), Err(ProxyHeaderError::V2(_))),
                    "{end} bytes of {input:02x?}: {:?}",
                    decode(&input[..end])
                );
            }
        }
    }

    #[test]
    fn anything_else_is_not_a_header() {
        for (bytes, first) in [
            (&[5u8, 1, 0][..], 5),
            (&[4, 1, 0, 80, 127, 0, 0, 1, 0], 4),
            (b"GET / HTTP/1.1\r\n", b'G'),
        ] {
            assert!(
                matches!(decode(bytes), Err(ProxyHeaderError::Missing(b)) if b == first),
                "{bytes:?}"
            );
        }
        assert!(matches!(decode(b""), Ok(None)));
    }

    #[tokio::test]
    async fn read_header_returns_the_bytes_past_the_header() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        let mut sent = b"PROXY TCP4 192.0.2.7 198.51.100.1 51000 1080\r\n".to_vec();
        sent.extend_from_slice(&[5, 1, 0]);
        tokio::io::AsyncWriteExt::write_all(&mut client, &sent)
            .await
            .expect("write");
        let read = read_header(&mut server, Duration::from_secs(5))
            .await
            .expect("a header");
        assert_eq!(
            read.header.client(addr("127.0.0.1:9")),
            addr("192.0.2.7:51000")
        );
        assert_eq!(read.rest, [5, 1, 0]);
    }

    #[tokio::test]
    async fn read_header_in_pieces() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        let bytes = v2_tcp4();
        let writer = tokio::spawn(async move {
            for chunk in bytes.chunks(5) {
                tokio::io::AsyncWriteExt::write_all(&mut client, chunk)
                    .await
                    .expect("write");
                tokio::task::yield_now().await;
            }
            client
        });
        let read = read_header(&mut server, Duration::from_secs(5))
            .await
            .expect("a header");
        assert_eq!(read.header.version, ProxyVersion::V2);
        assert!(read.rest.is_empty());
        drop(writer.await.expect("writer"));
    }

    #[tokio::test(start_paused = true)]
    async fn read_header_gives_up_at_the_deadline_and_on_close() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        tokio::io::AsyncWriteExt::write_all(&mut client, b"PROXY TCP4 1.2.3.4")
            .await
            .expect("write");
        let result = read_header(&mut server, Duration::from_secs(3)).await;
        assert!(
            matches!(result, Err(ProxyHeaderError::Timeout(d)) if d == Duration::from_secs(3)),
            "{result:?}"
        );

        let (client, mut server) = tokio::io::duplex(1024);
        drop(client);
        let result = read_header(&mut server, Duration::from_secs(3)).await;
        assert!(
            matches!(result, Err(ProxyHeaderError::Closed(0))),
            "{result:?}"
        );

        // A SOCKS client straight to a PROXY-protocol listener: refused at the first byte.
        let (mut client, mut server) = tokio::io::duplex(1024);
        tokio::io::AsyncWriteExt::write_all(&mut client, &[5, 1, 0])
            .await
            .expect("write");
        let result = read_header(&mut server, Duration::from_secs(3)).await;
        assert!(
            matches!(result, Err(ProxyHeaderError::Missing(5))),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn read_header_never_buffers_past_the_bound() {
        // A v1 header that never ends: refused at 107 bytes, not after reading everything.
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        let mut long = b"PROXY TCP4 ".to_vec();
        long.resize(10_000, b'1');
        tokio::io::AsyncWriteExt::write_all(&mut client, &long)
            .await
            .expect("write");
        let result = read_header(&mut server, Duration::from_secs(5)).await;
        assert!(
            matches!(result, Err(ProxyHeaderError::TooLong { .. })),
            "{result:?}"
        );
    }
}
