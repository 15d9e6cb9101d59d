//! The decision point between "request decoded" and "connect": may this session do what it
//! asks?
//!
//! Pure code, no I/O: a [`Policy`] looks at a [`Session`] (client address, user, version,
//! command, target) and returns a [`Decision`]. The server calls it exactly once per request,
//! before any resolution or connection; a [`Decision::Deny`] is answered with reply 0x02
//! ("connection not allowed by ruleset"; SOCKS4: 0x5B) and the reason goes to the log line.
//!
//! [`Rules`] is the policy the server uses unless told otherwise. Its safety default: targets
//! in the link-local ranges (169.254.0.0/16, fe80::/10, where cloud metadata services such as
//! 169.254.169.254 answer) are refused, because a proxy that reaches them hands the host's
//! credentials to its clients. Names are checked again by address once resolved (the direct
//! outbound calls [`Policy::check_ip`] on each address before connecting). Loopback and private ranges are allowed by default: the server
//! listens on loopback unless told otherwise, so its clients are local already. Further
//! destination prefixes can be denied with [`Rules::deny`].
//!
//! This module does not own authentication (see [`crate::server::Authenticator`]) nor the
//! open-proxy guard on listeners (see [`crate::server::ServerConfig::allow_open_proxy`]).

mod net;

pub use net::{IpNet, IpNetParseError};

use std::fmt;
use std::net::IpAddr;

use socksmith_proto::TargetAddr;

use crate::server::Session;

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
            DenyReason::DeniedNetwork { ip, net } => {
                write!(f, "target {ip} is in denied network {net}")
            }
            DenyReason::UnusableTarget(ip) => write!(f, "target {ip} is not a usable destination"),
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
    /// By default the same rules as a request's target.
    fn check_udp_destination(&self, session: &Session, target: &TargetAddr) -> Decision {
        let _ = session;
        match target.ip_literal() {
            Some(addr) => self.check_ip(addr.ip()),
            None => Decision::Allow,
        }
    }

    /// The verdict on a bare IP address a session is about to reach.
    fn check_ip(&self, ip: IpAddr) -> Decision {
        let _ = ip;
        Decision::Allow
    }
}

/// The built-in policy: destination rules by address.
///
/// `Rules::default()` refuses link-local targets and unusable addresses (unspecified,
/// multicast, broadcast) and allows everything else.
///
/// ```
/// use socksmith::policy::{Decision, IpNet, Rules};
///
/// let rules = Rules::default().deny("10.0.0.0/8".parse::<IpNet>().unwrap());
/// assert!(matches!(rules.check_ip("10.1.2.3".parse().unwrap()), Decision::Deny(_)));
/// assert_eq!(rules.check_ip("127.0.0.1".parse().unwrap()), Decision::Allow);
/// assert!(matches!(rules.check_ip("169.254.169.254".parse().unwrap()), Decision::Deny(_)));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    allow_link_local: bool,
    denied: Vec<IpNet>,
}

impl Rules {
    /// Also refuse targets in `net`.
    pub fn deny(mut self, net: IpNet) -> Self {
        self.denied.push(net);
        self
    }

    /// Allow (`true`) or refuse (`false`, the default) link-local targets.
    pub fn allow_link_local(mut self, allow: bool) -> Self {
        self.allow_link_local = allow;
        self
    }

    /// The prefixes refused besides the built-in ones.
    pub fn denied(&self) -> &[IpNet] {
        &self.denied
    }

    /// The verdict on one address (see [`Policy::check_ip`]).
    pub fn check_ip(&self, ip: IpAddr) -> Decision {
        let ip = ip.to_canonical();
        if ip.is_unspecified() || ip.is_multicast() || ip == IpAddr::from([255, 255, 255, 255]) {
            return Decision::Deny(DenyReason::UnusableTarget(ip));
        }
        if !self.allow_link_local && is_link_local(ip) {
            return Decision::Deny(DenyReason::LinkLocalTarget(ip));
        }
        match self.denied.iter().find(|net| net.contains(ip)) {
            Some(net) => Decision::Deny(DenyReason::DeniedNetwork { ip, net: *net }),
            None => Decision::Allow,
        }
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
                Some(addr) => self.check_ip(addr.ip()),
                // A name: the direct outbound checks each address it resolves to with
                // `check_ip` before connecting, so a name cannot smuggle a denied address.
                None => Decision::Allow,
            },
        }
    }

    fn check_ip(&self, ip: IpAddr) -> Decision {
        Rules::check_ip(self, ip)
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
}
