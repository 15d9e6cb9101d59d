//! Linux pipes and `splice(2)`: move bytes socket -> pipe -> socket inside the kernel.
//!
//! A [`Pipe`] owns both ends of a non-blocking, close-on-exec pipe. [`splice_in`] moves bytes
//! from a socket into a pipe and [`splice_out`] from a pipe into a socket; both are
//! non-blocking and report `WouldBlock` like a `read`/`write` on a non-blocking socket would.
//! Pooling pipes and waiting for readiness are the relay's business, not this module's.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;

/// Both ends of a kernel pipe, closed on drop.
#[derive(Debug)]
pub(crate) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
}

impl Pipe {
    /// Creates a non-blocking, close-on-exec pipe of the kernel's default size.
    pub(crate) fn new() -> io::Result<Pipe> {
        let mut fds: [libc::c_int; 2] = [-1, -1];
        // SAFETY: `fds` is a writable array of two `c_int`s, which is what pipe2 writes to.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) };
        if rc == -1 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and nothing else owns them.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let mut pipe = Pipe {
            read,
            write,
            capacity: 0,
        };
        pipe.capacity = pipe.query_capacity()?;
        Ok(pipe)
    }

    /// The pipe's capacity in bytes, as the kernel reported it last.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Asks the kernel to resize the pipe to `bytes` (rounded up by the kernel to a power of two
    /// pages) and returns the new capacity. Fails with `EPERM` above `/proc/sys/fs/pipe-max-size`
    /// or the user's pipe page quota, and with `EBUSY` if the pipe holds more than would fit.
    pub(crate) fn set_capacity(&mut self, bytes: usize) -> io::Result<usize> {
        let arg = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        // SAFETY: F_SETPIPE_SZ takes one `int` argument and only changes the pipe behind the
        // descriptor, which `self` owns and keeps open for the duration of the call.
        let rc = unsafe { libc::fcntl(self.write.as_raw_fd(), libc::F_SETPIPE_SZ, arg) };
        if rc == -1 {
            return Err(io::Error::last_os_error());
        }
        self.capacity = usize::try_from(rc).unwrap_or(0);
        Ok(self.capacity)
    }

    fn query_capacity(&self) -> io::Result<usize> {
        // SAFETY: F_GETPIPE_SZ takes no argument and only reads the pipe's size; the descriptor
        // is owned by `self` and open for the duration of the call.
        let rc = unsafe { libc::fcntl(self.write.as_raw_fd(), libc::F_GETPIPE_SZ) };
        if rc == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(usize::try_from(rc).unwrap_or(0))
    }
}

/// Moves up to `len` bytes from the socket `src` into `pipe`. `Ok(0)` means end of stream (for
/// a non-zero `len`); `WouldBlock` means the socket has nothing to read or the pipe is full.
pub(crate) fn splice_in(src: BorrowedFd<'_>, pipe: &Pipe, len: usize) -> io::Result<usize> {
    splice(src.as_raw_fd(), pipe.write.as_raw_fd(), len)
}

/// Moves up to `len` bytes from `pipe` into the socket `dst`. `WouldBlock` means the socket's
/// send buffer is full or the pipe is empty.
pub(crate) fn splice_out(pipe: &Pipe, dst: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
    splice(pipe.read.as_raw_fd(), dst.as_raw_fd(), len)
}

fn splice(fd_in: RawFd, fd_out: RawFd, len: usize) -> io::Result<usize> {
    loop {
        // SAFETY: both descriptors are borrowed by our callers, so they stay open for the call.
        // The offsets are null, as they must be for pipes and sockets ("use the file position");
        // splice reads and writes no memory of ours.
        let n = unsafe {
            libc::splice(
                fd_in,
                ptr::null_mut(),
                fd_out,
                ptr::null_mut(),
                len,
                libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
            )
        };
        match usize::try_from(n) {
            Ok(n) => return Ok(n),
            Err(_) => {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::os::fd::AsFd;

    /// A connected pair of blocking loopback sockets.
    fn socket_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let a = TcpStream::connect(listener.local_addr().expect("local addr")).expect("connect");
        let (b, _) = listener.accept().expect("accept");
        (a, b)
    }

    #[test]
    fn new_pipe_reports_its_capacity_and_can_be_resized() {
        let mut pipe = Pipe::new().expect("pipe");
        assert!(pipe.capacity() >= 4096);
        let new = pipe.set_capacity(256 * 1024).expect("F_SETPIPE_SZ");
        assert_eq!(new, 256 * 1024);
        assert_eq!(
            pipe.capacity(),
            pipe.query_capacity().expect("F_GETPIPE_SZ")
        );
    }

    #[test]
    fn splices_socket_to_socket_through_a_pipe_and_sees_eof() {
        let (mut from_peer, from) = socket_pair();
        let (to, mut to_peer) = socket_pair();
        from.set_nonblocking(true).expect("nonblocking");
        to.set_nonblocking(true).expect("nonblocking");
        let pipe = Pipe::new().expect("pipe");

        // Nothing sent yet: the socket would block.
        let err = splice_in(from.as_fd(), &pipe, 4096).expect_err("nothing to read");
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        // An empty pipe would block too.
        let err = splice_out(&pipe, to.as_fd(), 4096).expect_err("empty pipe");
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);

        from_peer.write_all(b"hello, pipe").expect("write");
        from_peer.shutdown(Shutdown::Write).expect("shutdown");
        // Loopback delivers synchronously, but splice may return fewer bytes than are queued:
        // loop until the end of stream, bounded.
        let mut in_pipe = 0;
        for _ in 0..1000 {
            match splice_in(from.as_fd(), &pipe, 4096) {
                Ok(0) => break,
                Ok(n) => in_pipe += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("splice_in: {e}"),
            }
        }
        assert_eq!(in_pipe, 11);
        // Partial splice out: 5 bytes, then the rest.
        assert_eq!(splice_out(&pipe, to.as_fd(), 5).expect("splice out"), 5);
        assert_eq!(splice_out(&pipe, to.as_fd(), 100).expect("splice out"), 6);
        drop(to);
        let mut got = Vec::new();
        to_peer.read_to_end(&mut got).expect("read");
        assert_eq!(got, b"hello, pipe");
    }

    #[test]
    fn splice_from_a_reset_socket_reports_the_reset() {
        let (from_peer, from) = socket_pair();
        from.set_nonblocking(true).expect("nonblocking");
        socket2::SockRef::from(&from_peer)
            .set_linger(Some(std::time::Duration::ZERO))
            .expect("linger");
        drop(from_peer);
        let pipe = Pipe::new().expect("pipe");
        let mut result = splice_in(from.as_fd(), &pipe, 4096);
        for _ in 0..1000 {
            match &result {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                _ => break,
            }
            result = splice_in(from.as_fd(), &pipe, 4096);
        }
        let err = result.expect_err("reset");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    }
}
