//! A hand-written SOCKS4/4a/5 client that writes the bytes of RFC 1928, RFC 1929 and the SOCKS4
//! notes directly and reads replies with `read_exact`. It shares no code with socksmith, so a
//! socksmith server can be tested against it, and it proves the real peers' behaviour in the
//! testkit's own tests.
//!
//! Deliberately simple: it is a reference client for tests, not a codec. It does no pipelining
//! and trusts that the reply is the next thing on the wire.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// SOCKS5 CONNECT.
pub const CMD_CONNECT: u8 = 0x01;
/// SOCKS5 BIND.
pub const CMD_BIND: u8 = 0x02;
/// SOCKS5 UDP ASSOCIATE.
pub const CMD_UDP_ASSOCIATE: u8 = 0x03;
/// SOCKS5 method: no authentication.
pub const METHOD_NONE: u8 = 0x00;
/// SOCKS5 method: username/password (RFC 1929).
pub const METHOD_USERPASS: u8 = 0x02;
/// SOCKS5 method answer: no acceptable method.
pub const METHOD_NO_ACCEPTABLE: u8 = 0xFF;
/// SOCKS5 REP: succeeded.
pub const REP_SUCCEEDED: u8 = 0x00;
/// SOCKS5 REP: command not supported.
pub const REP_COMMAND_NOT_SUPPORTED: u8 = 0x07;
/// SOCKS4 CD: request granted.
pub const SOCKS4_GRANTED: u8 = 0x5A;
/// SOCKS4 CD: request rejected or failed.
pub const SOCKS4_REJECTED: u8 = 0x5B;

/// Where a request points: an address, or a name the proxy resolves.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// An IPv4 or IPv6 address and port.
    Ip(SocketAddr),
    /// A host name (1..=255 bytes) and port.
    Domain(String, u16),
}

impl Target {
    /// A name target.
    pub fn domain(name: &str, port: u16) -> Self {
        Self::Domain(name.to_owned(), port)
    }

    /// The address, if this is one.
    pub fn ip(&self) -> Option<SocketAddr> {
        match self {
            Self::Ip(a) => Some(*a),
            Self::Domain(..) => None,
        }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        match self {
            Self::Ip(a) => a.port(),
            Self::Domain(_, p) => *p,
        }
    }

    /// Appends the SOCKS5 `ATYP | ADDR | PORT` encoding.
    pub fn encode_socks5(&self, out: &mut Vec<u8>) {
        match self {
            Self::Ip(SocketAddr::V4(a)) => {
                out.push(0x01);
                out.extend_from_slice(&a.ip().octets());
            }
            Self::Ip(SocketAddr::V6(a)) => {
                out.push(0x04);
                out.extend_from_slice(&a.ip().octets());
            }
            Self::Domain(name, _) => {
                assert!(
                    (1..=255).contains(&name.len()),
                    "a SOCKS5 domain is 1..=255 bytes, got {}",
                    name.len()
                );
                out.push(0x03);
                out.push(name.len() as u8);
                out.extend_from_slice(name.as_bytes());
            }
        }
        out.extend_from_slice(&self.port().to_be_bytes());
    }
}

impl From<SocketAddr> for Target {
    fn from(a: SocketAddr) -> Self {
        Self::Ip(a)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(a) => write!(f, "{a}"),
            Self::Domain(n, p) => write!(f, "{n}:{p}"),
        }
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A username and password (RFC 1929). `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The username.
    pub user: String,
    /// The password.
    pub pass: String,
}

impl Credentials {
    /// Builds credentials.
    pub fn new(user: &str, pass: &str) -> Self {
        Self {
            user: user.to_owned(),
            pass: pass.to_owned(),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("pass", &"<hidden>")
            .finish()
    }
}

/// One reply: SOCKS5 `REP` and `BND`, or SOCKS4 `CD` and `DSTPORT`/`DSTIP`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// REP (SOCKS5, 0x00 = succeeded) or CD (SOCKS4, 0x5A = granted).
    pub code: u8,
    /// The address in the reply.
    pub addr: Target,
}

/// How the hand-written client's exchange ended, when not as hoped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RawError {
    /// The proxy closed the connection mid-handshake.
    #[error("the proxy closed the connection during the handshake")]
    Closed,
    /// Any other socket error.
    #[error("i/o error: {0}")]
    Io(io::Error),
    /// SOCKS5: the proxy chose 0xFF, no acceptable method.
    #[error("the proxy accepted none of the offered methods (0xFF)")]
    NoAcceptableMethod,
    /// SOCKS5: the proxy chose a method that was not offered.
    #[error("the proxy chose method {0:#04x}, which was not offered")]
    UnexpectedMethod(u8),
    /// RFC 1929: the proxy refused the credentials with this status.
    #[error("the proxy refused the credentials (status {0:#04x})")]
    AuthFailed(u8),
    /// The proxy answered the request with this REP (SOCKS5) or CD (SOCKS4).
    #[error("the proxy rejected the request with code {0:#04x}")]
    Rejected(u8),
    /// The proxy sent bytes that are not a valid reply.
    #[error("malformed reply: {0}")]
    Malformed(String),
}

impl From<io::Error> for RawError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe => Self::Closed,
            _ => Self::Io(e),
        }
    }
}

/// SOCKS5 greeting: offers `methods` and returns the method the proxy chose (which may be
/// [`METHOD_NO_ACCEPTABLE`]).
pub async fn socks5_greeting<S>(s: &mut S, methods: &[u8]) -> Result<u8, RawError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut msg = vec![0x05, methods.len() as u8];
    msg.extend_from_slice(methods);
    s.write_all(&msg).await?;
    let mut choice = [0u8; 2];
    s.read_exact(&mut choice).await?;
    if choice[0] != 0x05 {
        return Err(RawError::Malformed(format!(
            "method choice version {:#04x}, expected 0x05",
            choice[0]
        )));
    }
    Ok(choice[1])
}

/// RFC 1929 sub-negotiation: `VER=0x01 | ULEN | UNAME | PLEN | PASSWD`, expects status 0.
pub async fn socks5_userpass<S>(s: &mut S, creds: &Credentials) -> Result<(), RawError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut msg = vec![0x01, creds.user.len() as u8];
    msg.extend_from_slice(creds.user.as_bytes());
    msg.push(creds.pass.len() as u8);
    msg.extend_from_slice(creds.pass.as_bytes());
    s.write_all(&msg).await?;
    let mut status = [0u8; 2];
    s.read_exact(&mut status).await?;
    match status {
        [0x01, 0x00] => Ok(()),
        [0x01, st] => Err(RawError::AuthFailed(st)),
        other => Err(RawError::Malformed(format!(
            "RFC 1929 status {other:02x?}, expected version 0x01"
        ))),
    }
}

/// The whole SOCKS5 authentication phase: offers only "none" without credentials, only
/// username/password with them, and runs the sub-negotiation when chosen.
pub async fn socks5_auth<S>(s: &mut S, creds: Option<&Credentials>) -> Result<(), RawError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let offered = if creds.is_some() {
        METHOD_USERPASS
    } else {
        METHOD_NONE
    };
    match (socks5_greeting(s, &[offered]).await?, creds) {
        (METHOD_NO_ACCEPTABLE, _) => Err(RawError::NoAcceptableMethod),
        (m, _) if m != offered => Err(RawError::UnexpectedMethod(m)),
        (METHOD_USERPASS, Some(c)) => socks5_userpass(s, c).await,
        _ => Ok(()),
    }
}

/// Reads one SOCKS5 reply, whatever its REP.
pub async fn read_socks5_reply<S>(s: &mut S) -> Result<Reply, RawError>
where
    S: AsyncRead + Unpin,
{
    let mut head = [0u8; 4];
    s.read_exact(&mut head).await?;
    if head[0] != 0x05 {
        return Err(RawError::Malformed(format!(
            "reply version {:#04x}, expected 0x05",
            head[0]
        )));
    }
    let addr = read_socks5_addr(s, head[3]).await?;
    Ok(Reply {
        code: head[1],
        addr,
    })
}

async fn read_socks5_addr<S>(s: &mut S, atyp: u8) -> Result<Target, RawError>
where
    S: AsyncRead + Unpin,
{
    let target = match atyp {
        0x01 => {
            let mut b = [0u8; 6];
            s.read_exact(&mut b).await?;
            let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            Target::Ip(SocketAddr::new(
                IpAddr::V4(ip),
                u16::from_be_bytes([b[4], b[5]]),
            ))
        }
        0x04 => {
            let mut b = [0u8; 18];
            s.read_exact(&mut b).await?;
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&b[..16]);
            let port = u16::from_be_bytes([b[16], b[17]]);
            Target::Ip(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), port))
        }
        0x03 => {
            let mut len = [0u8; 1];
            s.read_exact(&mut len).await?;
            let mut b = vec![0u8; usize::from(len[0]) + 2];
            s.read_exact(&mut b).await?;
            let port = u16::from_be_bytes([b[b.len() - 2], b[b.len() - 1]]);
            b.truncate(b.len() - 2);
            Target::Domain(String::from_utf8_lossy(&b).into_owned(), port)
        }
        other => return Err(RawError::Malformed(format!("unknown ATYP {other:#04x}"))),
    };
    Ok(target)
}

/// Sends a SOCKS5 request (`cmd` is [`CMD_CONNECT`], [`CMD_BIND`], [`CMD_UDP_ASSOCIATE`] or any
/// byte) and reads the reply, whatever its REP.
pub async fn socks5_request<S>(s: &mut S, cmd: u8, target: &Target) -> Result<Reply, RawError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut msg = vec![0x05, cmd, 0x00];
    target.encode_socks5(&mut msg);
    s.write_all(&msg).await?;
    read_socks5_reply(s).await
}

fn succeeded(reply: Reply, ok: u8) -> Result<Reply, RawError> {
    if reply.code == ok {
        Ok(reply)
    } else {
        Err(RawError::Rejected(reply.code))
    }
}

/// Replaces an unspecified reply address (0.0.0.0 / ::) by the proxy's IP, as RFC 1928 and the
/// SOCKS4 note tell a client to.
fn reachable(addr: &Target, proxy: SocketAddr) -> Result<SocketAddr, RawError> {
    match addr {
        Target::Ip(a) if a.ip().is_unspecified() => Ok(SocketAddr::new(proxy.ip(), a.port())),
        Target::Ip(a) => Ok(*a),
        Target::Domain(..) => Err(RawError::Malformed(format!(
            "a bound address that is a name: {addr}"
        ))),
    }
}

/// Connects to `proxy`, authenticates and sends a SOCKS5 CONNECT; returns the tunnel and the
/// reply's BND address.
pub async fn socks5_connect(
    proxy: SocketAddr,
    creds: Option<&Credentials>,
    target: impl Into<Target>,
) -> Result<(TcpStream, Target), RawError> {
    let mut s = TcpStream::connect(proxy).await?;
    socks5_auth(&mut s, creds).await?;
    let reply = succeeded(
        socks5_request(&mut s, CMD_CONNECT, &target.into()).await?,
        REP_SUCCEEDED,
    )?;
    Ok((s, reply.addr))
}

/// Sends a SOCKS5 BIND; returns the control stream and the address the proxy listens on (from
/// the first reply). Connect the peer there, then [`socks5_bind_accepted`].
pub async fn socks5_bind(
    proxy: SocketAddr,
    creds: Option<&Credentials>,
    expected_peer: impl Into<Target>,
) -> Result<(TcpStream, SocketAddr), RawError> {
    let mut s = TcpStream::connect(proxy).await?;
    socks5_auth(&mut s, creds).await?;
    let reply = succeeded(
        socks5_request(&mut s, CMD_BIND, &expected_peer.into()).await?,
        REP_SUCCEEDED,
    )?;
    let listen = reachable(&reply.addr, proxy)?;
    Ok((s, listen))
}

/// Reads the second BIND reply: the address of the peer that connected in.
pub async fn socks5_bind_accepted(control: &mut TcpStream) -> Result<Target, RawError> {
    Ok(succeeded(read_socks5_reply(control).await?, REP_SUCCEEDED)?.addr)
}

/// Sends a SOCKS5 UDP ASSOCIATE announcing `client` as the datagrams' source (`0.0.0.0:0` if
/// unknown); returns the control stream (the association lives while it is open) and the relay's
/// UDP address.
pub async fn socks5_udp_associate(
    proxy: SocketAddr,
    creds: Option<&Credentials>,
    client: impl Into<Target>,
) -> Result<(TcpStream, SocketAddr), RawError> {
    let mut s = TcpStream::connect(proxy).await?;
    socks5_auth(&mut s, creds).await?;
    let reply = succeeded(
        socks5_request(&mut s, CMD_UDP_ASSOCIATE, &client.into()).await?,
        REP_SUCCEEDED,
    )?;
    let relay = reachable(&reply.addr, proxy)?;
    Ok((s, relay))
}

/// Wraps `data` for the relay: `RSV(2)=0 | FRAG=0 | ATYP | DST.ADDR | DST.PORT | DATA`.
pub fn udp_wrap(target: &Target, data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x00, 0x00, 0x00];
    target.encode_socks5(&mut out);
    out.extend_from_slice(data);
    out
}

/// Unwraps a datagram from the relay into its source address and data.
pub fn udp_unwrap(datagram: &[u8]) -> Result<(Target, Vec<u8>), RawError> {
    let bad = |why: &str| RawError::Malformed(format!("UDP datagram: {why}"));
    if datagram.len() < 4 {
        return Err(bad("shorter than its header"));
    }
    if datagram[..2] != [0, 0] || datagram[2] != 0 {
        return Err(bad("RSV or FRAG not zero"));
    }
    let (addr_len, atyp) = match datagram[3] {
        0x01 => (4, 0x01),
        0x04 => (16, 0x04),
        0x03 => (
            1 + usize::from(*datagram.get(4).ok_or_else(|| bad("no length"))?),
            0x03,
        ),
        other => return Err(bad(&format!("ATYP {other:#04x}"))),
    };
    let end = 4 + addr_len + 2;
    if datagram.len() < end {
        return Err(bad("address cut short"));
    }
    let port = u16::from_be_bytes([datagram[end - 2], datagram[end - 1]]);
    let a = &datagram[4..end - 2];
    let target = match atyp {
        0x01 => Target::Ip(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3])),
            port,
        )),
        0x04 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(a);
            Target::Ip(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(o)), port))
        }
        _ => Target::Domain(String::from_utf8_lossy(&a[1..]).into_owned(), port),
    };
    Ok((target, datagram[end..].to_vec()))
}

/// Sends a SOCKS4 request (`cd` 1 = CONNECT, 2 = BIND) and reads the 8-byte reply, whatever its
/// CD. A [`Target::Domain`] is sent as SOCKS4a (DSTIP 0.0.0.1, the name after the USERID).
/// An IPv6 target cannot be expressed and panics.
pub async fn socks4_request<S>(
    s: &mut S,
    cd: u8,
    target: &Target,
    user_id: &str,
) -> Result<Reply, RawError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut msg = vec![0x04, cd];
    msg.extend_from_slice(&target.port().to_be_bytes());
    match target {
        Target::Ip(SocketAddr::V4(a)) => msg.extend_from_slice(&a.ip().octets()),
        Target::Ip(SocketAddr::V6(a)) => panic!("SOCKS4 cannot carry the IPv6 target {a}"),
        Target::Domain(..) => msg.extend_from_slice(&[0, 0, 0, 1]),
    }
    msg.extend_from_slice(user_id.as_bytes());
    msg.push(0);
    if let Target::Domain(name, _) = target {
        msg.extend_from_slice(name.as_bytes());
        msg.push(0);
    }
    s.write_all(&msg).await?;
    read_socks4_reply(s).await
}

/// Reads one 8-byte SOCKS4 reply, whatever its CD.
pub async fn read_socks4_reply<S>(s: &mut S) -> Result<Reply, RawError>
where
    S: AsyncRead + Unpin,
{
    let mut r = [0u8; 8];
    s.read_exact(&mut r).await?;
    if r[0] != 0x00 {
        return Err(RawError::Malformed(format!(
            "SOCKS4 reply version {:#04x}, expected 0x00",
            r[0]
        )));
    }
    let addr = SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(r[4], r[5], r[6], r[7])),
        u16::from_be_bytes([r[2], r[3]]),
    );
    Ok(Reply {
        code: r[1],
        addr: Target::Ip(addr),
    })
}

/// Connects to `proxy` and sends a SOCKS4 (or, for a name, SOCKS4a) CONNECT; returns the tunnel.
pub async fn socks4_connect(
    proxy: SocketAddr,
    user_id: &str,
    target: impl Into<Target>,
) -> Result<TcpStream, RawError> {
    let mut s = TcpStream::connect(proxy).await?;
    succeeded(
        socks4_request(&mut s, 1, &target.into(), user_id).await?,
        SOCKS4_GRANTED,
    )?;
    Ok(s)
}

/// Sends a SOCKS4 BIND; returns the control stream and the address the proxy listens on.
/// Connect the peer there, then [`socks4_bind_accepted`].
pub async fn socks4_bind(
    proxy: SocketAddr,
    user_id: &str,
    expected_peer: impl Into<Target>,
) -> Result<(TcpStream, SocketAddr), RawError> {
    let mut s = TcpStream::connect(proxy).await?;
    let reply = succeeded(
        socks4_request(&mut s, 2, &expected_peer.into(), user_id).await?,
        SOCKS4_GRANTED,
    )?;
    let listen = reachable(&reply.addr, proxy)?;
    Ok((s, listen))
}

/// Reads the second SOCKS4 BIND reply: the address of the peer that connected in.
pub async fn socks4_bind_accepted(control: &mut TcpStream) -> Result<Target, RawError> {
    Ok(succeeded(read_socks4_reply(control).await?, SOCKS4_GRANTED)?.addr)
}

/// After a BIND's second reply: the `peer` that connected to the announced address and the
/// client's `control` connection send a message each way, each side checking what it got.
pub async fn bind_talk(control: &mut TcpStream, peer: &mut TcpStream) {
    peer.write_all(b"from the peer").await.expect("peer write");
    let mut buf = [0u8; 13];
    control.read_exact(&mut buf).await.expect("client read");
    assert_eq!(&buf, b"from the peer");
    control
        .write_all(b"from the client")
        .await
        .expect("client write");
    let mut buf = [0u8; 15];
    peer.read_exact(&mut buf).await.expect("peer read");
    assert_eq!(&buf, b"from the client");
}

/// Writes `data` into a tunnel while reading back exactly `data.len()` bytes (or until EOF), then
/// drops the tunnel: the round trip through an echo target that needs no half-close, so it works
/// through every peer (microsocks closes both directions at the first EOF). Returns what came
/// back.
pub async fn echo_exact(mut tunnel: TcpStream, data: &[u8]) -> io::Result<Vec<u8>> {
    let (mut r, mut w) = tunnel.split();
    let write = w.write_all(data);
    let mut back = Vec::with_capacity(data.len());
    let read = async {
        let mut buf = vec![0u8; 64 * 1024];
        while back.len() < data.len() {
            match r.read(&mut buf).await? {
                0 => break,
                n => back.extend_from_slice(&buf[..n]),
            }
        }
        Ok::<_, io::Error>(())
    };
    let (wrote, read) = tokio::join!(write, read);
    wrote?;
    read?;
    Ok(back)
}

/// Sends `data` into a tunnel to a [`crate::targets::SinkServer`], half-closes, and reads the
/// sink's answer (the byte count it got, `"N\n"`): `Ok(Some(n))` if the half-close crossed the
/// proxy with the other direction still open, `Ok(None)` if the proxy closed the connection
/// instead.
pub async fn half_close_to_sink(mut tunnel: TcpStream, data: &[u8]) -> io::Result<Option<u64>> {
    tunnel.write_all(data).await?;
    tunnel.shutdown().await?;
    let mut answer = String::new();
    match tunnel.read_to_string(&mut answer).await {
        Ok(_) => Ok(answer.trim().parse().ok()),
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes `data` into a tunnel, half-closes, and reads until EOF: the round trip through an echo
/// target that relies on the proxy relaying the half-close. Returns what came back.
pub async fn echo_round_trip(mut tunnel: TcpStream, data: &[u8]) -> io::Result<Vec<u8>> {
    let (mut r, mut w) = tunnel.split();
    let write = async {
        w.write_all(data).await?;
        w.shutdown().await
    };
    let mut back = Vec::with_capacity(data.len());
    let read = r.read_to_end(&mut back);
    let (wrote, read) = tokio::join!(write, read);
    wrote?;
    read?;
    Ok(back)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_header_round_trips() {
        for t in [
            Target::Ip("127.0.0.1:53".parse().expect("addr")),
            Target::Ip("[::1]:53".parse().expect("addr")),
            Target::domain("localhost", 53),
        ] {
            let d = udp_wrap(&t, b"payload");
            assert_eq!(udp_unwrap(&d).expect("unwrap"), (t, b"payload".to_vec()));
        }
        assert!(udp_unwrap(&[0, 0, 1, 1, 127]).is_err());
    }

    #[test]
    fn socks5_encoding_matches_rfc1928() {
        let mut out = Vec::new();
        Target::Ip("10.1.2.3:80".parse().expect("addr")).encode_socks5(&mut out);
        assert_eq!(out, [0x01, 10, 1, 2, 3, 0, 80]);
        out.clear();
        Target::domain("ab", 443).encode_socks5(&mut out);
        assert_eq!(out, [0x03, 2, b'a', b'b', 0x01, 0xBB]);
    }

    #[test]
    fn credentials_debug_hides_the_password() {
        let dbg = format!("{:?}", Credentials::new("u", "secret"));
        assert!(!dbg.contains("secret"), "{dbg}");
    }
}
