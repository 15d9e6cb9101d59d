//! How the load reaches a target: straight (`--direct`) or through one SOCKS5 or HTTP
//! CONNECT proxy.
//!
//! The proxy URL is the client library's ([`socksmith::client::Proxy`], curl's semantics) and
//! CONNECT is [`socksmith::client::Client::connect`], for `socks5://` and `http://` alike, so
//! the two protocols are measured with the same load. UDP ASSOCIATE is driven here, on the
//! proxy's own handshake machine from `socksmith_proto`, because the bench must announce and
//! own the UDP socket it batches datagrams on, and the library's association keeps its socket
//! to itself. This module does not own the load loops (see `phases`).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use socksmith::client::{Client, ClientError, Protocol, Proxy, Timeouts};
use socksmith_proto::{
    ClientConfig, ClientEvent, ClientHandshake, ClientVersion, Command, Credentials, ProtocolError,
    TargetAddr,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// How long one connect plus handshake may take before it counts as failed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a tunnel could not be opened or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TunnelError {
    /// The TCP connection to the target (direct) failed.
    #[error("connecting to {addr}: {source}")]
    Connect {
        /// Where we connected.
        addr: SocketAddr,
        /// The socket error.
        source: io::Error,
    },
    /// The proxy refused or failed (the client library says which step and why).
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Reading or writing failed.
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
    /// The proxy closed the connection before the handshake ended.
    #[error("the proxy closed the connection during the handshake")]
    Closed,
    /// The proxy answered UDP ASSOCIATE with something the protocol forbids, or refused.
    #[error("UDP ASSOCIATE: {0}")]
    Protocol(#[from] ProtocolError),
    /// A step took longer than its limit.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Bytes came back different from the pattern that was sent.
    #[error("the bytes that came back differ from the ones sent")]
    Corrupted,
}

/// Why a proxy cannot be measured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// The URL did not parse (the client library's message).
    #[error(transparent)]
    Url(#[from] socksmith::client::UrlError),
    /// Neither a SOCKS5 nor an HTTP proxy.
    #[error(
        "the bench measures SOCKS5 and HTTP CONNECT proxies: use socks5://[user:pass@]host:port \
         or http://[user:pass@]host:port, not {0}://"
    )]
    Unsupported(&'static str),
    /// A host name: the bench's load loops never resolve.
    #[error("give the proxy as an IP address (the load loops never look names up), not {0}")]
    NotAnAddress(String),
    /// The client library refused the settings.
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// Where the load goes: straight to the targets or through a proxy.
#[derive(Debug, Clone)]
pub enum Route {
    /// No proxy: the loopback limit every ratio is read against.
    Direct,
    /// Through one SOCKS5 or HTTP CONNECT proxy (shared: every load task clones the route).
    Proxy(Arc<ProxyRoute>),
}

/// A SOCKS5 or HTTP CONNECT proxy and the client that reaches it.
#[derive(Debug, Clone)]
pub struct ProxyRoute {
    proxy: Proxy,
    addr: SocketAddr,
    client: Client,
}

impl Route {
    /// The route through the proxy at `url` (`socks5://`, `socks5h://` or `http://`,
    /// credentials allowed, the host an IP address).
    pub fn proxy(url: &str) -> Result<Route, RouteError> {
        let proxy: Proxy = url.parse()?;
        let protocol = proxy.protocol();
        if !matches!(
            protocol,
            Protocol::Socks5 | Protocol::Socks5h | Protocol::Http
        ) {
            return Err(RouteError::Unsupported(protocol.scheme()));
        }
        let addr = proxy
            .socket_addr()
            .ok_or_else(|| RouteError::NotAnAddress(proxy.host().to_string()))?;
        let client = Client::builder()
            .proxy(proxy.clone())
            .timeouts(Timeouts {
                connect: HANDSHAKE_TIMEOUT,
                handshake: HANDSHAKE_TIMEOUT,
                ..Timeouts::default()
            })
            .build()?;
        Ok(Route::Proxy(Arc::new(ProxyRoute {
            proxy,
            addr,
            client,
        })))
    }

    /// The proxy URL without its password, or "direct".
    pub fn display(&self) -> String {
        match self {
            Route::Direct => "direct".into(),
            Route::Proxy(p) => p.proxy.redacted(),
        }
    }

    /// Whether the load authenticates (RFC 1929, or Basic for an HTTP proxy).
    pub fn authenticated(&self) -> bool {
        matches!(self, Route::Proxy(p) if p.proxy.user_info().is_some())
    }

    /// The proxy's address, or `None` for the direct route.
    pub fn proxy_addr(&self) -> Option<SocketAddr> {
        match self {
            Route::Direct => None,
            Route::Proxy(p) => Some(p.addr),
        }
    }

    /// Whether the load goes through an HTTP proxy, which carries CONNECT only (no UDP).
    pub fn is_http(&self) -> bool {
        matches!(self, Route::Proxy(p) if p.proxy.protocol().is_http())
    }

    /// Opens a TCP tunnel to `target` with TCP_NODELAY on the client leg, within
    /// [`HANDSHAKE_TIMEOUT`]. Returns the stream and the target's bytes that arrived with
    /// the proxy's reply (they come first; only the bulk source speaks first).
    pub async fn open(&self, target: SocketAddr) -> Result<(TcpStream, Vec<u8>), TunnelError> {
        within_handshake_timeout(self.open_unbounded(target)).await
    }

    /// [`Self::open_from`] within [`HANDSHAKE_TIMEOUT`], as [`Self::open`] is.
    pub async fn open_from_bounded(
        &self,
        target: SocketAddr,
        source: Option<IpAddr>,
    ) -> Result<(TcpStream, Vec<u8>), TunnelError> {
        within_handshake_timeout(self.open_from(target, source)).await
    }

    /// [`Self::open`] without its own deadline, for a caller that bounds a larger step.
    pub async fn open_unbounded(
        &self,
        target: SocketAddr,
    ) -> Result<(TcpStream, Vec<u8>), TunnelError> {
        match self {
            Route::Direct => Ok((connect(target).await?, Vec::new())),
            Route::Proxy(p) => {
                // The library's dial has set TCP_NODELAY already.
                let parts = p.client.connect(target).await?.into_parts();
                Ok((parts.io, parts.read_buf))
            }
        }
    }

    /// [`Self::open_unbounded`] from the local address `source` (port chosen at connect time,
    /// see [`connect_from`]): the connection-rate phase spreads its connections over
    /// loopback source addresses so that the kernel's search for a free source port does
    /// not become what it measures.
    pub async fn open_from(
        &self,
        target: SocketAddr,
        source: Option<IpAddr>,
    ) -> Result<(TcpStream, Vec<u8>), TunnelError> {
        match self {
            Route::Direct => Ok((connect_from(target, source).await?, Vec::new())),
            Route::Proxy(p) => {
                let io = connect_from(p.addr, source).await?;
                let parts = p.client.connect_over(io, target).await?.into_parts();
                Ok((parts.io, parts.read_buf))
            }
        }
    }
}

/// `opening`, failed with [`TunnelError::Timeout`] past [`HANDSHAKE_TIMEOUT`].
async fn within_handshake_timeout<T>(
    opening: impl std::future::Future<Output = Result<T, TunnelError>>,
) -> Result<T, TunnelError> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, opening)
        .await
        .map_err(|_| TunnelError::Timeout(HANDSHAKE_TIMEOUT))?
}

impl ProxyRoute {
    /// UDP ASSOCIATE announcing `client` (where our datagrams will come from): returns the
    /// control connection (the association lives as long as it does) and the relay's address.
    pub async fn udp_associate(
        &self,
        client: SocketAddr,
    ) -> Result<(TcpStream, SocketAddr), TunnelError> {
        let work = async {
            let mut stream = connect(self.addr).await?;
            let bound = associate(&mut stream, self.credentials()?, client).await?;
            // An unspecified or missing relay IP means "the proxy's own address".
            let relay = match bound.ip_literal() {
                Some(a) if !a.ip().is_unspecified() => a,
                _ => SocketAddr::new(self.addr.ip(), bound.port()),
            };
            Ok((stream, relay))
        };
        tokio::time::timeout(HANDSHAKE_TIMEOUT, work)
            .await
            .map_err(|_| TunnelError::Timeout(HANDSHAKE_TIMEOUT))?
    }

    fn credentials(&self) -> Result<Option<Credentials>, ProtocolError> {
        self.proxy
            .user_info()
            .map(|u| Credentials::new(u.user().to_vec(), u.password().unwrap_or_default().to_vec()))
            .transpose()
    }
}

/// Connects to `addr` from `source` (any port) with TCP_NODELAY.
///
/// Why a source address: every closed connection leaves its 4-tuple in TIME_WAIT for a
/// minute, and one source address has only the ephemeral range's ports (about 28,000 by
/// default) towards one destination. At tens of thousands of connections a second, every
/// `connect` then walks the port range past tuples too young to reuse (a profile of the
/// direct load showed 13% of all its time in `__inet_hash_connect`), and beyond about
/// 28,000 a second it fails with "address not available". Binding to one of many loopback
/// addresses with `IP_BIND_ADDRESS_NO_PORT` leaves the port to `connect`, which then picks
/// from the whole 4-tuple space.
pub async fn connect_from(
    addr: SocketAddr,
    source: Option<IpAddr>,
) -> Result<TcpStream, TunnelError> {
    let fail = |source| TunnelError::Connect { addr, source };
    let socket = match addr.ip() {
        IpAddr::V4(_) => TcpSocket::new_v4(),
        IpAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(fail)?;
    socket.set_nodelay(true).map_err(fail)?;
    if let Some(ip) = source {
        #[cfg(target_os = "linux")]
        nix::sys::socket::setsockopt(
            &socket,
            nix::sys::socket::sockopt::IpBindAddressNoPort,
            &true,
        )
        .map_err(|errno| fail(errno.into()))?;
        socket.bind(SocketAddr::new(ip, 0)).map_err(fail)?;
    }
    socket.connect(addr).await.map_err(fail)
}

async fn connect(addr: SocketAddr) -> Result<TcpStream, TunnelError> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|source| TunnelError::Connect { addr, source })?;
    stream
        .set_nodelay(true)
        .map_err(|source| TunnelError::Connect { addr, source })?;
    Ok(stream)
}

/// Drives the SOCKS5 machine for UDP ASSOCIATE over `stream` until the final reply; returns
/// BND. Every byte sent and every verdict is the machine's.
async fn associate(
    stream: &mut TcpStream,
    credentials: Option<Credentials>,
    client: SocketAddr,
) -> Result<TargetAddr, TunnelError> {
    let mut hs = ClientHandshake::new(ClientConfig {
        version: ClientVersion::V5,
        credentials,
        command: Command::UdpAssociate,
        target: TargetAddr::Ip(client),
        user_id: None,
    })?;
    let mut out = Vec::with_capacity(64);
    let mut buf = [0u8; 512];
    let mut filled = 0;
    loop {
        out.clear();
        if hs.poll_transmit(&mut out) > 0 {
            stream.write_all(&out).await?;
        }
        if hs.is_finished() {
            break;
        }
        let Some(free) = buf.get_mut(filled..).filter(|f| !f.is_empty()) else {
            // A reply never needs 512 bytes (the longest is 262): the proxy misbehaves.
            return Err(TunnelError::Closed);
        };
        let n = stream.read(free).await?;
        if n == 0 {
            return Err(TunnelError::Closed);
        }
        filled += n;
        let used = hs.receive(buf.get(..filled).unwrap_or_default())?;
        buf.copy_within(used..filled, 0);
        filled -= used;
    }
    match hs.poll_event() {
        Some(ClientEvent::Succeeded { bound }) => Ok(bound),
        _ => Err(TunnelError::Closed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls_are_the_client_librarys() {
        let route = Route::proxy("socks5h://alice:secret@127.0.0.1:1080").expect("a SOCKS5 URL");
        assert_eq!(route.display(), "socks5h://alice:***@127.0.0.1:1080");
        assert!(route.authenticated());
        assert_eq!(Route::Direct.display(), "direct");
    }

    #[test]
    fn http_connect_proxies_are_routes_too() {
        let route = Route::proxy("http://alice:secret@127.0.0.1:3128").expect("an HTTP URL");
        assert_eq!(route.display(), "http://alice:***@127.0.0.1:3128");
        assert!(route.authenticated());
        assert!(route.is_http());
        let socks = Route::proxy("socks5://127.0.0.1:1080").expect("a SOCKS5 URL");
        assert!(!socks.is_http());
        assert!(!Route::Direct.is_http());
    }

    #[test]
    fn other_protocols_and_names_are_refused_with_the_reason() {
        let err = Route::proxy("socks4://127.0.0.1:1080").expect_err("SOCKS4");
        assert!(err.to_string().contains("SOCKS5"), "{err}");
        assert!(err.to_string().contains("socks4://"), "{err}");
        let err = Route::proxy("socks5://localhost:1080").expect_err("a name");
        assert!(err.to_string().contains("IP address"), "{err}");
        let err = Route::proxy("https://127.0.0.1:1080").expect_err("not a proxy URL");
        assert!(err.to_string().contains("https"), "{err}");
    }
}
