//! Batched UDP for the UDP ASSOCIATE relay: many datagrams per system call.
//!
//! [`BatchSocket`] is a tokio UDP socket driven through `quinn-udp`, which does the system
//! calls: `recvmmsg(2)` (up to [`BATCH`] datagrams per call) and UDP GRO (the kernel hands
//! over several same-size datagrams from one sender in one buffer, split at
//! [`RecvMeta::stride`]) on receive, `sendmsg(2)` with UDP GSO (one buffer, cut by the kernel
//! into datagrams of one size for one destination) on send. [`gso_run`] says how many
//! datagrams of a batch can leave in one such send.
//!
//! `quinn-udp` sets a socket up for QUIC, and two of its settings are wrong for a relay that
//! passes on other programs' datagrams, so [`BatchSocket::new`] undoes them (with
//! `setsockopt(2)`, which no crate offers for these options; hence the `unsafe` here): it
//! forbids IP fragmentation (a 4 KiB DNS answer to a client behind a 1,500-byte link would
//! fail with `EMSGSIZE` instead of leaving in fragments, as it does from a plain socket), and
//! it asks for the destination address and TOS byte of every datagram received, which the
//! relay does not use. GRO, which it turns on, stays on where the reader splits buffers.
//!
//! [`LazyZeroed`] is the memory a batch lands in: every slot must hold the largest datagram
//! (64 KiB), but an anonymous mapping is backed by the kernel only where it is written, so a
//! relay of small datagrams costs a page or two per slot, not the whole area, and the memory
//! goes back to the system when the association ends (a heap allocation this size would be
//! zeroed by hand and kept by the allocator).
//!
//! Nothing here knows about SOCKS or the relay's policy.
#![allow(unsafe_code)]

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::task::{ready, Context, Poll};

pub(crate) use quinn_udp::RecvMeta;
use quinn_udp::{Transmit, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Datagrams (or GRO buffers) taken per receive call.
pub(crate) const BATCH: usize = quinn_udp::BATCH_SIZE;

/// The largest datagram that goes into a GSO send: any path carries it unfragmented (1,280
/// bytes, IPv6's minimum MTU, less 48 bytes of IPv6 and UDP headers). The kernel refuses
/// (`EINVAL`) a GSO send whose segments exceed the route's MTU, and the path to a client or a
/// target is unknown; larger datagrams leave one per call.
pub(crate) const GSO_MAX_SEGMENT: usize = 1232;

/// The most payload bytes in one GSO send: the datagram the kernel builds before cutting it
/// must fit an IP packet (65,535 bytes with headers).
pub(crate) const GSO_MAX_BYTES: usize = 65_000;

/// The receive buffer a batch socket asks for (see [`BatchSocket::new`]).
const RECEIVE_BUFFER: usize = 1 << 20;

/// A UDP socket that receives and sends in batches (see the module documentation).
#[derive(Debug)]
pub(crate) struct BatchSocket {
    io: UdpSocket,
    state: UdpSocketState,
}

impl BatchSocket {
    /// Takes over `socket` (bound, any blocking mode) and registers it with tokio's reactor.
    /// With `gro`, several same-size datagrams from one sender may arrive in one buffer (the
    /// reader splits them at the stride); without it, one buffer holds one datagram.
    pub(crate) fn new(socket: std::net::UdpSocket, gro: bool) -> io::Result<BatchSocket> {
        let defaults = options::Fragmentation::read(&socket);
        let state = UdpSocketState::new((&socket).into())?;
        defaults.restore(&socket)?;
        options::no_ancillary_data(&socket, socket.local_addr()?.is_ipv4())?;
        if !gro {
            options::disable_gro(&socket)?;
        }
        // Room for a burst: the kernel's default receive buffer (208 KiB) drops what a burst
        // of large datagrams brings before a batch reads them. Best effort: the kernel caps
        // the request at net.core.rmem_max (and doubles it for its bookkeeping), and memory
        // is charged only for datagrams actually waiting.
        let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(RECEIVE_BUFFER);
        socket.set_nonblocking(true)?;
        Ok(BatchSocket {
            io: UdpSocket::from_std(socket)?,
            state,
        })
    }

    /// Turns GRO off from now on: each buffer then holds one datagram.
    pub(crate) fn disable_gro(&self) -> io::Result<()> {
        options::disable_gro(&self.io)
    }

    /// The plain socket, for a single datagram and the local address.
    pub(crate) fn socket(&self) -> &UdpSocket {
        &self.io
    }

    /// Polls for read readiness without taking anything.
    pub(crate) fn poll_recv_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io.poll_recv_ready(cx)
    }

    /// Receives up to `bufs.len()` (at most [`BATCH`]) buffers: `Ready(Ok(n))` fills the
    /// first `n` of `bufs` and `meta` (each buffer holds `meta.len` bytes: one datagram, or
    /// several at `meta.stride` with GRO).
    pub(crate) fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.io.poll_recv_ready(cx))?;
            let received = self.io.try_io(Interest::READABLE, || {
                self.state.recv((&self.io).into(), bufs, meta)
            });
            match received {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                result => return Poll::Ready(result),
            }
        }
    }

    /// Sends `contents` to `dest`: one datagram, or, with a `segment` size, datagrams of that
    /// size back to back (the last may be shorter), cut by the kernel (GSO).
    pub(crate) fn poll_send(
        &self,
        cx: &mut Context<'_>,
        contents: &[u8],
        segment: Option<usize>,
        dest: SocketAddr,
    ) -> Poll<io::Result<()>> {
        let transmit = Transmit {
            destination: dest,
            ecn: None,
            contents,
            segment_size: segment,
            src_ip: None,
        };
        loop {
            ready!(self.io.poll_send_ready(cx))?;
            let sent = self.io.try_io(Interest::WRITABLE, || {
                self.state.try_send((&self.io).into(), &transmit)
            });
            match sent {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                result => return Poll::Ready(result),
            }
        }
    }

    /// How many datagrams the kernel has dropped on this socket since it was made because its
    /// receive buffer was full (`SO_MEMINFO`'s drop count; Linux only, 0 elsewhere).
    pub(crate) fn kernel_drops(&self) -> io::Result<u64> {
        options::drops(&self.io)
    }

    /// The most datagrams one GSO send may carry here: 1 where the kernel has no GSO, or after
    /// a GSO send failed in a way that says the device cannot do it.
    pub(crate) fn max_segments(&self) -> usize {
        self.state.max_gso_segments()
    }
}

/// How many of the datagrams at the front of a batch, whose lengths `lens` gives in order, can
/// leave in one GSO send (the caller checks they share a destination): a run of equal,
/// non-empty lengths of at most [`GSO_MAX_SEGMENT`] bytes, ending with at most one shorter,
/// non-empty datagram (the kernel makes the last segment of a send whatever is left), within
/// `max_segments` and [`GSO_MAX_BYTES`]. Never less than 1 for a non-empty `lens`; a run of 1
/// is sent as a plain datagram.
pub(crate) fn gso_run(lens: impl IntoIterator<Item = usize>, max_segments: usize) -> usize {
    let mut lens = lens.into_iter();
    let Some(segment) = lens.next() else {
        return 0;
    };
    // An empty datagram cannot be a segment: it would vanish in the cut.
    if segment == 0 || segment > GSO_MAX_SEGMENT {
        return 1;
    }
    let mut count = 1;
    let mut bytes = segment;
    for len in lens {
        if count >= max_segments || len == 0 || len > segment || bytes + len > GSO_MAX_BYTES {
            break;
        }
        count += 1;
        bytes += len;
        if len < segment {
            break;
        }
    }
    count
}

/// Zeroed memory that the kernel backs page by page as it is first written (see the module
/// documentation); returned to the system on drop.
#[derive(Debug)]
pub(crate) struct LazyZeroed {
    #[cfg(target_os = "linux")]
    map: mapping::Mapping,
    #[cfg(not(target_os = "linux"))]
    map: Vec<u8>,
}

impl LazyZeroed {
    /// `len` zero bytes.
    pub(crate) fn new(len: usize) -> io::Result<LazyZeroed> {
        #[cfg(target_os = "linux")]
        let map = mapping::Mapping::new(len)?;
        #[cfg(not(target_os = "linux"))]
        let map = vec![0; len];
        Ok(LazyZeroed { map })
    }

    /// The bytes.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        #[cfg(target_os = "linux")]
        return self.map.as_mut_slice();
        #[cfg(not(target_os = "linux"))]
        return &mut self.map;
    }
}

#[cfg(target_os = "linux")]
mod mapping {
    use std::io;
    use std::ptr::{self, NonNull};

    /// An anonymous, private, read-write mapping, owned like a `Box<[u8]>`.
    #[derive(Debug)]
    pub(super) struct Mapping {
        ptr: NonNull<u8>,
        len: usize,
    }

    // SAFETY: the mapping is owned by this value alone (no other pointer to it escapes but
    // through `&mut self`), so moving it to another thread is like moving a `Box<[u8]>`.
    unsafe impl Send for Mapping {}
    // SAFETY: a shared `&Mapping` gives no access to the bytes at all.
    unsafe impl Sync for Mapping {}

    impl Mapping {
        pub(super) fn new(len: usize) -> io::Result<Mapping> {
            if len == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "an empty mapping",
                ));
            }
            // SAFETY: an anonymous mapping at an address of the kernel's choice touches no
            // existing memory; the arguments are valid for MAP_ANONYMOUS (fd -1, offset 0).
            let addr = unsafe {
                libc::mmap(
                    ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if addr == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            let ptr = NonNull::new(addr.cast::<u8>())
                .ok_or_else(|| io::Error::other("mmap returned a null mapping"))?;
            Ok(Mapping { ptr, len })
        }

        pub(super) fn as_mut_slice(&mut self) -> &mut [u8] {
            // SAFETY: `ptr` points to `len` readable and writable bytes (anonymous mappings
            // are zero-filled, so initialized) that live until `drop`, and `&mut self` makes
            // this the only reference to them.
            unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
        }
    }

    impl Drop for Mapping {
        fn drop(&mut self) {
            // SAFETY: `ptr` and `len` are exactly the mapping made in `new`, and no slice of
            // it can outlive `self`. A failure could only leak the mapping.
            unsafe {
                libc::munmap(self.ptr.as_ptr().cast(), self.len);
            }
        }
    }
}

#[cfg(target_os = "linux")]
mod options {
    use std::io;
    use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

    /// A socket's fragmentation settings, as the kernel set them up.
    pub(super) struct Fragmentation {
        pub(super) ip_mtu_discover: Option<libc::c_int>,
        pub(super) ipv6_mtu_discover: Option<libc::c_int>,
        pub(super) ipv6_dontfrag: Option<libc::c_int>,
    }

    impl Fragmentation {
        /// The settings of `socket` (those its family does not have are left alone).
        pub(super) fn read(socket: &impl AsFd) -> Fragmentation {
            let fd = socket.as_fd();
            Fragmentation {
                ip_mtu_discover: get(fd, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER).ok(),
                ipv6_mtu_discover: get(fd, libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER).ok(),
                ipv6_dontfrag: get(fd, libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG).ok(),
            }
        }

        /// Puts the settings read before back on `socket`.
        pub(super) fn restore(&self, socket: &impl AsFd) -> io::Result<()> {
            let fd = socket.as_fd();
            if let Some(v) = self.ip_mtu_discover {
                set(fd, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, v)?;
            }
            if let Some(v) = self.ipv6_mtu_discover {
                set(fd, libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER, v)?;
            }
            if let Some(v) = self.ipv6_dontfrag {
                set(fd, libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG, v)?;
            }
            Ok(())
        }
    }

    /// Turns off the destination address and TOS byte that `quinn-udp` asks the kernel to
    /// attach to every datagram received: the relay uses neither, and each costs the kernel
    /// a control message per datagram.
    pub(super) fn no_ancillary_data(socket: &impl AsFd, ipv4: bool) -> io::Result<()> {
        let fd = socket.as_fd();
        if ipv4 {
            set(fd, libc::IPPROTO_IP, libc::IP_PKTINFO, 0)?;
            set(fd, libc::IPPROTO_IP, libc::IP_RECVTOS, 0)?;
        } else {
            set(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 0)?;
            set(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVTCLASS, 0)?;
            // A dual-stack socket also had them on for IPv4-mapped peers; a v6-only one
            // refuses the IPv4 options, which is as good as off.
            let _ = set(fd, libc::IPPROTO_IP, libc::IP_PKTINFO, 0);
            let _ = set(fd, libc::IPPROTO_IP, libc::IP_RECVTOS, 0);
        }
        Ok(())
    }

    /// Turns UDP GRO off: one datagram per receive buffer.
    pub(super) fn disable_gro(socket: &impl AsFd) -> io::Result<()> {
        match set(socket.as_fd(), libc::SOL_UDP, libc::UDP_GRO, 0) {
            // A kernel without GRO (before 5.0) never turned it on.
            Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => Ok(()),
            other => other,
        }
    }

    /// The socket's drop count from `SO_MEMINFO` (Linux 4.12 and later).
    pub(super) fn drops(socket: &impl AsFd) -> io::Result<u64> {
        // The kernel fills as many of its counters as the buffer holds (nine today) and says
        // how many bytes it wrote; room for more keeps a newer kernel from failing the call.
        let mut info = [0u32; 16];
        let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
        // SAFETY: `info` and `len` are valid for writes and `len` gives `info`'s size; the
        // descriptor is borrowed, so open for the duration of the call.
        let rc = unsafe {
            libc::getsockopt(
                socket.as_fd().as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_MEMINFO,
                info.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if rc == -1 {
            return Err(io::Error::last_os_error());
        }
        let index = libc::SK_MEMINFO_DROPS as usize;
        if (len as usize) < (index + 1) * std::mem::size_of::<u32>() {
            return Err(io::Error::other("SO_MEMINFO carries no drop count"));
        }
        Ok(u64::from(info[index]))
    }

    fn get(fd: BorrowedFd<'_>, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `value` and `len` are valid for writes and `len` gives `value`'s size; the
        // descriptor is borrowed, so open for the duration of the call.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                level,
                name,
                std::ptr::from_mut(&mut value).cast(),
                &mut len,
            )
        };
        if rc == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(value)
    }

    fn set(
        fd: BorrowedFd<'_>,
        level: libc::c_int,
        name: libc::c_int,
        value: libc::c_int,
    ) -> io::Result<()> {
        // SAFETY: `value` is a readable `c_int` and the length says so; the descriptor is
        // borrowed, so open for the duration of the call.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                level,
                name,
                std::ptr::from_ref(&value).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(not(target_os = "linux"))]
mod options {
    //! Elsewhere `quinn-udp` leaves GRO off; its fragmentation settings stay (no `libc` here).
    use std::io;
    use std::os::fd::AsFd;

    pub(super) struct Fragmentation;

    impl Fragmentation {
        pub(super) fn read(_socket: &impl AsFd) -> Fragmentation {
            Fragmentation
        }

        pub(super) fn restore(&self, _socket: &impl AsFd) -> io::Result<()> {
            Ok(())
        }
    }

    pub(super) fn disable_gro(_socket: &impl AsFd) -> io::Result<()> {
        Ok(())
    }

    pub(super) fn no_ancillary_data(_socket: &impl AsFd, _ipv4: bool) -> io::Result<()> {
        Ok(())
    }

    pub(super) fn drops(_socket: &impl AsFd) -> io::Result<u64> {
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gso_run_takes_equal_lengths_and_one_shorter_tail() {
        assert_eq!(gso_run([512, 512, 512, 100, 512], 64), 4);
        assert_eq!(gso_run([512, 600, 512], 64), 1);
        assert_eq!(gso_run([512, 512, 512], 2), 2);
        assert_eq!(gso_run([512; 10], 1), 1);
        assert_eq!(gso_run(std::iter::empty(), 64), 0);
    }

    #[test]
    fn empty_and_large_datagrams_leave_alone() {
        assert_eq!(gso_run([0, 0, 0], 64), 1);
        assert_eq!(gso_run([512, 0, 512], 64), 1);
        assert_eq!(gso_run([2000, 2000], 64), 1);
    }

    #[test]
    fn a_gso_run_stays_within_one_ip_packet() {
        let run = gso_run([1200; 64], 64);
        assert_eq!(run, GSO_MAX_BYTES / 1200);
        assert!(run * 1200 <= GSO_MAX_BYTES);
    }

    #[test]
    fn lazy_memory_is_zeroed_and_writable() {
        let mut area = LazyZeroed::new(1 << 20).expect("map");
        let bytes = area.as_mut_slice();
        assert_eq!(bytes.len(), 1 << 20);
        assert!(bytes.iter().all(|b| *b == 0));
        bytes[123_456] = 7;
        assert_eq!(area.as_mut_slice()[123_456], 7);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_batch_socket_asks_for_a_receive_buffer_as_large_as_the_kernel_allows() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let default = socket2::SockRef::from(&socket)
            .recv_buffer_size()
            .expect("SO_RCVBUF");
        let batch = BatchSocket::new(socket, false).expect("batch socket");
        let got = socket2::SockRef::from(batch.socket())
            .recv_buffer_size()
            .expect("SO_RCVBUF");
        let cap: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .expect("rmem_max")
            .trim()
            .parse()
            .expect("a number");
        // The kernel doubles what it grants (half is its bookkeeping).
        assert_eq!(got, 2 * RECEIVE_BUFFER.min(cap), "default was {default}");
        assert!(got >= default);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn datagrams_beyond_the_receive_buffer_are_counted_as_kernel_drops() {
        let receiver = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let to = receiver.local_addr().expect("address");
        let batch = BatchSocket::new(receiver, false).expect("batch socket");
        assert_eq!(batch.kernel_drops().expect("SO_MEMINFO"), 0);
        // 100 MiB of unread datagrams: far more than any receive buffer holds.
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let payload = vec![7u8; 60_000];
        let sent = (0..1_750)
            .filter(|_| sender.send_to(&payload, to).is_ok())
            .count();
        let dropped = batch.kernel_drops().expect("SO_MEMINFO");
        let buffer = socket2::SockRef::from(batch.socket())
            .recv_buffer_size()
            .expect("SO_RCVBUF");
        // Loopback delivers at once, so what did not fit is already counted: all but what
        // the buffer holds (kernels differ by a datagram or so in how full they let it get).
        assert!(
            dropped > 0 && dropped as usize + buffer / 60_000 + 4 >= sent,
            "{dropped} of {sent} dropped, buffer {buffer}"
        );
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_kernels_fragmentation_setting_survives_quinn_udp() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let before = options::Fragmentation::read(&socket).ip_mtu_discover;
        let batch = BatchSocket::new(socket, false).expect("batch socket");
        let after = options::Fragmentation::read(batch.socket()).ip_mtu_discover;
        assert!(before.is_some());
        assert_eq!(before, after);
    }
}
