//! The SOCKS client: CONNECT, BIND, UDP ASSOCIATE and Tor's RESOLVE/RESOLVE_PTR through one
//! proxy or a chain of them, in any mix of SOCKS4, SOCKS4a, SOCKS5 and HTTP CONNECT proxies
//! (`http://` hops carry CONNECT only; as the last hop they refuse the other commands with
//! [`ClientError::Unsupported`]).
//!
//! This module drives the handshake machine of [`socksmith_proto`] over sockets and timers;
//! it makes no protocol decision of its own (what to send and what an answer means is the
//! machine's call). It does not serve: the server lives in its own module and uses this
//! client only to chain through upstream proxies (`server::Upstream`: CONNECT, BIND, UDP
//! ASSOCIATE and RESOLVE through the chain).
//!
//! - [`Proxy`] (from a URL with curl's semantics, or typed) and [`Client`] / [`ClientBuilder`]
//!   ([`Timeouts`] for every step, the [`crate::resolve::Resolve`]r for names resolved here);
//! - [`Client::connect`] / [`Client::connect_over`] return a [`ProxyStream`], tokio's
//!   `AsyncRead + AsyncWrite`, over TCP or any transport the caller brings;
//! - [`Client::bind`] returns a [`BindListener`]; [`Client::udp_associate`] an
//!   [`UdpAssociation`]; [`Client::resolve`] and [`Client::resolve_ptr`] look names up;
//! - [`probe`] finds out what a proxy supports (the `socksmith check` command);
//! - [`Client::from_env`] reads `ALL_PROXY` and `NO_PROXY` as curl does ([`NoProxy`]: the
//!   targets [`Client::connect`] reaches directly);
//! - every failure is a [`ClientError`] naming the hop, the step and the reply code.
//!
//! ```no_run
//! # async fn demo() -> Result<(), socksmith::client::ClientError> {
//! use socksmith::client::Client;
//! // Through a SOCKS5 proxy with authentication, then a SOCKS4a proxy that resolves names.
//! let client = Client::from_urls(["socks5://alice:secret@127.0.0.1:1080", "socks4a://10.0.0.2"])?;
//! let stream = client.connect(("internal.example", 22)).await?;
//! println!("tunnel open, last hop bound {}", stream.bound_addr());
//! // A corporate HTTP proxy first (CONNECT with Basic auth), then a SOCKS5 proxy behind it.
//! let client = Client::from_urls(["http://me:pw@corp.example:3128", "socks5h://far.example"])?;
//! let stream = client.connect(("internal.example", 22)).await?;
//! # Ok(()) }
//! ```

mod bind;
mod builder;
mod chain;
mod env;
mod error;
mod handshake;
mod http;
pub mod probe;
mod resolve;
mod stream;
mod target;
mod udp;
mod url;

pub use bind::BindListener;
pub use builder::{Client, ClientBuilder, Timeouts};
pub(crate) use chain::interleave_families;
pub use env::{proxy_url_from_env, NoProxy, NO_PROXY_VARIABLES, PROXY_VARIABLES};
pub use error::{ClientError, HopError, HopErrorKind, HttpError, Step};
pub use http::MAX_RESPONSE_HEAD;
pub use stream::{ProxyParts, ProxyStream};
pub use target::{parse_target, IntoTarget, TargetError};
pub use udp::{UdpAssociation, MAX_UDP_HEADER_LEN};
pub use url::{
    redact_url, Protocol, Proxy, ProxyHost, UrlError, UrlErrorReason, UserInfo, DEFAULT_PORT,
};
