//! BIND (SOCKS4 and SOCKS5): the proxy listens for one inbound connection on the client's
//! behalf. [`Client::bind`] returns a [`BindListener`] holding the proxy's listening address
//! (the first reply); [`BindListener::accept`] waits for the second reply and yields the
//! connected stream and the peer's address.
//!
//! Typical use is active-mode FTP: tell the server the listening address, then accept its
//! data connection. The proxy may only accept the peer named in the request.

use socksmith_proto::{ClientEvent, ClientHandshake, Command, TargetAddr};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::builder::Client;
use super::error::{ClientError, HopError, HopErrorKind, Step};
use super::handshake::{next_event, StepDeadlines};
use super::stream::ProxyStream;
use super::target::IntoTarget;
use super::url::ProxyHost;

/// A BIND in progress: the proxy listens at [`Self::listen_addr`] for the peer.
///
/// ```no_run
/// # async fn demo() -> Result<(), socksmith::client::ClientError> {
/// use socksmith::client::Client;
/// let client = Client::from_url("socks5://127.0.0.1:1080")?;
/// // The peer that will connect in (the proxy may refuse any other).
/// let listener = client.bind("192.0.2.7:0").await?;
/// println!("tell the peer to connect to {}", listener.listen_addr());
/// let (stream, peer) = listener.accept().await?;
/// println!("{peer} connected");
/// # drop(stream); Ok(()) }
/// ```
#[derive(Debug)]
pub struct BindListener<S> {
    stream: ProxyStream<S>,
    machine: ClientHandshake,
    listen: TargetAddr,
    peer: TargetAddr,
    hop: usize,
    proxy: String,
    deadlines: StepDeadlines,
}

impl Client {
    /// Asks the last hop to listen for a connection from `peer` (its address, or
    /// `0.0.0.0:0`/the expected IP with port 0 when unknown) and returns once the proxy
    /// listens. SOCKS4 needs an IPv4 `peer`.
    pub async fn bind(
        &self,
        peer: impl IntoTarget,
    ) -> Result<BindListener<TcpStream>, ClientError> {
        let peer = peer.into_target()?;
        self.ensure_last_hop_carries(Command::Bind)?;
        let io = self.connect_first_hop().await?;
        self.bind_over(io, peer).await
    }

    /// [`Self::bind`], reaching the first proxy over a transport the caller made.
    pub async fn bind_over<S>(
        &self,
        io: S,
        peer: impl IntoTarget,
    ) -> Result<BindListener<S>, ClientError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let peer = peer.into_target()?;
        let opened = self.open(io, Command::Bind, peer).await?;
        let hop = self.hops.len();
        let last = self.last_hop();
        let listen = match opened.event {
            ClientEvent::BindListening { bound } => substitute_unspecified(bound, last.host()),
            ClientEvent::Succeeded { .. } => {
                return Err(ClientError::from(HopError {
                    hop,
                    proxy: last.redacted(),
                    step: Step::Request {
                        command: Command::Bind,
                        target: opened.target,
                    },
                    kind: HopErrorKind::UnexpectedAnswer(
                        "a single reply to BIND, expected two".into(),
                    ),
                }))
            }
        };
        let machine = opened
            .machine
            .expect("`open` refuses BIND through an http last hop, the only hop without a machine");
        Ok(BindListener {
            stream: opened.stream,
            machine,
            listen,
            peer: opened.target,
            hop,
            proxy: last.redacted(),
            deadlines: self.deadlines(),
        })
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> BindListener<S> {
    /// Where the proxy listens: the address to give the peer. An unspecified IP in the reply
    /// (`0.0.0.0`) is replaced by the proxy's own address.
    pub fn listen_addr(&self) -> &TargetAddr {
        &self.listen
    }

    /// Waits (up to [`super::Timeouts::bind_accept`]) for the peer to connect, and returns the
    /// tunnel to it and its address as the proxy reports it.
    pub async fn accept(mut self) -> Result<(ProxyStream<S>, TargetAddr), ClientError> {
        let event = next_event(
            &mut self.stream,
            &mut self.machine,
            Command::Bind,
            &self.peer,
            self.deadlines,
            false,
        )
        .await
        .map_err(|(step, kind)| {
            ClientError::from(HopError {
                hop: self.hop,
                proxy: self.proxy.clone(),
                step,
                kind,
            })
        })?;
        match event {
            ClientEvent::Succeeded { bound } => {
                self.stream.set_bound(bound.clone());
                Ok((self.stream, bound))
            }
            ClientEvent::BindListening { .. } => Err(ClientError::from(HopError {
                hop: self.hop,
                proxy: self.proxy,
                step: Step::BindPeer,
                kind: HopErrorKind::UnexpectedAnswer("a third BIND reply".into()),
            })),
        }
    }

    /// Gives up: closes the connection to the proxy, which stops listening.
    pub fn into_inner(self) -> S {
        self.stream.into_inner()
    }
}

/// An unspecified IP in a BIND or UDP ASSOCIATE reply means "the proxy's address" (RFC 1928
/// leaves it to the client to substitute it).
pub(crate) fn substitute_unspecified(bound: TargetAddr, proxy: &ProxyHost) -> TargetAddr {
    match (&bound, proxy) {
        (TargetAddr::Ip(addr), ProxyHost::Ip(ip)) if addr.ip().is_unspecified() => {
            TargetAddr::Ip(std::net::SocketAddr::new(*ip, addr.port()))
        }
        (TargetAddr::Ip(addr), ProxyHost::Name(name)) if addr.ip().is_unspecified() => {
            TargetAddr::domain(name.as_bytes(), addr.port()).unwrap_or(bound)
        }
        _ => bound,
    }
}
