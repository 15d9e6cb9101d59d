//! The crate's only direct calls into the operating system: Linux pipes and `splice(2)` for the
//! zero-copy relay, and `getaddrinfo(3)`/`getnameinfo(3)` for the system resolver.
//!
//! Linux only: other systems use the portable paths (userspace copy, `tokio::net::lookup_host`).
//!
//! Every `unsafe` block of the crate lives below this module, each with a `// SAFETY:` comment,
//! behind small safe functions. Nothing here knows about SOCKS, tokio or the relay's policy
//! (pooling, readiness): callers get plain `io::Result`s.

#[cfg(target_os = "linux")]
pub(crate) mod netdb;
#[cfg(target_os = "linux")]
pub(crate) mod splice;
