//! `serve --admin ADDR`: an HTTP server beside the SOCKS server, for operators. It serves
//! Prometheus metrics (`/metrics`), the live tunnels as JSON (`/api/sessions`), and a status
//! page (`/`) that a person reads in a browser.
//!
//! - `accounting`: the library [`Accounting`] that hears the SOCKS server's events;
//! - `metrics`: the Prometheus families, with the library's own counters from `stats`; `live`: the live table, recent refusals, throughput;
//! - `http`: routes, the bearer token, the accept loop; `page.html`: the status page.
//!
//! Byte counts move in steps: the relay books a tunnel's bytes every `PROGRESS_STEP` (256 KiB)
//! and when it ends (no counting per byte), so `socksmith_bytes_total`, the throughput chart
//! and a live row's `bytes_up`/`bytes_down` follow a long transfer as it goes. UDP
//! associations report their bytes when they end.
//!
//! An address other machines can reach is refused unless a token is set: the page and the
//! API show who uses the proxy and for what.

mod accounting;
mod http;
mod live;
mod metrics;
mod stats;

use std::fmt;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Instant, SystemTime};

use anyhow::Context as _;
use socksmith::server::{Accounting, Server};
use subtle::ConstantTimeEq as _;
use tokio::net::TcpListener;

pub use accounting::AdminAccounting;

/// The `--admin-token` value; `Debug` never shows it.
#[derive(Clone)]
pub struct AdminToken(String);

impl AdminToken {
    /// Parses a token for clap and the config file: printable ASCII without spaces (what an
    /// HTTP header carries unchanged), at least one character.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("the admin token is empty".to_owned());
        }
        if !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(
                "the admin token must be printable ASCII without spaces (it travels in an \
                 HTTP header); value not shown"
                    .to_owned(),
            );
        }
        Ok(AdminToken(s.to_owned()))
    }

    /// Whether `given` is this token, in time independent of where they differ.
    fn matches(&self, given: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(given).into()
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(***)")
    }
}

/// Parses `--admin ADDR`: an IP address and a port (0 picks a free port).
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.trim().parse().map_err(|_| {
        format!(
            "{s:?} is not an IP address and port: write e.g. 127.0.0.1:9090 or [::1]:9090 \
             (port 0 picks a free port)"
        )
    })
}

/// The admin server, configured but not yet listening.
#[derive(Debug)]
pub struct Admin {
    addr: SocketAddr,
    token: TokenSlot,
    accounting: AdminAccounting,
}

/// The token in force, shared by the running admin server and the reload that replaces it.
#[derive(Debug, Clone, Default)]
pub struct TokenSlot(Arc<RwLock<Option<AdminToken>>>);

impl TokenSlot {
    fn new(token: Option<AdminToken>) -> Self {
        TokenSlot(Arc::new(RwLock::new(token)))
    }

    /// Whether a request with `given` (its bearer token, if any) may pass.
    fn admits(&self, given: Option<&[u8]>) -> bool {
        match &*self.0.read().unwrap_or_else(PoisonError::into_inner) {
            None => true,
            Some(token) => given.is_some_and(|given| token.matches(given)),
        }
    }
}

/// What a reload may change of a running admin server: its token (the address is fixed at
/// start, as the listeners are).
#[derive(Debug, Clone)]
pub struct AdminReload {
    addr: SocketAddr,
    token: TokenSlot,
}

impl AdminReload {
    /// Checks `token` for the running server's address as at start ([`Admin::new`]).
    pub fn check(&self, token: Option<&AdminToken>) -> anyhow::Result<()> {
        check(self.addr, token)
    }

    /// Puts `token` in force for the requests from now on.
    pub fn set_token(&self, token: Option<AdminToken>) {
        *self.token.0.write().unwrap_or_else(PoisonError::into_inner) = token;
    }

    /// The address it was started with.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// An address that is not loopback needs a token.
fn check(addr: SocketAddr, token: Option<&AdminToken>) -> anyhow::Result<()> {
    anyhow::ensure!(
        token.is_some() || addr.ip().to_canonical().is_loopback(),
        "--admin {addr}: other machines could reach this address, and the admin server \
         shows who uses the proxy and for what; give --admin-token TOKEN (every request \
         then needs `Authorization: Bearer TOKEN`) or use a loopback address such as \
         127.0.0.1:{}",
        addr.port()
    );
    Ok(())
}

impl Admin {
    /// Checks the settings: an address that is not loopback needs a token. Call it before
    /// binding anything, so that a refused configuration never listens.
    pub fn new(addr: SocketAddr, token: Option<AdminToken>) -> anyhow::Result<Self> {
        check(addr, token.as_ref())?;
        Ok(Admin {
            addr,
            token: TokenSlot::new(token),
            accounting: AdminAccounting::new(),
        })
    }

    /// The handle a reload changes the token through.
    pub fn reload_handle(&self) -> AdminReload {
        AdminReload {
            addr: self.addr,
            token: self.token.clone(),
        }
    }

    /// The admin server the settings ask for, if any (see [`Admin::new`]). A token without
    /// an address is only warned about: it may come from an environment meant for another
    /// instance.
    pub fn from_settings(
        addr: Option<SocketAddr>,
        token: Option<AdminToken>,
    ) -> anyhow::Result<Option<Self>> {
        match addr {
            Some(addr) => Self::new(addr, token).map(Some),
            None => {
                if token.is_some() {
                    tracing::warn!("--admin-token is set but --admin is not: no admin server runs");
                }
                Ok(None)
            }
        }
    }

    /// What the SOCKS server's configuration takes as its `accounting`.
    pub fn accounting(&self) -> Arc<dyn Accounting> {
        Arc::new(self.accounting.clone())
    }

    /// Binds, starts serving in the background (and sampling the throughput), and prints
    /// `admin on http://ADDR/` with the real address.
    pub async fn start(self, server: &Server) -> anyhow::Result<SocketAddr> {
        let listener = TcpListener::bind(self.addr)
            .await
            .with_context(|| format!("cannot serve --admin on {}", self.addr))?;
        let addr = listener.local_addr()?;
        self.accounting.metrics.attach(Arc::clone(server.stats()));
        let state = Arc::new(http::State {
            accounting: self.accounting,
            token: self.token,
            started: Instant::now(),
        });
        tokio::spawn(sample_throughput(Arc::clone(&state)));
        tokio::spawn(http::serve(listener, state, http::Lifetime::DEFAULT));
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "admin on {}", http::describe(addr))?;
        stdout.flush()?;
        Ok(addr)
    }
}

/// Samples the byte totals every [`live::SAMPLE_EVERY`], for the page's chart.
async fn sample_throughput(state: Arc<http::State>) {
    let mut tick = tokio::time::interval(live::SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = Instant::now();
    loop {
        tick.tick().await;
        let now = Instant::now();
        let totals = state.accounting.metrics.bytes_total();
        state
            .accounting
            .live
            .sample(totals, SystemTime::now(), now - last);
        last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reachable_address_needs_a_token() {
        let public: SocketAddr = "0.0.0.0:9090".parse().expect("valid");
        let error = Admin::new(public, None).expect_err("refused");
        assert!(error.to_string().contains("--admin-token"), "{error}");
        let token = AdminToken::parse("s3cret").expect("valid token");
        assert!(Admin::new(public, Some(token)).is_ok());
        for loopback in [
            "127.0.0.1:0",
            "127.0.0.2:9090",
            "[::1]:0",
            "[::ffff:127.0.0.1]:0",
        ] {
            let addr = parse_addr(loopback).expect("valid");
            assert!(Admin::new(addr, None).is_ok(), "{loopback}");
        }
    }

    #[test]
    fn tokens_are_header_safe_and_never_shown() {
        assert!(AdminToken::parse("").is_err());
        assert!(AdminToken::parse("two words").is_err());
        let token = AdminToken::parse("s3cret").expect("valid");
        assert!(!format!("{token:?}").contains("s3cret"));
        assert!(token.matches(b"s3cret"));
        assert!(!token.matches(b"s3cre"));
        assert!(!token.matches(b"s3cret!"));
    }
}
