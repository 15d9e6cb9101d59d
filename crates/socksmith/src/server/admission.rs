//! Whether a decoded request may go ahead, decided in one place for every protocol the server
//! speaks (SOCKS and HTTP): the hostname requirement, the blocklists, the policy, then the
//! accounting's limits. A refusal is counted and heard by the accounting here too; how it is
//! answered (0x02, 0x5B, 403) is the protocol's business.
//!
//! The blocklist check is also what first-flight sniffing and the DNS answers of UDP ASSOCIATE
//! ask ([`blocked`]), so a name is judged the same however it reached the server.

use socksmith_proto::{Command, TargetAddr};

use crate::policy::{Decision, DenyReason};
use crate::server::accounting::{Event, TunnelGuard};
use crate::server::stats::inc;
use crate::server::Shared;
use crate::session::Session;

/// The verdict on `session`: the accounting's guard for a tunnel (CONNECT, BIND, UDP), or why
/// it is refused (already counted and reported).
pub(crate) fn admit(
    shared: &Shared,
    session: &Session,
) -> Result<Option<Box<dyn TunnelGuard>>, DenyReason> {
    let config = &shared.config;
    if config.require_hostname && session.command == Command::Connect {
        if let Some(addr) = session.target.ip_literal() {
            return Err(refused(
                shared,
                session,
                DenyReason::HostnameRequired(addr.ip()),
            ));
        }
    }
    if let TargetAddr::Domain(name, _) = &session.target {
        if let Some(reason) = blocked(shared, name.as_bytes()) {
            return Err(refused(shared, session, reason));
        }
    }
    if let Decision::Deny(reason) = config.policy.check_request(session) {
        return Err(refused(shared, session, reason));
    }
    let tunnel = matches!(
        session.command,
        Command::Connect | Command::Bind | Command::UdpAssociate
    );
    match (&config.accounting, tunnel) {
        (Some(accounting), true) => accounting
            .open(session)
            .map_err(|reason| refused(shared, session, reason)),
        _ => Ok(None),
    }
}

/// Why `host` is refused, when a blocklist lists it (or a domain it is under).
pub(crate) fn blocked(shared: &Shared, host: &[u8]) -> Option<DenyReason> {
    let list = shared.config.blocklist.as_ref()?.check(host)?;
    Some(DenyReason::Blocked {
        host: String::from_utf8_lossy(host).into_owned(),
        list: list.as_str().to_owned(),
    })
}

/// Counts a refusal of `session` and tells the accounting; hands the reason back.
pub(crate) fn refused(shared: &Shared, session: &Session, reason: DenyReason) -> DenyReason {
    inc(&shared.stats.policy_denied);
    if let Some(accounting) = &shared.config.accounting {
        accounting.record(&Event::Denied {
            session,
            reason: &reason,
        });
    }
    reason
}
