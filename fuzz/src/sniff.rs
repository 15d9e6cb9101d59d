//! Checks for the first-flight sniffers and the blocklist parser: no input panics them, a
//! stream sniffer's answer other than "need more" never changes as bytes arrive, and what a
//! decoder accepts is consistent with what it returns.

use socksmith::policy::blocklist::{DomainList, ListName};
use socksmith_proto::sniff::{sniff_http, sniff_tls, DnsQuery, DnsRcode, HttpSniff, TlsSniff};
use std::fmt::Debug;

/// Feeds `data` (its first byte picks the chunk size) to a stream sniffer the way a session
/// does, and checks that the first settled answer is the answer for every longer prefix.
fn check_settles<T: PartialEq + Debug>(data: &[u8], sniff: fn(&[u8]) -> T, need_more: &T) {
    let Some((&chunk, data)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk.max(1));
    let whole = sniff(data);
    let mut end = 0;
    loop {
        end = (end + chunk).min(data.len());
        let answer = sniff(&data[..end]);
        if &answer != need_more {
            assert_eq!(
                answer, whole,
                "answer at {end} bytes differs from all at once"
            );
            // Later prefixes, sampled at the same chunk size, agree.
            let mut later = end;
            while later < data.len() {
                later = (later + chunk).min(data.len());
                assert_eq!(sniff(&data[..later]), whole, "answer changed at {later}");
            }
            return;
        }
        if end == data.len() {
            assert_eq!(&whole, need_more);
            return;
        }
    }
}

/// The TLS SNI sniffer on arbitrary bytes.
pub fn check_tls(data: &[u8]) {
    check_settles(data, sniff_tls, &TlsSniff::NeedMore);
    if let TlsSniff::Found(name) = sniff_tls(data.get(1..).unwrap_or_default()) {
        assert!(!name.is_empty() && name.len() <= 255, "{name:?}");
    }
}

/// The HTTP Host sniffer on arbitrary bytes.
pub fn check_http(data: &[u8]) {
    check_settles(data, sniff_http, &HttpSniff::NeedMore);
    if let HttpSniff::Found(name) = sniff_http(data.get(1..).unwrap_or_default()) {
        assert!(!name.is_empty(), "an empty host is NoHost");
    }
}

/// The DNS query decoder on an arbitrary datagram: a decoded query's refusal is a response
/// to it.
pub fn check_dns(data: &[u8]) {
    let Ok(query) = DnsQuery::decode(data) else {
        return;
    };
    assert!(query.name.len() <= 253);
    for rcode in [DnsRcode::NxDomain, DnsRcode::Refused] {
        let mut answer = Vec::new();
        query.encode_response(rcode, &mut answer);
        assert_eq!(&answer[..2], &data[..2], "same ID");
        assert_eq!(answer[2] & 0x80, 0x80, "a response");
        assert_eq!(answer[3] & 0x0f, rcode.value());
        assert!(DnsQuery::decode(&answer).is_err(), "a response is no query");
    }
}

/// The blocklist parser on arbitrary text: loading never panics, and every line that is a
/// bare name it accepted blocks that name.
pub fn check_blocklist(data: &[u8]) {
    let Ok(list) = DomainList::parse(ListName::from("fuzz"), data) else {
        return;
    };
    assert_eq!(list.len(), list.report().names);
    for line in data.split(|&b| b == b'\n') {
        let word = line.trim_ascii();
        let _ = list.contains(word);
        let bare = !word.is_empty()
            && word
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            && word
                .split(|&b| b == b'.')
                .all(|l| (1..=63).contains(&l.len()))
            && word.len() <= 253
            && !word.eq_ignore_ascii_case(b"localhost")
            && std::str::from_utf8(word).map_or(true, |w| w.parse::<std::net::IpAddr>().is_err());
        if bare && !is_hosts_header(word) {
            assert!(
                list.contains(word),
                "{:?} listed but not blocked",
                String::from_utf8_lossy(word)
            );
        }
    }
}

fn is_hosts_header(word: &[u8]) -> bool {
    [
        &b"localhost.localdomain"[..],
        b"local",
        b"broadcasthost",
        b"ip6-localhost",
        b"ip6-loopback",
        b"ip6-localnet",
        b"ip6-mcastprefix",
        b"ip6-allnodes",
        b"ip6-allrouters",
        b"ip6-allhosts",
    ]
    .iter()
    .any(|h| h.eq_ignore_ascii_case(word))
}
