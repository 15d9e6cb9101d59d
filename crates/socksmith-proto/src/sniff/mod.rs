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
//! [`sniff_first_flight`] runs both and says which protocol the name came from.
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

/// Which protocol a name was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SniffedProtocol {
    /// A TLS ClientHello's server_name.
    Tls,
    /// An HTTP/1 request's target or `Host` header.
    Http,
}

/// What a client's first bytes say about the name it means, by either sniffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstFlight {
    /// The bytes so far start a TLS ClientHello or an HTTP/1 request; ask again with more
    /// (or give up when the sniff window closes).
    NeedMore,
    /// The name the client means.
    Name {
        /// The name, as sent.
        name: String,
        /// Where it was read from.
        protocol: SniffedProtocol,
    },
    /// A whole ClientHello without SNI or a request head without a host.
    NoName(SniffedProtocol),
    /// It starts like TLS or HTTP/1 but is malformed or too large to read (see
    /// [`TlsSniff::Malformed`], [`HttpSniff::TooLarge`]).
    Unreadable(SniffedProtocol),
    /// Neither TLS nor HTTP/1: another protocol, whose bytes carry no name to read.
    Other,
}

/// Runs both stream sniffers on the client's first bytes. The first byte alone tells TLS
/// (0x16) from an HTTP method (a letter), so at most one of them ever needs more.
///
/// ```
/// use socksmith_proto::sniff::{sniff_first_flight, FirstFlight, SniffedProtocol};
///
/// let request = b"GET / HTTP/1.1\r\nHost: ads.example.com\r\n\r\n";
/// assert_eq!(
///     sniff_first_flight(request),
///     FirstFlight::Name { name: "ads.example.com".into(), protocol: SniffedProtocol::Http }
/// );
/// assert_eq!(sniff_first_flight(b"SSH-2.0-OpenSSH_9.2\r\n"), FirstFlight::Other);
/// ```
pub fn sniff_first_flight(input: &[u8]) -> FirstFlight {
    let tls = sniff_tls(input);
    if tls != TlsSniff::NotTls {
        return match tls {
            TlsSniff::NeedMore => FirstFlight::NeedMore,
            TlsSniff::Found(name) => FirstFlight::Name {
                name,
                protocol: SniffedProtocol::Tls,
            },
            TlsSniff::NoSni => FirstFlight::NoName(SniffedProtocol::Tls),
            TlsSniff::NotTls | TlsSniff::Malformed | TlsSniff::TooLarge => {
                FirstFlight::Unreadable(SniffedProtocol::Tls)
            }
        };
    }
    match sniff_http(input) {
        HttpSniff::NeedMore => FirstFlight::NeedMore,
        HttpSniff::Found(name) => FirstFlight::Name {
            name,
            protocol: SniffedProtocol::Http,
        },
        HttpSniff::NoHost => FirstFlight::NoName(SniffedProtocol::Http),
        HttpSniff::Malformed | HttpSniff::TooLarge => {
            FirstFlight::Unreadable(SniffedProtocol::Http)
        }
        HttpSniff::NotHttp => FirstFlight::Other,
    }
}

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
