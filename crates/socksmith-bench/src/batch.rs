//! Batched UDP I/O: up to [`BATCH`] datagrams per syscall (`recvmmsg`/`sendmmsg` on Linux,
//! through `nix`'s safe wrappers; one datagram per syscall elsewhere), on a tokio socket.
//!
//! The UDP phase and the UDP echo target both run on the load's one core: a syscall per
//! datagram there would measure the bench instead of the proxy. Buffers are allocated once per
//! socket; a batch allocates nothing per datagram.

use std::io;
use std::net::SocketAddr;

use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Most datagrams moved by one syscall.
pub const BATCH: usize = 32;

/// Room for one of the bench's datagrams: 512 bytes plus a SOCKS header.
pub const SLOT: usize = 2048;

/// Room for any UDP datagram (65,507 bytes of IPv4 payload, rounded up).
pub const ANY_DATAGRAM: usize = 65_536;

/// Receive buffers for one batch, reused from batch to batch.
pub struct RecvBatch {
    /// [`BATCH`] slots of `slot` bytes.
    bufs: Box<[u8]>,
    slot: usize,
    lens: [usize; BATCH],
    from: [Option<SocketAddr>; BATCH],
    count: usize,
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch::with_slot(SLOT)
    }
}

impl RecvBatch {
    /// Buffers for datagrams of up to `slot` bytes (longer ones are truncated by the kernel).
    pub fn with_slot(slot: usize) -> Self {
        RecvBatch {
            bufs: vec![0u8; BATCH * slot.max(1)].into_boxed_slice(),
            slot: slot.max(1),
            lens: [0; BATCH],
            from: [None; BATCH],
            count: 0,
        }
    }

    /// Waits until `socket` has datagrams, then takes every one queued (up to [`BATCH`]);
    /// returns how many.
    pub async fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        loop {
            socket.readable().await?;
            match socket.try_io(Interest::READABLE, || self.recv_now(socket)) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Datagram `i` of the last batch and its sender (`None` if the kernel gave none).
    pub fn get(&self, i: usize) -> Option<(&[u8], Option<SocketAddr>)> {
        if i >= self.count {
            return None;
        }
        let start = i * self.slot;
        let data = self.bufs.get(start..start + *self.lens.get(i)?)?;
        Some((data, *self.from.get(i)?))
    }

    /// The datagrams of the last batch.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], Option<SocketAddr>)> {
        (0..self.count).filter_map(|i| self.get(i))
    }

    #[cfg(target_os = "linux")]
    fn recv_now(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        use nix::sys::socket::{recvmmsg, MsgFlags, MultiHeaders, SockaddrStorage};
        use std::io::IoSliceMut;
        use std::os::fd::AsRawFd;

        let RecvBatch {
            bufs,
            slot,
            lens,
            from,
            count,
        } = self;
        *count = 0;
        // The headers are built per batch (two small allocations per syscall, not per
        // datagram) because they hold raw pointers, which would make the task not `Send`.
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
        let mut chunks = bufs.chunks_mut(*slot);
        let mut slices: [[IoSliceMut<'_>; 1]; BATCH] =
            std::array::from_fn(|_| [IoSliceMut::new(chunks.next().unwrap_or_default())]);
        let results = recvmmsg(
            socket.as_raw_fd(),
            &mut headers,
            slices.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )
        .map_err(io::Error::from)?;
        for (i, msg) in results.enumerate() {
            if let (Some(len), Some(addr)) = (lens.get_mut(i), from.get_mut(i)) {
                *len = msg.bytes;
                *addr = msg.address.and_then(|a| socket_addr(&a));
                *count = i + 1;
            }
        }
        Ok(*count)
    }

    #[cfg(not(target_os = "linux"))]
    fn recv_now(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        let first = self.bufs.get_mut(..self.slot).unwrap_or_default();
        let (n, from) = socket.try_recv_from(first)?;
        self.lens[0] = n;
        self.from[0] = Some(from);
        self.count = 1;
        Ok(1)
    }
}

/// Sends `datagrams` (each to its address, or on a connected socket to its peer with `None`)
/// in as few syscalls as it can, waiting while the socket buffer is full; returns how many
/// were sent, which is all of them unless the socket failed.
pub async fn send_all(
    socket: &UdpSocket,
    datagrams: &[(&[u8], Option<SocketAddr>)],
) -> io::Result<usize> {
    let mut sent = 0;
    while let Some(rest) = datagrams.get(sent..).filter(|r| !r.is_empty()) {
        socket.writable().await?;
        match socket.try_io(Interest::WRITABLE, || send_now(socket, rest)) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(sent)
}

/// Most bytes one GSO send may carry: under the 64 KiB an IP packet can hold, headers included.
pub const GSO_MAX_BYTES: usize = 60_000;

/// Most datagrams one GSO send may carry (the kernel's `UDP_MAX_SEGMENTS`).
pub const GSO_MAX_SEGMENTS: usize = 64;

/// Sends `buf`, datagrams of `segment` bytes back to back (the last may be shorter), to `to`
/// (or, with `None`, to a connected socket's peer) with one `sendmsg` and UDP generic
/// segmentation offload (`UDP_SEGMENT`): the kernel carries them through its stack as one
/// packet and splits them where needed, which costs the sender far less per datagram than
/// `sendmmsg`. `Ok(false)` when the kernel refuses GSO (old kernels, some devices) or `buf`
/// is beyond [`GSO_MAX_BYTES`]/[`GSO_MAX_SEGMENTS`]: send them another way.
#[cfg(target_os = "linux")]
pub async fn send_segments(
    socket: &UdpSocket,
    buf: &[u8],
    segment: usize,
    to: Option<SocketAddr>,
) -> io::Result<bool> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, SockaddrStorage};
    use std::io::IoSlice;
    use std::os::fd::AsRawFd;

    let Ok(segment_len) = u16::try_from(segment) else {
        return Ok(false);
    };
    if segment == 0 || buf.len() > GSO_MAX_BYTES || buf.len().div_ceil(segment) > GSO_MAX_SEGMENTS {
        return Ok(false);
    }
    let to = to.map(SockaddrStorage::from);
    loop {
        socket.writable().await?;
        let sent = socket.try_io(Interest::WRITABLE, || {
            let iov = [IoSlice::new(buf)];
            let cmsg = [ControlMessage::UdpGsoSegments(&segment_len)];
            sendmsg(
                socket.as_raw_fd(),
                &iov,
                &cmsg,
                MsgFlags::MSG_DONTWAIT,
                to.as_ref(),
            )
            .map_err(io::Error::from)
        });
        match sent {
            Ok(_) => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            // EIO, EINVAL, EOPNOTSUPP, EMSGSIZE: no GSO here, or not for this packet.
            Err(e) if matches!(e.raw_os_error(), Some(5 | 22 | 90 | 95)) => return Ok(false),
            Err(e) => return Err(e),
        }
    }
}

/// Elsewhere there is no GSO: the caller sends the datagrams one by one.
#[cfg(not(target_os = "linux"))]
pub async fn send_segments(
    _socket: &UdpSocket,
    _buf: &[u8],
    _segment: usize,
    _to: Option<SocketAddr>,
) -> io::Result<bool> {
    Ok(false)
}

#[cfg(target_os = "linux")]
fn send_now(socket: &UdpSocket, datagrams: &[(&[u8], Option<SocketAddr>)]) -> io::Result<usize> {
    use nix::sys::socket::{sendmmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage};
    use std::io::IoSlice;
    use std::os::fd::AsRawFd;

    let n = datagrams.len().min(BATCH);
    let mut slices = [[IoSlice::new(&[])]; BATCH];
    let mut addrs: [Option<SockaddrStorage>; BATCH] = [None; BATCH];
    for ((slice, addr), (data, to)) in slices.iter_mut().zip(addrs.iter_mut()).zip(datagrams) {
        *slice = [IoSlice::new(data)];
        *addr = to.map(SockaddrStorage::from);
    }
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(n, None);
    let no_cmsgs: [ControlMessage<'_>; 0] = [];
    let results = sendmmsg(
        socket.as_raw_fd(),
        &mut headers,
        slices.get(..n).unwrap_or_default(),
        addrs.get(..n).unwrap_or_default(),
        no_cmsgs,
        MsgFlags::MSG_DONTWAIT,
    )
    .map_err(io::Error::from)?;
    Ok(results.count())
}

#[cfg(not(target_os = "linux"))]
fn send_now(socket: &UdpSocket, datagrams: &[(&[u8], Option<SocketAddr>)]) -> io::Result<usize> {
    match datagrams.first() {
        Some((data, Some(to))) => socket.try_send_to(data, *to).map(|_| 1),
        Some((data, None)) => socket.try_send(data).map(|_| 1),
        None => Ok(0),
    }
}

#[cfg(target_os = "linux")]
fn socket_addr(addr: &nix::sys::socket::SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    addr.as_sockaddr_in6()
        .map(|v6| SocketAddr::V6((*v6).into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn segments_sent_with_gso_arrive_as_separate_datagrams() {
        let a = UdpSocket::bind("127.0.0.1:0").await.expect("bind a");
        let b = UdpSocket::bind("127.0.0.1:0").await.expect("bind b");
        let to = b.local_addr().expect("b's address");
        let whole: Vec<u8> = (0..1000u32).map(|i| (i % 7) as u8).collect();
        if !send_segments(&a, &whole, 300, Some(to))
            .await
            .expect("send")
        {
            eprintln!("this kernel refuses UDP GSO: the bench falls back to sendmmsg");
            return;
        }
        let mut batch = RecvBatch::default();
        let mut got = Vec::new();
        while got.len() < 4 {
            batch.recv(&b).await.expect("recv");
            got.extend(batch.iter().map(|(d, _)| d.to_vec()));
        }
        let want: Vec<Vec<u8>> = whole.chunks(300).map(<[u8]>::to_vec).collect();
        assert_eq!(got, want, "three of 300 bytes and the last of 100");
        assert!(
            !send_segments(&a, &vec![0u8; GSO_MAX_BYTES + 1], 1000, Some(to))
                .await
                .expect("refused before the kernel")
        );
    }

    #[tokio::test]
    async fn a_batch_goes_out_and_comes_back_whole_and_in_order() {
        let a = UdpSocket::bind("127.0.0.1:0").await.expect("bind a");
        let b = UdpSocket::bind("127.0.0.1:0").await.expect("bind b");
        let to = b.local_addr().expect("b's address");
        let payloads: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 100 + usize::from(i)]).collect();
        let datagrams: Vec<(&[u8], Option<SocketAddr>)> =
            payloads.iter().map(|p| (&p[..], Some(to))).collect();
        assert_eq!(send_all(&a, &datagrams).await.expect("send"), 40);
        let mut batch = RecvBatch::default();
        let mut got = Vec::new();
        while got.len() < 40 {
            batch.recv(&b).await.expect("recv");
            for (data, from) in batch.iter() {
                assert_eq!(from, Some(a.local_addr().expect("a's address")));
                got.push(data.to_vec());
            }
        }
        assert_eq!(got, payloads);
    }
}
