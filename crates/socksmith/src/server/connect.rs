//! CONNECT: ask the egress for a tunnel to the target, reply with the address it leaves from
//! (or with the failure), then relay, booking the bytes when the tunnel ends.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use socksmith_proto::ReplyCode;
use tokio::time::Instant;

use crate::policy::UserBuckets;
use crate::relay::{relay_streams, RateLimited, Relay, TunnelStream};
use crate::server::accounting::{Event, Traffic, PROGRESS_STEP};
use crate::server::connection::Request;
use crate::server::egress::{Connected, EgressError};
use crate::server::error::SessionError;
use crate::server::log::Meter;
use crate::server::stats::{self, add, inc, Stats};
use crate::server::{sniff, Shared};
use crate::session::Session;

/// CONNECT, first half: open the connection to the target and reply. The caller then relays
/// with [`relay_tunnel`]; keeping the two apart lets it run this half in a boxed future that
/// is freed before the relay starts, so an idle tunnel's task does not keep the dialing and
/// reply state.
pub(crate) async fn open(request: Request<'_>) -> Result<Tunnel, SessionError> {
    let Request {
        shared,
        session,
        mut client,
        mut replier,
        pending,
    } = request;
    let connected = match dial(shared, session).await {
        Ok(c) => c,
        Err(e) => return Err(replier.refuse(&mut client, e.into()).await),
    };
    replier
        .send(&mut client, ReplyCode::Succeeded, connected.bound)
        .await?;
    granted(shared, session, client, connected.stream, pending).await
}

/// The last steps of a tunnel whose success reply is sent, the same for SOCKS and HTTP
/// CONNECT: the client's first bytes are sniffed for a listed name behind an address (the
/// tunnel ends there, before a byte reaches the target), and its user's rate paces it.
pub(crate) async fn granted(
    shared: &Shared,
    session: &Session,
    mut client: TunnelStream,
    target: TunnelStream,
    mut pending: Vec<u8>,
) -> Result<Tunnel, SessionError> {
    if sniff::wanted(shared, session) {
        sniff::first_flight(shared, session, &mut client, &mut pending)
            .await
            .map_err(SessionError::Denied)?;
    }
    Ok(Tunnel {
        client: rate_limited(shared, session, client),
        target,
        pending,
    })
}

/// The client's end of a tunnel, paced when its user has a rate
/// ([`crate::server::ServerConfig::rate_per_user`]); bare otherwise, so that the relay can
/// still splice.
pub(crate) fn rate_limited(
    shared: &Shared,
    session: &Session,
    client: TunnelStream,
) -> TunnelStream {
    paced(shared, session, client, RateLimited::client_side)
}

/// [`rate_limited`] for the target's end, where the client's stream is not the session's
/// alone (an HTTP client connection may carry requests of several users; each origin
/// connection serves one).
pub(crate) fn rate_limited_target(
    shared: &Shared,
    session: &Session,
    target: TunnelStream,
) -> TunnelStream {
    paced(shared, session, target, RateLimited::target_side)
}

/// `stream` wrapped by `side` in its user's buckets, when the user has a rate.
fn paced(
    shared: &Shared,
    session: &Session,
    stream: TunnelStream,
    side: fn(TunnelStream, Arc<UserBuckets>) -> RateLimited<TunnelStream>,
) -> TunnelStream {
    match (&shared.config.rate_per_user, &session.user) {
        (Some(rates), Some(user)) => {
            TunnelStream::Other(Box::new(side(stream, rates.for_user(user))))
        }
        _ => stream,
    }
}

/// Asks the egress for a connection to `session`'s target, bounded by the resolve and
/// connect timeouts together; tells the accounting and counts a failure. Shared by SOCKS
/// CONNECT and the HTTP proxy (CONNECT and forwarded requests).
pub(crate) async fn dial(shared: &Shared, session: &Session) -> Result<Connected, EgressError> {
    let egress_request = crate::server::egress::EgressRequest {
        session,
        policy: &*shared.config.policy,
    };
    // A backstop over whatever the egress does: lookup and connect, each bounded.
    let limit = shared
        .config
        .resolve_timeout
        .saturating_add(shared.config.connect_timeout);
    let started = Instant::now();
    let connected = match tokio::time::timeout(limit, shared.egress.connect(egress_request)).await {
        Ok(result) => result,
        Err(_) => Err(EgressError::Timeout(limit)),
    };
    if let Some(accounting) = &shared.config.accounting {
        accounting.record(&Event::Connected {
            session,
            elapsed: started.elapsed(),
            ok: connected.is_ok(),
        });
    }
    if let Err(e) = &connected {
        inc(&shared.stats.connect_failures);
        if let EgressError::Denied(_) = e {
            inc(&shared.stats.policy_denied);
        }
    }
    connected
}

/// What a CONNECT hands back to the session once its reply is sent: the two streams and the
/// bytes the client sent after its request.
pub(crate) struct Tunnel {
    pub(crate) client: TunnelStream,
    pub(crate) target: TunnelStream,
    pub(crate) pending: Vec<u8>,
}

/// Relays a tunnel whose replies are sent: splice when both ends are TCP, copying otherwise.
///
/// A plain function returning a hand-written future, which holds the streams only inside the
/// relay's own state (an `async fn` would keep its parameters beside it, and an `async` block
/// its captured relay future, for the tunnel's whole life).
pub(crate) fn tunnel<'a>(
    shared: &'a Shared,
    client: TunnelStream,
    target: TunnelStream,
    pending: impl Into<Cow<'a, [u8]>>,
    meter: &'a mut Meter,
) -> impl Future<Output = Result<(), SessionError>> + Send + 'a {
    let stats = &*shared.stats;
    inc(&stats.tunnels_total);
    // Brought down when `Booked` is dropped.
    inc(&stats.tunnels_active);
    Booked {
        relaying: relay_streams(client, target, pending.into(), &shared.relay),
        stats,
        meter,
        booked: false,
    }
}

/// [`tunnel`] for what [`open`] handed back.
pub(crate) fn relay_tunnel<'a>(
    shared: &'a Shared,
    opened: Tunnel,
    meter: &'a mut Meter,
) -> impl Future<Output = Result<(), SessionError>> + Send + 'a {
    tunnel(shared, opened.client, opened.target, opened.pending, meter)
}

pin_project_lite::pin_project! {
    /// A relay that books its bytes (into the server's counters and the session's meter)
    /// every [`PROGRESS_STEP`] and when it ends, telling the accounting's guard, and counts
    /// as an active tunnel until dropped. Cut before its end (at shutdown), it books the bytes
    /// moved so far.
    struct Booked<'a> {
        #[pin]
        relaying: Relay<'a>,
        stats: &'a Stats,
        meter: &'a mut Meter,
        booked: bool,
    }

    impl PinnedDrop for Booked<'_> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if !*this.booked {
                let (up, down) = this.relaying.moved();
                book(this.stats, this.meter, up, down);
            }
            stats::down(&this.stats.tunnels_active);
        }
    }
}

/// Books a tunnel's totals so far: what the meter has not seen yet goes to the server's
/// counters, and the meter keeps the totals.
fn book(stats: &Stats, meter: &mut Meter, up: u64, down: u64) {
    let seen = meter.traffic;
    add(&stats.bytes_client_to_target, up.saturating_sub(seen.up));
    add(
        &stats.bytes_target_to_client,
        down.saturating_sub(seen.down),
    );
    meter.traffic = Traffic { up, down };
}

impl Future for Booked<'_> {
    type Output = Result<(), SessionError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Poll::Ready(outcome) = this.relaying.as_mut().poll(cx) else {
            let (up, down) = this.relaying.moved();
            let seen = this.meter.traffic;
            if up + down >= seen.up + seen.down + PROGRESS_STEP {
                book(this.stats, this.meter, up, down);
                if let Some(guard) = &this.meter.guard {
                    guard.progress(this.meter.traffic);
                }
            }
            return Poll::Pending;
        };
        *this.booked = true;
        book(
            this.stats,
            this.meter,
            outcome.client_to_target,
            outcome.target_to_client,
        );
        Poll::Ready(outcome.result.map_err(SessionError::Relay))
    }
}
