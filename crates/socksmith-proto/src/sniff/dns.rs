//! A DNS query's question, and the refusal the proxy answers it with itself.
//!
//! A client that sends its DNS through UDP ASSOCIATE names what it is about to visit in the
//! clear. [`DnsQuery::decode`] reads the header and the first question of a query datagram
//! (RFC 1035 §4.1); [`DnsQuery::encode_response`] builds the answer that says the name does
//! not exist (NXDOMAIN) or that the server will not answer (REFUSED), so a listed name is
//! never forwarded.
//!
//! ```text
//! header:   ID(2) | QR(1) Opcode(4) AA TC RD | RA Z AD CD RCODE(4) | QDCOUNT(2) ANCOUNT(2)
//!           NSCOUNT(2) ARCOUNT(2)
//! question: QNAME (labels: length(1) octets; 0 ends; 0b11xxxxxx xxxxxxxx is a pointer)
//!           QTYPE(2) QCLASS(2)
//! ```
//!
//! A datagram is whole, so nothing here is incremental: too short is an error. Anything that
//! is not a standard query this module reads is a [`DnsError`], and the UDP relay forwards it
//! untouched (a server would answer it FORMERR or NOTIMP anyway).

use super::Cursor;

/// The size of the DNS header.
const HEADER_LEN: usize = 12;
/// RFC 1035 §2.3.4: "names 255 octets or less" on the wire, length octets included.
const MAX_NAME_WIRE: usize = 255;
/// QR: set in responses.
const FLAG_RESPONSE: u16 = 0x8000;
/// RD: recursion desired, copied into the response (RFC 1035 §4.1.1).
const FLAG_RECURSION_DESIRED: u16 = 0x0100;
/// RA: recursion available.
const FLAG_RECURSION_AVAILABLE: u16 = 0x0080;
/// CD: checking disabled, copied into the response as DNSSEC-aware resolvers do.
const FLAG_CHECKING_DISABLED: u16 = 0x0010;
/// Opcode QUERY.
const OPCODE_QUERY: u8 = 0;

/// Why a datagram is not a DNS query this module can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// The datagram ends inside the header or the question.
    #[error("DNS message truncated: {0} bytes")]
    Truncated(usize),
    /// The QR bit says response, not query.
    #[error("DNS message is a response, not a query")]
    NotAQuery,
    /// An opcode other than QUERY (0): IQUERY, STATUS, NOTIFY, UPDATE.
    #[error("DNS opcode {0} is not a standard query")]
    UnsupportedOpcode(u8),
    /// QDCOUNT is 0.
    #[error("DNS query without a question")]
    NoQuestion,
    /// A label type other than a plain label (0b00) or a pointer (0b11).
    #[error("DNS name uses unsupported label type 0x{0:02x}")]
    UnsupportedLabelType(u8),
    /// A compression pointer that does not point before the labels it continues, the only
    /// way a pointer chain could loop.
    #[error("DNS name compression pointer to {target} does not point backwards")]
    PointerNotBackwards {
        /// The offset pointed to.
        target: usize,
    },
    /// The name is longer than 255 octets on the wire.
    #[error("DNS name longer than 255 octets")]
    NameTooLong,
}

/// The answer code the proxy gives a refused query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DnsRcode {
    /// 3, "Name Error": the name does not exist. Clients stop at once and cache the answer.
    NxDomain,
    /// 5, "Refused": the server will not answer for policy reasons. Some clients try the
    /// next server instead.
    Refused,
}

impl DnsRcode {
    /// The RCODE value.
    pub fn value(self) -> u8 {
        match self {
            DnsRcode::NxDomain => 3,
            DnsRcode::Refused => 5,
        }
    }
}

/// A standard DNS query's header fields and first question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsQuery {
    /// The query ID, echoed in the response.
    pub id: u16,
    /// The RD bit.
    pub recursion_desired: bool,
    /// The CD bit.
    pub checking_disabled: bool,
    /// QDCOUNT. Real clients send exactly one question; with more, only the first is read
    /// here, and a caller that blocks by name should refuse such a query rather than forward
    /// questions it has not looked at.
    pub question_count: u16,
    /// The first question's name: its labels joined with `.`, without a trailing dot, as
    /// sent (case kept; the root is empty). Label octets are not checked: a name a blocklist
    /// holds is letters, digits, `-` and `_`.
    pub name: Vec<u8>,
    /// QTYPE (1 = A, 28 = AAAA, ...).
    pub qtype: u16,
    /// QCLASS (1 = IN).
    pub qclass: u16,
    /// The question in uncompressed wire form, for the response.
    question: Vec<u8>,
}

impl DnsQuery {
    /// Reads the header and the first question of a query datagram.
    ///
    /// ```
    /// use socksmith_proto::sniff::{DnsQuery, DnsRcode};
    ///
    /// // ID 0x1234, RD, one question: ads.example. A IN
    /// let datagram = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\
    ///                  \x03ads\x07example\x00\x00\x01\x00\x01";
    /// let query = DnsQuery::decode(datagram).unwrap();
    /// assert_eq!(query.name, b"ads.example");
    /// let mut answer = Vec::new();
    /// query.encode_response(DnsRcode::NxDomain, &mut answer);
    /// assert_eq!(&answer[..4], b"\x12\x34\x81\x83");
    /// ```
    pub fn decode(datagram: &[u8]) -> Result<DnsQuery, DnsError> {
        let truncated = || DnsError::Truncated(datagram.len());
        let mut header = Cursor::new(datagram);
        let id = header.u16().ok_or_else(truncated)?;
        let flags = header.u16().ok_or_else(truncated)?;
        let question_count = header.u16().ok_or_else(truncated)?;
        // ANCOUNT, NSCOUNT and ARCOUNT: an EDNS OPT record in the additional section is
        // normal in a query and not needed to refuse it.
        header.take(6).ok_or_else(truncated)?;
        if flags & FLAG_RESPONSE != 0 {
            return Err(DnsError::NotAQuery);
        }
        let opcode = ((flags >> 11) & 0x0f) as u8;
        if opcode != OPCODE_QUERY {
            return Err(DnsError::UnsupportedOpcode(opcode));
        }
        if question_count == 0 {
            return Err(DnsError::NoQuestion);
        }
        let (name, question_wire, after_name) = read_name(datagram, HEADER_LEN)?;
        let mut rest = Cursor::new(datagram.get(after_name..).unwrap_or_default());
        let qtype = rest.u16().ok_or_else(truncated)?;
        let qclass = rest.u16().ok_or_else(truncated)?;
        let mut question = question_wire;
        question.extend_from_slice(&qtype.to_be_bytes());
        question.extend_from_slice(&qclass.to_be_bytes());
        Ok(DnsQuery {
            id,
            recursion_desired: flags & FLAG_RECURSION_DESIRED != 0,
            checking_disabled: flags & FLAG_CHECKING_DISABLED != 0,
            question_count,
            name,
            qtype,
            qclass,
            question,
        })
    }

    /// The name as text, when it is ASCII (it always is for a name a blocklist can hold).
    pub fn name_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.name)
            .ok()
            .filter(|name| name.is_ascii())
    }

    /// Appends the response that answers this query with `rcode` and nothing else: same
    /// ID, RD and CD copied, RA set, the first question echoed, no records.
    pub fn encode_response(&self, rcode: DnsRcode, out: &mut Vec<u8>) {
        let mut flags = FLAG_RESPONSE | FLAG_RECURSION_AVAILABLE | u16::from(rcode.value());
        if self.recursion_desired {
            flags |= FLAG_RECURSION_DESIRED;
        }
        if self.checking_disabled {
            flags |= FLAG_CHECKING_DISABLED;
        }
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&flags.to_be_bytes());
        out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(&self.question);
    }
}

/// Reads the name starting at `start` of `message`, following compression pointers.
/// Returns the dotted name, its uncompressed wire form and the offset after the name where
/// it was written (after its first pointer, if any).
fn read_name(message: &[u8], start: usize) -> Result<(Vec<u8>, Vec<u8>, usize), DnsError> {
    let truncated = || DnsError::Truncated(message.len());
    let mut dotted = Vec::new();
    let mut wire = Vec::new();
    let mut pos = start;
    // Where the labels being read began: a pointer must point before it, so every jump
    // goes strictly backwards and a chain of pointers ends (RFC 1035 §4.1.4 pointers
    // replace "a prior occurance of the same name").
    let mut run_start = start;
    let mut end_of_name: Option<usize> = None;
    loop {
        let mut cursor = Cursor::new(message.get(pos..).ok_or_else(truncated)?);
        let length = cursor.u8().ok_or_else(truncated)?;
        match length & 0xc0 {
            0x00 if length == 0 => {
                wire.push(0);
                let end = end_of_name.unwrap_or(pos + 1);
                return Ok((dotted, wire, end));
            }
            0x00 => {
                let label = cursor.take(usize::from(length)).ok_or_else(truncated)?;
                // The label, its length octet, and the root's zero octet still to come.
                if wire.len() + 1 + label.len() + 1 > MAX_NAME_WIRE {
                    return Err(DnsError::NameTooLong);
                }
                wire.push(length);
                wire.extend_from_slice(label);
                if !dotted.is_empty() {
                    dotted.push(b'.');
                }
                dotted.extend_from_slice(label);
                pos += 1 + label.len();
            }
            0xc0 => {
                let low = cursor.u8().ok_or_else(truncated)?;
                let target = usize::from(length & 0x3f) << 8 | usize::from(low);
                if target >= run_start {
                    return Err(DnsError::PointerNotBackwards { target });
                }
                end_of_name.get_or_insert(pos + 2);
                run_start = target;
                pos = target;
            }
            other => return Err(DnsError::UnsupportedLabelType(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `dig Ads.Example.COM A` (BIND 9.18), with its EDNS OPT record and cookie.
    const DIG_EDNS: &[u8] = include_bytes!("../../tests/vectors/dig-query-Ads.Example.COM-A.bin");
    /// `dig +noedns tracker.test. AAAA`.
    const DIG_PLAIN: &[u8] =
        include_bytes!("../../tests/vectors/dig-query-noedns-tracker.test-AAAA.bin");

    #[test]
    fn captured_queries_decode() {
        let query = DnsQuery::decode(DIG_EDNS).expect("dig's query");
        assert_eq!(query.name, b"Ads.Example.COM");
        assert_eq!(query.name_str(), Some("Ads.Example.COM"));
        assert_eq!((query.qtype, query.qclass, query.question_count), (1, 1, 1));
        assert!(query.recursion_desired);
        assert!(!query.checking_disabled);

        let query = DnsQuery::decode(DIG_PLAIN).expect("dig's query");
        assert_eq!(query.name, b"tracker.test");
        assert_eq!(query.qtype, 28);
    }

    #[test]
    fn the_refusal_echoes_id_flags_and_question() {
        let query = DnsQuery::decode(DIG_PLAIN).expect("dig's query");
        let mut answer = Vec::new();
        query.encode_response(DnsRcode::NxDomain, &mut answer);
        // ID, QR|RD / RA|NXDOMAIN, one question, no records, the question as sent.
        let mut expected = DIG_PLAIN[..2].to_vec();
        expected.extend_from_slice(&[0x81, 0x83, 0, 1, 0, 0, 0, 0, 0, 0]);
        expected.extend_from_slice(&DIG_PLAIN[12..]);
        assert_eq!(answer, expected);

        let mut refused = Vec::new();
        let cd = DnsQuery {
            checking_disabled: true,
            recursion_desired: false,
            ..query
        };
        cd.encode_response(DnsRcode::Refused, &mut refused);
        assert_eq!(&refused[2..4], &[0x80, 0x95]);
        // The answer is itself a message: a response, so not a query.
        assert_eq!(DnsQuery::decode(&refused), Err(DnsError::NotAQuery));
    }

    fn header(flags: u16, qdcount: u16) -> Vec<u8> {
        let mut h = vec![0xab, 0xcd];
        h.extend_from_slice(&flags.to_be_bytes());
        h.extend_from_slice(&qdcount.to_be_bytes());
        h.extend_from_slice(&[0; 6]);
        h
    }

    #[test]
    fn compression_pointers_are_followed_backwards_only() {
        let mut message = header(0x0100, 1);
        // At 12: "x" then a pointer back to offset 12 itself: a loop.
        message.extend_from_slice(&[1, b'x', 0xc0, 12, 0, 1, 0, 1]);
        assert_eq!(
            DnsQuery::decode(&message),
            Err(DnsError::PointerNotBackwards { target: 12 })
        );
        // A pointer forwards.
        let mut forward = header(0x0100, 1);
        forward.extend_from_slice(&[0xc0, 20, 0, 1, 0, 1, 0, 0, 1, b'a', 0]);
        assert!(matches!(
            DnsQuery::decode(&forward),
            Err(DnsError::PointerNotBackwards { .. })
        ));
        // A pointer backwards into the header: legal form, read as labels there.
        let mut into_header = header(0x0100, 1);
        into_header[6..12].copy_from_slice(&[0, 0, 1, b'h', 0, 0]);
        into_header.extend_from_slice(&[1, b'a', 0xc0, 8, 0, 1, 0, 1]);
        let query = DnsQuery::decode(&into_header).expect("backwards pointer");
        assert_eq!(query.name, b"a.h");
        // The response carries the name uncompressed.
        let mut answer = Vec::new();
        query.encode_response(DnsRcode::NxDomain, &mut answer);
        assert_eq!(&answer[12..], &[1, b'a', 1, b'h', 0, 0, 1, 0, 1]);
    }

    #[test]
    fn bad_queries_are_errors_not_panics() {
        assert_eq!(DnsQuery::decode(&[]), Err(DnsError::Truncated(0)));
        assert_eq!(
            DnsQuery::decode(&DIG_PLAIN[..11]),
            Err(DnsError::Truncated(11))
        );
        for end in 12..DIG_PLAIN.len() {
            assert_eq!(
                DnsQuery::decode(&DIG_PLAIN[..end]),
                Err(DnsError::Truncated(end))
            );
        }
        let mut response = DIG_PLAIN.to_vec();
        response[2] |= 0x80;
        assert_eq!(DnsQuery::decode(&response), Err(DnsError::NotAQuery));
        let mut update = DIG_PLAIN.to_vec();
        update[2] = 5 << 3;
        assert_eq!(
            DnsQuery::decode(&update),
            Err(DnsError::UnsupportedOpcode(5))
        );
        assert_eq!(
            DnsQuery::decode(&header(0x0100, 0)),
            Err(DnsError::NoQuestion)
        );
        let mut extended = header(0x0100, 1);
        extended.extend_from_slice(&[0x41, 0, 0, 1, 0, 1]);
        assert_eq!(
            DnsQuery::decode(&extended),
            Err(DnsError::UnsupportedLabelType(0x40))
        );
        // 4 labels of 63 octets: 256 octets on the wire.
        let mut long = header(0x0100, 1);
        for _ in 0..4 {
            long.push(63);
            long.extend_from_slice(&[b'a'; 63]);
        }
        long.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert_eq!(DnsQuery::decode(&long), Err(DnsError::NameTooLong));
        // Three of 63 and one of 61: 255 exactly, allowed.
        let mut longest = header(0x0100, 1);
        for len in [63, 63, 63, 61] {
            longest.push(len);
            longest.extend_from_slice(&vec![b'a'; usize::from(len)]);
        }
        longest.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert_eq!(
            DnsQuery::decode(&longest).expect("255 octets").name.len(),
            253
        );
    }

    #[test]
    fn the_root_and_several_questions() {
        let mut root = header(0, 2);
        root.extend_from_slice(&[0, 0, 2, 0, 1]);
        let query = DnsQuery::decode(&root).expect("root NS query");
        assert!(query.name.is_empty());
        assert_eq!(query.question_count, 2);
        assert!(!query.recursion_desired);
    }
}
