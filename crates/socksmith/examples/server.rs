//! An embedded SOCKS server with its own authenticator, policy and egress, on the library
//! alone: `cargo run -p socksmith --example server -- 127.0.0.1:1080`, then
//! `curl -x socks5h://alice:secret@127.0.0.1:1080 http://example.com/` (ports 80 and 443 only).

use std::sync::Arc;
use std::time::Duration;

use socksmith::policy::{Decision, DenyReason, Policy};
use socksmith::resolve::SystemResolver;
use socksmith::server::{
    AuthFuture, Authenticator, Connected, Direct, Egress, EgressFuture, EgressRequest, Server,
    ServerConfig,
};
use socksmith::session::Session;
use socksmith::Credentials;

/// Checks passwords where a real deployment would ask a database or LDAP: on the blocking
/// pool, never on the runtime's threads.
#[derive(Debug)]
struct Directory;

impl Authenticator for Directory {
    fn authenticate<'a>(&'a self, credentials: &'a Credentials) -> AuthFuture<'a> {
        let user = credentials.username().to_vec();
        let password = credentials.password().to_vec();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                (user == b"alice" && password == b"secret").then(|| "alice".to_owned())
            })
            .await
            .ok()
            .flatten()
        })
    }
}

/// Only web ports.
#[derive(Debug)]
struct WebOnly;

impl Policy for WebOnly {
    fn check_request(&self, session: &Session) -> Decision {
        match session.target.port() {
            80 | 443 => Decision::Allow,
            port => Decision::Deny(DenyReason::Other(format!("port {port} is not a web port"))),
        }
    }
}

/// Connects as [`Direct`] does and prints where; a real one might dial through a VPN
/// interface. BIND, UDP and RESOLVE are left to the trait's defaults: refused (0x07).
#[derive(Debug)]
struct Announced(Direct);

impl Egress for Announced {
    fn connect<'a>(&'a self, request: EgressRequest<'a>) -> EgressFuture<'a, Connected> {
        println!(
            "{} asks for {}",
            request.session.client, request.session.target
        );
        self.0.connect(request)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:1080".into());
    let mut config = ServerConfig::default();
    config.auth = Some(Arc::new(Directory));
    config.policy = Arc::new(WebOnly);
    let direct = Direct::new(
        Arc::new(SystemResolver::default()),
        Duration::from_secs(5),
        Duration::from_secs(10),
    );
    config.egress = Some(Arc::new(Announced(direct)));

    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);
    let server = Server::new(config);
    server
        .serve(vec![listener], async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
