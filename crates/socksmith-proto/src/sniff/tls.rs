//! The Server Name Indication of a TLS ClientHello, read from the first bytes a client sends.
//!
//! A ClientHello is one handshake message, which TLS may split over several records
//! (RFC 8446 §5.1: "Handshake messages MAY be coalesced into a single TLSPlaintext record or
//! fragmented across several records"), and which TCP may split anywhere. [`sniff_tls`]
//! reassembles the message from the records in the buffer it is given and answers as soon
//! as the answer is certain; until then it says [`TlsSniff::NeedMore`]. It looks at no more
//! than [`MAX_SNIFF_BYTES`] bytes.
//!
//! ```text
//! record:      type(1)=0x16  legacy_version(2)=0x03xx  length(2)  fragment(length)
//! handshake:   msg_type(1)=0x01  length(3)  body(length)
//! ClientHello: legacy_version(2) random(32) session_id<0..32> cipher_suites<2..2^16-2>
//!              compression_methods<1..2^8-1> extensions<0..2^16-1>
//! extension:   type(2) length(2) data(length)
//! server_name (type 0, RFC 6066 §3): list_length(2) { name_type(1)=0 length(2) HostName }
//! ```
//!
//! With Encrypted Client Hello the name found is the outer, public one: the real name is
//! invisible to any proxy.

use super::is_host_name;
use super::Cursor as Reader;

/// The most bytes [`sniff_tls`] looks at: records, headers included. Real ClientHellos
/// take 200 bytes to 2 KiB (a post-quantum key share adds about 1.2 KiB); a hello that has
/// not ended within this many bytes is [`TlsSniff::TooLarge`].
pub const MAX_SNIFF_BYTES: usize = 16 * 1024;

/// Record content type of handshake messages.
const CONTENT_HANDSHAKE: u8 = 0x16;
/// Handshake message type of a ClientHello.
const CLIENT_HELLO: u8 = 0x01;
/// Extension type of server_name (RFC 6066 §3).
const EXTENSION_SERVER_NAME: u16 = 0x0000;
/// NameType host_name (RFC 6066 §3).
const NAME_TYPE_HOST_NAME: u8 = 0x00;
/// The largest record fragment a peer may send: 2^14 (RFC 8446 §5.1).
const MAX_FRAGMENT: usize = 1 << 14;

/// What the first bytes of a stream say about a TLS server name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSniff {
    /// The bytes so far are the start of a ClientHello; ask again with more.
    NeedMore,
    /// The ClientHello names this server (as sent; may differ in case from a list's entry).
    Found(String),
    /// A whole ClientHello without a server_name extension (or without a host_name in it).
    NoSni,
    /// The stream does not start with a TLS handshake record carrying a ClientHello: another
    /// protocol.
    NotTls,
    /// It starts like a ClientHello but breaks the format (lengths that do not add up, a
    /// server name that is not a host name); a real TLS server would reject it too.
    Malformed,
    /// The ClientHello has not ended within [`MAX_SNIFF_BYTES`].
    TooLarge,
}

/// Reads the server name from the start of a client's stream.
///
/// `input` is everything the client has sent so far; call again with the grown buffer while
/// the answer is [`TlsSniff::NeedMore`]. The answer for a buffer never changes once it is
/// something else, whatever follows.
///
/// ```
/// use socksmith_proto::sniff::{sniff_tls, TlsSniff};
///
/// assert_eq!(sniff_tls(b"\x16\x03"), TlsSniff::NeedMore);
/// assert_eq!(sniff_tls(b"SSH-2.0-OpenSSH_9.2\r\n"), TlsSniff::NotTls);
/// ```
pub fn sniff_tls(input: &[u8]) -> TlsSniff {
    let window = input.get(..MAX_SNIFF_BYTES).unwrap_or(input);
    let out_of_input = if input.len() > MAX_SNIFF_BYTES {
        TlsSniff::TooLarge
    } else {
        TlsSniff::NeedMore
    };
    let mut records = Reader::new(window);
    // The handshake bytes of all records so far, in order.
    let mut handshake: Vec<u8> = Vec::new();
    loop {
        let fragment = match read_record(&mut records) {
            Record::Fragment(fragment) => fragment,
            Record::Partial(fragment) => {
                // Judge what there is: a wrong message type or an oversized length is
                // certain before the record ends.
                handshake.extend_from_slice(fragment);
                return match parse_handshake(&handshake) {
                    TlsSniff::NeedMore => out_of_input,
                    other => other,
                };
            }
            Record::NeedMore => return out_of_input,
            Record::NotTls => return TlsSniff::NotTls,
        };
        handshake.extend_from_slice(fragment);
        match parse_handshake(&handshake) {
            TlsSniff::NeedMore => continue,
            other => return other,
        }
    }
}

/// One record read from the stream.
enum Record<'a> {
    /// A whole record's fragment.
    Fragment(&'a [u8]),
    /// A valid header whose fragment has not fully arrived: the bytes there are.
    Partial(&'a [u8]),
    /// The header has not fully arrived.
    NeedMore,
    /// Not a handshake record.
    NotTls,
}

fn read_record<'a>(r: &mut Reader<'a>) -> Record<'a> {
    let Some(content_type) = r.u8() else {
        return Record::NeedMore;
    };
    if content_type != CONTENT_HANDSHAKE {
        return Record::NotTls;
    }
    // legacy_record_version: 0x0301 in practice, 0x0300 from old clients; the major byte
    // alone tells TLS from other protocols.
    let Some(major) = r.u8() else {
        return Record::NeedMore;
    };
    if major != 0x03 {
        return Record::NotTls;
    }
    let Some(minor) = r.u8() else {
        return Record::NeedMore;
    };
    if minor > 0x04 {
        return Record::NotTls;
    }
    let Some(length) = r.u16() else {
        return Record::NeedMore;
    };
    let length = usize::from(length);
    // RFC 8446 §5.1: "Implementations MUST NOT send zero-length fragments of Handshake
    // types", and no fragment exceeds 2^14 bytes.
    if length == 0 || length > MAX_FRAGMENT {
        return Record::NotTls;
    }
    match r.take(length) {
        Some(fragment) => Record::Fragment(fragment),
        None => Record::Partial(r.rest()),
    }
}

/// Judges the reassembled handshake bytes: the ClientHello's header, then, once whole, its
/// body.
fn parse_handshake(handshake: &[u8]) -> TlsSniff {
    let mut r = Reader::new(handshake);
    let Some(msg_type) = r.u8() else {
        return TlsSniff::NeedMore;
    };
    if msg_type != CLIENT_HELLO {
        return TlsSniff::NotTls;
    }
    let Some(length) = r.u24() else {
        return TlsSniff::NeedMore;
    };
    if length > MAX_SNIFF_BYTES {
        return TlsSniff::TooLarge;
    }
    match r.take(length) {
        Some(body) => parse_client_hello(body),
        None => TlsSniff::NeedMore,
    }
}

/// The server name in a whole ClientHello body.
fn parse_client_hello(body: &[u8]) -> TlsSniff {
    match client_hello_server_name(body) {
        Some(Some(name)) => TlsSniff::Found(name),
        Some(None) => TlsSniff::NoSni,
        None => TlsSniff::Malformed,
    }
}

/// `None` when malformed, `Some(None)` when there is no host name.
fn client_hello_server_name(body: &[u8]) -> Option<Option<String>> {
    let mut r = Reader::new(body);
    let _legacy_version = r.u16()?;
    let _random = r.take(32)?;
    let session_id_len = usize::from(r.u8()?);
    if session_id_len > 32 {
        return None;
    }
    r.take(session_id_len)?;
    let suites_len = usize::from(r.u16()?);
    if suites_len < 2 || suites_len % 2 != 0 {
        return None;
    }
    r.take(suites_len)?;
    let compression_len = usize::from(r.u8()?);
    if compression_len < 1 {
        return None;
    }
    r.take(compression_len)?;
    if r.is_empty() {
        // A ClientHello from before extensions existed.
        return Some(None);
    }
    let extensions_len = usize::from(r.u16()?);
    let mut extensions = Reader::new(r.take(extensions_len)?);
    if !r.is_empty() {
        return None;
    }
    while !extensions.is_empty() {
        let extension_type = extensions.u16()?;
        let data_len = usize::from(extensions.u16()?);
        let data = extensions.take(data_len)?;
        if extension_type == EXTENSION_SERVER_NAME {
            // RFC 8446 §4.2: "There MUST NOT be more than one extension of the same type";
            // the first one is the one a server reads.
            return server_name(data);
        }
    }
    Some(None)
}

/// The host_name in a server_name extension's data.
fn server_name(data: &[u8]) -> Option<Option<String>> {
    let mut r = Reader::new(data);
    let list_len = usize::from(r.u16()?);
    let mut list = Reader::new(r.take(list_len)?);
    if !r.is_empty() {
        return None;
    }
    while !list.is_empty() {
        let name_type = list.u8()?;
        let name_len = usize::from(list.u16()?);
        let name = list.take(name_len)?;
        if name_type == NAME_TYPE_HOST_NAME {
            // RFC 6066 §3: "The ServerNameList MUST NOT contain more than one name of the
            // same name_type"; HostName is ASCII without a trailing dot, but a client may
            // still send one and servers tolerate it, so the matcher ignores it.
            if !is_host_name(name) {
                return None;
            }
            return Some(Some(String::from_utf8_lossy(name).into_owned()));
        }
    }
    Some(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured with Python's `ssl` module (OpenSSL 3.0) for `ads.example.com`: one record.
    const PYTHON_HELLO: &[u8] =
        include_bytes!("../../tests/vectors/python-ssl-sni-ads.example.com.bin");
    /// TLS 1.2 only, mixed-case name.
    const PYTHON_TLS12_HELLO: &[u8] =
        include_bytes!("../../tests/vectors/python-ssl-tls12-sni-Mixed.Case.Example.bin");
    /// No server_name extension.
    const PYTHON_NO_SNI: &[u8] = include_bytes!("../../tests/vectors/python-ssl-no-sni.bin");
    /// Captured from `openssl s_client -servername www.blocked.test` on loopback.
    const OPENSSL_HELLO: &[u8] =
        include_bytes!("../../tests/vectors/openssl-s_client-sni-www.blocked.test.bin");

    /// Re-frames a one-record hello into records whose fragments are `sizes` long (the
    /// last takes the rest), as a client fragmenting its handshake would.
    fn split_into_records(hello: &[u8], sizes: &[usize]) -> Vec<u8> {
        let mut message = &hello[5..];
        let mut out = Vec::new();
        for &size in sizes.iter().chain(std::iter::once(&usize::MAX)) {
            if message.is_empty() {
                break;
            }
            let (fragment, rest) = message.split_at(size.min(message.len()));
            out.extend_from_slice(&[0x16, 0x03, 0x01]);
            out.extend_from_slice(&(fragment.len() as u16).to_be_bytes());
            out.extend_from_slice(fragment);
            message = rest;
        }
        out
    }

    #[test]
    fn captured_client_hellos_give_their_names() {
        let found = |s: &str| TlsSniff::Found(s.to_owned());
        assert_eq!(sniff_tls(PYTHON_HELLO), found("ads.example.com"));
        assert_eq!(sniff_tls(PYTHON_TLS12_HELLO), found("Mixed.Case.Example"));
        assert_eq!(sniff_tls(OPENSSL_HELLO), found("www.blocked.test"));
        assert_eq!(sniff_tls(PYTHON_NO_SNI), TlsSniff::NoSni);
    }

    #[test]
    fn every_prefix_needs_more_and_trailing_bytes_do_not_matter() {
        for hello in [
            PYTHON_HELLO,
            PYTHON_TLS12_HELLO,
            OPENSSL_HELLO,
            PYTHON_NO_SNI,
        ] {
            for end in 0..hello.len() {
                assert_eq!(sniff_tls(&hello[..end]), TlsSniff::NeedMore, "prefix {end}");
            }
            let mut pipelined = hello.to_vec();
            pipelined.extend_from_slice(b"\x14\x03\x03\x00\x01\x01 application data");
            assert_eq!(sniff_tls(&pipelined), sniff_tls(hello));
        }
    }

    #[test]
    fn a_hello_split_over_records_is_reassembled() {
        for sizes in [
            &[1][..],
            &[4, 1, 1],
            &[3, 50, 100],
            &[60, 60, 60, 60, 60, 60, 60, 60],
            &[1; 600],
        ] {
            let split = split_into_records(PYTHON_HELLO, sizes);
            assert_ne!(split.len(), PYTHON_HELLO.len(), "{sizes:?}");
            assert_eq!(
                sniff_tls(&split),
                TlsSniff::Found("ads.example.com".into()),
                "{sizes:?}"
            );
            for end in 0..split.len() {
                assert_eq!(sniff_tls(&split[..end]), TlsSniff::NeedMore);
            }
        }
    }

    #[test]
    fn other_protocols_are_recognised_at_once() {
        for stream in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"SSH-2.0-OpenSSH_9.2p1\r\n",
            b"\x05\x01\x00",
            b"\x17\x03\x03\x00\x10",                 // application data first
            b"\x16\x02\x00",                         // not version 3
            b"\x16\x03\x05",                         // no such minor version
            b"\x16\x03\x01\x00\x00",                 // empty handshake fragment
            b"\x16\x03\x01\x40\x01",                 // fragment over 2^14
            b"\x16\x03\x01\x00\x10\x02\x00\x00\x0c", // ServerHello
        ] {
            assert_eq!(sniff_tls(stream), TlsSniff::NotTls, "{stream:?}");
        }
        // A ClientHello header that continues in a record not yet arrived.
        assert_eq!(
            sniff_tls(b"\x16\x03\x01\x00\x04\x01\x00\x00\x08\x16"),
            TlsSniff::NeedMore
        );
        assert_eq!(sniff_tls(b"G"), TlsSniff::NotTls);
        assert_eq!(sniff_tls(b"\x16\x03\x01\x00\x10\x02"), TlsSniff::NotTls);
        // A record of another type between fragments ends the hello.
        let mut interrupted = split_into_records(PYTHON_HELLO, &[100]);
        interrupted.truncate(5 + 100);
        interrupted.extend_from_slice(b"\x15\x03\x01\x00\x02\x02\x28");
        assert_eq!(sniff_tls(&interrupted), TlsSniff::NotTls);
    }

    #[test]
    fn oversized_hellos_are_given_up_on() {
        // A declared length beyond the bound is certain at once.
        assert_eq!(
            sniff_tls(b"\x16\x03\x01\x00\x04\x01\x00\x40\x01"),
            TlsSniff::TooLarge
        );
        // A hello within the bound, framed in 1-byte records, overflows the byte bound.
        let mut long = PYTHON_HELLO[5..].to_vec();
        let body_len = 3000usize;
        long[1..4].copy_from_slice(&(body_len as u32).to_be_bytes()[1..]);
        long.resize(4 + body_len, 0);
        let mut framed = vec![0x16, 0x03, 0x01, 0, 0];
        framed.extend_from_slice(&long);
        let framed = split_into_records(&framed, &[1; 4000]);
        assert!(framed.len() > MAX_SNIFF_BYTES);
        assert_eq!(sniff_tls(&framed), TlsSniff::TooLarge);
        assert_eq!(sniff_tls(&framed[..MAX_SNIFF_BYTES]), TlsSniff::NeedMore);
    }

    /// A ClientHello body with the given extensions block (already framed).
    fn hello_with_extensions(extensions: &[u8]) -> Vec<u8> {
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[0u8; 32]);
        body.push(0); // no session id
        body.extend_from_slice(&[0x00, 0x02, 0x13, 0x01]);
        body.extend_from_slice(&[0x01, 0x00]);
        body.extend_from_slice(extensions);
        let mut message = vec![CLIENT_HELLO];
        message.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        message.extend_from_slice(&body);
        let mut record = vec![0x16, 0x03, 0x01];
        record.extend_from_slice(&(message.len() as u16).to_be_bytes());
        record.extend_from_slice(&message);
        record
    }

    fn sni_extension(entries: &[(u8, &[u8])]) -> Vec<u8> {
        let mut list = Vec::new();
        for (name_type, name) in entries {
            list.push(*name_type);
            list.extend_from_slice(&(name.len() as u16).to_be_bytes());
            list.extend_from_slice(name);
        }
        let mut data = (list.len() as u16).to_be_bytes().to_vec();
        data.extend_from_slice(&list);
        let mut ext = vec![0x00, 0x00];
        ext.extend_from_slice(&(data.len() as u16).to_be_bytes());
        ext.extend_from_slice(&data);
        ext
    }

    fn extensions_block(extensions: &[&[u8]]) -> Vec<u8> {
        let all: Vec<u8> = extensions.concat();
        let mut block = (all.len() as u16).to_be_bytes().to_vec();
        block.extend_from_slice(&all);
        block
    }

    #[test]
    fn hand_built_hellos_cover_the_corners() {
        let sni = sni_extension(&[(0, b"a.example")]);
        let other = [0x00, 0x0b, 0x00, 0x02, 0x01, 0x00]; // ec_point_formats
        assert_eq!(
            sniff_tls(&hello_with_extensions(&extensions_block(&[&other, &sni]))),
            TlsSniff::Found("a.example".into())
        );
        // No extensions at all, an empty block, a block without server_name.
        assert_eq!(sniff_tls(&hello_with_extensions(&[])), TlsSniff::NoSni);
        assert_eq!(
            sniff_tls(&hello_with_extensions(&extensions_block(&[]))),
            TlsSniff::NoSni
        );
        assert_eq!(
            sniff_tls(&hello_with_extensions(&extensions_block(&[&other]))),
            TlsSniff::NoSni
        );
        // An unknown name type first, then the host name.
        let two = sni_extension(&[(7, b"\xff\xfe"), (0, b"b.example")]);
        assert_eq!(
            sniff_tls(&hello_with_extensions(&extensions_block(&[&two]))),
            TlsSniff::Found("b.example".into())
        );
        // A name that is no host name, an empty one, lengths that do not add up.
        for bad in [
            sni_extension(&[(0, b"bad name")]),
            sni_extension(&[(0, b"")]),
            sni_extension(&[(0, b"nul\0.example")]),
            vec![0x00, 0x00, 0x00, 0x03, 0x00, 0x05, 0x00],
        ] {
            assert_eq!(
                sniff_tls(&hello_with_extensions(&extensions_block(&[&bad]))),
                TlsSniff::Malformed,
                "{bad:?}"
            );
        }
        // Extensions block shorter than declared, and trailing bytes after it.
        let mut short = extensions_block(&[&sni]);
        short.pop();
        assert_eq!(
            sniff_tls(&hello_with_extensions(&short)),
            TlsSniff::Malformed
        );
        let mut trailing = extensions_block(&[&sni]);
        trailing.push(0);
        assert_eq!(
            sniff_tls(&hello_with_extensions(&trailing)),
            TlsSniff::Malformed
        );
    }
}
