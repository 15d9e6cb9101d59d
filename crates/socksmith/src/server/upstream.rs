//! [`Upstream`]: the [`Outbound`] that sends every tunnel through a chain of parent proxies,
//! with the client library ([`Client`]) doing the walking.
//!
//! CONNECT goes through [`Client::connect`]; BIND through [`Client::bind`] (the last hop
//! listens, its two replies become the server's two replies); UDP ASSOCIATE through
//! [`Client::udp_associate`] (the upstream association replaces the server's own outbound UDP
//! socket); RESOLVE and RESOLVE_PTR through [`Client::resolve`] and [`Client::resolve_ptr`].
//! Nothing goes out from this host directly while an upstream is configured: what the chain
//! cannot do, the client is refused (a last hop that does not support a command answers "command
//! not supported", reply 0x07, and the server passes that on).
//!
//! The target is passed as the client sent it: a name stays a name for a last hop that
//! resolves names (`socks5h`, `socks4a`); for `socks5`/`socks4` the client library resolves
//! it on this host, as curl does. Policy: [`crate::policy::Policy::check_request`] sees the
//! requested target before any of this, but the addresses a name resolves to (at the far end,
//! or inside the client library) are not checked here, and neither is what the upstream's
//! network can reach: deny names too, or filter at the upstream.
//!
//! Failures are answered with [`Client::downstream_reply`] and logged with the client's
//! message, which names the hop ("hop 2 (socks5://10.0.0.2:1080): CONNECT 10.0.0.9:80:
//! connection refused (reply 0x05)"). This module owns the type and CONNECT; the BIND, UDP and
//! RESOLVE paths live with the server's other code for those commands.

use std::fmt;

use tokio::net::TcpStream;

use crate::client::{Client, ProxyStream};
use crate::server::outbound::{
    ConnectError, ConnectFuture, ConnectRequest, Connected, Outbound, OutboundStream,
};

/// Sends the server's tunnels through a chain of parent SOCKS proxies. Cheap to clone.
///
/// ```no_run
/// use socksmith::client::Client;
/// use socksmith::server::{ServerConfig, Upstream};
/// use std::sync::Arc;
///
/// let client = Client::from_urls(["socks5h://user:pass@127.0.0.1:1081"]).unwrap();
/// let mut config = ServerConfig::default();
/// config.outbound = Some(Arc::new(Upstream::new(client)));
/// ```
#[derive(Clone)]
pub struct Upstream {
    client: Client,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The client's Debug redacts passwords.
        f.debug_struct("Upstream")
            .field("client", &self.client)
            .finish()
    }
}

impl Upstream {
    /// Tunnels through `client`'s chain, first hop first.
    pub fn new(client: Client) -> Self {
        Upstream { client }
    }

    /// The client that walks the chain.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The chain for a log line, passwords redacted: `socks5h://u:***@10.0.0.1:1080 ->
    /// socks5://10.0.0.2:1080`.
    pub fn describe(&self) -> String {
        self.client
            .hops()
            .iter()
            .map(|hop| hop.redacted())
            .collect::<Vec<_>>()
            .join(" -> ")
    }

    /// Opens the tunnel (what [`Outbound::connect`] does, without boxing the future).
    pub async fn open(&self, request: ConnectRequest<'_>) -> Result<Connected, ConnectError> {
        let stream = self
            .client
            .connect(&request.session.target)
            .await
            .map_err(|err| ConnectError::Other {
                reply: self.client.downstream_reply(&err),
                message: err.to_string(),
            })?;
        let bound = stream.bound_addr().clone();
        Ok(Connected {
            stream: outbound_stream(stream),
            bound,
        })
    }
}

impl Outbound for Upstream {
    fn connect<'a>(&'a self, request: ConnectRequest<'a>) -> ConnectFuture<'a> {
        Box::pin(self.open(request))
    }

    fn upstream(&self) -> Option<&Upstream> {
        Some(self)
    }
}

/// A tunnel through the chain as the target end of the server's relay: the bare TCP
/// connection to the first hop when no early target bytes were read with the last reply (the
/// relay then splices), the stream with its buffer otherwise.
pub(crate) fn outbound_stream(stream: ProxyStream<TcpStream>) -> OutboundStream {
    if stream.read_buffer().is_empty() {
        OutboundStream::Tcp(stream.into_inner())
    } else {
        OutboundStream::Stream(Box::new(stream))
    }
}
