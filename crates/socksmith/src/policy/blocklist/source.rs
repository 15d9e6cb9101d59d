//! Where a list comes from: a file, or an `http://`/`https://` URL, and where a URL's last
//! good copy is cached.

use std::fmt;
use std::path::{Path, PathBuf};

use super::ListName;

/// A list's source, as given on the command line or in the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListSource {
    /// A file, read at start and at every refresh.
    File(PathBuf),
    /// An `http://` or `https://` URL, fetched at start and at every refresh.
    Url(String),
}

impl ListSource {
    /// A URL when `source` starts with `http://` or `https://` (any case), a file path
    /// otherwise.
    ///
    /// ```
    /// use socksmith::policy::blocklist::ListSource;
    ///
    /// assert!(matches!(ListSource::parse("https://lists.example/hosts"), ListSource::Url(_)));
    /// assert!(matches!(ListSource::parse("/etc/socksmith/ads.txt"), ListSource::File(_)));
    /// ```
    pub fn parse(source: &str) -> ListSource {
        let lower = source.get(..8).unwrap_or(source).to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            ListSource::Url(source.to_owned())
        } else {
            ListSource::File(PathBuf::from(source))
        }
    }

    /// The list's name: the path, or the URL with its secrets hidden (see the `Display`
    /// implementation), as logs, metrics and the status page show it.
    pub fn name(&self) -> ListName {
        ListName::from(self.to_string())
    }

    /// The file in `dir` that holds this URL's last good copy; `None` for a file source.
    /// The name keeps the URL readable (other bytes become `_`) and ends with a hash of
    /// the whole URL, so two URLs never share a file.
    pub fn cache_file(&self, dir: &Path) -> Option<PathBuf> {
        let ListSource::Url(url) = self else {
            return None;
        };
        let shown = redacted(url);
        let readable: String = shown
            .split_once("://")
            .map_or(shown.as_str(), |(_, rest)| rest)
            .chars()
            .take(80)
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Some(dir.join(format!("{readable}-{:016x}.list", fnv1a(url.as_bytes()))))
    }
}

/// A path as given; a URL with its password (`user:***@`, or `***@` for a user part that
/// may be a token), and the values of query parameters named like secrets (`token`, `key`,
/// `secret`, `pass`, `auth`, `sig`, `credential`), shown as `***`.
impl fmt::Display for ListSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListSource::File(path) => write!(f, "{}", path.display()),
            ListSource::Url(url) => f.write_str(&redacted(url)),
        }
    }
}

/// `url` with its secrets hidden (see [`ListSource`]'s `Display`).
pub(super) fn redacted(url: &str) -> String {
    const SECRET_KEYS: [&str; 7] = [
        "token",
        "key",
        "secret",
        "pass",
        "auth",
        "sig",
        "credential",
    ];
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, after) = rest.split_at(authority_end);
    let mut out = String::with_capacity(url.len());
    out.push_str(scheme);
    out.push_str("://");
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            match userinfo.split_once(':') {
                Some((user, _password)) => {
                    out.push_str(user);
                    out.push_str(":***");
                }
                None => out.push_str("***"),
            }
            out.push('@');
            out.push_str(host);
        }
        None => out.push_str(authority),
    }
    let (path_and_query, fragment) = match after.split_once('#') {
        Some((before, fragment)) => (before, Some(fragment)),
        None => (after, None),
    };
    match path_and_query.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            for (i, pair) in query.split('&').enumerate() {
                if i > 0 {
                    out.push('&');
                }
                match pair.split_once('=') {
                    Some((name, _))
                        if SECRET_KEYS
                            .iter()
                            .any(|secret| name.to_ascii_lowercase().contains(secret)) =>
                    {
                        out.push_str(name);
                        out.push_str("=***");
                    }
                    _ => out.push_str(pair),
                }
            }
        }
        None => out.push_str(path_and_query),
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

/// FNV-1a, 64 bits: a hash that stays the same across Rust versions and runs, so a cache
/// file written by one build is found by the next (std's `DefaultHasher` promises neither).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_paths() {
        assert_eq!(
            ListSource::parse("HTTP://Lists.Example/x"),
            ListSource::Url("HTTP://Lists.Example/x".into())
        );
        assert_eq!(
            ListSource::parse("http:relative"),
            ListSource::File("http:relative".into())
        );
        assert_eq!(ListSource::parse("ads.txt").name().as_str(), "ads.txt");
        assert_eq!(
            ListSource::parse("https://a.example/h").name().as_str(),
            "https://a.example/h"
        );
    }

    #[test]
    fn a_urls_secrets_never_show_in_its_name() {
        for (url, shown) in [
            ("https://a.example/h", "https://a.example/h"),
            (
                "https://u:topsecret@a.example/h",
                "https://u:***@a.example/h",
            ),
            (
                "https://ghp_token123@a.example:8443/h",
                "https://***@a.example:8443/h",
            ),
            (
                "http://a.example/list.txt?token=abc&format=hosts&api_key=k#top",
                "http://a.example/list.txt?token=***&format=hosts&api_key=***#top",
            ),
            (
                "http://a.example?Signature=x",
                "http://a.example?Signature=***",
            ),
        ] {
            let name = ListSource::parse(url).name();
            assert_eq!(name.as_str(), shown, "{url}");
        }
        let cache = ListSource::parse("https://u:topsecret@a.example/h?token=abc")
            .cache_file(Path::new("/cache"))
            .expect("a URL");
        let cache = cache.to_string_lossy();
        assert!(
            !cache.contains("topsecret") && !cache.contains("abc"),
            "{cache}"
        );
    }

    #[test]
    fn cache_files_are_readable_stable_and_distinct() {
        let dir = Path::new("/cache");
        let a = ListSource::parse("https://lists.example/hosts?x=1")
            .cache_file(dir)
            .expect("a URL");
        let b = ListSource::parse("https://lists.example/hosts?x=2")
            .cache_file(dir)
            .expect("a URL");
        assert_ne!(a, b);
        let name = a.file_name().and_then(|n| n.to_str()).expect("utf-8");
        assert!(name.starts_with("lists.example_hosts_x_1-"), "{name}");
        assert!(name.ends_with(".list"));
        // The same on every run and build.
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(ListSource::parse("ads.txt").cache_file(dir), None);
    }
}
