//! Name lookups through the proxy with Tor's extensions: RESOLVE (0xF0, a name to an address)
//! and RESOLVE_PTR (0xF1, an address to a name). Supported by Tor and socksmith's own server;
//! other servers answer "command not supported" (reply 0x07).
//!
//! RESOLVE works over SOCKS5 and SOCKS4a, RESOLVE_PTR over SOCKS5 only. No tunnel follows the
//! reply: the connection is closed.

use std::net::{IpAddr, SocketAddr};

use socksmith_proto::{ClientEvent, Command, DomainName, TargetAddr};

use super::builder::Client;
use super::error::{ClientError, HopError, HopErrorKind, Step};
use super::target::TargetError;

impl Client {
    /// Asks the last hop to resolve `name` and returns the address it found.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), socksmith::client::ClientError> {
    /// let client = socksmith::client::Client::from_url("socks5h://127.0.0.1:9050")?;
    /// let ip = client.resolve("localhost").await?;
    /// # Ok(()) }
    /// ```
    pub async fn resolve(&self, name: &str) -> Result<IpAddr, ClientError> {
        let target = TargetAddr::domain(name, 0).map_err(|e| TargetError::InvalidHost {
            input: name.to_owned(),
            reason: e.to_string(),
        })?;
        match self.lookup(Command::Resolve, &target).await? {
            TargetAddr::Ip(addr) => Ok(addr.ip()),
            other => Err(self.unexpected(Command::Resolve, target, &other)),
        }
    }

    /// Asks the last hop for the name of `ip` (SOCKS5 only).
    pub async fn resolve_ptr(&self, ip: IpAddr) -> Result<String, ClientError> {
        let target = TargetAddr::Ip(SocketAddr::new(ip, 0));
        match self.lookup(Command::ResolvePtr, &target).await? {
            TargetAddr::Domain(name, _) => Ok(name_text(&name)),
            other => Err(self.unexpected(Command::ResolvePtr, target, &other)),
        }
    }

    async fn lookup(
        &self,
        command: Command,
        target: &TargetAddr,
    ) -> Result<TargetAddr, ClientError> {
        self.ensure_last_hop_carries(command)?;
        let io = self.connect_first_hop().await?;
        let opened = self.open(io, command, target.clone()).await?;
        match opened.event {
            ClientEvent::Succeeded { bound } => Ok(bound),
            ClientEvent::BindListening { bound } => Ok(bound),
        }
    }

    fn unexpected(&self, command: Command, target: TargetAddr, answer: &TargetAddr) -> ClientError {
        ClientError::from(HopError {
            hop: self.hops.len(),
            proxy: self.last_hop().redacted(),
            step: Step::Request { command, target },
            kind: HopErrorKind::UnexpectedAnswer(format!("answered with {answer}")),
        })
    }
}

/// The name as text: UTF-8 as is, anything else with replacement characters.
fn name_text(name: &DomainName) -> String {
    name.to_string_lossy().into_owned()
}
