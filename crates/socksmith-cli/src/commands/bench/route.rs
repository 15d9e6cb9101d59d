//! How the load reaches a target: straight (`--direct`) or through one SOCKS5 proxy.
//!
//! Owns the proxy URL, the client side of the SOCKS5 handshake over a raw tokio socket (every
//! byte decided by `socksmith_proto::ClientHandshake`) and UDP ASSOCIATE. It deliberately does
//! not use the `socksmith` client library: the bench measures proxies, not our client. It does
//! not own the load loops (see `phases`).

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use socksmith_proto::{
    ClientConfig, ClientEvent, ClientHandshake, ClientVersion, Command, Credentials, Denied,
    ProtocolError, ReplyCode, TargetAddr,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one connect plus handshake may take before it counts as failed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a tunnel could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// The TCP connection to the proxy (or, direct, to the target) failed.
    #[error("connecting to {addr}: {source}")]
    Connect {
        /// Where we connected.
        addr: SocketAddr,
        /// The socket error.
        source: io::Error,
    },
    /// Reading or writing during the handshake failed.
    #[error("handshake I/O: {0}")]
    Io(#[from] io::Error),
    /// The proxy closed the connection before the handshake ended.
    #[error("the proxy closed the connection during the handshake")]
    Closed,
    /// The proxy answered something the protocol forbids, or refused.
    #[error("handshake: {0}")]
    Protocol(#[from] ProtocolError),
    /// Connect plus handshake took longer than [`HANDSHAKE_TIMEOUT`].
    #[error("connect and handshake took longer than {0:?}")]
    Timeout(Duration),
}

impl TunnelError {
    /// The failure reply, when the proxy understood the request and refused it (for UDP
    /// ASSOCIATE: the proxy does not offer it, which the report shows as "unsupported" rather
    /// than as a failure of the bench).
    pub fn rejection(&self) -> Option<ReplyCode> {
        match self {
            TunnelError::Protocol(ProtocolError::Denied(Denied::Rejected { code, .. })) => {
                Some(*code)
            }
            _ => None,
        }
    }
}

/// A SOCKS5 proxy given as `socks5://[user:pass@]host:port` (`socks5h://` is accepted too:
/// the bench only ever asks for IP literals, so the difference does not arise).
#[derive(Debug, Clone)]
pub struct ProxySpec {
    /// The proxy's socket address, resolved once up front.
    pub addr: SocketAddr,
    /// RFC 1929 credentials from the URL, if any.
    pub credentials: Option<Credentials>,
    /// The URL without the password, for reports.
    pub display: String,
}

/// Why a proxy URL was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// Not `socks5://` or `socks5h://`.
    #[error("the bench speaks SOCKS5 only: expected socks5://[user:pass@]host:port")]
    Scheme,
    /// No port, or host:port did not resolve.
    #[error("host:port {0:?} did not resolve to an address")]
    Address(String),
    /// A username or password that RFC 1929 cannot carry.
    #[error("credentials: {0}")]
    Credentials(ProtocolError),
}

impl ProxySpec {
    /// Parses the URL and resolves the host once (the load loops never resolve).
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let rest = url
            .strip_prefix("socks5://")
            .or_else(|| url.strip_prefix("socks5h://"))
            .ok_or(UrlError::Scheme)?;
        let rest = rest.trim_end_matches('/');
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let credentials = userinfo
            .map(|u| {
                let (user, pass) = u.split_once(':').unwrap_or((u, ""));
                let decode = |s: &str| percent_encoding::percent_decode_str(s).collect::<Vec<u8>>();
                Credentials::new(decode(user), decode(pass)).map_err(UrlError::Credentials)
            })
            .transpose()?;
        let addr = hostport
            .to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| UrlError::Address(hostport.to_owned()))?;
        let display = match &credentials {
            Some(c) => format!(
                "socks5://{}:***@{hostport}",
                String::from_utf8_lossy(c.username())
            ),
            None => format!("socks5://{hostport}"),
        };
        Ok(ProxySpec {
            addr,
            credentials,
            display,
        })
    }
}

/// Where the load goes: straight to the targets or through a proxy.
#[derive(Debug, Clone)]
pub enum Route {
    /// No proxy: the loopback limit every ratio is read against.
    Direct,
    /// Through one SOCKS5 proxy.
    Proxy(ProxySpec),
}

impl Route {
    /// Opens a TCP tunnel to `target` (connect, greeting, optional RFC 1929, CONNECT), with
    /// TCP_NODELAY on the client leg, within [`HANDSHAKE_TIMEOUT`]. Target bytes that arrive
    /// with the reply are dropped: only the bulk source speaks first, and its first bytes fall
    /// in the warm-up anyway.
    pub async fn open(&self, target: SocketAddr) -> Result<TcpStream, TunnelError> {
        tokio::time::timeout(HANDSHAKE_TIMEOUT, self.open_inner(target))
            .await
            .map_err(|_| TunnelError::Timeout(HANDSHAKE_TIMEOUT))?
    }

    async fn open_inner(&self, target: SocketAddr) -> Result<TcpStream, TunnelError> {
        match self {
            Route::Direct => connect(target).await,
            Route::Proxy(proxy) => {
                let mut stream = connect(proxy.addr).await?;
                handshake(
                    &mut stream,
                    proxy.credentials.clone(),
                    Command::Connect,
                    TargetAddr::Ip(target),
                )
                .await?;
                Ok(stream)
            }
        }
    }

    /// UDP ASSOCIATE: returns the control connection (the association lives as long as it
    /// does) and the relay's address. `client` is where our datagrams will come from.
    pub async fn udp_associate(
        proxy: &ProxySpec,
        client: SocketAddr,
    ) -> Result<(TcpStream, SocketAddr), TunnelError> {
        let work = async {
            let mut stream = connect(proxy.addr).await?;
            let (bound, _) = handshake(
                &mut stream,
                proxy.credentials.clone(),
                Command::UdpAssociate,
                TargetAddr::Ip(client),
            )
            .await?;
            // An unspecified or missing relay IP means "the proxy's own address".
            let relay = match bound.ip_literal() {
                Some(a) if !a.ip().is_unspecified() => a,
                Some(a) => SocketAddr::new(proxy.addr.ip(), a.port()),
                None => SocketAddr::new(proxy.addr.ip(), bound.port()),
            };
            Ok((stream, relay))
        };
        tokio::time::timeout(HANDSHAKE_TIMEOUT, work)
            .await
            .map_err(|_| TunnelError::Timeout(HANDSHAKE_TIMEOUT))?
    }
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

/// Drives `ClientHandshake` over `stream` until the final reply; returns BND and how many
/// bytes after the reply were read (they belong to the tunnel; the callers drop them).
async fn handshake(
    stream: &mut TcpStream,
    credentials: Option<Credentials>,
    command: Command,
    target: TargetAddr,
) -> Result<(TargetAddr, usize), TunnelError> {
    let mut hs = ClientHandshake::new(ClientConfig {
        version: ClientVersion::V5,
        credentials,
        command,
        target,
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
        let n = stream.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Err(TunnelError::Closed);
        }
        filled += n;
        let used = hs.receive(&buf[..filled])?;
        buf.copy_within(used..filled, 0);
        filled -= used;
        if filled == buf.len() {
            // A reply never needs 512 bytes (the longest is 262): the proxy misbehaves.
            return Err(TunnelError::Closed);
        }
    }
    match hs.poll_event() {
        Some(ClientEvent::Succeeded { bound }) => Ok((bound, filled)),
        _ => Err(TunnelError::Closed),
    }
}
