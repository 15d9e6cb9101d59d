//! Walking the chain: reaching the first proxy, then each hop through the previous one, then
//! the final command on the last hop; and [`Client::connect`], the CONNECT entry point.
//!
//! All hops share one [`ProxyStream`] over the first proxy's transport: once a hop has
//! answered, the bytes on the transport belong to the tunnel through it, so the next hop's
//! handshake runs on the same stream and its buffer. There is no nesting and no copy per hop.
//!
//! Names in targets are resolved per hop, as curl does: a `socks4a`/`socks5h`/`http` hop gets
//! the name, a `socks4`/`socks5` hop gets an address this side looked up (the first one its
//! protocol can carry; for the last hop of a CONNECT, each in turn until one is taken). IP
//! literals spelled as names are always sent as addresses.
//!
//! An `http` hop is one CONNECT exchange (see the `http` module) instead of a SOCKS
//! handshake; it leaves the stream in the same state, so hops of both kinds mix freely. Only
//! CONNECT passes through it: a chain whose last hop is `http` refuses the other commands
//! before any byte is sent.

use std::net::{IpAddr, SocketAddr};

use socksmith_proto::{
    ClientConfig, ClientEvent, ClientHandshake, Command, InvalidInput, ProtocolError, ReplyCode,
    TargetAddr,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::builder::Client;
use super::error::{ClientError, HopError, HopErrorKind, Step};
use super::handshake::{next_event, StepDeadlines};
use super::http;
use super::stream::ProxyStream;
use super::target::IntoTarget;
use super::url::{Proxy, ProxyHost};
use crate::dial::{dial, DialOptions};
use crate::resolve::resolve;

/// The most addresses of one name [`Client::connect`] tries through the chain, each a whole
/// chain's handshakes (the families interleaved, so both get a try).
const MAX_ADDRESSES_TRIED: usize = 4;

/// A chain walked up to the final command's first answer.
pub(crate) struct Opened<S> {
    pub stream: ProxyStream<S>,
    /// The last hop's machine, still needed for BIND's second reply. `None` for an `http`
    /// last hop (which carries CONNECT only).
    pub machine: Option<ClientHandshake>,
    pub event: ClientEvent,
    /// The final target as sent to the last hop.
    pub target: TargetAddr,
}

/// How one hop answered: a SOCKS hop with its machine and first event, or an `http` hop,
/// whose only answer is the tunnel.
// Moved once per hop and unpacked at once: boxing the machine would cost an allocation per hop.
#[allow(clippy::large_enum_variant)]
enum HopAnswer {
    Socks(ClientHandshake, ClientEvent),
    Http,
}

impl Client {
    /// Opens a tunnel to `target` through the chain. The first proxy is reached over TCP
    /// (its name resolved here, its addresses raced with Happy Eyeballs). A target that the
    /// client's `NO_PROXY` rules match ([`super::ClientBuilder::no_proxy`]) is connected to
    /// directly instead (the stream's bound address is then the local end).
    ///
    /// The stream's [`ProxyStream::bound_addr`] is the last hop's BND address. This is also
    /// the entry point a server uses to send its tunnels through upstream proxies.
    pub async fn connect(
        &self,
        target: impl IntoTarget,
    ) -> Result<ProxyStream<TcpStream>, ClientError> {
        let target = target.into_target()?;
        if self.bypasses(&target) {
            return self.connect_direct(target).await;
        }
        self.check_target(&target)?;
        let Some(addrs) = self.last_hop_addresses(&target).await? else {
            let io = self.connect_first_hop().await?;
            return self.connect_over(io, target).await;
        };
        self.connect_to_one_of(addrs).await
    }

    /// CONNECT to the addresses of one name in turn (at most [`MAX_ADDRESSES_TRIED`]), each
    /// through a fresh chain (a refused request ends the connection), until the last hop
    /// takes one: its refusing one address (nothing listens on the target's IPv6 address,
    /// the proxy has no IPv6) says nothing of the next. `addrs` must not be empty.
    pub(crate) async fn connect_to_one_of(
        &self,
        addrs: Vec<SocketAddr>,
    ) -> Result<ProxyStream<TcpStream>, ClientError> {
        let mut last_refusal = None;
        for addr in addrs.into_iter().take(MAX_ADDRESSES_TRIED) {
            let io = self.connect_first_hop().await?;
            match self.connect_over(io, TargetAddr::Ip(addr)).await {
                Err(e) if self.another_address_may_do(&e) => last_refusal = Some(e),
                done => return done,
            }
        }
        Err(last_refusal.unwrap_or(ClientError::NoProxy))
    }

    /// The addresses to try one by one when the last hop gets an address this side looked
    /// up (a `socks4`/`socks5` last hop and a name): every one its protocol can carry, in
    /// the resolver's order. `None` when the last hop gets the target as it is.
    async fn last_hop_addresses(
        &self,
        target: &TargetAddr,
    ) -> Result<Option<Vec<SocketAddr>>, ClientError> {
        let (Some(last), TargetAddr::Domain(name, port)) = (self.hops.last(), target) else {
            return Ok(None);
        };
        if target.ip_literal().is_some() || last.protocol().remote_dns() {
            return Ok(None);
        }
        let usable = self
            .resolve_for(self.hops.len(), last, &name.to_string_lossy())
            .await?;
        let addrs = interleave_families(usable)
            .into_iter()
            .map(|ip| SocketAddr::new(ip, *port))
            .collect();
        Ok(Some(addrs))
    }

    /// `name`'s addresses that hop number `number` can carry (IPv4 only for SOCKS4), in the
    /// resolver's order; at least one, else the hop's error.
    async fn resolve_for(
        &self,
        number: usize,
        hop: &Proxy,
        name: &str,
    ) -> Result<Vec<IpAddr>, ClientError> {
        let fail = |kind: HopErrorKind| {
            ClientError::from(HopError {
                hop: number,
                proxy: hop.redacted(),
                step: Step::Resolve,
                kind,
            })
        };
        let ips = resolve(&*self.resolver, name)
            .await
            .map_err(|e| fail(HopErrorKind::Resolve(e)))?;
        let usable: Vec<IpAddr> = ips
            .into_iter()
            .filter(|ip| !hop.protocol().is_v4() || ip.is_ipv4())
            .collect();
        if usable.is_empty() {
            return Err(fail(HopErrorKind::NoUsableAddress {
                name: name.to_owned(),
                protocol: hop.protocol().scheme(),
            }));
        }
        Ok(usable)
    }

    /// Whether the last hop refused the CONNECT for a reason of that one address, so that
    /// another address of the same name may be taken: a SOCKS5 "network unreachable", "host
    /// unreachable", "connection refused" or "address type not supported". Not a timeout
    /// (each try would take the whole wait again), nor a SOCKS4 refusal (0x5B says nothing
    /// of why), nor anything the proxy's own policy or state may have caused.
    fn another_address_may_do(&self, err: &ClientError) -> bool {
        err.hop() == Some(self.hops.len())
            && matches!(
                err.kind(),
                Some(HopErrorKind::Rejected { code, v4_code: None })
                    if matches!(
                        code,
                        ReplyCode::NetworkUnreachable
                            | ReplyCode::HostUnreachable
                            | ReplyCode::ConnectionRefused
                            | ReplyCode::AddressTypeNotSupported
                    )
            )
    }

    /// Connects straight to a target the `NO_PROXY` rules match: its name resolved here,
    /// addresses raced as for the first proxy. The stream's bound address is the local end.
    async fn connect_direct(
        &self,
        target: TargetAddr,
    ) -> Result<ProxyStream<TcpStream>, ClientError> {
        let fail = |kind: HopErrorKind| ClientError::Direct {
            target: target.clone(),
            kind,
        };
        let addrs: Vec<SocketAddr> = match (&target, target.ip_literal()) {
            (_, Some(addr)) => vec![addr],
            (TargetAddr::Domain(name, port), None) => {
                resolve(&*self.resolver, &name.to_string_lossy())
                    .await
                    .map_err(|e| fail(HopErrorKind::Resolve(e)))?
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, *port))
                    .collect()
            }
            (TargetAddr::Ip(addr), None) => vec![*addr],
        };
        let tcp = dial(&addrs, &DialOptions::with_timeout(self.timeouts.connect))
            .await
            .map_err(|e| fail(HopErrorKind::Dial(e)))?;
        let local = tcp.local_addr().map_err(|e| fail(HopErrorKind::Io(e)))?;
        let mut stream = ProxyStream::new(tcp);
        stream.set_bound(TargetAddr::Ip(local));
        Ok(stream)
    }

    /// Opens a tunnel to `target` through the chain, reaching the first proxy over `io`: a
    /// connection the caller made, possibly inside another protocol (TLS, a WebSocket, an
    /// SSH channel, another tunnel).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use socksmith::client::Client;
    /// use tokio::io::{AsyncReadExt, AsyncWriteExt};
    /// // An in-memory transport and a proxy that grants the request.
    /// let (ours, mut theirs) = tokio::io::duplex(256);
    /// tokio::spawn(async move {
    ///     let mut greeting = [0u8; 3];
    ///     theirs.read_exact(&mut greeting).await.unwrap();
    ///     theirs.write_all(&[5, 0]).await.unwrap(); // no authentication
    ///     let mut request = [0u8; 10];
    ///     theirs.read_exact(&mut request).await.unwrap(); // CONNECT 10.0.0.1:80
    ///     theirs.write_all(&[5, 0, 0, 1, 192, 0, 2, 1, 0x30, 0x39]).await.unwrap();
    ///     theirs.write_all(b"hello").await.unwrap();
    /// });
    /// let client = Client::from_url("socks5://proxy.invalid").unwrap();
    /// let mut stream = client.connect_over(ours, "10.0.0.1:80").await.unwrap();
    /// assert_eq!(stream.bound_addr().to_string(), "192.0.2.1:12345");
    /// let mut hello = [0; 5];
    /// stream.read_exact(&mut hello).await.unwrap();
    /// assert_eq!(&hello, b"hello");
    /// # }
    /// ```
    pub async fn connect_over<S>(
        &self,
        io: S,
        target: impl IntoTarget,
    ) -> Result<ProxyStream<S>, ClientError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let target = target.into_target()?;
        let opened = self.open(io, Command::Connect, target).await?;
        Ok(opened.stream)
    }

    /// The reply a server that sends its tunnels through this client (a parent proxy chain)
    /// should give its own client when [`Self::connect`] failed with `err`: the last hop's
    /// failure reply as is, [`ReplyCode::HostUnreachable`] when the target's name did not
    /// resolve here, [`ReplyCode::CommandNotSupported`] for a command the last hop's protocol
    /// cannot carry ([`ClientError::Unsupported`]: BIND, UDP ASSOCIATE or RESOLVE through an
    /// `http` last hop, say), the closest SOCKS5 reply to an `http` last hop's refusal
    /// ([`super::HttpError::reply_code`]), [`ReplyCode::TtlExpired`] for a deadline
    /// (as for a direct connect that times out), and [`ReplyCode::GeneralFailure`] for anything
    /// wrong with the chain itself
    /// (an unreachable or refusing upstream proxy is the server's problem, not the target's).
    ///
    /// ```
    /// use socksmith::client::Client;
    /// use socksmith_proto::ReplyCode;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let client = Client::from_url("socks5://127.0.0.1:1").unwrap(); // nothing listens there
    /// let err = client.connect("127.0.0.1:80").await.unwrap_err();
    /// assert_eq!(client.downstream_reply(&err), ReplyCode::GeneralFailure);
    /// # }
    /// ```
    pub fn downstream_reply(&self, err: &ClientError) -> ReplyCode {
        if let ClientError::Unsupported { .. } = err {
            // Refused before anything was sent: the last hop's protocol cannot carry the
            // command (UDP ASSOCIATE over SOCKS4), as a proxy without it would answer.
            return ReplyCode::CommandNotSupported;
        }
        let at_last_hop = err.hop() == Some(self.hops.len());
        match err.kind() {
            Some(HopErrorKind::Rejected { code, .. }) if at_last_hop => *code,
            Some(HopErrorKind::Http(refusal)) if at_last_hop => {
                refusal.reply_code().unwrap_or(ReplyCode::GeneralFailure)
            }
            Some(HopErrorKind::Resolve(_) | HopErrorKind::NoUsableAddress { .. })
                if at_last_hop && matches!(err.step(), Some(Step::Resolve)) =>
            {
                ReplyCode::HostUnreachable
            }
            // The last hop's protocol cannot carry the target's address (IPv6 over SOCKS4),
            // found before it was sent.
            Some(HopErrorKind::Protocol(ProtocolError::InvalidInput(
                InvalidInput::V4Ipv6Address | InvalidInput::V4aMarkerAddress(_),
            ))) if at_last_hop => ReplyCode::AddressTypeNotSupported,
            _ if err.is_timeout() => ReplyCode::TtlExpired,
            _ => ReplyCode::GeneralFailure,
        }
    }

    /// Connects to the first proxy over TCP, with `TCP_NODELAY`.
    pub(crate) async fn connect_first_hop(&self) -> Result<TcpStream, ClientError> {
        let first = self.hops.first().ok_or(ClientError::NoProxy)?;
        let fail = |step: Step, kind: HopErrorKind| {
            ClientError::from(HopError {
                hop: 1,
                proxy: first.redacted(),
                step,
                kind,
            })
        };
        let addrs: Vec<SocketAddr> = match first.host() {
            ProxyHost::Ip(ip) => vec![SocketAddr::new(*ip, first.port())],
            ProxyHost::Name(name) => resolve(&*self.resolver, name)
                .await
                .map_err(|e| fail(Step::Connect, HopErrorKind::Resolve(e)))?
                .into_iter()
                .map(|ip| SocketAddr::new(ip, first.port()))
                .collect(),
        };
        dial(&addrs, &DialOptions::with_timeout(self.timeouts.connect))
            .await
            .map_err(|e| fail(Step::Connect, HopErrorKind::Dial(e)))
    }

    /// Walks the chain over `io` and sends `command` for `target` to the last hop. Returns
    /// after the last hop's first answer.
    pub(crate) async fn open<S>(
        &self,
        io: S,
        command: Command,
        target: TargetAddr,
    ) -> Result<Opened<S>, ClientError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.ensure_last_hop_carries(command)?;
        let mut stream = ProxyStream::new(io);
        let last = self.hops.len();
        for (index, hop) in self.hops.iter().enumerate() {
            let number = index + 1;
            let (hop_command, hop_target) = match self.hops.get(number) {
                Some(next) => (Command::Connect, hop_address(number + 1, next)?),
                None => (command, target.clone()),
            };
            let hop_target = self
                .target_for(number, hop, hop_command, hop_target)
                .await?;
            let (machine, event) = match self
                .handshake(&mut stream, number, hop, hop_command, &hop_target)
                .await?
            {
                HopAnswer::Socks(machine, event) => (Some(machine), event),
                HopAnswer::Http => (
                    None,
                    // An HTTP proxy says nothing of the address it connects from.
                    ClientEvent::Succeeded {
                        bound: TargetAddr::UNSPECIFIED,
                    },
                ),
            };
            if number == last {
                if let ClientEvent::Succeeded { bound } = &event {
                    stream.set_bound(bound.clone());
                }
                return Ok(Opened {
                    stream,
                    machine,
                    event,
                    target: hop_target,
                });
            }
        }
        Err(ClientError::NoProxy)
    }

    /// Refuses, before any connection is made, an address that a hop's protocol cannot
    /// carry: an IPv6 address, or an IPv4 address `0.0.0.x` (the SOCKS4a name marker), for a
    /// SOCKS4 or SOCKS4a hop, be it the target or the next hop's address. Names are judged
    /// when they are resolved. The error is the one the hop's request would have failed
    /// with ([`InvalidInput`]).
    pub fn check_target(&self, target: &TargetAddr) -> Result<(), ClientError> {
        for (index, hop) in self.hops.iter().enumerate() {
            if !hop.protocol().is_v4() {
                continue;
            }
            let carried = match self.hops.get(index + 1) {
                Some(next) => hop_address(index + 2, next)?,
                None => target.clone(),
            };
            let refused = match carried.ip_literal() {
                Some(SocketAddr::V6(_)) => InvalidInput::V4Ipv6Address,
                Some(SocketAddr::V4(v4))
                    if v4.ip().octets()[..3] == [0, 0, 0] && v4.ip().octets()[3] != 0 =>
                {
                    InvalidInput::V4aMarkerAddress(*v4.ip())
                }
                _ => continue,
            };
            return Err(HopError {
                hop: index + 1,
                proxy: hop.redacted(),
                step: Step::Request {
                    command: Command::Connect,
                    target: carried,
                },
                kind: HopErrorKind::Protocol(refused.into()),
            }
            .into());
        }
        Ok(())
    }

    /// Refuses, before anything is sent, a command other than CONNECT when the last hop is
    /// an HTTP proxy: CONNECT is all HTTP has. (Earlier `http` hops only ever carry CONNECT to
    /// the next hop, so BIND or UDP ASSOCIATE with a SOCKS5 proxy behind one works.)
    pub(crate) fn ensure_last_hop_carries(&self, command: Command) -> Result<(), ClientError> {
        let last = self.last_hop();
        if last.protocol().is_http() && command != Command::Connect {
            return Err(ClientError::Unsupported {
                command,
                protocol: last.protocol().scheme(),
                hop_url: last.redacted(),
            });
        }
        Ok(())
    }

    /// One hop's handshake up to its first event (SOCKS) or its tunnel (HTTP).
    async fn handshake<S>(
        &self,
        stream: &mut ProxyStream<S>,
        number: usize,
        hop: &Proxy,
        command: Command,
        target: &TargetAddr,
    ) -> Result<HopAnswer, ClientError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let fail = |step: Step, kind: HopErrorKind| {
            ClientError::from(HopError {
                hop: number,
                proxy: hop.redacted(),
                step,
                kind,
            })
        };
        let request_step = || Step::Request {
            command,
            target: target.clone(),
        };
        let Some(version) = hop.protocol().version() else {
            // An `http` hop: `open` lets only CONNECT reach one.
            let authorization = hop.basic_authorization();
            http::connect(
                stream,
                target,
                authorization.as_deref(),
                self.timeouts.handshake,
            )
            .await
            .map_err(|kind| fail(request_step(), kind))?;
            return Ok(HopAnswer::Http);
        };
        let credentials = hop
            .credentials()
            .map_err(|e| fail(Step::Auth, HopErrorKind::Protocol(e)))?;
        let offered_credentials = credentials.is_some();
        let mut machine = ClientHandshake::new(ClientConfig {
            version,
            credentials,
            user_id: hop.v4_user_id(),
            command,
            target: target.clone(),
        })
        .map_err(|e| fail(request_step(), HopErrorKind::Protocol(e)))?;
        let event = next_event(
            stream,
            &mut machine,
            command,
            target,
            self.deadlines(),
            offered_credentials,
        )
        .await
        .map_err(|(step, kind)| fail(step, kind))?;
        Ok(HopAnswer::Socks(machine, event))
    }

    pub(crate) fn deadlines(&self) -> StepDeadlines {
        StepDeadlines {
            step: self.timeouts.handshake,
            bind_peer: self.timeouts.bind_accept,
        }
    }

    /// The target as hop `number` gets it: names resolved here unless the hop resolves them
    /// (or the command is RESOLVE, whose point is to send the name).
    async fn target_for(
        &self,
        number: usize,
        hop: &Proxy,
        command: Command,
        target: TargetAddr,
    ) -> Result<TargetAddr, ClientError> {
        if let Some(addr) = target.ip_literal() {
            return Ok(TargetAddr::Ip(addr));
        }
        let TargetAddr::Domain(name, port) = &target else {
            return Ok(target);
        };
        if hop.protocol().remote_dns() || command == Command::Resolve {
            return Ok(target);
        }
        let usable = self
            .resolve_for(number, hop, &name.to_string_lossy())
            .await?;
        let ip = usable[0];
        Ok(TargetAddr::Ip(SocketAddr::new(ip, *port)))
    }
}

/// `ips` with the two families taking turns from the resolver's first choice (RFC 8305), each
/// family in its own order: a name with many IPv6 addresses behind a proxy without IPv6 still
/// gets to its IPv4 ones within the first few tries.
pub(crate) fn interleave_families(ips: impl IntoIterator<Item = IpAddr>) -> Vec<IpAddr> {
    let ips: Vec<IpAddr> = ips.into_iter().collect();
    let Some(first) = ips.first() else {
        return ips;
    };
    let first_v6 = first.is_ipv6();
    let (mut preferred, mut other) = ips
        .iter()
        .partition::<Vec<IpAddr>, _>(|ip| ip.is_ipv6() == first_v6);
    preferred.reverse();
    other.reverse();
    let mut out = Vec::with_capacity(ips.len());
    while !preferred.is_empty() || !other.is_empty() {
        out.extend(preferred.pop());
        out.extend(other.pop());
    }
    out
}

/// The address of hop number `number` as the previous hop's target: refused when its name
/// cannot go in a request (a URL never has such a name, but [`Proxy::with_host`] takes any).
pub(crate) fn hop_address(number: usize, proxy: &Proxy) -> Result<TargetAddr, ClientError> {
    match proxy.host() {
        ProxyHost::Ip(ip) => Ok(TargetAddr::Ip(SocketAddr::new(*ip, proxy.port()))),
        ProxyHost::Name(name) => {
            TargetAddr::domain(name.as_bytes(), proxy.port()).map_err(|problem| {
                ClientError::InvalidProxy {
                    hop: number,
                    proxy: proxy.redacted(),
                    problem,
                }
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Protocol;

    fn target(text: &str) -> TargetAddr {
        TargetAddr::Ip(text.parse().expect("an address"))
    }

    #[test]
    fn the_families_take_turns_from_the_resolvers_first_choice() {
        let ip = |text: &str| -> IpAddr { text.parse().expect("literal") };
        let v6 = ["2001:db8::1", "2001:db8::2", "2001:db8::3", "2001:db8::4"].map(ip);
        let v4 = ["192.0.2.1", "192.0.2.2"].map(ip);
        let resolved = [v6[0], v6[1], v6[2], v6[3], v4[0], v4[1]];
        assert_eq!(
            interleave_families(resolved),
            [v6[0], v4[0], v6[1], v4[1], v6[2], v6[3]]
        );
        assert_eq!(
            interleave_families([v4[0], v6[0], v4[1]]),
            [v4[0], v6[0], v4[1]]
        );
        assert_eq!(interleave_families(v4), v4);
        assert!(interleave_families([]).is_empty());
    }

    #[tokio::test]
    async fn a_later_hop_name_no_request_can_carry_is_refused_when_building() {
        let first: Proxy = "socks5://127.0.0.1:1".parse().expect("a URL");
        for name in [String::new(), "n".repeat(300), "a\0b".into()] {
            let second = Proxy::with_host(Protocol::Socks5, ProxyHost::Name(name.clone()), 1080);
            let err = Client::builder()
                .proxy(first.clone())
                .proxy(second)
                .build()
                .expect_err("an unusable hop name");
            assert!(
                matches!(err, ClientError::InvalidProxy { hop: 2, .. }),
                "{name:?}: {err}"
            );
        }
        let no_password: Proxy = "socks5://alice@127.0.0.1:1".parse().expect("a URL");
        let err = Client::builder()
            .proxy(no_password.clone())
            .build()
            .expect_err("a SOCKS5 user without a password");
        assert!(
            matches!(err, ClientError::InvalidProxy { hop: 1, .. }),
            "{err}"
        );
        // `Client::new` does not check: the handshake fails instead, without a panic.
        let err = Client::new(no_password)
            .connect(("127.0.0.1", 9))
            .await
            .expect_err("nothing listens there");
        assert!(!matches!(err, ClientError::InvalidProxy { .. }), "{err}");
    }

    #[test]
    fn check_target_refuses_what_a_socks4_hop_cannot_carry_before_connecting() {
        let socks4a = Client::from_url("socks4a://127.0.0.1:1").expect("a client");
        assert!(socks4a.check_target(&target("10.0.0.1:80")).is_ok());
        assert!(socks4a
            .check_target(&TargetAddr::domain(b"example.com", 80).expect("a name"))
            .is_ok());
        for bad in ["[::1]:80", "0.0.0.5:80"] {
            let err = socks4a.check_target(&target(bad)).expect_err(bad);
            assert!(
                matches!(err.kind(), Some(HopErrorKind::Protocol(_))),
                "{bad}: {err}"
            );
        }
        // A SOCKS4 hop must carry the next hop's address too.
        let chain =
            Client::from_urls(["socks4://127.0.0.1:1", "socks5://[::1]:1080"]).expect("a chain");
        let err = chain
            .check_target(&target("10.0.0.1:80"))
            .expect_err("the second hop is IPv6");
        assert!(err.to_string().starts_with("hop 1 "), "{err}");
        // SOCKS5 carries anything.
        let socks5 = Client::from_url("socks5://127.0.0.1:1").expect("a client");
        assert!(socks5.check_target(&target("[::1]:80")).is_ok());
        // A server passing the error on answers "address type not supported".
        let err = socks4a.check_target(&target("[::1]:80")).expect_err("IPv6");
        assert_eq!(
            socks4a.downstream_reply(&err),
            ReplyCode::AddressTypeNotSupported
        );
    }
}
