//! socksmith: a SOCKS4, SOCKS4a and SOCKS5 client and server on tokio.
//!
//! The wire protocol lives in [`socksmith_proto`]; this crate drives it with sockets, timers
//! and a zero-copy relay, and re-exports the protocol types its API speaks in
//! ([`TargetAddr`], [`ReplyCode`], [`Command`], [`Credentials`], ...), so one dependency is
//! enough.
//!
//! - [`client`]: reach a target through one proxy or a chain of them;
//! - [`server`]: serve SOCKS on listeners or on any stream, with an [`server::Egress`] (how
//!   commands reach the outside world), an [`server::Authenticator`], a [`policy::Policy`]
//!   and an [`server::Accounting`] a program can each replace;
//! - [`session`]: the description of one request that all of those look at;
//! - [`relay`], [`resolve`], [`dial`]: the byte pump, name lookups and Happy Eyeballs, which
//!   know nothing of SOCKS.
//!
//! # A client
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use socksmith::client::Client;
//! use tokio::io::AsyncWriteExt;
//!
//! // socks5h: the proxy resolves the name.
//! let client = Client::from_url("socks5h://alice:secret@127.0.0.1:1080")?;
//! let mut stream = client.connect(("example.com", 80)).await?;
//! stream.write_all(b"HEAD / HTTP/1.0\r\n\r\n").await?;
//! # Ok(()) }
//! ```
//!
//! # An embedded server with its own authenticator, policy and egress
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use socksmith::policy::{Decision, DenyReason, Policy};
//! use socksmith::resolve::SystemResolver;
//! use socksmith::server::{
//!     AuthFuture, Authenticator, Connected, Direct, Egress, EgressFuture, EgressRequest,
//!     Server, ServerConfig,
//! };
//! use socksmith::session::Session;
//! use socksmith::Credentials;
//!
//! /// Checks passwords somewhere slow (a database, LDAP): off the runtime's threads.
//! #[derive(Debug)]
//! struct Directory;
//!
//! impl Authenticator for Directory {
//!     fn authenticate<'a>(&'a self, credentials: &'a Credentials) -> AuthFuture<'a> {
//!         let (user, password) = (credentials.username().to_vec(), credentials.password().to_vec());
//!         Box::pin(async move {
//!             tokio::task::spawn_blocking(move || {
//!                 (user == b"alice" && password == b"secret").then(|| "alice".to_owned())
//!             })
//!             .await
//!             .ok()
//!             .flatten()
//!         })
//!     }
//! }
//!
//! /// Only web ports.
//! #[derive(Debug)]
//! struct WebOnly;
//!
//! impl Policy for WebOnly {
//!     fn check_request(&self, session: &Session) -> Decision {
//!         match session.target.port() {
//!             80 | 443 => Decision::Allow,
//!             port => Decision::Deny(DenyReason::Other(format!("port {port} is not a web port"))),
//!         }
//!     }
//! }
//!
//! /// Connects as `Direct` does; a real one might dial through a VPN interface.
//! #[derive(Debug)]
//! struct Logged(Direct);
//!
//! impl Egress for Logged {
//!     fn connect<'a>(&'a self, request: EgressRequest<'a>) -> EgressFuture<'a, Connected> {
//!         tracing::info!(target = %request.session.target, "dialing");
//!         self.0.connect(request)
//!     }
//! }
//!
//! let mut config = ServerConfig::default();
//! config.auth = Some(Arc::new(Directory));
//! config.policy = Arc::new(WebOnly);
//! let direct = Direct::new(Arc::new(SystemResolver::default()), Duration::from_secs(5), Duration::from_secs(10));
//! config.egress = Some(Arc::new(Logged(direct)));
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:1080").await?;
//! let server = Server::new(config);
//! server.serve(vec![listener], async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```
//!
//! `examples/server.rs` runs this server.

pub mod client;
pub mod dial;
pub mod policy;
pub mod relay;
pub mod resolve;
pub mod server;
pub mod session;
mod sys;

// The protocol types this crate's API speaks in, so that one dependency is enough.
pub use socksmith_proto::{
    AuthMethod, Command, Credentials, DomainName, ReplyCode, TargetAddr, Version,
};
