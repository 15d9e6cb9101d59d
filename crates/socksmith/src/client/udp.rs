//! UDP ASSOCIATE (SOCKS5): [`UdpAssociation`], a datagram socket whose `send_to` and
//! `recv_from` wrap and unwrap the SOCKS5 UDP header, alive as long as its TCP control
//! connection.
//!
//! Set-up: a local UDP socket is bound on the IP the control connection uses (so the proxy
//! can match the association to the client), its address is announced in the request, and
//! the socket is connected to the relay address from the reply (an unspecified IP there means
//! the proxy's own IP). Connecting the socket makes the kernel drop datagrams from anyone but
//! the relay. Through a chain, only the control connection goes through the hops: datagrams
//! go straight to the last hop's relay, which must be reachable from here, and the request
//! announces `0.0.0.0:0` ("unknown").
//!
//! A background task watches the control connection; when the proxy closes it, the
//! association has ended and every later call fails. Dropping the association closes the
//! control connection, which ends it on the proxy too.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Mutex, PoisonError};
use std::task::{ready, Context, Poll};

use socksmith_proto::{ClientEvent, Command, TargetAddr, UdpHeader};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::builder::Client;
use super::error::{ClientError, HopError, HopErrorKind, Step};
use super::target::IntoTarget;
use super::url::ProxyHost;
use crate::resolve::resolve;

/// Room for the largest SOCKS5 UDP header (a 255-byte name): add it to the payload size when
/// sizing a receive buffer.
pub const MAX_UDP_HEADER_LEN: usize = 4 + 1 + 255 + 2;

/// A UDP association through a SOCKS5 proxy. See the [client module](crate::client).
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use socksmith::client::{Client, MAX_UDP_HEADER_LEN};
/// let client = Client::from_url("socks5://127.0.0.1:1080")?;
/// let udp = client.udp_associate().await?;
/// udp.send_to(b"ping", "127.0.0.1:7").await?;
/// let mut buf = vec![0; 1500 + MAX_UDP_HEADER_LEN];
/// let (len, from) = udp.recv_from(&mut buf).await?;
/// println!("{len} bytes from {from}: {:?}", &buf[..len]);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct UdpAssociation {
    socket: UdpSocket,
    relay: SocketAddr,
    closed: watch::Receiver<bool>,
    watcher: JoinHandle<()>,
    send_buf: SendBuffer,
}

/// The buffer datagrams are built in, kept from one `send_to` to the next so that sending
/// allocates nothing once it has grown to the largest datagram. A send takes it out (no lock is
/// held across the await) and puts it back; a concurrent send finds it taken and builds in a
/// fresh one.
#[derive(Default)]
struct SendBuffer(Mutex<Vec<u8>>);

impl SendBuffer {
    /// The buffer, empty.
    fn take(&self) -> Vec<u8> {
        let mut buf = std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner));
        buf.clear();
        buf
    }

    fn put_back(&self, buf: Vec<u8>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = buf;
    }
}

impl fmt::Debug for SendBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the bytes: they are the last datagram's payload.
        f.write_str("SendBuffer")
    }
}

impl Client {
    /// Opens a UDP association with the last hop (which must speak SOCKS5: a SOCKS4 or
    /// `http` last hop is refused with [`ClientError::Unsupported`] before anything is sent).
    pub async fn udp_associate(&self) -> Result<UdpAssociation, ClientError> {
        let last = self.last_hop();
        let hop = self.hops.len();
        if last.protocol().is_v4() {
            return Err(ClientError::Unsupported {
                command: Command::UdpAssociate,
                protocol: last.protocol().scheme(),
                hop_url: last.redacted(),
            });
        }
        self.ensure_last_hop_carries(Command::UdpAssociate)?;
        let fail = |kind: HopErrorKind| {
            ClientError::from(HopError {
                hop,
                proxy: last.redacted(),
                step: Step::Udp,
                kind,
            })
        };
        let control = self.connect_first_hop().await?;
        let proxy_ip = control
            .peer_addr()
            .map_err(|e| fail(HopErrorKind::Io(e)))?
            .ip();
        // One hop: bind where the control connection comes from and announce it.
        let (socket, announce) = if hop == 1 {
            let local_ip = control
                .local_addr()
                .map_err(|e| fail(HopErrorKind::Io(e)))?
                .ip();
            let socket = UdpSocket::bind((local_ip, 0))
                .await
                .map_err(|e| fail(HopErrorKind::Io(e)))?;
            let local = socket.local_addr().map_err(|e| fail(HopErrorKind::Io(e)))?;
            (Some(socket), TargetAddr::Ip(local))
        } else {
            (None, TargetAddr::UNSPECIFIED)
        };
        let opened = self.open(control, Command::UdpAssociate, announce).await?;
        let ClientEvent::Succeeded { bound } = opened.event else {
            return Err(fail(HopErrorKind::UnexpectedAnswer(
                "a BIND reply to UDP ASSOCIATE".into(),
            )));
        };
        let relay = self
            .relay_address(bound, if hop == 1 { Some(proxy_ip) } else { None })
            .await
            .map_err(fail)?;
        let socket = match socket {
            Some(s) if s.local_addr().map(|a| a.is_ipv4()).ok() == Some(relay.is_ipv4()) => s,
            // Through a chain, or a relay in the other IP family than the control
            // connection: any local address of the relay's family.
            _ => {
                let any: IpAddr = if relay.is_ipv4() {
                    Ipv4Addr::UNSPECIFIED.into()
                } else {
                    Ipv6Addr::UNSPECIFIED.into()
                };
                UdpSocket::bind((any, 0))
                    .await
                    .map_err(|e| fail(HopErrorKind::Io(e)))?
            }
        };
        socket
            .connect(relay)
            .await
            .map_err(|e| fail(HopErrorKind::Io(e)))?;
        let (closed_tx, closed) = watch::channel(false);
        let watcher = tokio::spawn(watch_control(opened.stream, closed_tx));
        Ok(UdpAssociation {
            socket,
            relay,
            closed,
            watcher,
            send_buf: SendBuffer::default(),
        })
    }

    /// The relay's socket address from the reply's BND: an unspecified IP is the proxy's IP
    /// (known for the first hop, from the URL or a lookup for later hops), a name is looked
    /// up here.
    async fn relay_address(
        &self,
        bound: TargetAddr,
        first_hop_ip: Option<IpAddr>,
    ) -> Result<SocketAddr, HopErrorKind> {
        let last = self.last_hop();
        let lookup = |name: String| async move {
            resolve(&*self.resolver, &name)
                .await
                .map_err(HopErrorKind::Resolve)?
                .into_iter()
                .next()
                .ok_or_else(|| HopErrorKind::UnexpectedAnswer(format!("{name} has no address")))
        };
        match bound {
            TargetAddr::Ip(addr) if !addr.ip().is_unspecified() => Ok(addr),
            TargetAddr::Ip(addr) => {
                let ip = match (first_hop_ip, last.host()) {
                    (Some(ip), _) => ip,
                    (None, ProxyHost::Ip(ip)) => *ip,
                    (None, ProxyHost::Name(name)) => lookup(name.clone()).await?,
                };
                Ok(SocketAddr::new(ip, addr.port()))
            }
            TargetAddr::Domain(name, port) => {
                let ip = lookup(name.to_string_lossy().into_owned()).await?;
                Ok(SocketAddr::new(ip, port))
            }
        }
    }
}

impl UdpAssociation {
    /// Sends `data` to `target` through the relay. Names are sent to the relay as names.
    /// Returns the payload length sent.
    pub async fn send_to(&self, data: &[u8], target: impl IntoTarget) -> io::Result<usize> {
        self.check_open()?;
        let target = target
            .into_target()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let mut datagram = self.send_buf.take();
        UdpHeader { frag: 0, target }.encode(&mut datagram);
        datagram.extend_from_slice(data);
        let sent = self.socket.send(&datagram).await;
        self.send_buf.put_back(datagram);
        sent.map(|_| data.len())
    }

    /// Receives the next datagram from the relay into `buf` and returns the payload's length
    /// (the payload is `buf[..len]`) and the address it came from. Datagrams that are
    /// malformed or fragmented (FRAG != 0) are dropped. `buf` needs room for the header too
    /// (see [`MAX_UDP_HEADER_LEN`]); a longer datagram is truncated.
    ///
    /// Fails with [`io::ErrorKind::ConnectionAborted`] once the control connection closed.
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, TargetAddr)> {
        let mut closed = self.closed.clone();
        loop {
            let n = tokio::select! {
                biased;
                _ = closed.wait_for(|c| *c) => return Err(ended()),
                n = self.socket.recv(buf) => n?,
            };
            let datagram = buf.get(..n).unwrap_or_default();
            let (header, len) = match UdpHeader::decode(datagram) {
                Ok(decoded) => decoded,
                Err(e) => {
                    tracing::debug!(relay = %self.relay, error = %e, "dropping a malformed datagram");
                    continue;
                }
            };
            if header.frag != 0 {
                tracing::debug!(relay = %self.relay, frag = header.frag, "dropping a fragment");
                continue;
            }
            buf.copy_within(len..n, 0);
            return Ok((n - len, header.target));
        }
    }

    /// [`Self::send_to`] as a poll, for a caller's own event loop: builds the datagram in
    /// `buf` (kept by the caller between calls, so nothing is allocated per datagram) and
    /// sends it if the socket can take it now.
    pub fn poll_send_to(
        &self,
        cx: &mut Context<'_>,
        data: &[u8],
        target: &TargetAddr,
        buf: &mut Vec<u8>,
    ) -> Poll<io::Result<usize>> {
        self.check_open()?;
        buf.clear();
        UdpHeader {
            frag: 0,
            target: target.clone(),
        }
        .encode(buf);
        buf.extend_from_slice(data);
        self.socket.poll_send(cx, buf).map_ok(|_| data.len())
    }

    /// [`Self::recv_from`] as a poll, for a caller's own event loop. Does not notice the end
    /// of the association by itself: wait for [`Self::closed`] beside it.
    pub fn poll_recv_from(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<(usize, TargetAddr)>> {
        loop {
            self.check_open()?;
            let mut rb = ReadBuf::new(buf);
            ready!(self.socket.poll_recv(cx, &mut rb))?;
            let n = rb.filled().len();
            let datagram = buf.get(..n).unwrap_or_default();
            let (header, len) = match UdpHeader::decode(datagram) {
                Ok(decoded) => decoded,
                Err(e) => {
                    tracing::debug!(relay = %self.relay, error = %e, "dropping a malformed datagram");
                    continue;
                }
            };
            if header.frag != 0 {
                tracing::debug!(relay = %self.relay, frag = header.frag, "dropping a fragment");
                continue;
            }
            buf.copy_within(len..n, 0);
            return Poll::Ready(Ok((n - len, header.target)));
        }
    }

    /// The relay's address, where datagrams go.
    pub fn relay_addr(&self) -> SocketAddr {
        self.relay
    }

    /// The local UDP socket's address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Whether the proxy closed the control connection (the association has ended).
    pub fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Waits until the proxy ends the association.
    pub async fn closed(&self) {
        let mut closed = self.closed.clone();
        let _ = closed.wait_for(|c| *c).await;
    }

    fn check_open(&self) -> io::Result<()> {
        if self.is_closed() {
            Err(ended())
        } else {
            Ok(())
        }
    }
}

impl Drop for UdpAssociation {
    fn drop(&mut self) {
        // Dropping the watcher's control connection ends the association on the proxy.
        self.watcher.abort();
    }
}

/// Holds the control connection for the association's lifetime and reports when the proxy
/// ends it. The connection carries nothing after the reply: whatever the proxy sends is
/// discarded. EOF or an error sets `closed`. Aborted when the association is dropped, which
/// closes the connection and so ends the association on the proxy too.
async fn watch_control<S: AsyncRead + Unpin>(mut control: S, closed: watch::Sender<bool>) {
    let mut discard = [0u8; 64];
    while let Ok(n) = control.read(&mut discard).await {
        if n == 0 {
            break;
        }
    }
    let _ = closed.send(true);
}

fn ended() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "the UDP association ended: the proxy closed its control connection",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_send_buffer_is_reused_and_handed_out_empty() {
        let shared = SendBuffer::default();
        let mut first = shared.take();
        first.extend_from_slice(&[7; 1500]);
        let memory = first.as_ptr();
        shared.put_back(first);
        let again = shared.take();
        assert!(again.is_empty());
        assert!(again.capacity() >= 1500);
        assert_eq!(again.as_ptr(), memory, "the same allocation");
        // While one send holds it, another gets a fresh buffer.
        let concurrent = shared.take();
        assert_eq!(concurrent.capacity(), 0);
        assert_eq!(format!("{shared:?}"), "SendBuffer");
    }
}
