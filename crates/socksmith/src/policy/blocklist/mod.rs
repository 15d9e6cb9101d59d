//! Domain blocklists: which names the proxy refuses to reach, read from files and URLs that
//! people already publish (hosts files, domain lists, adblock domain rules).
//!
//! - [`DomainList`]: one list, parsed (see [Formats](#formats)), with
//!   the [`ParseReport`] of what was skipped.
//! - [`Blocklist`]: several lists; [`Blocklist::matches`] says which list, if any, holds the
//!   host or one of its parent domains. A lookup costs O(labels of the host), whatever the
//!   lists' sizes: one hash probe per parent domain per list.
//! - [`BlocklistSet`]: the blocklist a running server reads, lock-free, while a task
//!   ([`BlocklistSet::run_refresh`]) reloads its sources every [`BlocklistConfig::refresh`]
//!   and swaps each new list in whole. A URL's last good copy is kept in a cache directory,
//!   so a restart without network still blocks, and a failed fetch or parse keeps the list
//!   in use.
//!
//! # Formats
//! Hosts files (`0.0.0.0 ads.example.com`, several names a line, any address, the
//! `localhost`/`broadcasthost`/`ip6-*` header ignored), one domain a line, and adblock's
//! `||ads.example.com^` and `*.ads.example.com`; `#` and `!` comments. A listed name blocks
//! itself and every name under it by label: `ads.example.com` blocks `x.ads.example.com`,
//! not `notads.example.com`. Case and a trailing dot do not matter.
//!
//! # Scale
//! Names are stored back to back in one arena, indexed by a table of 4-byte offsets: a
//! million names (a 31 MiB hosts file) load in about 0.6 s of CPU and take about 34 MiB,
//! and a lookup takes about 0.5 µs (the `blocklist_bench` example measures them).
//!
//! This module decides nothing about sessions: the server asks [`BlocklistSet::check`] with
//! the requested name or a sniffed one (see `socksmith_proto::sniff`) and refuses on a match.

mod parse;
mod set;
mod source;
mod table;

#[cfg(feature = "blocklist-fetch")]
mod fetch;

pub use parse::{LineError, LineErrorKind, ParseReport, KEPT_LINE_ERRORS};
pub use set::{BlocklistConfig, BlocklistSet, ListStatus, DEFAULT_REFRESH, MAX_DOWNLOAD_BYTES};
pub use source::ListSource;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use table::{DomainTable, Suffixes};

/// A list's name: its source as the user gave it (file path or URL). The log line and the
/// `socksmith_blocked_total{list}` counter name a block by it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListName(Arc<str>);

impl ListName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for ListName {
    fn from(name: &str) -> Self {
        ListName(Arc::from(name))
    }
}

impl From<String> for ListName {
    fn from(name: String) -> Self {
        ListName(Arc::from(name))
    }
}

impl fmt::Display for ListName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a list could not be loaded. A list in use stays in use when its reload fails.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlocklistError {
    /// The file could not be read.
    #[error("cannot read blocklist {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The URL could not be fetched (no connection, TLS failure, timeout).
    #[error("cannot fetch blocklist {url}: {source}")]
    Fetch {
        /// The URL.
        url: String,
        /// What went wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The server answered with a status other than 2xx.
    #[error("cannot fetch blocklist {url}: the server answered HTTP {status}")]
    HttpStatus {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The download is larger than [`MAX_DOWNLOAD_BYTES`].
    #[error("blocklist {url} is larger than {limit} bytes; refusing to download more")]
    TooLarge {
        /// The URL.
        url: String,
        /// The limit.
        limit: usize,
    },
    /// A URL source that is no URL a request could be sent to.
    #[error("blocklist {url} is not a valid URL: {reason}")]
    BadUrl {
        /// The URL as given, secrets hidden.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// This build cannot fetch URLs.
    #[error(
        "blocklist {url} is a URL, but this build of socksmith cannot fetch URLs (built \
         without the `blocklist-fetch` feature); download the list and give its file path"
    )]
    FetchUnsupported {
        /// The URL.
        url: String,
    },
    /// Not one line of the list could be read, while some could not: most likely not a
    /// blocklist at all (an HTML error page, a binary file).
    #[error(
        "blocklist {list} holds no domain name: {skipped} lines skipped{}",
        .first.as_ref().map(|e| format!(", the first: {e}")).unwrap_or_default()
    )]
    NoNames {
        /// The list.
        list: ListName,
        /// How many lines were skipped.
        skipped: usize,
        /// The first skipped line.
        first: Option<LineError>,
    },
    /// A reload found the list without a single name while the copy in use has some: an
    /// empty download, or a file caught while it is rewritten. The copy in use stays; to
    /// stop using a list, remove it from the configuration.
    #[error(
        "blocklist {list} came back without a name (the copy in use has {in_use}); kept the \
         copy in use: to stop using the list, remove it from the configuration"
    )]
    Emptied {
        /// The list.
        list: ListName,
        /// Names in the copy in use.
        in_use: usize,
    },
    /// The HTTP client could not be set up (its TLS configuration).
    #[error("cannot set up the HTTP client for blocklist URLs: {source}")]
    HttpClient {
        /// What went wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The runtime shut down while the list was being loaded.
    #[error("loading blocklist {list} was interrupted by shutdown")]
    Interrupted {
        /// The list.
        list: ListName,
    },
    /// The list holds more than 4 GiB of names.
    #[error("blocklist {list} is too large: over 4 GiB of names")]
    Full {
        /// The list.
        list: ListName,
    },
}

/// One list, loaded: the names it blocks and what reading it found.
#[derive(Debug)]
pub struct DomainList {
    name: ListName,
    table: DomainTable,
    report: ParseReport,
}

impl DomainList {
    /// Reads a list's text (any of the [formats](self#formats), mixed). Lines that cannot
    /// be read are skipped and counted in [`DomainList::report`]; only a list where no line
    /// gives a name but some line was skipped is an error ([`BlocklistError::NoNames`]).
    ///
    /// ```
    /// use socksmith::policy::blocklist::{DomainList, ListName};
    ///
    /// let list = DomainList::parse(ListName::from("ads.txt"), b"0.0.0.0 ads.example.com\n").unwrap();
    /// assert!(list.contains("X.Ads.Example.com."));
    /// assert!(!list.contains("notads.example.com"));
    /// ```
    pub fn parse(name: ListName, text: &[u8]) -> Result<DomainList, BlocklistError> {
        // Every name takes at most its line's bytes (its length byte replaces the newline),
        // so the text's size bounds the arena; spare room is given back below.
        let lines = text.iter().filter(|&&b| b == b'\n').count() + 1;
        let mut table = DomainTable::with_capacity(lines, text.len());
        let report = parse::parse_into(&name, text, &mut table)
            .map_err(|table::InsertError::Full| BlocklistError::Full { list: name.clone() })?;
        if report.names == 0 && report.duplicates == 0 && report.skipped > 0 {
            return Err(BlocklistError::NoNames {
                list: name,
                skipped: report.skipped,
                first: report.first_errors.first().cloned(),
            });
        }
        table.shrink_to_fit();
        Ok(DomainList {
            name,
            table,
            report,
        })
    }

    /// The list's name (its source).
    pub fn name(&self) -> &ListName {
        &self.name
    }

    /// How many distinct names it holds.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether it holds no name.
    pub fn is_empty(&self) -> bool {
        self.table.len() == 0
    }

    /// What reading it found: lines, names, duplicates, skipped lines.
    pub fn report(&self) -> &ParseReport {
        &self.report
    }

    /// Bytes it holds on the heap (names and index), for reports.
    pub fn heap_bytes(&self) -> usize {
        self.table.heap_bytes()
    }

    /// Whether `host` or one of its parent domains is listed. Case and one trailing dot
    /// are ignored.
    pub fn contains(&self, host: impl AsRef<[u8]>) -> bool {
        self.table.contains_any(&Suffixes::of(host.as_ref()))
    }

    fn contains_suffixes(&self, suffixes: &Suffixes<'_>) -> bool {
        self.table.contains_any(suffixes)
    }
}

/// Several lists, consulted in order.
#[derive(Debug, Clone, Default)]
pub struct Blocklist {
    lists: Vec<Arc<DomainList>>,
}

impl Blocklist {
    /// A blocklist made of `lists`; on a match, the first list in this order that holds
    /// the host is named.
    pub fn new(lists: Vec<Arc<DomainList>>) -> Self {
        Blocklist { lists }
    }

    /// The lists, in order.
    pub fn lists(&self) -> &[Arc<DomainList>] {
        &self.lists
    }

    /// Whether no list holds a name (then nothing is ever blocked and sniffing is moot).
    pub fn is_empty(&self) -> bool {
        self.lists.iter().all(|list| list.is_empty())
    }

    /// The list that blocks `host` (a name, as requested or sniffed), if any: the host
    /// itself or one of its parent domains is in it. Case and one trailing dot are ignored;
    /// an IP address never matches.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use socksmith::policy::blocklist::{Blocklist, DomainList, ListName};
    ///
    /// let ads = DomainList::parse(ListName::from("ads.txt"), b"||ads.example.com^").unwrap();
    /// let blocklist = Blocklist::new(vec![Arc::new(ads)]);
    /// assert_eq!(blocklist.matches("a.ads.example.com").map(|l| l.as_str()), Some("ads.txt"));
    /// assert_eq!(blocklist.matches(b"example.com"), None);
    /// ```
    pub fn matches(&self, host: impl AsRef<[u8]>) -> Option<&ListName> {
        self.matching_index(host.as_ref())
            .and_then(|i| self.lists.get(i))
            .map(|list| &list.name)
    }

    /// The position in [`Blocklist::lists`] of the list that blocks `host`.
    fn matching_index(&self, host: &[u8]) -> Option<usize> {
        if self.lists.is_empty() {
            return None;
        }
        let suffixes = Suffixes::of(host);
        self.lists
            .iter()
            .position(|list| list.contains_suffixes(&suffixes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(name: &str, text: &str) -> Arc<DomainList> {
        Arc::new(DomainList::parse(ListName::from(name), text.as_bytes()).expect("valid list"))
    }

    #[test]
    fn label_matching_case_and_trailing_dot() {
        let blocklist = Blocklist::new(vec![list("a.txt", "ads.example.com\n")]);
        let named = |host: &[u8]| blocklist.matches(host).map(ListName::as_str);
        for host in [
            &b"ads.example.com"[..],
            b"x.ads.example.com",
            b"ADS.EXAMPLE.COM",
            b"Deep.X.Ads.Example.Com.",
        ] {
            assert_eq!(named(host), Some("a.txt"), "{host:?}");
        }
        for host in [
            &b"notads.example.com"[..],
            b"example.com",
            b"ads.example.com.evil",
            b"ads.example.co",
            b"",
            b".",
            b"ads.example.com..",
            b"192.0.2.1",
            b"\xff\xfe",
        ] {
            assert_eq!(named(host), None, "{host:?}");
        }
    }

    #[test]
    fn the_first_list_in_order_is_named() {
        let blocklist = Blocklist::new(vec![
            list("first.txt", "tracker.example\n"),
            list("second.txt", "example\nads.other\n"),
        ]);
        assert_eq!(
            blocklist.matches("a.tracker.example").map(ListName::as_str),
            Some("first.txt")
        );
        assert_eq!(
            blocklist.matches("x.example").map(ListName::as_str),
            Some("second.txt")
        );
        assert_eq!(
            blocklist.matches("ads.other").map(ListName::as_str),
            Some("second.txt")
        );
        assert!(!blocklist.is_empty());
        assert!(Blocklist::default().is_empty());
        assert_eq!(Blocklist::default().matches("anything"), None);
    }

    #[test]
    fn a_list_of_only_junk_is_an_error_and_an_empty_one_is_not() {
        let err = DomainList::parse(
            ListName::from("http://lists.example/hosts"),
            b"<!doctype html>\n<html><title>502 Bad Gateway</title></html>\n",
        )
        .expect_err("no names");
        assert_eq!(
            err.to_string(),
            "blocklist http://lists.example/hosts holds no domain name: 2 lines skipped, the \
             first: http://lists.example/hosts:1: neither a hosts line (address, names), a \
             domain, nor an adblock domain rule, line skipped: `<!doctype html>`"
        );
        let empty = DomainList::parse(ListName::from("empty"), b"# nothing yet\n\n")
            .expect("comments only");
        assert!(empty.is_empty());
        assert_eq!(empty.report().lines, 2);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;
        use std::collections::HashSet;

        /// Names from a small alphabet, so listed names and looked-up hosts share labels.
        fn name() -> impl Strategy<Value = String> {
            prop::collection::vec("[abAB]{1,2}", 1..5).prop_map(|labels| labels.join("."))
        }

        /// The obvious implementation: every label suffix of the host, lowercased, in a
        /// set of lowercased names.
        fn model_matches(listed: &HashSet<String>, host: &str) -> bool {
            let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
            let mut suffix = host.as_str();
            loop {
                if listed.contains(suffix) {
                    return true;
                }
                match suffix.split_once('.') {
                    Some((_, rest)) => suffix = rest,
                    None => return false,
                }
            }
        }

        proptest! {
            #[test]
            fn lookups_agree_with_a_plain_set_of_suffixes(
                names in prop::collection::vec(name(), 0..40),
                hosts in prop::collection::vec((name(), any::<bool>()), 1..40),
            ) {
                let text: String = names.iter().map(|n| format!("0.0.0.0 {n}\n")).collect();
                let list = DomainList::parse(ListName::from("p"), text.as_bytes())
                    .expect("valid names");
                let model: HashSet<String> =
                    names.iter().map(|n| n.to_ascii_lowercase()).collect();
                prop_assert_eq!(list.len(), model.len());
                for (host, trailing_dot) in hosts {
                    let host = if trailing_dot { format!("{host}.") } else { host };
                    prop_assert_eq!(list.contains(&host), model_matches(&model, &host), "{}", host);
                }
                for name in &names {
                    let sub = format!("x.{}", name);
                    prop_assert!(list.contains(&sub), "{}", sub);
                }
            }
        }
    }
}
