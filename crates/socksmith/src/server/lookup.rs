//! Tor's RESOLVE (a name to an address) and RESOLVE_PTR (an address to a name): answered in
//! the reply from what the egress finds; no connection is opened and none follows.
//!
//! The policy judges these as it judges a CONNECT: RESOLVE_PTR of a denied address is refused
//! before anything is asked (no reverse-DNS reconnaissance of denied ranges), and a RESOLVE
//! answers only with an address the policy would let the client reach.

use std::net::SocketAddr;

use socksmith_proto::{Command, DomainName, ReplyCode, TargetAddr, Version};
use tokio::time::Instant;

use crate::policy::Decision;
use crate::server::accounting::Event;
use crate::server::connection::{deny, Request};
use crate::server::egress::{EgressError, EgressRequest};
use crate::server::error::{LookupError, SessionError};
use crate::server::stats::inc;
use crate::server::Shared;
use crate::session::Session;

pub(crate) async fn answer(mut request: Request<'_>) -> Result<(), SessionError> {
    let shared = request.shared;
    inc(&shared.stats.resolves);
    let started = Instant::now();
    let answer = match request.session.command {
        Command::ResolvePtr => resolve_ptr(&mut request).await,
        _ => resolve_name(shared, request.session).await,
    };
    if let Some(accounting) = &shared.config.accounting {
        accounting.record(&Event::Resolved {
            elapsed: started.elapsed(),
            ok: answer.is_ok(),
        });
    }
    let Request {
        mut client,
        mut replier,
        ..
    } = request;
    match answer {
        Ok(bound) => replier.send(&mut client, ReplyCode::Succeeded, bound).await,
        Err(SessionError::Denied(reason)) => {
            // Already answered by `deny` when the policy refused the address itself.
            Err(SessionError::Denied(reason))
        }
        Err(e) => Err(replier.refuse(&mut client, e).await),
    }
}

async fn resolve_name(shared: &Shared, session: &Session) -> Result<TargetAddr, SessionError> {
    let request = EgressRequest {
        session,
        policy: &*shared.config.policy,
    };
    let ips = match &session.target {
        TargetAddr::Ip(addr) => vec![addr.ip()],
        TargetAddr::Domain(name, _) => {
            let limit = shared.config.resolve_timeout;
            match tokio::time::timeout(limit, shared.egress.resolve(request, name)).await {
                Ok(result) => result?,
                Err(_) => return Err(EgressError::Timeout(limit).into()),
            }
        }
    };
    let allowed = request.allowed(ips, 0)?;
    // A SOCKS4 reply has room for an IPv4 address only.
    let ip = match session.version {
        Version::V4 => allowed.iter().find(|a| a.is_ipv4()),
        Version::V5 => allowed.first(),
    };
    match ip {
        Some(addr) => Ok(TargetAddr::Ip(SocketAddr::new(addr.ip(), 0))),
        None => Err(LookupError::NoIpv4(session.target.clone()).into()),
    }
}

async fn resolve_ptr(request: &mut Request<'_>) -> Result<TargetAddr, SessionError> {
    let target = &request.session.target;
    let Some(addr) = target.ip_literal() else {
        return Err(LookupError::PtrNeedsAddress(target.clone()).into());
    };
    let ip = addr.ip();
    if let Decision::Deny(reason) = request
        .shared
        .config
        .policy
        .check_address(request.session, ip)
    {
        let e = deny(request, reason).await;
        return Err(e);
    }
    let (shared, session) = (request.shared, request.session);
    let limit = shared.config.resolve_timeout;
    let egress_request = EgressRequest {
        session,
        policy: &*shared.config.policy,
    };
    let lookup = shared.egress.resolve_ptr(egress_request, ip);
    let name = match tokio::time::timeout(limit, lookup).await {
        Ok(result) => result?,
        Err(_) => return Err(EgressError::Timeout(limit).into()),
    };
    DomainName::new(name.into_bytes())
        .map(|name| TargetAddr::Domain(name, 0))
        .map_err(|source| LookupError::Unsendable { ip, source }.into())
}
