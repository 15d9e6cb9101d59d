//! Proxy URLs with curl's semantics, and the typed [`Proxy`] they turn into.
//!
//! `SCHEME://[USER[:PASSWORD]@]HOST[:PORT][/]` where SCHEME is `socks4`, `socks4a`, `socks5`,
//! `socks5h` or `http` (any case), HOST a name, an IPv4 address or an IPv6 address in
//! brackets, PORT 1080 when absent (for `http` too, as curl does). USER and PASSWORD are
//! percent-decoded, so `%40` is an `@` and `%3A` a `:`. `socks4a`, `socks5h` and `http` let
//! the proxy resolve target names; `socks4` and `socks5` resolve them on this side. Over SOCKS4
//! the user is sent as the user id and the password is unused; over HTTP they are sent as
//! `Proxy-Authorization: Basic`.
//!
//! The user information ends at the last `@`, so an unencoded `@` or `:` in a password is fine;
//! a `/`, `?` or `#` there must be percent-encoded (`%2F`, `%3F`, `%23`), as in curl.
//!
//! This module owns parsing and printing only: [`Proxy`]'s `Display` is the URL with the
//! password replaced by `***`, fit for logs and error messages, and [`redact_url`] does the
//! same for text that may not parse. It does no I/O.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use percent_encoding::{percent_decode_str, percent_encode, AsciiSet, CONTROLS};
use socksmith_proto::{ClientVersion, Credentials};

/// The port a proxy URL without one means, as in curl.
pub const DEFAULT_PORT: u16 = 1080;

/// Which protocol a proxy speaks (a SOCKS dialect, or HTTP CONNECT) and who resolves target
/// names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// `socks4://`: IPv4 targets only, names resolved by the client.
    Socks4,
    /// `socks4a://`: IPv4 or names, resolved by the proxy.
    Socks4a,
    /// `socks5://`: names resolved by the client.
    Socks5,
    /// `socks5h://`: names resolved by the proxy.
    Socks5h,
    /// `http://`: an HTTP/1.1 proxy reached in clear text, asked with `CONNECT host:port`
    /// (names resolved by the proxy). It carries CONNECT only: no BIND, UDP ASSOCIATE or
    /// RESOLVE through it as the last hop.
    Http,
}

impl Protocol {
    /// The URL scheme.
    pub fn scheme(self) -> &'static str {
        match self {
            Protocol::Socks4 => "socks4",
            Protocol::Socks4a => "socks4a",
            Protocol::Socks5 => "socks5",
            Protocol::Socks5h => "socks5h",
            Protocol::Http => "http",
        }
    }

    /// Whether the proxy resolves target names (`socks4a`, `socks5h`, `http`).
    pub fn remote_dns(self) -> bool {
        matches!(self, Protocol::Socks4a | Protocol::Socks5h | Protocol::Http)
    }

    /// Whether this is an HTTP proxy (CONNECT only).
    pub fn is_http(self) -> bool {
        self == Protocol::Http
    }

    /// Whether this is SOCKS4 or SOCKS4a.
    pub fn is_v4(self) -> bool {
        matches!(self, Protocol::Socks4 | Protocol::Socks4a)
    }

    /// The version the SOCKS handshake machine speaks; `None` for HTTP, which has no SOCKS
    /// machine.
    pub fn version(self) -> Option<ClientVersion> {
        match self {
            Protocol::Socks4 => Some(ClientVersion::V4),
            Protocol::Socks4a => Some(ClientVersion::V4a),
            Protocol::Socks5 | Protocol::Socks5h => Some(ClientVersion::V5),
            Protocol::Http => None,
        }
    }

    fn from_scheme(scheme: &str) -> Option<Self> {
        [
            Protocol::Socks4,
            Protocol::Socks4a,
            Protocol::Socks5,
            Protocol::Socks5h,
            Protocol::Http,
        ]
        .into_iter()
        .find(|p| p.scheme().eq_ignore_ascii_case(scheme))
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.scheme())
    }
}

/// Where a proxy listens: an IP address, or a name this side resolves when it connects.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ProxyHost {
    /// An IPv4 or IPv6 address.
    Ip(IpAddr),
    /// A host name, resolved when connecting (by this side for the first hop, by the previous
    /// hop or this side for later hops, as that hop's protocol says).
    Name(String),
}

impl fmt::Display for ProxyHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyHost::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            ProxyHost::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            ProxyHost::Name(name) => f.write_str(name),
        }
    }
}

/// The user part of a proxy URL: a SOCKS5 username and password (RFC 1929), a SOCKS4 user
/// id (the password, if any, is not sent), or an HTTP proxy's Basic credentials. `Debug` hides
/// the password.
#[derive(Clone, PartialEq, Eq)]
pub struct UserInfo {
    user: Vec<u8>,
    password: Option<Vec<u8>>,
}

impl UserInfo {
    /// A username with a password.
    pub fn new(user: impl Into<Vec<u8>>, password: impl Into<Vec<u8>>) -> Self {
        UserInfo {
            user: user.into(),
            password: Some(password.into()),
        }
    }

    /// A user alone: a SOCKS4 user id.
    pub fn user_only(user: impl Into<Vec<u8>>) -> Self {
        UserInfo {
            user: user.into(),
            password: None,
        }
    }

    /// The username or user id.
    pub fn user(&self) -> &[u8] {
        &self.user
    }

    /// The password, if one was given.
    pub fn password(&self) -> Option<&[u8]> {
        self.password.as_deref()
    }
}

impl fmt::Debug for UserInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserInfo")
            .field("user", &String::from_utf8_lossy(&self.user))
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

/// One proxy: protocol, address and optional user information. Parse one from a URL with
/// [`str::parse`] or build it with [`Proxy::new`].
///
/// ```
/// use socksmith::client::{Protocol, Proxy};
/// let p: Proxy = "socks5h://alice:p%40ss@[::1]:9050".parse().unwrap();
/// assert_eq!(p.protocol(), Protocol::Socks5h);
/// assert_eq!(p.port(), 9050);
/// assert_eq!(p.user_info().unwrap().password(), Some(&b"p@ss"[..]));
/// // Display never shows the password.
/// assert_eq!(p.to_string(), "socks5h://alice:***@[::1]:9050");
/// // The port defaults to 1080.
/// assert_eq!("socks4://127.0.0.1".parse::<Proxy>().unwrap().port(), 1080);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    protocol: Protocol,
    host: ProxyHost,
    port: u16,
    user_info: Option<UserInfo>,
}

impl Proxy {
    /// A proxy at an address, without user information.
    pub fn new(protocol: Protocol, addr: SocketAddr) -> Self {
        Proxy {
            protocol,
            host: ProxyHost::Ip(addr.ip()),
            port: addr.port(),
            user_info: None,
        }
    }

    /// A proxy reached by host name.
    pub fn with_host(protocol: Protocol, host: ProxyHost, port: u16) -> Self {
        Proxy {
            protocol,
            host,
            port,
            user_info: None,
        }
    }

    /// Sets the username and password (SOCKS5) or user id (SOCKS4).
    ///
    /// The lengths are checked when the client is built ([`super::ClientBuilder::build`]): a
    /// SOCKS5 username and password must each be 1..=255 bytes.
    pub fn with_user_info(mut self, user_info: UserInfo) -> Self {
        self.user_info = Some(user_info);
        self
    }

    /// Sets a username and password.
    pub fn with_credentials(self, user: impl Into<Vec<u8>>, password: impl Into<Vec<u8>>) -> Self {
        self.with_user_info(UserInfo::new(user, password))
    }

    /// The protocol.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The same proxy spoken to with another protocol (a SOCKS5 proxy as `socks5h`, say).
    pub fn with_protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// The host.
    pub fn host(&self) -> &ProxyHost {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The socket address when the host is an IP address.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self.host {
            ProxyHost::Ip(ip) => Some(SocketAddr::new(ip, self.port)),
            ProxyHost::Name(_) => None,
        }
    }

    /// The user information, if any.
    pub fn user_info(&self) -> Option<&UserInfo> {
        self.user_info.as_ref()
    }

    /// The credentials the handshake machine offers a SOCKS5 hop: the username and password
    /// (a user without a password is an error). `None` for SOCKS4, which has no passwords.
    pub(crate) fn credentials(
        &self,
    ) -> Result<Option<Credentials>, socksmith_proto::ProtocolError> {
        let Some(info) = &self.user_info else {
            return Ok(None);
        };
        if self.protocol.is_v4() || self.protocol.is_http() {
            return Ok(None);
        }
        match &info.password {
            Some(password) => Credentials::new(info.user.clone(), password.clone()).map(Some),
            None => Err(socksmith_proto::InvalidInput::PasswordLength(0).into()),
        }
    }

    /// The user id a SOCKS4/4a hop gets, as curl sends it: the URL's user (possibly empty),
    /// or an empty user id without one; the password is not sent. `None` for SOCKS5.
    /// Its length and content are checked by the handshake machine when the request is built.
    pub(crate) fn v4_user_id(&self) -> Option<Vec<u8>> {
        self.protocol.is_v4().then(|| {
            self.user_info
                .as_ref()
                .map(|info| info.user.clone())
                .unwrap_or_default()
        })
    }

    /// The `Proxy-Authorization` value an `http` hop gets: `Basic` with `user:password`
    /// (RFC 7617; a user without a password sends an empty one, as curl does). `None` without
    /// user information or for a SOCKS hop.
    pub(crate) fn basic_authorization(&self) -> Option<String> {
        use base64::Engine as _;
        let info = self
            .user_info
            .as_ref()
            .filter(|_| self.protocol.is_http())?;
        let mut pair = info.user.clone();
        pair.push(b':');
        pair.extend_from_slice(info.password.as_deref().unwrap_or_default());
        Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        ))
    }

    /// The URL with the password (and only the password) shown as `***`: what logs and error
    /// messages print. Same as `Display`.
    pub fn redacted(&self) -> String {
        self.to_string()
    }
}

/// Characters escaped when a user name is printed back into a URL.
const USERINFO: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'%')
    .add(b':')
    .add(b'@')
    .add(b'/')
    .add(b'?')
    .add(b'#')
    .add(b'[')
    .add(b']');

impl fmt::Display for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.protocol)?;
        if let Some(info) = &self.user_info {
            // The bytes themselves, not a lossy UTF-8 reading: a user name percent-decoded
            // to bytes that are not UTF-8 prints back to the same name.
            write!(f, "{}", percent_encode(&info.user, USERINFO))?;
            if info.password.is_some() {
                f.write_str(":***")?;
            }
            f.write_str("@")?;
        }
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Why a proxy URL was refused. The message quotes the URL with its password redacted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid proxy URL {url:?}: {reason}")]
pub struct UrlError {
    /// The URL, password redacted.
    pub url: String,
    /// What is wrong with it.
    pub reason: UrlErrorReason,
}

/// What is wrong with a proxy URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlErrorReason {
    /// No `scheme://`.
    #[error("missing scheme (expected socks4://, socks4a://, socks5://, socks5h:// or http://)")]
    MissingScheme,
    /// A scheme other than the four SOCKS ones and `http`.
    #[error("unsupported scheme {0:?} (expected socks4, socks4a, socks5, socks5h or http)")]
    UnsupportedScheme(String),
    /// Nothing between `@` (or `//`) and the port.
    #[error("missing host")]
    MissingHost,
    /// `[` without a valid IPv6 address and `]`.
    #[error("invalid IPv6 address in brackets")]
    InvalidIpv6,
    /// A port that is not a number in 1..=65535.
    #[error("invalid port {0:?}")]
    InvalidPort(String),
    /// A path, query or fragment after the address.
    #[error("unexpected {0:?} after the address")]
    TrailingData(String),
    /// A `%` not followed by two hex digits in the user information.
    #[error("invalid percent-encoding in the user information")]
    InvalidPercentEncoding,
    /// A `/`, `?` or `#` before the last `@`: in the user information they must be
    /// percent-encoded. (The text is not quoted: it may hold a password.)
    #[error(
        "'/', '?' or '#' before the last '@': percent-encode them in the user information \
         (%2F, %3F, %23)"
    )]
    DelimiterInUserInfo,
    /// A host name with characters no host name has.
    #[error("invalid host name {0:?}")]
    InvalidHost(String),
}

impl FromStr for Proxy {
    type Err = UrlError;

    fn from_str(url: &str) -> Result<Self, UrlError> {
        parse(url).map_err(|reason| UrlError {
            url: redact_url(url.trim()),
            reason,
        })
    }
}

/// Splits `scheme://rest`, where the scheme is a letter followed by letters, digits, `+`, `-`
/// or `.` (RFC 3986). Anything else before a `://` may be user information: no scheme.
fn split_scheme(url: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let mut chars = scheme.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some((scheme, rest))
}

fn parse(url: &str) -> Result<Proxy, UrlErrorReason> {
    let url = url.trim();
    let (scheme, rest) = split_scheme(url).ok_or(UrlErrorReason::MissingScheme)?;
    let protocol = Protocol::from_scheme(scheme)
        .ok_or_else(|| UrlErrorReason::UnsupportedScheme(scheme.to_owned()))?;
    // The user information ends at the last '@' (an unencoded '@' in a password is common),
    // and is split off first: no error below quotes text that may hold a password.
    let (user_info, address) = match rest.rsplit_once('@') {
        Some((info, _)) if info.contains(['/', '?', '#']) => {
            return Err(UrlErrorReason::DelimiterInUserInfo)
        }
        Some((info, address)) => (Some(parse_user_info(info)?), address),
        None => (None, rest),
    };
    // The address ends at the first '/', '?' or '#'; only a lone '/' may follow.
    let end = address.find(['/', '?', '#']).unwrap_or(address.len());
    let (host_port, tail) = address.split_at(end);
    if !tail.is_empty() && tail != "/" {
        return Err(UrlErrorReason::TrailingData(tail.to_owned()));
    }
    let (host, port) = parse_host_port(host_port)?;
    Ok(Proxy {
        protocol,
        host,
        port,
        user_info,
    })
}

fn parse_user_info(info: &str) -> Result<UserInfo, UrlErrorReason> {
    let decode = |s: &str| -> Result<Vec<u8>, UrlErrorReason> {
        check_percent_encoding(s)?;
        Ok(percent_decode_str(s).collect())
    };
    Ok(match info.split_once(':') {
        Some((user, password)) => UserInfo {
            user: decode(user)?,
            password: Some(decode(password)?),
        },
        None => UserInfo {
            user: decode(info)?,
            password: None,
        },
    })
}

/// `percent_decode_str` passes a stray `%` through; curl refuses it, and so do we.
fn check_percent_encoding(s: &str) -> Result<(), UrlErrorReason> {
    let bytes = s.as_bytes();
    for (i, _) in s.match_indices('%') {
        let hex = bytes
            .get(i + 1..i + 3)
            .ok_or(UrlErrorReason::InvalidPercentEncoding)?;
        if !hex.iter().all(u8::is_ascii_hexdigit) {
            return Err(UrlErrorReason::InvalidPercentEncoding);
        }
    }
    Ok(())
}

fn parse_host_port(s: &str) -> Result<(ProxyHost, u16), UrlErrorReason> {
    let (host, port) = if let Some(inner) = s.strip_prefix('[') {
        let (ip, after) = inner.split_once(']').ok_or(UrlErrorReason::InvalidIpv6)?;
        let ip: Ipv6Addr = ip.parse().map_err(|_| UrlErrorReason::InvalidIpv6)?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| UrlErrorReason::TrailingData(p.to_owned()))?,
            ),
        };
        (ProxyHost::Ip(IpAddr::V6(ip)), port)
    } else {
        let (host, port) = match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        };
        if host.is_empty() {
            return Err(UrlErrorReason::MissingHost);
        }
        let host = match host.parse::<IpAddr>() {
            Ok(ip @ IpAddr::V4(_)) => ProxyHost::Ip(ip),
            // An IPv6 address must be in brackets; "::1" here means a ':' was misplaced.
            Ok(IpAddr::V6(_)) => return Err(UrlErrorReason::InvalidHost(host.to_owned())),
            Err(_) => {
                let valid = host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
                if !valid || host.len() > 253 {
                    return Err(UrlErrorReason::InvalidHost(host.to_owned()));
                }
                ProxyHost::Name(host.to_ascii_lowercase())
            }
        };
        (host, port)
    };
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(port) if port != 0 && p.bytes().all(|b| b.is_ascii_digit()) => port,
            _ => return Err(UrlErrorReason::InvalidPort(p.to_owned())),
        },
    };
    Ok((host, port))
}

/// The text of a proxy URL, parsed or not, with the password replaced by `***`: what follows
/// the first `:` of the user information, which runs up to the last `@` after the scheme (or
/// from the start, without a scheme). Fit for messages about URLs that did not parse, and for
/// printing a URL given on a command line.
///
/// ```
/// use socksmith::client::redact_url;
/// assert_eq!(redact_url("socks5://alice:s3cr/etPW@h:1"), "socks5://alice:***@h:1");
/// assert_eq!(redact_url("alice:pw@h"), "alice:***@h");
/// assert_eq!(redact_url("socks4://alice@h"), "socks4://alice@h"); // no password
/// ```
pub fn redact_url(url: &str) -> String {
    let (prefix, rest) = match split_scheme(url) {
        Some((scheme, rest)) => (url.get(..scheme.len() + 3).unwrap_or_default(), rest),
        None => ("", url),
    };
    match rest.rsplit_once('@') {
        Some((info, address)) => match info.split_once(':') {
            Some((user, _)) => format!("{prefix}{user}:***@{address}"),
            // A user without a password, shown as `Display` shows it.
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(url: &str) -> Proxy {
        url.parse()
            .unwrap_or_else(|e| panic!("{url} should parse: {e}"))
    }

    fn reason(url: &str) -> UrlErrorReason {
        url.parse::<Proxy>().expect_err("should not parse").reason
    }

    #[test]
    fn schemes_pick_protocol_and_dns_side() {
        for (url, protocol, remote) in [
            ("socks4://h", Protocol::Socks4, false),
            ("socks4a://h", Protocol::Socks4a, true),
            ("socks5://h", Protocol::Socks5, false),
            ("SOCKS5H://h", Protocol::Socks5h, true),
        ] {
            let p = parse_ok(url);
            assert_eq!(p.protocol(), protocol, "{url}");
            assert_eq!(p.protocol().remote_dns(), remote, "{url}");
            assert_eq!(p.port(), DEFAULT_PORT);
            assert_eq!(p.host(), &ProxyHost::Name("h".into()));
        }
    }

    #[test]
    fn http_proxies_default_to_port_1080_and_send_basic_auth() {
        let p = parse_ok("HTTP://corp.example:3128");
        assert_eq!(p.protocol(), Protocol::Http);
        assert!(p.protocol().remote_dns());
        assert_eq!(p.protocol().version(), None);
        assert_eq!(p.port(), 3128);
        assert_eq!(parse_ok("http://[::1]").port(), DEFAULT_PORT);
        assert_eq!(p.basic_authorization(), None);
        // RFC 7617's example, percent-decoded from the URL first.
        let p = parse_ok("http://Aladdin:open%20sesame@127.0.0.1:8080");
        assert_eq!(
            p.basic_authorization().as_deref(),
            Some("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")
        );
        assert_eq!(p.to_string(), "http://Aladdin:***@127.0.0.1:8080");
        assert_eq!(p.credentials().expect("no SOCKS credentials"), None);
        assert_eq!(p.v4_user_id(), None);
        // A user alone sends an empty password.
        let p = parse_ok("http://bob@127.0.0.1");
        assert_eq!(p.basic_authorization().as_deref(), Some("Basic Ym9iOg=="));
        // SOCKS hops never send Basic credentials.
        assert_eq!(parse_ok("socks5://a:b@h").basic_authorization(), None);
    }

    #[test]
    fn hosts_ports_and_brackets() {
        let p = parse_ok("socks5://127.0.0.1:9050/");
        assert_eq!(
            p.socket_addr(),
            Some("127.0.0.1:9050".parse().expect("addr"))
        );
        let p = parse_ok("socks5://[::1]:1081");
        assert_eq!(p.socket_addr(), Some("[::1]:1081".parse().expect("addr")));
        let p = parse_ok("socks5://[fe80::1]");
        assert_eq!(p.port(), 1080);
        let p = parse_ok("socks5h://Proxy.Example.com:1");
        assert_eq!(p.host(), &ProxyHost::Name("proxy.example.com".into()));
        assert_eq!(p.to_string(), "socks5h://proxy.example.com:1");
    }

    #[test]
    fn credentials_are_percent_decoded_and_redacted() {
        let p = parse_ok("socks5://us%3Aer:p%40ss:w@rd@127.0.0.1:1080");
        let info = p.user_info().expect("user info");
        assert_eq!(info.user(), b"us:er");
        assert_eq!(info.password(), Some(&b"p@ss:w@rd"[..]));
        assert_eq!(p.to_string(), "socks5://us%3Aer:***@127.0.0.1:1080");
        assert!(!format!("{p:?}").contains("p@ss"));
        let creds = p.credentials().expect("valid").expect("some");
        assert_eq!(creds.password(), b"p@ss:w@rd");
    }

    #[test]
    fn a_user_name_that_is_not_utf8_prints_back_to_itself() {
        // Found by the config_values fuzz target: the name was printed through a lossy UTF-8
        // conversion, so "%FF" came back as "%EF%BF%BD".
        let p = parse_ok("socks5://%FF%00@h:1");
        assert_eq!(p.to_string(), "socks5://%FF%00@h:1");
        assert_eq!(parse_ok(&p.to_string()), p);
    }

    #[test]
    fn socks4_user_id_without_password() {
        let p = parse_ok("socks4://alice@127.0.0.1");
        assert_eq!(p.to_string(), "socks4://alice@127.0.0.1:1080");
        assert_eq!(p.v4_user_id().as_deref(), Some(&b"alice"[..]));
        assert_eq!(p.credentials().expect("valid"), None);
        // SOCKS5 needs a password with a username, and has no user id.
        let p = parse_ok("socks5://alice@127.0.0.1");
        assert!(p.credentials().is_err());
        assert_eq!(p.v4_user_id(), None);
        // SOCKS4 ignores the password, even an empty one.
        let p = parse_ok("socks4a://alice:@127.0.0.1");
        assert_eq!(p.v4_user_id().as_deref(), Some(&b"alice"[..]));
        assert_eq!(p.credentials().expect("valid"), None);
        // An empty user, or none, is an empty user id, as curl sends it.
        let p = parse_ok("socks4://@127.0.0.1");
        assert_eq!(p.v4_user_id().as_deref(), Some(&b""[..]));
        let p = parse_ok("socks4://127.0.0.1");
        assert_eq!(p.v4_user_id().as_deref(), Some(&b""[..]));
    }

    #[test]
    fn bad_urls_are_refused_with_the_reason() {
        assert_eq!(reason("127.0.0.1:1080"), UrlErrorReason::MissingScheme);
        assert_eq!(
            reason("https://127.0.0.1"),
            UrlErrorReason::UnsupportedScheme("https".into())
        );
        assert_eq!(reason("socks5://"), UrlErrorReason::MissingHost);
        assert_eq!(reason("socks5://:1080"), UrlErrorReason::MissingHost);
        assert_eq!(reason("socks5://[::1"), UrlErrorReason::InvalidIpv6);
        assert_eq!(reason("socks5://[zz]:1"), UrlErrorReason::InvalidIpv6);
        assert_eq!(
            reason("socks5://h:0"),
            UrlErrorReason::InvalidPort("0".into())
        );
        assert_eq!(
            reason("socks5://h:70000"),
            UrlErrorReason::InvalidPort("70000".into())
        );
        assert_eq!(
            reason("socks5://h:+1"),
            UrlErrorReason::InvalidPort("+1".into())
        );
        assert_eq!(
            reason("socks5://h/path"),
            UrlErrorReason::TrailingData("/path".into())
        );
        assert_eq!(
            reason("socks5://u:%zz@h"),
            UrlErrorReason::InvalidPercentEncoding
        );
        assert_eq!(
            reason("socks5://::1"),
            UrlErrorReason::InvalidHost(":".into())
        );
    }

    #[test]
    fn delimiters_in_the_user_information_must_be_encoded() {
        for url in [
            "socks5://alice:s3cr/etPW@h",
            "socks5://alice:s3cr?etPW@h",
            "socks5://alice:s3cr#etPW@h",
            "socks5://h/a@b",
        ] {
            assert_eq!(reason(url), UrlErrorReason::DelimiterInUserInfo, "{url}");
        }
        let p = parse_ok("socks5://alice:s3cr%2FetPW%3F%23@h");
        let password = p.user_info().and_then(UserInfo::password);
        assert_eq!(password, Some(&b"s3cr/etPW?#"[..]));
        // Only a lone '/' may follow the address, and only after the user information.
        assert_eq!(
            reason("socks5://u:p@h/x"),
            UrlErrorReason::TrailingData("/x".into())
        );
        assert_eq!(parse_ok("socks5://u:p@h:1/").port(), 1);
    }

    #[test]
    fn redact_url_hides_every_password_it_may_find() {
        for (url, redacted) in [
            ("socks5://alice:s3cr/etPW@host", "socks5://alice:***@host"),
            ("socks5h://a:b@c@h:1/x?y", "socks5h://a:***@h:1/x?y"),
            ("socks5://a:p#w@h", "socks5://a:***@h"),
            ("alice:s3cr/etPW@host:1080", "alice:***@host:1080"),
            // Not a scheme: "socks5:/" is taken as part of the user information.
            ("socks5:/alice:pw@h", "socks5:***@h"),
            ("alice:pw@host://x", "alice:***@host://x"),
            ("socks4://alice@h", "socks4://alice@h"),
            ("socks5://h:1", "socks5://h:1"),
        ] {
            assert_eq!(redact_url(url), redacted, "{url}");
        }
    }

    #[test]
    fn error_messages_never_show_the_password() {
        let secret = "s3cr3tPW";
        for url in [
            "socks5://alice:s3cr3tPW@h:99999".to_owned(),
            format!("socks5://alice:{secret}/x@h"),
            format!("socks5://alice:x/{secret}@h"),
            format!("socks5://alice:x?{secret}@h"),
            format!("socks5://alice:x#{secret}@h"),
            format!("socks5://alice:x/{secret}@h/path"),
            format!("socks5://alice:{secret}@h:bad"),
            format!("socks5://alice:{secret}@h/trailing"),
            format!("socks5://alice:{secret}%zz@h"),
            format!("https://alice:{secret}@h"),
            format!("alice:{secret}@h:1080"),
            format!("alice:x://{secret}@h"),
            format!("socks5:/alice:{secret}@h"),
            format!("  socks5://alice:{secret}/x@h  "),
        ] {
            let err = url.parse::<Proxy>().expect_err("invalid");
            let text = err.to_string();
            assert!(!text.contains(secret), "{url}: {text}");
            assert!(!format!("{err:?}").contains(secret), "{url}: {err:?}");
        }

        let err = "socks5://bob:hunter2@h:99999"
            .parse::<Proxy>()
            .expect_err("bad port");
        let text = err.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert_eq!(
            text,
            "invalid proxy URL \"socks5://bob:***@h:99999\": invalid port \"99999\""
        );
    }
}
