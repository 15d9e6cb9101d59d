//! First-flight sniffing: the name a client means, read from the first bytes it sends.
//!
//! A client that resolved a name itself hands the proxy only an IP address, but its first
//! bytes usually still carry the name: the `Host` header of an HTTP/1 request ([`http`]), the
//! Server Name Indication of a TLS ClientHello ([`tls`]), or the question of a DNS query sent
//! through UDP ASSOCIATE ([`dns`], which also builds the NXDOMAIN/REFUSED answer).
//!
//! Like the rest of this crate these are sans-IO: the caller buffers what the client sent
//! and asks again after every read. The stream sniffers ([`sniff_tls`], [`sniff_http`]) look
//! at the whole buffer each time, so feeding bytes one at a time gives the same answer as
//! feeding them all at once, and each looks at no more than a fixed number of bytes
//! ([`tls::MAX_SNIFF_BYTES`], [`http::MAX_HEAD_BYTES`]). Time limits belong to the caller.
//!
//! What this module does not own: the decision (the blocklist lives in the `socksmith`
//! crate's `policy::blocklist`), the buffering and the deadline (the server's session). Names
//! are returned as the client wrote them; matching is case-insensitive and ignores a
//! trailing dot.

pub mod dns;
pub mod http;
pub mod tls;

pub use dns::{DnsError, DnsQuery, DnsRcode};
pub use http::{sniff_http, HttpSniff};
pub use tls::{sniff_tls, TlsSniff};

/// Whether `name` is a plausible host name to hand to a name matcher: 1 to 255 bytes of
/// letters, digits, `-`, `_` and `.`. Other bytes cannot appear in a name a blocklist holds,
/// and a name a sniffer returns is logged, so nothing else is let through.
pub(crate) fn is_host_name(name: &[u8]) -> bool {
    (1..=255).contains(&name.len())
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The crate's bounded [`Reader`](crate::reader::Reader), with the few reads the sniffers
/// need besides: a 24-bit length, the rest of the input, and whether any is left.
#[derive(Debug, Clone)]
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    reader: crate::reader::Reader<'a>,
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `buf`.
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Cursor {
            buf,
            reader: crate::reader::Reader::new(buf),
        }
    }

    /// Reads one byte.
    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.reader.u8()
    }

    /// Reads a big-endian `u16`.
    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.reader.u16()
    }

    /// Reads a big-endian 24-bit length.
    pub(crate) fn u24(&mut self) -> Option<usize> {
        let [a, b, c] = self.reader.array::<3>()?;
        Some(usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c))
    }

    /// Reads exactly `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        self.reader.take(n)
    }

    /// Reads everything left.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let left = self.buf.len().saturating_sub(self.reader.consumed());
        self.reader.take(left).unwrap_or_default()
    }

    /// Whether every byte has been read.
    pub(crate) fn is_empty(&self) -> bool {
        self.reader.consumed() >= self.buf.len()
    }
}
