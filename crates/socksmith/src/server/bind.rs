//! BIND: listen for one inbound connection from the peer the client names, reply twice
//! (the listening address, then the peer's), relay.
//!
//! The listener sits on the IP the client reached the server at, on a free port (a SOCKS4
//! client that came in over IPv6 is refused first: its reply could not say where). Only a
//! connection from the expected peer's IP is taken (the request's address; a name is resolved
//! first; 0.0.0.0 or :: accepts any peer); others are closed at once. The wait is bounded by
//! [`crate::server::ServerConfig::bind_timeout`] and ends early when the client goes away.
//!
//! With an upstream, the last hop of the chain listens instead ([`crate::client::Client::bind`]):
//! its address goes into the first reply, the peer it reports into the second, and checking
//! the peer is the last hop's job. The same deadline and early-bytes handling apply.

use std::net::{IpAddr, SocketAddr};

use socksmith_proto::{ReplyCode, TargetAddr};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

use crate::client::{BindListener, Client, ProxyStream};
use crate::server::connect::tunnel;
use crate::server::error::{LookupError, SessionError};
use crate::server::outbound::{lookup, OutboundStream};
use crate::server::session::{Replier, Session, Traffic};
use crate::server::upstream::outbound_stream;
use crate::server::{Shared, Upstream};

/// Bytes the client may send while waiting for the peer; kept for the peer. Past this the
/// server stops reading the client until the peer is there.
const MAX_EARLY_BYTES: usize = 16 * 1024;

pub(crate) async fn bind(
    shared: &Shared,
    session: &Session,
    mut client: TcpStream,
    mut replier: Replier,
    mut pending: Vec<u8>,
    traffic: &mut Traffic,
) -> Result<(), SessionError> {
    if let Some(upstream) = shared.outbound.upstream() {
        return through_upstream(shared, upstream, session, client, replier, pending, traffic)
            .await;
    }
    // Which peer may connect: `None` means any.
    let expected: Option<Vec<IpAddr>> = match session.target.ip_literal() {
        Some(addr) if addr.ip().is_unspecified() => None,
        Some(addr) => Some(vec![addr.ip().to_canonical()]),
        None => match lookup(
            &*shared.config.resolver,
            &session.target,
            shared.config.resolve_timeout,
        )
        .await
        {
            Ok(ips) => Some(ips.into_iter().map(|ip| ip.to_canonical()).collect()),
            Err(e) => {
                let e = SessionError::Lookup(LookupError::from(e));
                return Err(replier.refuse(&mut client, e).await);
            }
        },
    };

    let listen_ip = session.local.ip().to_canonical();
    // A SOCKS4 client reached us over IPv6: the reply could not say where we listen.
    let would_listen = TargetAddr::Ip(SocketAddr::new(listen_ip, 0));
    if !replier.can_carry(&would_listen) {
        let e = SessionError::Socks4Unsendable(would_listen);
        return Err(replier.refuse(&mut client, e).await);
    }
    let listener = match TcpListener::bind(SocketAddr::new(listen_ip, 0)).await {
        Ok(l) => l,
        Err(source) => {
            let e = SessionError::Socket {
                what: "BIND listener",
                source,
            };
            return Err(replier.refuse(&mut client, e).await);
        }
    };
    let listening = listener
        .local_addr()
        .map_err(|source| SessionError::Socket {
            what: "BIND listener address",
            source,
        })?;
    replier
        .send(&mut client, ReplyCode::Succeeded, TargetAddr::Ip(listening))
        .await?;

    let limit = shared.config.bind_timeout;
    let wait = wait_for_peer(&listener, expected.as_deref(), &mut client, &mut pending);
    let (peer, peer_addr) = match tokio::time::timeout(limit, wait).await {
        Ok(Ok(accepted)) => accepted,
        // Nobody to answer.
        Ok(Err(e @ SessionError::BindClientClosed)) => return Err(e),
        Ok(Err(e)) => return Err(replier.refuse(&mut client, e).await),
        Err(_) => {
            let e = SessionError::BindTimeout(limit);
            return Err(replier.refuse(&mut client, e).await);
        }
    };
    drop(listener);
    // Best effort: a failure only costs latency.
    let _ = peer.set_nodelay(true);
    replier
        .send(
            &mut client,
            ReplyCode::Succeeded,
            TargetAddr::Ip(canonical(peer_addr)),
        )
        .await?;
    drop(replier);
    tunnel(shared, client, OutboundStream::Tcp(peer), &pending, traffic).await
}

/// BIND through the parent proxy chain: the last hop listens and checks the peer; its two
/// replies become ours.
async fn through_upstream(
    shared: &Shared,
    upstream: &Upstream,
    session: &Session,
    mut client: TcpStream,
    mut replier: Replier,
    mut pending: Vec<u8>,
    traffic: &mut Traffic,
) -> Result<(), SessionError> {
    let chain = upstream.client();
    let listener = match chain.bind(&session.target).await {
        Ok(listener) => listener,
        Err(e) => {
            let e = SessionError::upstream(chain, e);
            return Err(replier.refuse(&mut client, e).await);
        }
    };
    // A SOCKS4 reply carries an IPv4 address only (the machine refuses anything else rather
    // than send 0.0.0.0, which would tell the client "the proxy's own address": wrong, the
    // last hop listens).
    replier
        .send(
            &mut client,
            ReplyCode::Succeeded,
            listener.listen_addr().clone(),
        )
        .await?;

    let limit = shared.config.bind_timeout;
    let wait = wait_for_upstream_peer(chain, listener, &mut client, &mut pending);
    let (peer, peer_addr) = match tokio::time::timeout(limit, wait).await {
        Ok(Ok(accepted)) => accepted,
        Ok(Err(e @ SessionError::Upstream { .. })) => {
            return Err(replier.refuse(&mut client, e).await)
        }
        // The client went away: nobody to answer.
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            let e = SessionError::BindTimeout(limit);
            return Err(replier.refuse(&mut client, e).await);
        }
    };
    replier
        .send(&mut client, ReplyCode::Succeeded, peer_addr)
        .await?;
    drop(replier);
    tunnel(shared, client, outbound_stream(peer), &pending, traffic).await
}

/// Waits for the last hop's second reply; reads (and keeps) what the client sends meanwhile,
/// and fails when the client closes (dropping the listener closes the chain).
async fn wait_for_upstream_peer(
    chain: &Client,
    listener: BindListener<TcpStream>,
    client: &mut TcpStream,
    pending: &mut Vec<u8>,
) -> Result<(ProxyStream<TcpStream>, TargetAddr), SessionError> {
    let accept = listener.accept();
    tokio::pin!(accept);
    loop {
        let room = pending.len() < MAX_EARLY_BYTES;
        tokio::select! {
            accepted = &mut accept => return accepted.map_err(|e| SessionError::upstream(chain, e)),
            read = client.read_buf(pending), if room => {
                match read {
                    Ok(0) => return Err(SessionError::BindClientClosed),
                    Ok(_) => {}
                    Err(e) => return Err(SessionError::ClientIo(e)),
                }
            }
        }
    }
}

/// Accepts until the expected peer connects; reads (and keeps) what the client sends
/// meanwhile, and fails when the client closes.
async fn wait_for_peer(
    listener: &TcpListener,
    expected: Option<&[IpAddr]>,
    client: &mut TcpStream,
    pending: &mut Vec<u8>,
) -> Result<(TcpStream, SocketAddr), SessionError> {
    loop {
        let room = pending.len() < MAX_EARLY_BYTES;
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, addr) = accepted.map_err(|source| SessionError::Socket {
                    what: "BIND accept",
                    source,
                })?;
                let ip = addr.ip().to_canonical();
                match expected {
                    Some(ips) if !ips.contains(&ip) => {
                        tracing::debug!(%addr, "BIND: connection from an unexpected peer closed");
                        drop(stream);
                    }
                    _ => return Ok((stream, addr)),
                }
            }
            read = client.read_buf(pending), if room => {
                match read {
                    Ok(0) => return Err(SessionError::BindClientClosed),
                    Ok(_) => {}
                    Err(e) => return Err(SessionError::ClientIo(e)),
                }
            }
        }
    }
}

fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}
