//! Properties of the first-flight sniffers: no input panics them, an answer other than
//! "need more" never changes as more bytes arrive, so bytes fed one at a time give the
//! answer all of them give at once, and names built into real-looking messages come back.

use proptest::prelude::*;
use socksmith_proto::sniff::{
    sniff_first_flight, sniff_http, sniff_tls, DnsQuery, DnsRcode, FirstFlight, HttpSniff,
    SniffedProtocol, TlsSniff,
};

const PYTHON_HELLO: &[u8] = include_bytes!("vectors/python-ssl-sni-ads.example.com.bin");
const OPENSSL_HELLO: &[u8] = include_bytes!("vectors/openssl-s_client-sni-www.blocked.test.bin");
const CURL_HEAD: &[u8] = include_bytes!("vectors/curl-get-ads.example.com.http");
const DIG_QUERY: &[u8] = include_bytes!("vectors/dig-query-Ads.Example.COM-A.bin");

/// Feeds `data` to a stream sniffer in chunks of `chunk` bytes the way a session does
/// (growing one buffer, asking after each read, stopping at the first answer) and checks
/// that every later prefix, up to the whole input, gives that same answer.
fn check_settles<T: PartialEq + std::fmt::Debug>(
    data: &[u8],
    chunk: usize,
    sniff: fn(&[u8]) -> T,
    need_more: &T,
) {
    let whole = sniff(data);
    let mut buffer = Vec::new();
    let mut settled = None;
    for piece in data.chunks(chunk.max(1)) {
        buffer.extend_from_slice(piece);
        let answer = sniff(&buffer);
        if &answer != need_more {
            settled = Some((answer, buffer.len()));
            break;
        }
    }
    match settled {
        None => assert_eq!(&whole, need_more, "no chunk settled, whole did"),
        Some((answer, at)) => {
            assert_eq!(answer, whole, "chunked answer differs from all at once");
            for end in at..data.len() {
                assert_eq!(sniff(&data[..end]), whole, "answer changed at {end}");
            }
        }
    }
}

/// Re-frames a one-record ClientHello into records of `sizes` bytes (the last takes the
/// rest).
fn split_into_records(hello: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut message = &hello[5..];
    let mut out = Vec::new();
    let mut sizes = sizes.iter().copied().chain(std::iter::repeat(usize::MAX));
    while !message.is_empty() {
        let size = sizes.next().unwrap_or(usize::MAX).max(1);
        let (fragment, rest) = message.split_at(size.min(message.len()));
        out.extend_from_slice(&[0x16, 0x03, 0x01]);
        out.extend_from_slice(&(fragment.len() as u16).to_be_bytes());
        out.extend_from_slice(fragment);
        message = rest;
    }
    out
}

/// The captured hello with its SNI replaced by `name` (lengths fixed up).
fn hello_for(name: &str) -> Vec<u8> {
    // In the captured hello the name "ads.example.com" is preceded by its 2-byte length;
    // the three enclosing lengths (server_name list, extension, extensions block), the
    // handshake and the record lengths all grow by the same delta.
    let old = b"ads.example.com";
    let at = PYTHON_HELLO
        .windows(old.len())
        .position(|w| w == old)
        .expect("the vector holds its name");
    let delta = name.len() as isize - old.len() as isize;
    let mut out = PYTHON_HELLO.to_vec();
    out.splice(at..at + old.len(), name.bytes());
    let bump16 = |out: &mut Vec<u8>, pos: usize| {
        let v = u16::from_be_bytes([out[pos], out[pos + 1]]) as isize + delta;
        out[pos..pos + 2].copy_from_slice(&(v as u16).to_be_bytes());
    };
    bump16(&mut out, at - 2); // host_name length
    bump16(&mut out, at - 5); // server_name_list length
    bump16(&mut out, at - 7); // extension data length
    bump16(&mut out, 3); // record length
    let hs = u32::from_be_bytes([0, out[6], out[7], out[8]]) as isize + delta;
    out[6..9].copy_from_slice(&(hs as u32).to_be_bytes()[1..]);
    // The extensions block length sits after the fixed fields and variable vectors.
    let mut pos = 9 + 2 + 32;
    pos += 1 + out[pos] as usize;
    pos += 2 + u16::from_be_bytes([out[pos], out[pos + 1]]) as usize;
    pos += 1 + out[pos] as usize;
    bump16(&mut out, pos);
    out
}

fn host_name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9]([a-zA-Z0-9-]{0,20}[a-zA-Z0-9])?(\\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,20}[a-zA-Z0-9])?){0,5}"
}

/// Flips, inserts and removes bytes of a valid message.
fn mutated(base: &'static [u8]) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 0..8).prop_map(
        move |edits| {
            let mut data = base.to_vec();
            for (index, byte, kind) in edits {
                if data.is_empty() {
                    data.push(byte);
                    continue;
                }
                let i = index.index(data.len());
                match kind {
                    0 => data[i] = byte,
                    1 => data.insert(i, byte),
                    _ => {
                        data.remove(i);
                    }
                }
            }
            data
        },
    )
}

#[test]
fn first_flight_reads_either_protocol() {
    let name = |name: &str, protocol| FirstFlight::Name {
        name: name.into(),
        protocol,
    };
    assert_eq!(
        sniff_first_flight(OPENSSL_HELLO),
        name("www.blocked.test", SniffedProtocol::Tls)
    );
    assert_eq!(
        sniff_first_flight(CURL_HEAD),
        name("ads.example.com", SniffedProtocol::Http)
    );
    assert_eq!(
        sniff_first_flight(&OPENSSL_HELLO[..100]),
        FirstFlight::NeedMore
    );
    assert_eq!(sniff_first_flight(&CURL_HEAD[..10]), FirstFlight::NeedMore);
    assert_eq!(sniff_first_flight(b""), FirstFlight::NeedMore);
    assert_eq!(
        sniff_first_flight(include_bytes!("vectors/python-ssl-no-sni.bin")),
        FirstFlight::NoName(SniffedProtocol::Tls)
    );
    assert_eq!(
        sniff_first_flight(b"GET / HTTP/1.0\r\n\r\n"),
        FirstFlight::NoName(SniffedProtocol::Http)
    );
    assert_eq!(
        sniff_first_flight(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
        FirstFlight::Unreadable(SniffedProtocol::Http)
    );
    assert_eq!(
        sniff_first_flight(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"),
        FirstFlight::Other
    );
    assert_eq!(sniff_first_flight(b"\x00\x01"), FirstFlight::Other);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn tls_answers_settle_on_any_bytes(data in prop::collection::vec(any::<u8>(), 0..600), chunk in 1usize..64) {
        check_settles(&data, chunk, sniff_tls, &TlsSniff::NeedMore);
    }

    #[test]
    fn tls_answers_settle_on_mutated_hellos(data in mutated(PYTHON_HELLO), chunk in 1usize..200) {
        check_settles(&data, chunk, sniff_tls, &TlsSniff::NeedMore);
    }

    #[test]
    fn tls_names_come_back_however_the_hello_is_split(
        name in host_name(),
        sizes in prop::collection::vec(1usize..300, 0..12),
        chunk in 1usize..100,
    ) {
        let hello = split_into_records(&hello_for(&name), &sizes);
        prop_assert_eq!(sniff_tls(&hello), TlsSniff::Found(name.clone()));
        check_settles(&hello, chunk, sniff_tls, &TlsSniff::NeedMore);
        // Application data pipelined after the hello changes nothing.
        let mut pipelined = hello.clone();
        pipelined.extend_from_slice(OPENSSL_HELLO);
        prop_assert_eq!(sniff_tls(&pipelined), TlsSniff::Found(name));
    }

    #[test]
    fn first_flight_answers_settle_on_any_bytes(data in prop::collection::vec(any::<u8>(), 0..300), chunk in 1usize..64) {
        check_settles(&data, chunk, sniff_first_flight, &FirstFlight::NeedMore);
    }

    #[test]
    fn http_answers_settle_on_any_bytes(data in prop::collection::vec(any::<u8>(), 0..300), chunk in 1usize..64) {
        check_settles(&data, chunk, sniff_http, &HttpSniff::NeedMore);
    }

    #[test]
    fn http_answers_settle_on_mutated_heads(data in mutated(CURL_HEAD), chunk in 1usize..64) {
        check_settles(&data, chunk, sniff_http, &HttpSniff::NeedMore);
    }

    #[test]
    fn http_hosts_come_back(
        name in host_name(),
        port in prop::option::of(any::<u16>()),
        before in prop::collection::vec("[A-Za-z-]{1,12}: [ -~]{0,40}", 0..5),
        chunk in 1usize..64,
    ) {
        let mut head = String::from("GET /index.html HTTP/1.1\r\n");
        for field in &before {
            if !field.to_ascii_lowercase().starts_with("host:") {
                head.push_str(field);
                head.push_str("\r\n");
            }
        }
        head.push_str("hOsT: ");
        head.push_str(&name);
        if let Some(port) = port {
            head.push_str(&format!(":{port}"));
        }
        head.push_str("\r\nAccept: */*\r\n\r\nbody");
        prop_assert_eq!(sniff_http(head.as_bytes()), HttpSniff::Found(name));
        check_settles(head.as_bytes(), chunk, sniff_http, &HttpSniff::NeedMore);
    }

    #[test]
    fn dns_decoding_never_panics(data in prop::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(query) = DnsQuery::decode(&data) {
            let mut answer = Vec::new();
            query.encode_response(DnsRcode::Refused, &mut answer);
            prop_assert_eq!(&answer[..2], &data[..2]);
        }
    }

    #[test]
    fn dns_mutated_queries_decode_or_fail_cleanly(data in mutated(DIG_QUERY)) {
        if let Ok(query) = DnsQuery::decode(&data) {
            prop_assert!(query.name.len() <= 253);
            let mut answer = Vec::new();
            query.encode_response(DnsRcode::NxDomain, &mut answer);
            prop_assert_eq!(answer[3] & 0x0f, 3);
        }
    }

    #[test]
    fn dns_names_come_back_and_are_refused(name in host_name(), id in any::<u16>(), qtype in any::<u16>()) {
        let mut query = id.to_be_bytes().to_vec();
        query.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        for label in name.split('.') {
            query.push(label.len() as u8);
            query.extend_from_slice(label.as_bytes());
        }
        query.push(0);
        query.extend_from_slice(&qtype.to_be_bytes());
        query.extend_from_slice(&[0, 1]);
        let decoded = DnsQuery::decode(&query).expect("a well-formed query");
        prop_assert_eq!(decoded.name_str(), Some(name.as_str()));
        prop_assert_eq!(decoded.qtype, qtype);
        let mut answer = Vec::new();
        decoded.encode_response(DnsRcode::NxDomain, &mut answer);
        // Same ID and question; QR, RD, RA and NXDOMAIN; no records.
        let mut expected = query.clone();
        expected[2..4].copy_from_slice(&[0x81, 0x83]);
        prop_assert_eq!(answer, expected);
    }
}
