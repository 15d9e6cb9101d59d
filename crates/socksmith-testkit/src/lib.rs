//! Test support shared by the integration tests of every crate: real third-party peers and
//! loopback targets. Never used by the product itself (`publish = false`, a dev-dependency only).
//!
//! - [`tools`]: the one policy for a missing peer ([`tools::require_tool`],
//!   [`tools::peer_missing`]): fail under `CI=true` / `SOCKSMITH_REQUIRE_PEERS=1`, else skip loudly.
//! - [`targets`]: TCP/UDP echo, sink, source and HTTP servers on port 0, stopped on drop.
//! - [`dante`], [`microsocks`], [`ssh`]: real SOCKS servers as child processes on free loopback
//!   ports, killed on drop; each module's docs list what that peer supports.
//! - [`tinyproxy`]: a real HTTP CONNECT proxy on a free loopback port (loopback targets only).
//! - [`socksmith`]: runs the `socksmith` binary (`serve`, or one-shot subcommands).
//! - [`clients`]: curl, ncat and PySocks as SOCKS clients.
//! - [`raw`]: a hand-written SOCKS4/4a/5 client (bytes on the wire, no socksmith code).
//! - [`proxy`]: how a client reaches a proxy (kind, address, credentials, URL).
//! - [`haproxy`]: HAProxy as a PROXY-protocol load balancer in front of socksmith.
//! - [`systemd`]: a `NOTIFY_SOCKET` to read, and socket activation (`systemd-socket-activate`,
//!   or a socket passed as fd 3).
//! - [`process`]: child-process plumbing, free ports, [`process::within`] for test deadlines.
//!
//! Everything listens on 127.0.0.1 or ::1 only; nothing sleeps to wait for readiness (peers are
//! polled with a connect, or report their address).

pub mod clients;
pub mod dante;
pub mod haproxy;
pub mod microsocks;
pub mod process;
pub mod proxy;
pub mod raw;
pub mod socksmith;
pub mod ssh;
pub mod systemd;
pub mod targets;
pub mod tinyproxy;
pub mod tools;
pub mod users;

pub use process::{within, CmdOutput, TEST_DEADLINE};
pub use proxy::{Proxy, ProxyKind};
pub use raw::{Credentials, Target};
pub use targets::{pattern, EchoServer, HttpServer, SinkServer, SourceServer, UdpEchoServer};
pub use tools::{peer_missing, require_tool};
