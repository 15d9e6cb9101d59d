//! The crate's only direct calls into the operating system: Linux pipes and `splice(2)` for the
//! zero-copy relay, `getaddrinfo(3)`/`getnameinfo(3)` for the system resolver, and batched UDP
//! (through `quinn-udp`, with the socket options and the lazily backed memory it needs) for the
//! UDP ASSOCIATE relay.
//!
//! Linux only, but for `udp` (which works wherever `quinn-udp` does): other systems use the
//! portable paths (userspace copy, `tokio::net::lookup_host`).
//!
//! Every `unsafe` block of the crate lives below this module, each with a `// SAFETY:` comment,
//! behind small safe functions. Nothing here knows about SOCKS, tokio or the relay's policy
//! (pooling, readiness): callers get plain `io::Result`s. The one exception is `udp`'s socket,
//! which waits for readiness on tokio's reactor as `quinn-udp` is meant to be driven.

#[cfg(target_os = "linux")]
pub(crate) mod netdb;
#[cfg(target_os = "linux")]
pub(crate) mod splice;
pub(crate) mod udp;
