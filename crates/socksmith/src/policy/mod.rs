//! The decision point between "request decoded" and "connect": may this session do what it
//! asks?
//!
//! Pure code, no I/O: a [`Policy`] looks at a [`Session`] (client address, user, version,
//! command, target) and returns a [`Decision`]. The server calls it exactly once per request,
//! before any resolution or connection; a [`Decision::Deny`] is answered with reply 0x02
//! ("connection not allowed by ruleset"; SOCKS4: 0x5B) and the reason goes to the log line.
//!
//! [`Rules`] is the policy the server uses unless told otherwise. Its safety defaults:
//!
//! - **Cloud metadata** is refused: the link-local ranges (169.254.0.0/16, fe80::/10, where
//!   169.254.169.254 answers), AWS's IPv6 endpoint `fd00:ec2::254` and Alibaba's
//!   `100.100.100.200`, because a proxy that reaches them hands the host's credentials to
//!   its clients ([`Rules::allow_link_local`] lifts this).
//! - **The proxy host's own addresses** (loopback, and every address of its interfaces, kept
//!   current by [`LocalAddresses`]) are refused to clients that did not come in over loopback
//!   themselves ([`LoopbackTargets::LocalClients`]): for a server listening on loopback (the
//!   default) every client is local and nothing changes, but the authenticated users of a
//!   public proxy must not reach the services listening on the proxy host (databases, admin
//!   ports on 127.0.0.1 or on 0.0.0.0) that no one outside was meant to reach, whether they
//!   name 127.0.0.1 or the host's LAN or public address.
//! - **Unusable addresses** (unspecified, multicast, broadcast) are refused.
//!
//! Private ranges are allowed. An IPv6 address that carries an IPv4 one (IPv4-mapped
//! `::ffff:0:0/96`, IPv4-compatible `::/96`, NAT64 `64:ff9b::/96`) is checked as that IPv4
//! address too, so `[64:ff9b::a9fe:a9fe]` is not a way around 169.254.169.254. Names are
//! checked again by address once resolved: the direct outbound and the UDP relay call
//! [`Policy::check_address`] on each address before using it. Further destination prefixes
//! can be denied with [`Rules::deny`].
//!
//! This module does not own authentication (see [`crate::server::Authenticator`]) nor the
//! open-proxy guard on listeners (see [`crate::server::ServerConfig::allow_open_proxy`]).

pub mod blocklist;
mod limits;
mod local;
mod net;
mod rules;

pub use limits::{
    Bucket, KeyedSlots, LimitExceeded, LimitKind, Limits, LimitsConfig, Permit, Rate, RateLimits,
    RateParseError, Slot, UserBuckets,
};
pub use local::LocalAddresses;
pub use net::{IpNet, IpNetParseError};
pub use rules::{
    Action, ClientFilter, CommandKind, PortConfig, RuleConfig, RuleError, RulePolicy, RuleSet,
};

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use socksmith_proto::TargetAddr;

use crate::session::Session;

/// What a [`Policy`] says about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Allow,
    /// Refuse with reply 0x02 (SOCKS4: 0x5B); the reason is logged, never sent.
    Deny(DenyReason),
}

/// Why a request was refused: one readable line for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DenyReason {
    /// The target address lies in a link-local range (cloud metadata services live there).
    LinkLocalTarget(IpAddr),
    /// The target is a cloud metadata address outside the link-local ranges
    /// (`fd00:ec2::254`, `100.100.100.200`).
    MetadataTarget(IpAddr),
    /// The target is the proxy host itself (a loopback address or one of its interfaces'
    /// addresses), refused to this client (see [`LoopbackTargets`]).
    LoopbackTarget(IpAddr),
    /// The target address lies in a prefix the configuration denies.
    DeniedNetwork {
        /// The address asked for.
        ip: IpAddr,
        /// The denied prefix it falls in.
        net: IpNet,
    },
    /// The target is not a usable destination: the unspecified address (0.0.0.0, ::), a
    /// multicast or broadcast address.
    UnusableTarget(IpAddr),
    /// The name (the request's, or the one sniffed from the client's first bytes or DNS
    /// query) is on a blocklist.
    Blocked {
        /// The name as the client sent it.
        host: String,
        /// The list that holds it (its file path or URL).
        list: String,
    },
    /// The client named its target by IP address only, and the server requires names
    /// ([`crate::server::ServerConfig::require_hostname`]).
    HostnameRequired(IpAddr),
    /// A custom policy's own reason.
    Other(String),
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DenyReason::LinkLocalTarget(ip) => {
                write!(
                    f,
                    "target {ip} is link-local (metadata services) and refused"
                )
            }
            DenyReason::MetadataTarget(ip) => {
                write!(f, "target {ip} is a cloud metadata address and refused")
            }
            DenyReason::LoopbackTarget(ip) if ip.is_loopback() => write!(
                f,
                "target {ip} is on the proxy host's loopback, refused to clients from elsewhere"
            ),
            DenyReason::LoopbackTarget(ip) => write!(
                f,
                "target {ip} is an address of the proxy host, refused to clients from elsewhere"
            ),
            DenyReason::DeniedNetwork { ip, net } => {
                write!(f, "target {ip} is in denied network {net}")
            }
            DenyReason::UnusableTarget(ip) => write!(f, "target {ip} is not a usable destination"),
            DenyReason::Blocked { host, list } => {
                write!(f, "{host:?} is on the blocklist {list}")
            }
            DenyReason::HostnameRequired(ip) => write!(
                f,
                "target {ip} sent as an address, and this server requires host names: \
                 let the proxy resolve (socks5h:// or socks4a:// instead of socks5:// or socks4://)"
            ),
            DenyReason::Other(reason) => f.write_str(reason),
        }
    }
}

/// Decides whether a session may do what it asks.
///
/// Implementations must be cheap and must not block: they run on the session's task, once per
/// request. Everything they may look at is in the [`Session`].
pub trait Policy: Send + Sync + fmt::Debug {
    /// The verdict on a decoded request, before anything is resolved or connected.
    fn check_request(&self, session: &Session) -> Decision;

    /// The verdict on one destination of a UDP association (each datagram names its own).
    /// By default [`Policy::check_address`] for an address; a name is checked by address
    /// once resolved.
    fn check_udp_destination(&self, session: &Session, target: &TargetAddr) -> Decision {
        match target.ip_literal() {
            Some(addr) => self.check_address(session, addr.ip()),
            None => Decision::Allow,
        }
    }

    /// The verdict on an address `session` is about to reach: each address a name resolved
    /// to, and each UDP destination. By default [`Policy::check_ip`].
    fn check_address(&self, session: &Session, ip: IpAddr) -> Decision {
        let _ = session;
        self.check_ip(ip)
    }

    /// The verdict on a bare IP address, whoever asks.
    fn check_ip(&self, ip: IpAddr) -> Decision {
        let _ = ip;
        Decision::Allow
    }
}

/// Who may reach the proxy host's own addresses through it: loopback (127.0.0.0/8, ::1) and
/// every address of its interfaces (see [`LocalAddresses`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum LoopbackTargets {
    /// Every client.
    Allow,
    /// Clients that reached the server on a loopback address, that is, programs on the
    /// proxy host itself, which can reach its loopback anyway. The default.
    #[default]
    LocalClients,
    /// No client.
    Deny,
}

/// The built-in policy: destination rules by address.
///
/// `Rules::default()` refuses cloud metadata addresses (the link-local ranges among them),
/// the host's own addresses (loopback and its interfaces') for clients that did not come in
/// over loopback, and unusable addresses
/// (unspecified, multicast, broadcast); it allows everything else. An IPv6 address carrying
/// an IPv4 one (mapped, compatible, NAT64) is judged by both.
///
/// ```
/// use socksmith::policy::{Decision, IpNet, LoopbackTargets, Rules};
///
/// let rules = Rules::default().deny("10.0.0.0/8".parse::<IpNet>().unwrap());
/// assert!(matches!(rules.check_ip("10.1.2.3".parse().unwrap()), Decision::Deny(_)));
/// assert!(matches!(rules.check_ip("64:ff9b::10.1.2.3".parse().unwrap()), Decision::Deny(_)));
/// assert!(matches!(rules.check_ip("169.254.169.254".parse().unwrap()), Decision::Deny(_)));
/// assert_eq!(rules.check_ip("192.168.1.1".parse().unwrap()), Decision::Allow);
/// // Without a session, only an explicit rule refuses loopback.
/// assert_eq!(rules.check_ip("127.0.0.1".parse().unwrap()), Decision::Allow);
/// let public = Rules::default().loopback(LoopbackTargets::Deny);
/// assert!(matches!(public.check_ip("127.0.0.1".parse().unwrap()), Decision::Deny(_)));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    allow_link_local: bool,
    loopback: LoopbackTargets,
    denied: Vec<IpNet>,
    host: LocalAddresses,
}

/// Alibaba Cloud's metadata service, outside the link-local range.
const ALIBABA_METADATA: Ipv4Addr = Ipv4Addr::new(100, 100, 100, 200);
/// AWS's IPv6 instance metadata endpoint (Nitro instances), outside fe80::/10.
const AWS_METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

impl Rules {
    /// Also refuse targets in `net`.
    pub fn deny(mut self, net: IpNet) -> Self {
        self.denied.push(net);
        self
    }

    /// Allow (`true`) or refuse (`false`, the default) cloud metadata targets: the
    /// link-local ranges 169.254.0.0/16 and fe80::/10, `fd00:ec2::254` and
    /// `100.100.100.200`.
    pub fn allow_link_local(mut self, allow: bool) -> Self {
        self.allow_link_local = allow;
        self
    }

    /// Who may reach the proxy host's loopback (default [`LoopbackTargets::LocalClients`]).
    pub fn loopback(mut self, rule: LoopbackTargets) -> Self {
        self.loopback = rule;
        self
    }

    /// Which addresses are the proxy host's own (default [`LocalAddresses::system`]: its
    /// interfaces, kept current).
    pub fn host_addresses(mut self, host: LocalAddresses) -> Self {
        self.host = host;
        self
    }

    /// The prefixes refused besides the built-in ones.
    pub fn denied(&self) -> &[IpNet] {
        &self.denied
    }

    /// The verdict on one address, whoever asks (see [`Policy::check_ip`]). Knowing no
    /// session, [`LoopbackTargets::LocalClients`] allows loopback here; the server calls
    /// [`Rules::check_address`], which knows where the client came in.
    pub fn check_ip(&self, ip: IpAddr) -> Decision {
        self.check(ip, self.loopback != LoopbackTargets::Deny)
    }

    /// The verdict on an address `session` is about to reach (see
    /// [`Policy::check_address`]).
    pub fn check_address(&self, session: &Session, ip: IpAddr) -> Decision {
        let loopback_allowed = match self.loopback {
            LoopbackTargets::Allow => true,
            LoopbackTargets::Deny => false,
            LoopbackTargets::LocalClients => session.local.ip().to_canonical().is_loopback(),
        };
        self.check(ip, loopback_allowed)
    }

    fn check(&self, ip: IpAddr, loopback_allowed: bool) -> Decision {
        let ip = ip.to_canonical();
        // The address as given, then the IPv4 address it carries, if any: a rule about
        // either refuses.
        for ip in [Some(ip), embedded_ipv4(ip).map(IpAddr::V4)]
            .into_iter()
            .flatten()
        {
            if let Some(reason) = self.refusal(ip, loopback_allowed) {
                return Decision::Deny(reason);
            }
        }
        Decision::Allow
    }

    fn refusal(&self, ip: IpAddr, loopback_allowed: bool) -> Option<DenyReason> {
        if ip.is_unspecified() || ip.is_multicast() || ip == IpAddr::V4(Ipv4Addr::BROADCAST) {
            return Some(DenyReason::UnusableTarget(ip));
        }
        if !self.allow_link_local {
            if is_link_local(ip) {
                return Some(DenyReason::LinkLocalTarget(ip));
            }
            if ip == IpAddr::V4(ALIBABA_METADATA) || ip == IpAddr::V6(AWS_METADATA_V6) {
                return Some(DenyReason::MetadataTarget(ip));
            }
        }
        // Loopback first: it needs no interface snapshot.
        if !loopback_allowed && (ip.is_loopback() || self.host.contains(ip)) {
            return Some(DenyReason::LoopbackTarget(ip));
        }
        self.denied
            .iter()
            .find(|net| net.contains(ip))
            .map(|net| DenyReason::DeniedNetwork { ip, net: *net })
    }
}

impl Policy for Rules {
    fn check_request(&self, session: &Session) -> Decision {
        use socksmith_proto::Command;
        match session.command {
            // The target of these names no destination to reach: BIND's is the peer expected
            // to connect in, UDP ASSOCIATE's the client's own sending address, RESOLVE's a
            // name to look up. Destinations of UDP datagrams are checked one by one.
            Command::Bind | Command::UdpAssociate | Command::Resolve | Command::ResolvePtr => {
                Decision::Allow
            }
            _ => match session.target.ip_literal() {
                Some(addr) => self.check_address(session, addr.ip()),
                // A name: the direct outbound checks each address it resolves to with
                // `check_address` before connecting, so a name cannot smuggle a denied
                // address.
                None => Decision::Allow,
            },
        }
    }

    fn check_address(&self, session: &Session, ip: IpAddr) -> Decision {
        Rules::check_address(self, session, ip)
    }

    fn check_ip(&self, ip: IpAddr) -> Decision {
        Rules::check_ip(self, ip)
    }
}

/// The IPv4 address an IPv6 one carries, by the embeddings a host may still route:
/// IPv4-compatible `::a.b.c.d` (deprecated, but not to be a way around a rule; `::` and `::1`
/// are themselves) and NAT64's well-known prefix `64:ff9b::/96` (RFC 6052), which a NAT64
/// gateway translates to that IPv4 address. IPv4-mapped addresses are canonicalised before.
fn embedded_ipv4(ip: IpAddr) -> Option<Ipv4Addr> {
    let IpAddr::V6(v6) = ip else { return None };
    let bits = u128::from(v6);
    let low = Ipv4Addr::from((bits & 0xffff_ffff) as u32);
    match bits >> 32 {
        0 if bits > 1 => Some(low),
        0x0064_ff9b_0000_0000_0000_0000 => Some(low),
        _ => None,
    }
}

/// 169.254.0.0/16 and fe80::/10.
fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use socksmith_proto::{Command, Version};
    use std::net::SocketAddr;

    fn session(command: Command, target: TargetAddr) -> Session {
        Session {
            client: "127.0.0.1:5000".parse().expect("literal"),
            local: "127.0.0.1:1080".parse().expect("literal"),
            user: None,
            version: Version::V5,
            http: false,
            command,
            target,
        }
    }

    fn ip_target(s: &str) -> TargetAddr {
        TargetAddr::Ip(s.parse::<SocketAddr>().expect("literal"))
    }

    #[test]
    fn default_rules_allow_loopback_private_and_names() {
        let rules = Rules::default();
        for target in ["127.0.0.1:80", "[::1]:80", "10.0.0.1:22", "192.168.1.1:443"] {
            let s = session(Command::Connect, ip_target(target));
            assert_eq!(rules.check_request(&s), Decision::Allow, "{target}");
        }
        let name = TargetAddr::domain("example.com", 80).expect("valid");
        assert_eq!(
            rules.check_request(&session(Command::Connect, name)),
            Decision::Allow
        );
    }

    #[test]
    fn default_rules_refuse_metadata_addresses_even_spelled_as_names() {
        let rules = Rules::default();
        let cases = [
            ip_target("169.254.169.254:80"),
            ip_target("[fe80::1]:80"),
            ip_target("[::ffff:169.254.169.254]:80"),
            TargetAddr::domain("169.254.169.254", 80).expect("valid"),
        ];
        for target in cases {
            let verdict = rules.check_request(&session(Command::Connect, target.clone()));
            assert!(
                matches!(verdict, Decision::Deny(DenyReason::LinkLocalTarget(_))),
                "{target}: {verdict:?}"
            );
        }
        let allowed = Rules::default().allow_link_local(true);
        assert_eq!(
            allowed.check_request(&session(Command::Connect, ip_target("169.254.169.254:80"))),
            Decision::Allow
        );
    }

    #[test]
    fn unusable_targets_are_refused() {
        let rules = Rules::default();
        for target in ["0.0.0.0:80", "[::]:80", "224.0.0.1:80", "255.255.255.255:9"] {
            let verdict = rules.check_request(&session(Command::Connect, ip_target(target)));
            assert!(
                matches!(verdict, Decision::Deny(DenyReason::UnusableTarget(_))),
                "{target}: {verdict:?}"
            );
        }
    }

    #[test]
    fn denied_networks_refuse_with_the_prefix_in_the_reason() {
        let rules = Rules::default().deny("127.0.0.2/32".parse().expect("valid prefix"));
        let verdict = rules.check_request(&session(Command::Connect, ip_target("127.0.0.2:80")));
        let Decision::Deny(reason) = verdict else {
            panic!("expected a denial, got {verdict:?}")
        };
        assert_eq!(
            reason.to_string(),
            "target 127.0.0.2 is in denied network 127.0.0.2/32"
        );
        assert_eq!(
            rules.check_request(&session(Command::Connect, ip_target("127.0.0.1:80"))),
            Decision::Allow
        );
    }

    #[test]
    fn bind_and_udp_requests_are_not_destinations_but_datagrams_are() {
        let rules = Rules::default().deny("127.0.0.0/8".parse().expect("valid prefix"));
        let s = session(Command::UdpAssociate, ip_target("0.0.0.0:0"));
        assert_eq!(rules.check_request(&s), Decision::Allow);
        let bind = session(Command::Bind, ip_target("127.0.0.1:0"));
        assert_eq!(rules.check_request(&bind), Decision::Allow);
        assert!(matches!(
            rules.check_udp_destination(&s, &ip_target("127.0.0.1:53")),
            Decision::Deny(DenyReason::DeniedNetwork { .. })
        ));
        assert_eq!(
            rules.check_udp_destination(&s, &ip_target("[::1]:53")),
            Decision::Allow
        );
    }

    fn from_elsewhere(command: Command, target: TargetAddr) -> Session {
        Session {
            client: "198.51.100.7:5000".parse().expect("literal"),
            local: "192.0.2.10:1080".parse().expect("literal"),
            ..session(command, target)
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("literal")
    }

    #[test]
    fn cloud_metadata_addresses_are_refused_in_every_spelling() {
        let rules = Rules::default();
        let cases = [
            (
                "[fd00:ec2::254]:80",
                "fd00:ec2::254 is a cloud metadata address",
            ),
            (
                "100.100.100.200:80",
                "100.100.100.200 is a cloud metadata address",
            ),
            (
                "[::ffff:100.100.100.200]:80",
                "100.100.100.200 is a cloud metadata",
            ),
            ("[64:ff9b::a9fe:a9fe]:80", "169.254.169.254 is link-local"),
            (
                "[64:ff9b::100.100.100.200]:80",
                "100.100.100.200 is a cloud metadata",
            ),
            ("[::169.254.169.254]:80", "169.254.169.254 is link-local"),
            (
                "[::ffff:169.254.169.254]:80",
                "169.254.169.254 is link-local",
            ),
        ];
        for (target, reason) in cases {
            let s = session(Command::Connect, ip_target(target));
            let Decision::Deny(denied) = rules.check_request(&s) else {
                panic!("{target} allowed")
            };
            assert!(denied.to_string().contains(reason), "{target}: {denied}");
            // A name resolving there, and a UDP datagram, meet the same rule.
            let addr = ip_target(target).ip_literal().expect("an address").ip();
            assert!(matches!(rules.check_address(&s, addr), Decision::Deny(_)));
            assert!(matches!(
                rules.check_udp_destination(&s, &ip_target(target)),
                Decision::Deny(_)
            ));
        }
        let allowed = Rules::default().allow_link_local(true);
        for target in [
            "[fd00:ec2::254]:80",
            "100.100.100.200:80",
            "[64:ff9b::a9fe:a9fe]:80",
        ] {
            let s = session(Command::Connect, ip_target(target));
            assert_eq!(allowed.check_request(&s), Decision::Allow, "{target}");
        }
        // Neighbours of the metadata addresses are ordinary.
        for addr in ["100.100.100.201", "fd00:ec2::253", "64:ff9b::808:808"] {
            assert_eq!(rules.check_ip(ip(addr)), Decision::Allow, "{addr}");
        }
    }

    #[test]
    fn embedded_ipv4_addresses_meet_the_ipv4_rules() {
        let rules = Rules::default().deny("10.0.0.0/8".parse().expect("valid prefix"));
        for addr in [
            "10.1.2.3",
            "::ffff:10.1.2.3",
            "::10.1.2.3",
            "64:ff9b::10.1.2.3",
        ] {
            assert!(
                matches!(
                    rules.check_ip(ip(addr)),
                    Decision::Deny(DenyReason::DeniedNetwork { .. })
                ),
                "{addr}"
            );
        }
        // A denied IPv6 prefix still applies to the IPv6 form.
        let nat64 = Rules::default().deny("64:ff9b::/96".parse().expect("valid prefix"));
        assert!(matches!(
            nat64.check_ip(ip("64:ff9b::8.8.8.8")),
            Decision::Deny(_)
        ));
        // `::` and `::1` are themselves, not 0.0.0.0 and 0.0.0.1.
        assert!(matches!(
            rules.check_ip(ip("::")),
            Decision::Deny(DenyReason::UnusableTarget(_))
        ));
        assert_eq!(rules.check_ip(ip("::1")), Decision::Allow);
        assert_eq!(rules.check_ip(ip("2001:db8::10.1.2.3")), Decision::Allow);
    }

    #[test]
    fn loopback_targets_are_for_local_clients_unless_configured() {
        let loopbacks = [
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "64:ff9b::127.0.0.1",
        ];
        let target = ip_target("127.0.0.1:22");
        let local = session(Command::Connect, target.clone());
        let remote = from_elsewhere(Command::Connect, target.clone());
        let rules = Rules::default();
        assert_eq!(rules.check_request(&local), Decision::Allow);
        assert!(matches!(
            rules.check_request(&remote),
            Decision::Deny(DenyReason::LoopbackTarget(_))
        ));
        for addr in loopbacks {
            assert_eq!(
                rules.check_address(&local, ip(addr)),
                Decision::Allow,
                "{addr}"
            );
            assert!(
                matches!(
                    rules.check_address(&remote, ip(addr)),
                    Decision::Deny(DenyReason::LoopbackTarget(_))
                ),
                "{addr}"
            );
            let udp = from_elsewhere(Command::UdpAssociate, ip_target("0.0.0.0:0"));
            let dest = TargetAddr::Ip(std::net::SocketAddr::new(ip(addr), 53));
            assert!(matches!(
                rules.check_udp_destination(&udp, &dest),
                Decision::Deny(_)
            ));
        }
        let Decision::Deny(reason) = rules.check_request(&remote) else {
            unreachable!("checked above")
        };
        assert_eq!(
            reason.to_string(),
            "target 127.0.0.1 is on the proxy host's loopback, refused to clients from elsewhere"
        );

        let open = Rules::default().loopback(LoopbackTargets::Allow);
        assert_eq!(open.check_request(&remote), Decision::Allow);
        let closed = Rules::default().loopback(LoopbackTargets::Deny);
        assert!(matches!(closed.check_request(&local), Decision::Deny(_)));
        assert!(matches!(closed.check_ip(ip("::1")), Decision::Deny(_)));
        // Other addresses of a public server's clients are unaffected.
        assert_eq!(
            rules.check_request(&from_elsewhere(Command::Connect, ip_target("10.0.0.1:22"))),
            Decision::Allow
        );
    }

    #[test]
    fn the_hosts_interface_addresses_are_refused_like_its_loopback() {
        // Issue 13, finding 2: with the proxy on 192.0.2.10, CONNECT 192.0.2.10:7000 must not
        // reach a service listening on 0.0.0.0:7000 any more than 127.0.0.1:7000 may.
        let host = LocalAddresses::fixed([ip("192.0.2.10"), ip("2001:db8::10")]);
        let rules = Rules::default().host_addresses(host.clone());
        for target in [
            "192.0.2.10:7000",
            "[::ffff:192.0.2.10]:7000",
            "[64:ff9b::192.0.2.10]:7000",
            "[2001:db8::10]:7000",
            "127.0.0.1:7000",
        ] {
            let remote = from_elsewhere(Command::Connect, ip_target(target));
            assert!(
                matches!(
                    rules.check_request(&remote),
                    Decision::Deny(DenyReason::LoopbackTarget(_))
                ),
                "{target}"
            );
            let local = session(Command::Connect, ip_target(target));
            assert_eq!(rules.check_request(&local), Decision::Allow, "{target}");
        }
        let remote = from_elsewhere(Command::Connect, ip_target("192.0.2.10:7000"));
        let Decision::Deny(reason) = rules.check_request(&remote) else {
            unreachable!("checked above")
        };
        assert_eq!(
            reason.to_string(),
            "target 192.0.2.10 is an address of the proxy host, refused to clients from elsewhere"
        );
        // A name resolving to the host, and a UDP datagram to it, are refused the same way.
        let name = from_elsewhere(
            Command::Connect,
            TargetAddr::domain("proxy.example", 7000).expect("valid"),
        );
        assert!(matches!(
            rules.check_address(&name, ip("192.0.2.10")),
            Decision::Deny(DenyReason::LoopbackTarget(_))
        ));
        let udp = from_elsewhere(Command::UdpAssociate, ip_target("0.0.0.0:0"));
        assert!(matches!(
            rules.check_udp_destination(&udp, &ip_target("192.0.2.10:53")),
            Decision::Deny(_)
        ));
        // Neighbours on the same network are other hosts.
        let neighbour = from_elsewhere(Command::Connect, ip_target("192.0.2.11:7000"));
        assert_eq!(rules.check_request(&neighbour), Decision::Allow);
        // `LoopbackTargets::Allow` lifts it; `Deny` refuses the host to everyone.
        let open = Rules::default()
            .host_addresses(host.clone())
            .loopback(LoopbackTargets::Allow);
        assert_eq!(open.check_request(&remote), Decision::Allow);
        let closed = Rules::default()
            .host_addresses(host)
            .loopback(LoopbackTargets::Deny);
        assert!(matches!(
            closed.check_ip(ip("192.0.2.10")),
            Decision::Deny(_)
        ));
    }
}
