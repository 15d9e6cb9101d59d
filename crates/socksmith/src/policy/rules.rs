//! Access rules from the configuration file (`[[rules]]` tables): who may connect, and where
//! to, decided by the first rule that matches.
//!
//! ```toml
//! default = "deny"              # what happens when no rule matches (default "allow")
//!
//! [[rules]]
//! name = "no-internal"          # for logs and metrics
//! action = "deny"               # required: "allow" or "deny"
//! to = ["10.0.0.0/8"]           # target networks, checked again after resolution
//!
//! [[rules]]
//! action = "allow"
//! from = ["192.0.2.0/24"]       # client networks
//! users = ["alice", "bob"]      # authenticated SOCKS5 users
//! commands = ["connect"]        # connect, bind, udp, resolve
//! domains = ["example.com", ".example.org", "*.example.net"]
//! ports = [80, 443, "8000-8999"]
//! ```
//!
//! A rule matches a request when every key it has matches (a key left out matches anything;
//! inside one key, any listed value will do). `domains` holds exact names (`a.example`) and
//! label suffixes (`.example` and `*.example` both match `x.example` and `y.x.example`, not
//! `example` itself nor `notexample`); case and a trailing dot do not matter. A target given
//! as an IP address has no name, so it never matches `domains`. `users` matches only users
//! who authenticated with a password (SOCKS5); a SOCKS4 user id is an unverified claim and
//! matches nothing.
//!
//! **Names and addresses.** A request for a name says nothing yet about `to`: while a rule
//! could still match depending on the address, [`Policy::check_request`] lets the request go
//! on, and the verdict comes from [`Policy::check_address`], which the server calls for each
//! address the name resolves to, with name, port and address all known. So a name that
//! resolves into a denied range is denied. Where a fact is never known to the rules (the
//! destination name and port of a UDP datagram once resolved, which `check_address` does not
//! carry), the rules fail closed: a deny rule that might match denies, an allow rule that
//! might match is passed over. Two inherent methods give the last word where the trait's
//! methods cannot: [`RuleSet::check_resolved`] (a datagram's name, port and address
//! together) and [`RuleSet::check_unresolved`] (a name passed on to an upstream that resolves
//! it, so `to` is never known here).
//!
//! [`RuleSet`] is the rules alone; [`RulePolicy`] is what the server runs: the safety
//! defaults of [`Rules`] first (metadata and link-local targets, the host's own addresses for
//! remote clients), then the rules. [`RuleConfig`] is a `[[rules]]` table as written
//! (serde), converted once into a [`RuleSet`] with errors that name the rule and the key.
//!
//! [`ClientFilter`] is the `--allow-from NET` check the accept loop makes before reading
//! anything from a client. This module does not own blocklists or limits.

use std::fmt;
use std::net::IpAddr;
use std::ops::RangeInclusive;

use serde::Deserialize;
use socksmith_proto::{Command, TargetAddr, Version};

use super::{embedded_ipv4, Decision, DenyReason, IpNet, Policy, Rules};
use crate::server::Session;

/// What a rule does with the requests it matches, and what happens to a request no rule
/// matches (the top-level `default`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Let the request through.
    #[default]
    Allow,
    /// Refuse it with reply 0x02 (SOCKS4: 0x5B).
    Deny,
}

/// The commands a rule can name in `commands`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CommandKind {
    /// CONNECT.
    Connect,
    /// BIND.
    Bind,
    /// UDP ASSOCIATE and the datagrams it relays.
    Udp,
    /// Tor's RESOLVE and RESOLVE_PTR.
    Resolve,
}

impl CommandKind {
    fn of(command: Command) -> Option<CommandKind> {
        match command {
            Command::Connect => Some(CommandKind::Connect),
            Command::Bind => Some(CommandKind::Bind),
            Command::UdpAssociate => Some(CommandKind::Udp),
            Command::Resolve | Command::ResolvePtr => Some(CommandKind::Resolve),
            _ => None,
        }
    }
}

/// One `[[rules]]` table as written in the configuration file. Lists left out match
/// anything; an empty list is refused (it would match nothing, which is never meant).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// `"allow"` or `"deny"` (required).
    pub action: Action,
    /// A name for logs and metrics.
    #[serde(default)]
    pub name: Option<String>,
    /// Client networks (`"192.0.2.0/24"`, `"2001:db8::1"`).
    #[serde(default)]
    pub from: Option<Vec<String>>,
    /// Authenticated users.
    #[serde(default)]
    pub users: Option<Vec<String>>,
    /// Commands.
    #[serde(default)]
    pub commands: Option<Vec<CommandKind>>,
    /// Target networks, checked for literal targets and again for each address a name
    /// resolves to.
    #[serde(default)]
    pub to: Option<Vec<String>>,
    /// Target names: exact `a.example`, or label suffixes `.example` / `*.example`.
    #[serde(default)]
    pub domains: Option<Vec<String>>,
    /// Target ports: numbers or ranges `"8000-8999"`.
    #[serde(default)]
    pub ports: Option<Vec<PortConfig>>,
}

/// One entry of `ports` as written: `443` or `"8000-8999"` (or `"443"`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum PortConfig {
    /// A port number (checked to be 0..=65535 on conversion).
    Number(i64),
    /// A port or an inclusive range `"LOW-HIGH"`.
    Text(String),
}

/// Why a `[[rules]]` table could not be used: the rule (by position and name) and the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("[[rules]] #{position}{}, key `{key}`: {problem}", name_suffix(name.as_deref()))]
pub struct RuleError {
    /// Which `[[rules]]` table, from 1.
    pub position: usize,
    /// Its `name`, if it has one.
    pub name: Option<String>,
    /// The key at fault.
    pub key: &'static str,
    /// What is wrong.
    pub problem: String,
}

fn name_suffix(name: Option<&str>) -> String {
    name.map(|n| format!(" ({n:?})")).unwrap_or_default()
}

/// Access rules, first match wins (see the module documentation). Alone it knows nothing of
/// the safety defaults; the server runs it inside a [`RulePolicy`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleSet {
    rules: Vec<Rule>,
    default: Action,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    /// `"name" (#2)` or `#2`: how denials and logs refer to the rule.
    label: String,
    action: Action,
    from: Option<Vec<IpNet>>,
    users: Option<Vec<String>>,
    commands: Option<Vec<CommandKind>>,
    to: Option<Vec<IpNet>>,
    domains: Option<Vec<DomainPattern>>,
    ports: Option<Vec<RangeInclusive<u16>>>,
}

/// A `domains` entry: lowercase, without a trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DomainPattern {
    Exact(String),
    /// Matches names ending in `.` + this, at a label boundary.
    Below(String),
}

impl RuleSet {
    /// The rules of the `[[rules]]` tables, in order, and the top-level `default` (allow
    /// when absent).
    pub fn from_config(default: Option<Action>, rules: &[RuleConfig]) -> Result<Self, RuleError> {
        let rules = rules
            .iter()
            .enumerate()
            .map(|(index, config)| Rule::from_config(index + 1, config))
            .collect::<Result<_, _>>()?;
        Ok(RuleSet {
            rules,
            default: default.unwrap_or_default(),
        })
    }

    /// How many rules there are.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are none (and the default is allow): such a set allows everything.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && self.default == Action::Allow
    }

    /// The last verdict on a request whose name will not be resolved here (an upstream whose
    /// last hop resolves names): `to` can never be checked, so a deny rule with `to` that
    /// could match denies, and an allow rule that needs `to` is passed over.
    pub fn check_unresolved(&self, session: &Session) -> Decision {
        deny(self.decide(session, Facts::of_target(&session.target), true))
    }

    /// The last verdict on one destination once resolved, with everything known: `target`
    /// as the client named it (a UDP datagram's destination, or the session's target) and
    /// `ip`, the address about to be reached. More precise than [`Policy::check_address`]
    /// for UDP datagrams, whose name and port the session does not carry.
    pub fn check_resolved(&self, session: &Session, target: &TargetAddr, ip: IpAddr) -> Decision {
        let facts = Facts {
            ip: Some(ip),
            ..Facts::of_target(target)
        };
        deny(self.decide(session, facts, true))
    }

    /// The verdict for `session`'s request to `target`, with `ip` the address being reached
    /// when known. `final_check` says whether this is the last look: then a rule that cannot
    /// be decided fails closed (a deny rule denies, an allow rule is passed over); before
    /// that, an undecided rule lets the request go on to the address check.
    fn decide(
        &self,
        session: &Session,
        target: Facts<'_>,
        final_check: bool,
    ) -> Option<DenyReason> {
        for rule in &self.rules {
            match rule.matches(session, &target) {
                Match::No => continue,
                Match::Yes => return rule.verdict(),
                Match::Maybe if !final_check => return None,
                Match::Maybe => match rule.action {
                    Action::Deny => {
                        return Some(DenyReason::Other(format!(
                            "denied by rule {} (it may match, and the target's name, port or \
                             address is not known here)",
                            rule.label
                        )))
                    }
                    Action::Allow => continue,
                },
            }
        }
        match self.default {
            Action::Allow => None,
            Action::Deny => Some(DenyReason::Other(
                "no rule matched and the default is deny".to_owned(),
            )),
        }
    }
}

fn deny(reason: Option<DenyReason>) -> Decision {
    reason.map_or(Decision::Allow, Decision::Deny)
}

impl Policy for RuleSet {
    fn check_request(&self, session: &Session) -> Decision {
        let facts = match session.command {
            // UDP ASSOCIATE's target is the client's own sending address; each datagram's
            // destination is checked on its own.
            Command::UdpAssociate => Facts::UNKNOWN,
            _ => Facts::of_target(&session.target),
        };
        // A literal target is known completely now; a name waits for its addresses.
        let final_check = facts.ip.is_some() && session.command != Command::UdpAssociate;
        deny(self.decide(session, facts, final_check))
    }

    fn check_udp_destination(&self, session: &Session, target: &TargetAddr) -> Decision {
        let facts = Facts::of_target(target);
        let final_check = facts.ip.is_some();
        deny(self.decide(session, facts, final_check))
    }

    fn check_address(&self, session: &Session, ip: IpAddr) -> Decision {
        let facts = match session.command {
            // The association's request says nothing of the datagram being resolved.
            Command::UdpAssociate => Facts {
                ip: Some(ip),
                ..Facts::UNKNOWN
            },
            _ => Facts {
                ip: Some(ip),
                ..Facts::of_target(&session.target)
            },
        };
        deny(self.decide(session, facts, true))
    }
}

/// What is known of a request's destination. `None` means not known here.
#[derive(Debug, Clone, Copy)]
struct Facts<'a> {
    /// `Some(None)`: the target is an address and has no name.
    name: Option<Option<&'a [u8]>>,
    ip: Option<IpAddr>,
    port: Option<u16>,
}

impl<'a> Facts<'a> {
    const UNKNOWN: Facts<'static> = Facts {
        name: None,
        ip: None,
        port: None,
    };

    fn of_target(target: &'a TargetAddr) -> Facts<'a> {
        let port = Some(target.port());
        match (target.ip_literal(), target) {
            (Some(addr), _) => Facts {
                name: Some(None),
                ip: Some(addr.ip()),
                port,
            },
            (None, TargetAddr::Domain(name, _)) => Facts {
                name: Some(Some(name.as_bytes())),
                ip: None,
                port,
            },
            (None, _) => Facts {
                port,
                ..Facts::UNKNOWN
            },
        }
    }
}

/// Whether a rule matches, with "cannot tell yet" as a third answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Match {
    Yes,
    No,
    Maybe,
}

impl Match {
    fn of(known: Option<bool>) -> Match {
        match known {
            Some(true) => Match::Yes,
            Some(false) => Match::No,
            None => Match::Maybe,
        }
    }

    /// Every key must match: one "no" decides, else one "maybe" leaves it open.
    fn and(self, other: Match) -> Match {
        match (self, other) {
            (Match::No, _) | (_, Match::No) => Match::No,
            (Match::Maybe, _) | (_, Match::Maybe) => Match::Maybe,
            _ => Match::Yes,
        }
    }
}

impl Rule {
    fn from_config(position: usize, config: &RuleConfig) -> Result<Rule, RuleError> {
        let error = |key: &'static str, problem: String| RuleError {
            position,
            name: config.name.clone(),
            key,
            problem,
        };
        let list = |key: &'static str, values: &Option<Vec<String>>| match values {
            Some(values) if values.is_empty() => Err(error(
                key,
                "an empty list matches nothing; leave the key out to match anything".to_owned(),
            )),
            _ => Ok(values.clone()),
        };
        let nets = |key: &'static str, values: &Option<Vec<String>>| {
            list(key, values)?
                .map(|values| {
                    values
                        .iter()
                        .map(|v| {
                            v.parse::<IpNet>()
                                .map_err(|e| error(key, format!("{v:?}: {e}")))
                        })
                        .collect::<Result<Vec<_>, _>>()
                })
                .transpose()
        };
        let commands = match &config.commands {
            Some(commands) if commands.is_empty() => {
                return Err(error(
                    "commands",
                    "an empty list matches nothing; leave the key out to match anything".to_owned(),
                ))
            }
            other => other.clone(),
        };
        let domains = list("domains", &config.domains)?
            .map(|values| {
                values
                    .iter()
                    .map(|v| DomainPattern::parse(v).map_err(|e| error("domains", e)))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        let ports = match &config.ports {
            Some(ports) if ports.is_empty() => {
                return Err(error(
                    "ports",
                    "an empty list matches nothing; leave the key out to match anything".to_owned(),
                ))
            }
            Some(ports) => Some(
                ports
                    .iter()
                    .map(|p| parse_ports(p).map_err(|e| error("ports", e)))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            None => None,
        };
        if let Some(name) = &config.name {
            if name.is_empty() || name.chars().any(char::is_control) {
                return Err(error(
                    "name",
                    "must be non-empty text without control characters".to_owned(),
                ));
            }
        }
        let label = match &config.name {
            Some(name) => format!("{name:?} (#{position})"),
            None => format!("#{position}"),
        };
        Ok(Rule {
            label,
            action: config.action,
            from: nets("from", &config.from)?,
            users: list("users", &config.users)?,
            commands,
            to: nets("to", &config.to)?,
            domains,
            ports,
        })
    }

    fn verdict(&self) -> Option<DenyReason> {
        match self.action {
            Action::Allow => None,
            Action::Deny => Some(DenyReason::Other(format!("denied by rule {}", self.label))),
        }
    }

    fn matches(&self, session: &Session, target: &Facts<'_>) -> Match {
        let mut result = Match::Yes;
        if let Some(from) = &self.from {
            let client = session.client.ip().to_canonical();
            result = result.and(Match::of(Some(from.iter().any(|n| n.contains(client)))));
        }
        if let Some(users) = &self.users {
            // Only a password-checked SOCKS5 user is an identity; SOCKS4's user id is a claim.
            let user = session
                .user
                .as_deref()
                .filter(|_| session.version == Version::V5);
            let known = user.is_some_and(|u| users.iter().any(|name| name == u));
            result = result.and(Match::of(Some(known)));
        }
        if let Some(commands) = &self.commands {
            let kind = CommandKind::of(session.command);
            result = result.and(Match::of(Some(kind.is_some_and(|k| commands.contains(&k)))));
        }
        if let Some(to) = &self.to {
            let known = target.ip.map(|ip| {
                let ip = ip.to_canonical();
                let embedded = embedded_ipv4(ip).map(IpAddr::V4);
                to.iter()
                    .any(|net| net.contains(ip) || embedded.is_some_and(|v4| net.contains(v4)))
            });
            result = result.and(Match::of(known));
        }
        if let Some(domains) = &self.domains {
            let known = target
                .name
                .map(|name| name.is_some_and(|name| domains.iter().any(|d| d.matches(name))));
            result = result.and(Match::of(known));
        }
        if let Some(ports) = &self.ports {
            let known = target
                .port
                .map(|port| ports.iter().any(|r| r.contains(&port)));
            result = result.and(Match::of(known));
        }
        result
    }
}

impl DomainPattern {
    fn parse(text: &str) -> Result<DomainPattern, String> {
        let lower = text.trim().to_ascii_lowercase();
        let trimmed = lower.strip_suffix('.').unwrap_or(&lower);
        let (below, name) = match trimmed
            .strip_prefix("*.")
            .or_else(|| trimmed.strip_prefix('.'))
        {
            Some(rest) => (true, rest),
            None => (false, trimmed),
        };
        let valid_label = |label: &str| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        // A name spelled as an address is judged as the address (by `to`), so such an entry
        // would never match: refused here instead of ignored.
        if trimmed.parse::<std::net::IpAddr>().is_ok() || name.parse::<std::net::Ipv4Addr>().is_ok()
        {
            return Err(format!(
                "{text:?} is an IP address, which never matches `domains` (a request for it is \
                 judged by its address): put it in `to` instead"
            ));
        }
        if name.is_empty() || name.len() > 253 || !name.split('.').all(valid_label) {
            return Err(format!(
                "{text:?} is not a domain name, `.name` or `*.name` (letters, digits, `-`, `_` \
                 in dot-separated labels)"
            ));
        }
        Ok(if below {
            DomainPattern::Below(name.to_owned())
        } else {
            DomainPattern::Exact(name.to_owned())
        })
    }

    /// Compares by label, ignoring ASCII case and a trailing dot.
    fn matches(&self, name: &[u8]) -> bool {
        let name = name.strip_suffix(b".").unwrap_or(name);
        match self {
            DomainPattern::Exact(exact) => name.eq_ignore_ascii_case(exact.as_bytes()),
            DomainPattern::Below(parent) => {
                let parent = parent.as_bytes();
                name.len() > parent.len() + 1
                    && name
                        .get(name.len() - parent.len()..)
                        .is_some_and(|tail| tail.eq_ignore_ascii_case(parent))
                    && name.get(name.len() - parent.len() - 1) == Some(&b'.')
            }
        }
    }
}

fn parse_ports(port: &PortConfig) -> Result<RangeInclusive<u16>, String> {
    let number = |text: &str| {
        text.trim()
            .parse::<u16>()
            .map_err(|_| format!("{text:?} is not a port number (0..=65535)"))
    };
    match port {
        PortConfig::Number(n) => u16::try_from(*n)
            .map(|p| p..=p)
            .map_err(|_| format!("{n} is not a port number (0..=65535)")),
        PortConfig::Text(text) => match text.split_once('-') {
            Some((low, high)) => {
                let (low, high) = (number(low)?, number(high)?);
                if low > high {
                    return Err(format!("{text:?}: the range's start is above its end"));
                }
                Ok(low..=high)
            }
            None => number(text).map(|p| p..=p),
        },
    }
}

/// What the server runs when the configuration has rules: the safety defaults of [`Rules`]
/// first, then the [`RuleSet`]. A request the safety defaults refuse is refused whatever
/// the rules say; the rules can only refuse more, or let through what they do not refuse.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RulePolicy {
    safety: Rules,
    rules: RuleSet,
}

impl RulePolicy {
    /// `safety` first, then `rules`.
    pub fn new(safety: Rules, rules: RuleSet) -> Self {
        RulePolicy { safety, rules }
    }

    /// The safety defaults.
    pub fn safety(&self) -> &Rules {
        &self.safety
    }

    /// The rules.
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// [`RuleSet::check_unresolved`] after the safety defaults' [`Policy::check_request`].
    pub fn check_unresolved(&self, session: &Session) -> Decision {
        match self.safety.check_request(session) {
            Decision::Allow => self.rules.check_unresolved(session),
            deny => deny,
        }
    }

    /// [`RuleSet::check_resolved`] after the safety defaults' [`Policy::check_address`].
    pub fn check_resolved(&self, session: &Session, target: &TargetAddr, ip: IpAddr) -> Decision {
        match Policy::check_address(&self.safety, session, ip) {
            Decision::Allow => self.rules.check_resolved(session, target, ip),
            deny => deny,
        }
    }
}

impl Policy for RulePolicy {
    fn check_request(&self, session: &Session) -> Decision {
        match self.safety.check_request(session) {
            Decision::Allow => self.rules.check_request(session),
            deny => deny,
        }
    }

    fn check_udp_destination(&self, session: &Session, target: &TargetAddr) -> Decision {
        match self.safety.check_udp_destination(session, target) {
            Decision::Allow => self.rules.check_udp_destination(session, target),
            deny => deny,
        }
    }

    fn check_address(&self, session: &Session, ip: IpAddr) -> Decision {
        match Policy::check_address(&self.safety, session, ip) {
            Decision::Allow => self.rules.check_address(session, ip),
            deny => deny,
        }
    }

    /// Only the safety defaults: the rules need a session to be judged by.
    fn check_ip(&self, ip: IpAddr) -> Decision {
        self.safety.check_ip(ip)
    }
}

/// `--allow-from NET` (repeatable): the client networks the server accepts connections from.
/// With none listed every client is accepted; otherwise a client outside all of them is to be
/// closed right after accept, before a byte is read or sent.
///
/// ```
/// use socksmith::policy::ClientFilter;
///
/// let filter = ClientFilter::new(vec!["192.0.2.0/24".parse().unwrap()]);
/// assert!(filter.allows("192.0.2.7".parse().unwrap()));
/// assert!(filter.allows("::ffff:192.0.2.7".parse().unwrap()));
/// assert!(!filter.allows("198.51.100.1".parse().unwrap()));
/// assert!(ClientFilter::default().allows("198.51.100.1".parse().unwrap()));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientFilter {
    networks: Vec<IpNet>,
}

impl ClientFilter {
    /// Accept clients in `networks` only (all clients when empty).
    pub fn new(networks: Vec<IpNet>) -> Self {
        ClientFilter { networks }
    }

    /// Whether the client at `ip` may connect (IPv4-mapped IPv6 counts as IPv4).
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.networks.is_empty() || self.networks.iter().any(|net| net.contains(ip))
    }

    /// The networks listed.
    pub fn networks(&self) -> &[IpNet] {
        &self.networks
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    /// The rules as the configuration file would hold them.
    fn rules(toml_text: &str) -> RuleSet {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            default: Option<Action>,
            #[serde(default)]
            rules: Vec<RuleConfig>,
        }
        let file: File = toml::from_str(toml_text).expect("valid TOML");
        RuleSet::from_config(file.default, &file.rules).expect("valid rules")
    }

    fn rule_error(toml_text: &str) -> String {
        #[derive(Deserialize)]
        struct File {
            rules: Vec<RuleConfig>,
        }
        let file: File = toml::from_str(toml_text).expect("valid TOML");
        RuleSet::from_config(None, &file.rules)
            .expect_err("invalid rules")
            .to_string()
    }

    fn target(text: &str) -> TargetAddr {
        match text.parse::<SocketAddr>() {
            Ok(addr) => TargetAddr::Ip(addr),
            Err(_) => {
                let (name, port) = text.rsplit_once(':').expect("name:port");
                TargetAddr::domain(name, port.parse().expect("port")).expect("valid name")
            }
        }
    }

    fn session(command: Command, to: &str) -> Session {
        Session {
            client: "192.0.2.7:5000".parse().expect("literal"),
            local: "192.0.2.1:1080".parse().expect("literal"),
            user: None,
            version: Version::V5,
            command,
            target: target(to),
            http: false,
        }
    }

    fn connect(to: &str) -> Session {
        session(Command::Connect, to)
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("literal")
    }

    fn denied(decision: Decision) -> String {
        match decision {
            Decision::Deny(reason) => reason.to_string(),
            Decision::Allow => panic!("expected a denial"),
        }
    }

    #[test]
    fn no_rules_allow_everything_and_default_deny_refuses_what_no_rule_allows() {
        let open = rules("");
        assert!(open.is_empty());
        assert_eq!(
            open.check_request(&connect("198.51.100.1:80")),
            Decision::Allow
        );

        let closed = rules(
            r#"
            default = "deny"
            [[rules]]
            action = "allow"
            ports = [443]
            "#,
        );
        assert_eq!(
            closed.check_request(&connect("198.51.100.1:443")),
            Decision::Allow
        );
        assert_eq!(
            denied(closed.check_request(&connect("198.51.100.1:80"))),
            "no rule matched and the default is deny"
        );
    }

    #[test]
    fn the_first_matching_rule_wins_and_the_denial_names_it() {
        let set = rules(
            r#"
            [[rules]]
            name = "office-ssh"
            action = "allow"
            from = ["192.0.2.0/24"]
            ports = [22]

            [[rules]]
            name = "no-ssh"
            action = "deny"
            ports = [22]

            [[rules]]
            action = "deny"
            ports = [23]
            "#,
        );
        assert_eq!(set.len(), 3);
        assert_eq!(
            set.check_request(&connect("198.51.100.1:22")),
            Decision::Allow
        );
        let mut outside = connect("198.51.100.1:22");
        outside.client = "203.0.113.9:4000".parse().expect("literal");
        assert_eq!(
            denied(set.check_request(&outside)),
            "denied by rule \"no-ssh\" (#2)"
        );
        assert_eq!(
            denied(set.check_request(&connect("198.51.100.1:23"))),
            "denied by rule #3"
        );
    }

    #[test]
    fn from_matches_client_networks_of_both_families() {
        let set = rules(
            r#"
            [[rules]]
            action = "deny"
            from = ["192.0.2.0/28", "2001:db8::/32"]
            "#,
        );
        assert!(matches!(
            set.check_request(&connect("198.51.100.1:80")),
            Decision::Deny(_)
        ));
        let mut mapped = connect("198.51.100.1:80");
        mapped.client = "[::ffff:192.0.2.7]:5000".parse().expect("literal");
        assert!(matches!(set.check_request(&mapped), Decision::Deny(_)));
        let mut v6 = connect("198.51.100.1:80");
        v6.client = "[2001:db8::9]:5000".parse().expect("literal");
        assert!(matches!(set.check_request(&v6), Decision::Deny(_)));
        let mut elsewhere = connect("198.51.100.1:80");
        elsewhere.client = "192.0.2.77:5000".parse().expect("literal");
        assert_eq!(set.check_request(&elsewhere), Decision::Allow);
    }

    #[test]
    fn users_match_only_authenticated_socks5_users() {
        let set = rules(
            r#"
            default = "deny"
            [[rules]]
            action = "allow"
            users = ["alice", "bob"]
            "#,
        );
        let mut alice = connect("198.51.100.1:80");
        alice.user = Some("alice".to_owned());
        assert_eq!(set.check_request(&alice), Decision::Allow);
        let mut carol = alice.clone();
        carol.user = Some("carol".to_owned());
        assert!(matches!(set.check_request(&carol), Decision::Deny(_)));
        let anonymous = connect("198.51.100.1:80");
        assert!(matches!(set.check_request(&anonymous), Decision::Deny(_)));
        let mut socks4_claim = alice.clone();
        socks4_claim.version = Version::V4;
        assert!(matches!(
            set.check_request(&socks4_claim),
            Decision::Deny(_)
        ));
    }

    #[test]
    fn commands_match_their_kind() {
        let set = rules(
            r#"
            [[rules]]
            action = "deny"
            commands = ["bind", "udp", "resolve"]
            "#,
        );
        assert_eq!(
            set.check_request(&connect("198.51.100.1:80")),
            Decision::Allow
        );
        for command in [
            Command::Bind,
            Command::UdpAssociate,
            Command::Resolve,
            Command::ResolvePtr,
        ] {
            let s = session(command, "198.51.100.1:80");
            assert!(
                matches!(set.check_request(&s), Decision::Deny(_)),
                "{command:?}"
            );
        }
        let only_connect = rules(
            r#"
            default = "deny"
            [[rules]]
            action = "allow"
            commands = ["connect"]
            "#,
        );
        assert_eq!(
            only_connect.check_request(&connect("a.example:80")),
            Decision::Allow
        );
        assert!(matches!(
            only_connect.check_request(&session(Command::Bind, "0.0.0.0:0")),
            Decision::Deny(_)
        ));
    }

    #[test]
    fn to_matches_literals_and_every_address_a_name_resolves_to() {
        let set = rules(
            r#"
            [[rules]]
            name = "internal"
            action = "deny"
            to = ["10.0.0.0/8", "fd00::/8"]
            "#,
        );
        assert!(matches!(
            set.check_request(&connect("10.1.2.3:80")),
            Decision::Deny(_)
        ));
        assert!(matches!(
            set.check_request(&connect("[fd12::1]:80")),
            Decision::Deny(_)
        ));
        // Embedded IPv4 forms are the same destination.
        for spelled in ["[::ffff:10.1.2.3]:80", "[64:ff9b::10.1.2.3]:80"] {
            assert!(
                matches!(set.check_request(&connect(spelled)), Decision::Deny(_)),
                "{spelled}"
            );
        }
        assert_eq!(
            set.check_request(&connect("198.51.100.1:80")),
            Decision::Allow
        );

        // A name cannot be judged by `to` before it is resolved: it goes on, and each
        // address it resolves to is checked.
        let name = connect("intranet.example:80");
        assert_eq!(set.check_request(&name), Decision::Allow);
        assert_eq!(
            denied(set.check_address(&name, ip("10.9.9.9"))),
            "denied by rule \"internal\" (#1)"
        );
        assert_eq!(
            set.check_address(&name, ip("198.51.100.1")),
            Decision::Allow
        );
    }

    #[test]
    fn a_name_resolving_into_a_denied_range_is_denied_even_behind_an_allow_rule_for_others() {
        // First match wins after resolution too: the allow rule for the name comes first
        // only where it matches.
        let set = rules(
            r#"
            default = "deny"
            [[rules]]
            action = "deny"
            to = ["10.0.0.0/8"]
            [[rules]]
            action = "allow"
            domains = [".example"]
            "#,
        );
        let name = connect("www.example:443");
        assert_eq!(set.check_request(&name), Decision::Allow, "decided later");
        assert!(matches!(
            set.check_address(&name, ip("10.0.0.5")),
            Decision::Deny(_)
        ));
        assert_eq!(set.check_address(&name, ip("203.0.113.5")), Decision::Allow);
        // A name no rule can allow is refused at once.
        let mut other = rules(
            r#"
            default = "deny"
            [[rules]]
            action = "allow"
            domains = [".example"]
            "#,
        );
        assert!(matches!(
            other.check_request(&connect("www.test:443")),
            Decision::Deny(_)
        ));
        other.default = Action::Allow;
        assert_eq!(
            other.check_request(&connect("www.test:443")),
            Decision::Allow
        );
    }

    #[test]
    fn domains_match_exactly_or_by_label_suffix_whatever_the_case_or_trailing_dot() {
        let set = rules(
            r#"
            [[rules]]
            action = "deny"
            domains = ["exact.example", ".dot.example", "*.star.example"]
            "#,
        );
        for name in [
            "exact.example",
            "EXACT.Example.",
            "a.dot.example",
            "b.a.dot.example",
            "x.star.example",
            "X.Y.STAR.EXAMPLE.",
        ] {
            let verdict = set.check_request(&connect(&format!("{name}:443")));
            assert!(matches!(verdict, Decision::Deny(_)), "{name}");
        }
        for name in [
            "sub.exact.example",
            "dot.example",
            "notdot.example",
            "star.example",
            "xstar.example",
            "example",
        ] {
            let verdict = set.check_request(&connect(&format!("{name}:443")));
            assert_eq!(verdict, Decision::Allow, "{name}");
        }
        // An address target has no name.
        assert_eq!(
            set.check_request(&connect("198.51.100.1:443")),
            Decision::Allow
        );
        // A name spelled as an address is an address: judged by `to`, not `domains`.
        let mut spelled = connect("198.51.100.1:443");
        spelled.target = TargetAddr::domain("10.1.2.3", 443).expect("valid name");
        assert_eq!(set.check_request(&spelled), Decision::Allow);
        let internal = rules("[[rules]]\naction = \"deny\"\nto = [\"10.0.0.0/8\"]");
        assert!(matches!(
            internal.check_request(&spelled),
            Decision::Deny(_)
        ));
    }

    #[test]
    fn ports_take_numbers_and_ranges() {
        let set = rules(
            r#"
            default = "deny"
            [[rules]]
            action = "allow"
            ports = [80, "443", "8000-8999"]
            "#,
        );
        for port in [80, 443, 8000, 8500, 8999] {
            let verdict = set.check_request(&connect(&format!("198.51.100.1:{port}")));
            assert_eq!(verdict, Decision::Allow, "{port}");
        }
        for port in [79, 81, 7999, 9000] {
            let verdict = set.check_request(&connect(&format!("198.51.100.1:{port}")));
            assert!(matches!(verdict, Decision::Deny(_)), "{port}");
        }
    }

    #[test]
    fn udp_associations_are_judged_by_each_datagram() {
        let set = rules(
            r#"
            [[rules]]
            name = "no-udp-dns"
            action = "deny"
            commands = ["udp"]
            ports = [53]
            "#,
        );
        let association = session(Command::UdpAssociate, "0.0.0.0:0");
        assert_eq!(set.check_request(&association), Decision::Allow);
        let dns = target("198.51.100.1:53");
        assert!(matches!(
            set.check_udp_destination(&association, &dns),
            Decision::Deny(_)
        ));
        let other = target("198.51.100.1:443");
        assert_eq!(
            set.check_udp_destination(&association, &other),
            Decision::Allow
        );
        // A named datagram's port is known before resolution.
        assert!(matches!(
            set.check_udp_destination(&association, &target("dns.example:53")),
            Decision::Deny(_)
        ));
        // Once resolved, the datagram's port is unknown to `check_address`: a deny rule that
        // may match fails closed.
        let reason = denied(set.check_address(&association, ip("198.51.100.1")));
        assert!(reason.contains("\"no-udp-dns\""), "{reason}");
    }

    #[test]
    fn resolved_datagrams_and_unresolved_names_get_a_last_verdict() {
        let set = rules(
            r#"
            [[rules]]
            name = "internal"
            action = "deny"
            to = ["10.0.0.0/8"]
            [[rules]]
            name = "udp-dns-only"
            action = "deny"
            commands = ["udp"]
            ports = ["0-52", "54-65535"]
            "#,
        );
        let association = session(Command::UdpAssociate, "0.0.0.0:0");
        let dns = target("dns.example:53");
        // With name, port and address known, a datagram to port 53 outside 10/8 passes.
        assert_eq!(
            set.check_resolved(&association, &dns, ip("198.51.100.1")),
            Decision::Allow
        );
        assert!(matches!(
            set.check_resolved(&association, &dns, ip("10.0.0.53")),
            Decision::Deny(_)
        ));
        assert!(matches!(
            set.check_resolved(&association, &target("ntp.example:123"), ip("198.51.100.1")),
            Decision::Deny(_)
        ));
        // A name passed on unresolved cannot be checked against `to`: the deny rule that
        // might match refuses it.
        let name = connect("intranet.example:80");
        assert_eq!(set.check_request(&name), Decision::Allow);
        assert_eq!(
            denied(set.check_unresolved(&name)),
            "denied by rule \"internal\" (#1) (it may match, and the target's name, port or \
             address is not known here)"
        );
        let policy = RulePolicy::new(Rules::default(), set);
        assert!(matches!(
            policy.check_resolved(&name, &name.target, ip("169.254.169.254")),
            Decision::Deny(DenyReason::LinkLocalTarget(_))
        ));
        assert!(matches!(policy.check_unresolved(&name), Decision::Deny(_)));
    }

    #[test]
    fn undecidable_allow_rules_are_passed_over_at_the_last_check() {
        let set = rules(
            r#"
            default = "deny"
            [[rules]]
            action = "allow"
            commands = ["udp"]
            domains = ["dns.example"]
            "#,
        );
        let association = session(Command::UdpAssociate, "0.0.0.0:0");
        assert_eq!(set.check_request(&association), Decision::Allow);
        assert_eq!(
            set.check_udp_destination(&association, &target("dns.example:53")),
            Decision::Allow
        );
        assert!(matches!(
            set.check_udp_destination(&association, &target("198.51.100.1:53")),
            Decision::Deny(_)
        ));
        assert!(matches!(
            set.check_address(&association, ip("198.51.100.1")),
            Decision::Deny(_)
        ));
    }

    #[test]
    fn configuration_errors_name_the_rule_and_the_key() {
        assert_eq!(
            rule_error("[[rules]]\naction = \"deny\"\nname = \"x\"\nports = [\"9-8\"]"),
            "[[rules]] #1 (\"x\"), key `ports`: \"9-8\": the range's start is above its end"
        );
        assert_eq!(
            rule_error(
                "[[rules]]\naction = \"deny\"\n[[rules]]\naction = \"allow\"\nports = [70000]"
            ),
            "[[rules]] #2, key `ports`: 70000 is not a port number (0..=65535)"
        );
        assert!(
            rule_error("[[rules]]\naction = \"deny\"\nto = [\"10.0.0.0/33\"]")
                .starts_with("[[rules]] #1, key `to`: \"10.0.0.0/33\"")
        );
        assert!(rule_error("[[rules]]\naction = \"deny\"\nfrom = [\"lan\"]")
            .starts_with("[[rules]] #1, key `from`:"));
        assert!(
            rule_error("[[rules]]\naction = \"deny\"\ndomains = [\"a..b\"]")
                .starts_with("[[rules]] #1, key `domains`:")
        );
        assert!(
            rule_error("[[rules]]\naction = \"deny\"\ndomains = [\"*\"]")
                .starts_with("[[rules]] #1, key `domains`:")
        );
        for address in ["127.0.0.2", ".10.0.0.1", "::1"] {
            let error = rule_error(&format!(
                "[[rules]]\naction = \"deny\"\ndomains = [\"{address}\"]"
            ));
            assert!(
                error.contains("put it in `to` instead"),
                "{address}: {error}"
            );
        }
        assert!(rule_error("[[rules]]\naction = \"deny\"\nusers = []")
            .contains("key `users`: an empty list matches nothing"));
        // Shape errors come from serde: a missing action, an unknown key or command.
        for bad in [
            "[[rules]]\nname = \"x\"",
            "[[rules]]\naction = \"maybe\"",
            "[[rules]]\naction = \"deny\"\nport = [1]",
            "[[rules]]\naction = \"deny\"\ncommands = [\"ping\"]",
        ] {
            #[derive(Debug, Deserialize)]
            #[allow(dead_code)]
            struct File {
                rules: Vec<RuleConfig>,
            }
            assert!(toml::from_str::<File>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_client_filter_admits_listed_networks_of_both_families() {
        let filter = ClientFilter::new(vec![
            "192.0.2.0/24".parse().expect("valid"),
            "2001:db8::/32".parse().expect("valid"),
            "127.0.0.1".parse().expect("valid"),
        ]);
        for allowed in [
            "192.0.2.1",
            "::ffff:192.0.2.200",
            "2001:db8::5",
            "127.0.0.1",
        ] {
            assert!(filter.allows(ip(allowed)), "{allowed}");
        }
        for refused in ["192.0.3.1", "2001:db9::1", "127.0.0.2", "::1"] {
            assert!(!filter.allows(ip(refused)), "{refused}");
        }
        assert_eq!(filter.networks().len(), 3);
        assert!(ClientFilter::default().allows(ip("203.0.113.1")));
    }

    #[test]
    fn the_safety_defaults_come_before_the_rules() {
        let policy = RulePolicy::new(
            Rules::default(),
            rules(
                r#"
                [[rules]]
                action = "allow"
                to = ["0.0.0.0/0"]
                "#,
            ),
        );
        // An allow rule cannot open the metadata service, nor the host's loopback to a
        // remote client.
        let metadata = connect("169.254.169.254:80");
        assert!(matches!(
            policy.check_request(&metadata),
            Decision::Deny(DenyReason::LinkLocalTarget(_))
        ));
        let loopback = connect("127.0.0.1:22");
        assert!(matches!(
            policy.check_request(&loopback),
            Decision::Deny(DenyReason::LoopbackTarget(_))
        ));
        let name = connect("metadata.example:80");
        assert!(matches!(
            policy.check_address(&name, ip("169.254.169.254")),
            Decision::Deny(DenyReason::LinkLocalTarget(_))
        ));
        assert_eq!(
            policy.check_request(&connect("198.51.100.1:80")),
            Decision::Allow
        );

        let deny_all = RulePolicy::new(Rules::default(), rules("default = \"deny\""));
        assert!(matches!(
            deny_all.check_request(&connect("198.51.100.1:80")),
            Decision::Deny(DenyReason::Other(_))
        ));
        let association = session(Command::UdpAssociate, "0.0.0.0:0");
        assert!(matches!(
            deny_all.check_udp_destination(&association, &target("198.51.100.1:53")),
            Decision::Deny(_)
        ));
        assert_eq!(deny_all.check_ip(ip("198.51.100.1")), Decision::Allow);
    }
}
