//! Reading a blocklist's text: the hosts format, one domain a line, and the domain forms of
//! adblock filter lists, mixed freely.
//!
//! ```text
//! 0.0.0.0 ads.example.com            hosts: an address, then one or more names
//! 127.0.0.1 a.example b.example      (any address: 0.0.0.0, 127.0.0.1, ::, ::1, fe80::1%lo0)
//! tracker.example                    one domain a line
//! ||ads.example.com^                 adblock: the domain and everything under it
//! ||ads.example.com^$important       (the `important` and `all` options only)
//! *.ads.example.com                  wildcard: read as ads.example.com
//! # comment, ! adblock comment, [Adblock Plus 2.0]
//! ```
//!
//! A listed name blocks itself and every name under it, label by label. Names are
//! lowercased and a trailing dot dropped. The names every hosts file starts with
//! (`localhost`, `broadcasthost`, `ip6-localhost`, ...) are ignored, as are addresses
//! written where a name belongs (`0.0.0.0 0.0.0.0`).
//!
//! A list from the internet has junk in it: a line that is none of the above is skipped and
//! counted, and the first few are kept with their line numbers for the log
//! ([`ParseReport`]). Adblock rules that do not block a whole domain (paths, exceptions,
//! element hiding, options such as `third-party`) are skipped the same way: blocking their
//! whole domain would block more than the list meant.

use std::fmt;
use std::net::IpAddr;

use super::table::{DomainTable, InsertError};
use super::ListName;

/// How many skipped lines a [`ParseReport`] keeps for the log.
pub const KEPT_LINE_ERRORS: usize = 10;

/// Names that hosts files map to local addresses for the host's own sake: never a block.
const HOSTS_HEADER_NAMES: &[&[u8]] = &[
    b"localhost",
    b"localhost.localdomain",
    b"local",
    b"broadcasthost",
    b"ip6-localhost",
    b"ip6-loopback",
    b"ip6-localnet",
    b"ip6-mcastprefix",
    b"ip6-allnodes",
    b"ip6-allrouters",
    b"ip6-allhosts",
];

/// Adblock options that do not narrow a rule: it still blocks the whole domain.
const WHOLE_DOMAIN_OPTIONS: &[&[u8]] = &[b"important", b"all"];

/// What reading a list found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ParseReport {
    /// Lines read.
    pub lines: usize,
    /// Distinct names added.
    pub names: usize,
    /// Names listed more than once (counted once in `names`).
    pub duplicates: usize,
    /// Lines skipped because they could not be read or block no whole domain.
    pub skipped: usize,
    /// The first [`KEPT_LINE_ERRORS`] skipped lines, for the log.
    pub first_errors: Vec<LineError>,
}

/// One skipped line: where, why, and what it said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// The list (file path or URL).
    pub list: ListName,
    /// The line number, from 1.
    pub line: usize,
    /// What is wrong with it.
    pub kind: LineErrorKind,
    /// The start of the line as written (at most 80 characters, non-printable bytes
    /// escaped).
    pub text: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}, line skipped: `{}`",
            self.list, self.line, self.kind, self.text
        )
    }
}

/// Why a line was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LineErrorKind {
    /// Not a domain name: characters other than letters, digits, `-`, `_` and dots, an
    /// empty label, a label over 63 or a name over 253 characters.
    InvalidName,
    /// An address alone on its line: this list blocks names, not addresses.
    AddressNotName,
    /// Several words that are not an address followed by names.
    UnknownFormat,
    /// An adblock rule that does not block a whole domain (a path, an exception `@@`,
    /// element hiding `##`, options such as `$third-party`).
    UnsupportedAdblockRule,
}

impl fmt::Display for LineErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LineErrorKind::InvalidName => "not a valid domain name",
            LineErrorKind::AddressNotName => {
                "an IP address, not a domain (blocklists block names, not addresses)"
            }
            LineErrorKind::UnknownFormat => {
                "neither a hosts line (address, names), a domain, nor an adblock domain rule"
            }
            LineErrorKind::UnsupportedAdblockRule => {
                "an adblock rule that blocks less than a whole domain (path, exception, \
                 element hiding or option)"
            }
        })
    }
}

/// Reads `text` into `table`, reporting what it found. `Err` only when the table is full
/// (over 4 GiB of names).
pub(crate) fn parse_into(
    list: &ListName,
    text: &[u8],
    table: &mut DomainTable,
) -> Result<ParseReport, InsertError> {
    let mut report = ParseReport::default();
    let mut name = Vec::with_capacity(256);
    for (index, raw) in text.split(|&b| b == b'\n').enumerate() {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        report.lines += 1;
        let mut add = |name: &[u8]| -> Result<(), InsertError> {
            if table.insert(name)? {
                report.names += 1;
            } else {
                report.duplicates += 1;
            }
            Ok(())
        };
        let outcome = parse_line(line, &mut name, &mut add)?;
        if let Err(kind) = outcome {
            report.skipped += 1;
            if report.first_errors.len() < KEPT_LINE_ERRORS {
                report.first_errors.push(LineError {
                    list: list.clone(),
                    line: index + 1,
                    kind,
                    text: excerpt(line),
                });
            }
        }
    }
    // `split` yields one empty piece after a final newline: not a line of the file.
    if text.last() == Some(&b'\n') || text.is_empty() {
        report.lines -= 1;
    }
    Ok(report)
}

/// Reads one line, handing each name it blocks to `add`. The outer `Result` is the table's
/// error, the inner one the line's.
fn parse_line(
    line: &[u8],
    name: &mut Vec<u8>,
    add: &mut impl FnMut(&[u8]) -> Result<(), InsertError>,
) -> Result<Result<(), LineErrorKind>, InsertError> {
    let line = line.trim_ascii();
    match line.first() {
        None | Some(b'#' | b'!') => return Ok(Ok(())),
        Some(b'[') if line.ends_with(b"]") => return Ok(Ok(())), // [Adblock Plus 2.0]
        _ => {}
    }
    let line = strip_comment(line);
    // A `#` left inside a word is element hiding (`example.com##.ad`, `#@#`, `#?#`), which
    // names a page, not a domain to block: cutting at `#` would block the whole site.
    if line.contains(&b'#') {
        return Ok(Err(LineErrorKind::UnsupportedAdblockRule));
    }
    let mut words = line
        .split(u8::is_ascii_whitespace)
        .filter(|w| !w.is_empty());
    let Some(first) = words.next() else {
        return Ok(Ok(()));
    };
    if first.starts_with(b"@@") || first.starts_with(b"|") {
        if words.next().is_some() {
            return Ok(Err(LineErrorKind::UnknownFormat));
        }
        return Ok(match adblock_domain(first) {
            Some(domain) if normalize_into(domain, name) => add(name).map(Ok)?,
            Some(_) => Err(LineErrorKind::InvalidName),
            None => Err(LineErrorKind::UnsupportedAdblockRule),
        });
    }
    if is_address(first) {
        let mut any = false;
        for word in words {
            any = true;
            if is_address(word) || is_hosts_header_name(word) {
                continue;
            }
            if !normalize_into(word, name) {
                return Ok(Err(LineErrorKind::InvalidName));
            }
            add(name)?;
        }
        return Ok(if any {
            Ok(())
        } else {
            // A list of addresses, one a line.
            Err(LineErrorKind::AddressNotName)
        });
    }
    if words.next().is_some() {
        return Ok(Err(LineErrorKind::UnknownFormat));
    }
    let domain = first.strip_prefix(b"*.").unwrap_or(first);
    if is_address(domain) {
        return Ok(Err(LineErrorKind::AddressNotName));
    }
    if is_hosts_header_name(domain) {
        return Ok(Ok(()));
    }
    Ok(if normalize_into(domain, name) {
        add(name).map(Ok)?
    } else {
        Err(LineErrorKind::InvalidName)
    })
}

/// Where a comment starts: a `#` at the start or after whitespace.
fn comment_start(line: &[u8]) -> Option<usize> {
    line.iter()
        .enumerate()
        .position(|(i, &b)| b == b'#' && (i == 0 || line[i - 1].is_ascii_whitespace()))
}

/// The line before its comment.
fn strip_comment(line: &[u8]) -> &[u8] {
    match comment_start(line) {
        Some(at) => line.get(..at).unwrap_or_default(),
        None => line,
    }
}

/// The domain of an adblock rule that blocks a whole domain: `||domain^`, optionally
/// followed by `|` and by whole-domain options (`$important`).
fn adblock_domain(rule: &[u8]) -> Option<&[u8]> {
    let body = rule.strip_prefix(b"||")?;
    let (pattern, options) = match body.iter().position(|&b| b == b'$') {
        Some(at) => (body.get(..at)?, body.get(at + 1..)?),
        None => (body, &[][..]),
    };
    if !options.is_empty()
        && !options
            .split(|&b| b == b',')
            .all(|option| WHOLE_DOMAIN_OPTIONS.contains(&option))
    {
        return None;
    }
    let pattern = pattern.strip_suffix(b"|").unwrap_or(pattern);
    let domain = pattern.strip_suffix(b"^").unwrap_or(pattern);
    // `||*.example.com^` reads as `||example.com^`.
    let domain = domain.strip_prefix(b"*.").unwrap_or(domain);
    if domain.contains(&b'/') || domain.contains(&b'*') || domain.contains(&b'^') {
        return None;
    }
    Some(domain)
}

/// Whether `word` is an IP address, with or without an IPv6 zone (`fe80::1%lo0`).
fn is_address(word: &[u8]) -> bool {
    // The two addresses nearly every hosts line starts with, without a parse.
    if word == b"0.0.0.0" || word == b"127.0.0.1" {
        return true;
    }
    let Ok(text) = std::str::from_utf8(word) else {
        return false;
    };
    let text = match text.split_once('%') {
        Some((address, _zone)) if address.contains(':') => address,
        _ => text,
    };
    text.parse::<IpAddr>().is_ok()
}

fn is_hosts_header_name(word: &[u8]) -> bool {
    let word = word.strip_suffix(b".").unwrap_or(word);
    HOSTS_HEADER_NAMES
        .iter()
        .any(|name| name.eq_ignore_ascii_case(word))
}

/// The name lowercased and without a trailing dot, when it is a valid domain name: 1 to 253
/// characters, labels of 1 to 63 letters, digits, `-` or `_` (seen in real lists:
/// `_dmarc`-style and CDN names).
#[cfg(test)]
pub(crate) fn normalize(name: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    normalize_into(name, &mut out).then_some(out)
}

/// The name lowercased and without a trailing dot, into `out` (cleared first), so loading a
/// list allocates no buffer per name; `false` when `name` is not a valid domain name: 1 to 253
/// characters, labels of 1 to 63 letters, digits, `-` or `_`.
pub(crate) fn normalize_into(name: &[u8], out: &mut Vec<u8>) -> bool {
    out.clear();
    let name = name.strip_suffix(b".").unwrap_or(name);
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    let mut label_len = 0usize;
    for &b in name {
        if b == b'.' {
            if label_len == 0 {
                return false;
            }
            label_len = 0;
        } else if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            label_len += 1;
            if label_len > 63 {
                return false;
            }
        } else {
            return false;
        }
        out.push(b.to_ascii_lowercase());
    }
    label_len > 0
}

/// The start of a line for a log message: at most 80 characters, escaped.
fn excerpt(line: &[u8]) -> String {
    let mut out = String::new();
    for chunk in line.utf8_chunks() {
        for c in chunk.valid().chars() {
            if out.chars().count() >= 80 {
                out.push('…');
                return out;
            }
            out.extend(c.escape_debug());
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::blocklist::table::Suffixes;

    fn parse(text: &str) -> (DomainTable, ParseReport) {
        let mut table = DomainTable::default();
        let report = parse_into(&ListName::from("test.txt"), text.as_bytes(), &mut table)
            .expect("small list");
        (table, report)
    }

    fn blocks(table: &DomainTable, host: &str) -> bool {
        table.contains_any(&Suffixes::of(host.as_bytes()))
    }

    #[test]
    fn hosts_format_with_its_header() {
        let text = "\
# StevenBlack-style header
127.0.0.1 localhost
127.0.0.1 localhost.localdomain
127.0.0.1 local
255.255.255.255 broadcasthost
::1 localhost ip6-localhost ip6-loopback
fe80::1%lo0 localhost
ff00::0 ip6-localnet
ff02::1 ip6-allnodes
0.0.0.0 0.0.0.0

0.0.0.0 ads.example.com
127.0.0.1 Tracker.Example.NET. # inline comment
:: v6.example
0.0.0.0\tone.example two.example\tthree.example
";
        let (table, report) = parse(text);
        assert_eq!(report.skipped, 0, "{:?}", report.first_errors);
        assert_eq!(report.names, 6);
        assert_eq!(report.lines, 15);
        for host in [
            "ads.example.com",
            "x.ads.example.com",
            "tracker.example.net",
            "v6.example",
            "one.example",
            "two.example",
            "THREE.example.",
        ] {
            assert!(blocks(&table, host), "{host}");
        }
        for host in ["localhost", "broadcasthost", "ip6-localhost", "example.com"] {
            assert!(!blocks(&table, host), "{host}");
        }
    }

    #[test]
    fn domain_per_line_and_adblock_forms() {
        let text = "\
[Adblock Plus 2.0]
! Title: test list
plain.example
*.wild.example
||adblock.example^
||important.example^$important
||pipe.example^|
||*.starred.example^
";
        let (table, report) = parse(text);
        assert_eq!(report.skipped, 0, "{:?}", report.first_errors);
        assert_eq!(report.names, 6);
        for host in [
            "plain.example",
            "a.plain.example",
            "wild.example",
            "a.wild.example",
            "adblock.example",
            "x.y.adblock.example",
            "important.example",
            "pipe.example",
            "starred.example",
        ] {
            assert!(blocks(&table, host), "{host}");
        }
        assert!(!blocks(&table, "notplain.example"));
        assert!(!blocks(&table, "example"));
    }

    #[test]
    fn junk_lines_are_skipped_with_their_line_numbers() {
        let text = "\
good.example
<html><body>Not Found</body></html>
||partial.example/ads/*
@@||exception.example^
example.com##.banner
||thirdparty.example^$third-party
1.2.3.4
0.0.0.0
bad_label..example
0.0.0.0 fine.example bad!name
also.good.example
";
        let (table, report) = parse(text);
        assert_eq!(report.names, 3, "{report:?}");
        assert_eq!(report.skipped, 9);
        assert!(blocks(&table, "good.example"));
        assert!(blocks(&table, "also.good.example"));
        // Names before a bad one on the same hosts line were added.
        assert!(blocks(&table, "fine.example"));
        for host in [
            "partial.example",
            "exception.example",
            "example.com",
            "thirdparty.example",
        ] {
            assert!(!blocks(&table, host), "{host}");
        }
        let kinds: Vec<(usize, LineErrorKind)> = report
            .first_errors
            .iter()
            .map(|e| (e.line, e.kind))
            .collect();
        assert_eq!(
            kinds,
            [
                (2, LineErrorKind::UnknownFormat),
                (3, LineErrorKind::UnsupportedAdblockRule),
                (4, LineErrorKind::UnsupportedAdblockRule),
                (5, LineErrorKind::UnsupportedAdblockRule),
                (6, LineErrorKind::UnsupportedAdblockRule),
                (7, LineErrorKind::AddressNotName),
                (8, LineErrorKind::AddressNotName),
                (9, LineErrorKind::InvalidName),
                (10, LineErrorKind::InvalidName),
            ]
        );
        assert_eq!(
            report.first_errors[0].to_string(),
            "test.txt:2: neither a hosts line (address, names), a domain, nor an adblock \
             domain rule, line skipped: `<html><body>Not Found</body></html>`"
        );
    }

    #[test]
    fn duplicates_crlf_and_binary_junk() {
        let mut text = b"dup.example\r\nDUP.example.\r\n\xff\xfe\x00junk\r\n".to_vec();
        text.extend_from_slice(&[b'a'; 300]);
        let mut table = DomainTable::default();
        let report = parse_into(&ListName::from("bin"), &text, &mut table).expect("small list");
        assert_eq!((report.names, report.duplicates, report.skipped), (1, 1, 2));
        assert_eq!(report.lines, 4);
        assert_eq!(report.first_errors[0].text, "\\xff\\xfe\\0junk");
        assert!(report.first_errors[1].text.ends_with('…'));
    }

    #[test]
    fn names_are_checked_like_dns_names() {
        assert_eq!(
            normalize(b"A-B_c.Example."),
            Some(b"a-b_c.example".to_vec())
        );
        assert_eq!(normalize(b""), None);
        assert_eq!(normalize(b"."), None);
        assert_eq!(normalize(b"a..b"), None);
        assert_eq!(normalize(b"-.b"), Some(b"-.b".to_vec()));
        assert_eq!(normalize(&[b'a'; 63]), Some(vec![b'a'; 63]));
        assert_eq!(normalize(&[b'a'; 64]), None);
        let longest = format!("{0}.{0}.{0}.{1}", "a".repeat(63), "b".repeat(61));
        assert_eq!(longest.len(), 253);
        assert!(normalize(longest.as_bytes()).is_some());
        assert!(normalize(format!("{longest}b").as_bytes()).is_none());
        assert_eq!(normalize("bücher.example".as_bytes()), None);
    }
}
