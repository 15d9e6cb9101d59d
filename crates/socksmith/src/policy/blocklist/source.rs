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

    /// The list's name: the path or URL as given.
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
        let readable: String = url
            .split_once("://")
            .map_or(url.as_str(), |(_, rest)| rest)
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

impl fmt::Display for ListSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListSource::File(path) => write!(f, "{}", path.display()),
            ListSource::Url(url) => f.write_str(url),
        }
    }
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
