//! HTTP proxy requests through the library's seams: over an in-memory pipe (no TCP, so no
//! splice), with a custom egress that never answers (504), with the accounting hearing HTTP
//! sessions as it hears SOCKS ones, and with `ServerConfig::http` off.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use socksmith::policy::DenyReason;
use socksmith::server::accounting::{Event, TunnelGuard};
use socksmith::server::{
    Accounting, Connected, Egress, EgressFuture, EgressRequest, Server, ServerConfig, Session,
};
use socksmith_testkit::{within, EchoServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

const STEP: Duration = Duration::from_secs(10);

fn loopback_peer() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40_000)
}

/// Serves one in-memory connection with `config`; the client's end.
fn pipe(config: ServerConfig) -> DuplexStream {
    let server = Server::new(config);
    let (client, server_end) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move { server.serve_connection(server_end, loopback_peer()).await });
    client
}

async fn read_to_end(stream: &mut DuplexStream) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(STEP, stream.read_to_end(&mut out))
        .await
        .expect("the server ends the connection in time")
        .expect("read");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_connect_over_a_pipe_relays_and_keeps_its_early_bytes() {
    within(STEP, "CONNECT over a pipe", async {
        let echo = EchoServer::start().await;
        let mut client = pipe(ServerConfig::default());
        let head = format!("CONNECT {0} HTTP/1.1\r\nHost: {0}\r\n\r\n", echo.addr());
        client
            .write_all(&[head.as_bytes(), b"ping"].concat())
            .await
            .expect("send");
        client.shutdown().await.expect("half-close");
        assert_eq!(
            read_to_end(&mut client).await,
            "HTTP/1.1 200 Connection established\r\n\r\nping"
        );
    })
    .await;
}

/// An egress that never connects.
#[derive(Debug)]
struct Blackhole;

impl Egress for Blackhole {
    fn connect<'a>(&'a self, _request: EgressRequest<'a>) -> EgressFuture<'a, Connected> {
        Box::pin(std::future::pending())
    }
}

#[tokio::test]
async fn a_target_that_never_answers_is_504() {
    within(STEP, "504", async {
        let mut config = ServerConfig::default();
        config.egress = Some(Arc::new(Blackhole));
        config.resolve_timeout = Duration::from_millis(100);
        config.connect_timeout = Duration::from_millis(100);
        for request in [
            "CONNECT 192.0.2.1:443 HTTP/1.1\r\nHost: 192.0.2.1:443\r\n\r\n",
            "GET http://192.0.2.1/ HTTP/1.1\r\nHost: 192.0.2.1\r\nConnection: close\r\n\r\n",
        ] {
            let mut client = pipe(config.clone());
            client.write_all(request.as_bytes()).await.expect("send");
            let answer = read_to_end(&mut client).await;
            assert!(
                answer.starts_with("HTTP/1.1 504 "),
                "{request:?}:\n{answer}"
            );
        }
    })
    .await;
}

/// Remembers what it hears about HTTP sessions, and refuses targets on port 9.
#[derive(Debug, Default)]
struct Heard {
    lines: Mutex<Vec<String>>,
}

impl Accounting for Heard {
    fn open(&self, session: &Session) -> Result<Option<Box<dyn TunnelGuard>>, DenyReason> {
        if session.target.port() == 9 {
            return Err(DenyReason::Other("port 9 is over its limit".into()));
        }
        Ok(None)
    }

    fn record(&self, event: &Event<'_>) {
        let line = match event {
            Event::Denied { session, reason } => format!("denied http={} {reason}", session.http),
            Event::Finished(finished) => format!(
                "finished http={} outcome={}",
                finished.session.is_some_and(|s| s.http),
                finished.outcome()
            ),
            _ => return,
        };
        self.lines.lock().expect("not poisoned").push(line);
    }
}

#[tokio::test]
async fn the_accounting_hears_http_sessions_and_may_refuse_them() {
    within(STEP, "accounting", async {
        let echo = EchoServer::start().await;
        let heard = Arc::new(Heard::default());
        let mut config = ServerConfig::default();
        config.accounting = Some(heard.clone());

        let mut client = pipe(config.clone());
        let refused = "CONNECT 127.0.0.1:9 HTTP/1.1\r\nHost: x\r\n\r\n";
        client.write_all(refused.as_bytes()).await.expect("send");
        let answer = read_to_end(&mut client).await;
        assert!(answer.starts_with("HTTP/1.1 403 "), "{answer}");
        assert!(answer.ends_with("port 9 is over its limit\n"), "{answer}");

        let mut client = pipe(config);
        let head = format!("CONNECT {} HTTP/1.0\r\n\r\n", echo.addr());
        client.write_all(head.as_bytes()).await.expect("send");
        client.shutdown().await.expect("half-close");
        read_to_end(&mut client).await;

        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            let mut lines = heard.lines.lock().expect("not poisoned").clone();
            if lines.len() >= 3 {
                // The refused session lingers for the client's last bytes, so its end may
                // come second.
                lines.sort();
                assert_eq!(
                    lines,
                    [
                        "denied http=true port 9 is over its limit",
                        "finished http=true outcome=denied",
                        "finished http=true outcome=ok",
                    ]
                );
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{lines:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn with_http_off_an_http_client_gets_nothing_and_socks_still_works() {
    within(STEP, "http off", async {
        let mut config = ServerConfig::default();
        config.http = false;
        let mut client = pipe(config.clone());
        client
            .write_all(b"GET http://127.0.0.1/ HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("send");
        assert_eq!(read_to_end(&mut client).await, "");

        let mut client = pipe(config);
        client.write_all(&[5, 1, 0]).await.expect("greeting");
        let mut choice = [0u8; 2];
        client.read_exact(&mut choice).await.expect("method choice");
        assert_eq!(choice, [5, 0]);
    })
    .await;
}
