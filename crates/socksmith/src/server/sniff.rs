//! First-flight sniffing: the name behind a CONNECT that carried only an IP address.
//!
//! A client that resolved the name itself (`socks5://`, `socks4://`) hands the server an
//! address, and the blocklists have no name to judge. Its first bytes usually carry the name
//! anyway: a TLS ClientHello's SNI or an HTTP/1 `Host` header (read by `socksmith-proto`'s
//! sans-IO [`sniff_first_flight`]). With a blocklist loaded, after the success reply and
//! before the relay, the session reads what the client sends (bounded in bytes and by
//! [`crate::server::ServerConfig::sniff_timeout`]), and a listed name ends the tunnel before
//! a byte reaches the target. Everything read is handed to the relay, which writes it to the
//! target first: nothing is lost, and zero-copy starts right after.
//!
//! A protocol where the server speaks first (SSH, SMTP) sends nothing: it waits for the
//! window to close, then flows. A client whose first segment is only a few bytes that merely
//! *could* start a request (`G`, a lone 0x16) is not waited for either: see
//! [`SHORTEST_SNIFFED_START`]. Names inside an encrypted ClientHello (ECH) cannot be read;
//! that is the limit of any proxy.

use socksmith_proto::sniff::{sniff_first_flight, tls::MAX_SNIFF_BYTES, FirstFlight};
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

use crate::policy::DenyReason;
use crate::relay::TunnelStream;
use crate::server::{admission, Shared};
use crate::session::Session;

/// An undecided first segment shorter than this is not sniffed further: the tunnel flows at
/// once. Real TLS and HTTP clients write their whole first flight at once, so their first
/// segment holds at least a record header and the handshake type (6 bytes) or a method and a
/// space (`GET `, 4 bytes) and usually all of it; a ClientHello split over segments still
/// starts with its record header. One to five bytes that happen to begin like a request (a
/// `G`, a lone 0x16) come from interactive or binary protocols, which would otherwise wait
/// the whole window for a name that never comes.
pub(crate) const SHORTEST_SNIFFED_START: usize = 6;

/// Whether this CONNECT is sniffed: an address target, a blocklist, sniffing on.
pub(crate) fn wanted(shared: &Shared, session: &Session) -> bool {
    shared.config.sniff
        && shared.config.blocklist.is_some()
        && session.target.ip_literal().is_some()
}

/// Reads the client's first bytes into `pending` until they name a host, show they never
/// will, or the window closes; a listed name is refused (counted and reported). Read errors
/// and an early end of stream are left for the relay to meet.
pub(crate) async fn first_flight(
    shared: &Shared,
    session: &Session,
    client: &mut TunnelStream,
    pending: &mut Vec<u8>,
) -> Result<(), DenyReason> {
    let deadline = Instant::now() + shared.config.sniff_timeout;
    // Whether `pending` holds only the client's first segment (or nothing yet).
    let mut first_segment = true;
    loop {
        match sniff_first_flight(pending) {
            FirstFlight::NeedMore
                if first_segment
                    && !pending.is_empty()
                    && pending.len() < SHORTEST_SNIFFED_START =>
            {
                return Ok(())
            }
            FirstFlight::NeedMore => {}
            FirstFlight::Name { name, protocol } => {
                tracing::debug!(%name, ?protocol, "sniffed the name behind an address");
                return match admission::blocked(shared, name.as_bytes()) {
                    Some(reason) => Err(admission::refused(shared, session, reason)),
                    None => Ok(()),
                };
            }
            FirstFlight::NoName(_) | FirstFlight::Unreadable(_) | FirstFlight::Other => {
                return Ok(())
            }
        }
        if pending.len() > MAX_SNIFF_BYTES {
            return Ok(());
        }
        first_segment = pending.is_empty();
        pending.reserve(4096);
        match tokio::time::timeout_at(deadline, client.read_buf(pending)).await {
            Ok(Ok(n)) if n > 0 => {}
            // The window closed (a server-first protocol), or the client closed or failed.
            _ => return Ok(()),
        }
    }
}
