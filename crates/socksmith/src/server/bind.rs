//! BIND: listen for one inbound connection from the peer the client names, reply twice
//! (the listening address, then the peer's), relay.
//!
//! The listener sits on the IP the client reached the server at, on a free port. Only a
//! connection from the expected peer's IP is taken (the request's address; a name is resolved
//! first; 0.0.0.0 or :: accepts any peer); others are closed at once. The wait is bounded by
//! [`crate::server::ServerConfig::bind_timeout`] and ends early when the client goes away.

use std::net::{IpAddr, SocketAddr};

use socksmith_proto::{ReplyCode, TargetAddr};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

use crate::server::connect::tunnel;
use crate::server::error::{LookupError, SessionError};
use crate::server::outbound::{lookup, OutboundStream};
use crate::server::session::{Replier, Session, Traffic};
use crate::server::Shared;

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
                let e = LookupError::from(e);
                replier
                    .send(&mut client, e.reply_code(), TargetAddr::UNSPECIFIED)
                    .await?;
                return Err(e.into());
            }
        },
    };

    let listen_ip = session.local.ip().to_canonical();
    let listener = match TcpListener::bind(SocketAddr::new(listen_ip, 0)).await {
        Ok(l) => l,
        Err(source) => {
            replier
                .send(
                    &mut client,
                    ReplyCode::GeneralFailure,
                    TargetAddr::UNSPECIFIED,
                )
                .await?;
            return Err(SessionError::Socket {
                what: "BIND listener",
                source,
            });
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
        Ok(Err(e)) => {
            if !matches!(e, SessionError::BindClientClosed) {
                replier
                    .send(
                        &mut client,
                        ReplyCode::GeneralFailure,
                        TargetAddr::UNSPECIFIED,
                    )
                    .await?;
            }
            return Err(e);
        }
        Err(_) => {
            replier
                .send(&mut client, ReplyCode::TtlExpired, TargetAddr::UNSPECIFIED)
                .await?;
            return Err(SessionError::BindTimeout(limit));
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
