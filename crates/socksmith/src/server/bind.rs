//! BIND: the egress listens for one inbound connection from the peer the client names; the
//! server replies twice (where it listens, then who connected) and relays.
//!
//! Where the listener is and which peers it lets in is the egress's business (the direct one
//! listens on the address the client reached the server at and takes only the expected
//! peer's IP; an upstream chain's last hop listens instead). The session's part is the same
//! for every egress: a SOCKS4 reply can carry only an IPv4 address (the machine refuses
//! anything else, and the client gets 0x5B), the wait is bounded by
//! [`crate::server::ServerConfig::bind_timeout`] and ends early when the client goes away,
//! and what the client sends meanwhile is kept for the peer.

use socksmith_proto::ReplyCode;
use tokio::io::AsyncReadExt;

use crate::relay::TunnelStream;
use crate::server::connect::{rate_limited, tunnel};
use crate::server::connection::Request;
use crate::server::egress::{EgressError, EgressFuture};
use crate::server::error::SessionError;
use crate::server::log::Meter;

/// Bytes the client may send while waiting for the peer; kept for the peer. Past this the
/// server stops reading the client until the peer is there.
const MAX_EARLY_BYTES: usize = 16 * 1024;

pub(crate) async fn bind(request: Request<'_>, meter: &mut Meter) -> Result<(), SessionError> {
    let config = &request.shared.config;
    let limit = config.bind_timeout;
    // A backstop over whatever the egress does: a peer's name lookup, a chain's handshakes.
    let setup = config
        .resolve_timeout
        .saturating_add(config.connect_timeout);
    let listening =
        match tokio::time::timeout(setup, request.shared.egress.bind(request.egress_request()))
            .await
        {
            Ok(result) => result,
            Err(_) => Err(EgressError::Timeout(setup)),
        };
    let Request {
        shared,
        session,
        mut client,
        mut replier,
        mut pending,
        ..
    } = request;
    let listening = match listening {
        Ok(l) => l,
        Err(e) => return Err(replier.refuse(&mut client, e.into()).await),
    };
    replier
        .send(&mut client, ReplyCode::Succeeded, listening.listen_addr())
        .await?;

    let wait = wait_for_peer(listening.accept(), &mut client, &mut pending);
    let (peer, peer_addr) = match tokio::time::timeout(limit, wait).await {
        Ok(Ok(accepted)) => accepted,
        // Nobody to answer.
        Ok(Err(e @ (SessionError::BindClientClosed | SessionError::ClientIo(_)))) => return Err(e),
        Ok(Err(e)) => return Err(replier.refuse(&mut client, e).await),
        Err(_) => {
            let e = SessionError::BindTimeout(limit);
            return Err(replier.refuse(&mut client, e).await);
        }
    };
    replier
        .send(&mut client, ReplyCode::Succeeded, peer_addr)
        .await?;
    drop(replier);
    let client = rate_limited(shared, session, client);
    tunnel(shared, client, peer, &pending, meter).await
}

/// Waits for the egress's peer; reads (and keeps) what the client sends meanwhile, and fails
/// when the client closes (dropping the accept closes the listener). A half-close cannot be
/// told from a client that left (both are an end of stream), and a BIND whose client left
/// would hold its listener for the whole BIND timeout: so a client's end of stream before
/// the peer comes ends the BIND, early bytes and all.
async fn wait_for_peer(
    accept: EgressFuture<'static, (TunnelStream, socksmith_proto::TargetAddr)>,
    client: &mut TunnelStream,
    pending: &mut Vec<u8>,
) -> Result<(TunnelStream, socksmith_proto::TargetAddr), SessionError> {
    tokio::pin!(accept);
    loop {
        let room = pending.len() < MAX_EARLY_BYTES;
        tokio::select! {
            accepted = &mut accept => return accepted.map_err(SessionError::from),
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
