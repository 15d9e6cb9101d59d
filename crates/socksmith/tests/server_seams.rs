//! The server's seams, each driven end to end with real sockets on loopback: sessions over any
//! stream (a Unix socket, an in-memory pipe, a TCP connection whose first bytes the caller
//! already read), a custom egress that every command goes through, and the accounting hook.

mod server_support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use server_support::{udp_exchange, Running, STEP};
use socksmith::policy::DenyReason;
use socksmith::resolve::StaticResolver;
use socksmith::server::accounting::{Event, Traffic, TunnelGuard};
use socksmith::server::{
    Accounting, Connected, Direct, Egress, EgressFuture, EgressRequest, PendingBind, Server,
    ServerConfig, Session, UdpEgress, Users,
};
use socksmith::{Command, DomainName};
use socksmith_testkit::raw::{
    read_socks5_reply, socks5_auth, socks5_bind_accepted, socks5_greeting, socks5_request,
    CMD_BIND, CMD_CONNECT, CMD_UDP_ASSOCIATE,
};
use socksmith_testkit::{pattern, within, Credentials, EchoServer, Target, UdpEchoServer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket, UnixListener, UnixStream};

const RESOLVE: u8 = 0xF0;
const RESOLVE_PTR: u8 = 0xF1;

/// Greets, CONNECTs to `target` and checks that `data` comes back whole through the tunnel.
async fn connect_and_echo<S>(stream: &mut S, target: SocketAddr, data: &[u8])
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    assert_eq!(socks5_greeting(stream, &[0]).await.expect("greeting"), 0);
    let reply = socks5_request(stream, CMD_CONNECT, &Target::Ip(target))
        .await
        .expect("reply");
    assert_eq!(reply.code, 0, "CONNECT succeeded");
    stream.write_all(data).await.expect("send");
    let mut back = vec![0u8; data.len()];
    stream.read_exact(&mut back).await.expect("echo");
    assert!(back == data, "the echo is byte-exact");
}

fn loopback_peer() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40_000)
}

#[tokio::test]
async fn socks5_is_served_over_a_unix_socket() {
    within(STEP, "unix socket", async {
        let echo = EchoServer::start().await;
        let dir = std::env::temp_dir().join(format!("socksmith-unix-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("socks.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).expect("bind unix socket");
        let server = Server::new(ServerConfig::default());
        let accepting = tokio::spawn({
            let server = server.clone();
            async move {
                let (stream, _) = listener.accept().await.expect("accept");
                server.serve_connection(stream, loopback_peer()).await;
            }
        });
        let mut client = UnixStream::connect(&path).await.expect("connect");
        connect_and_echo(&mut client, echo.addr(), &pattern(100_000)).await;
        drop(client);
        accepting
            .await
            .expect("the session ends when the client closes");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(server.stats().snapshot().tunnels_total, 1);
    })
    .await;
}

#[tokio::test]
async fn socks5_is_served_over_an_in_memory_pipe() {
    within(STEP, "duplex", async {
        let echo = EchoServer::start().await;
        let server = Server::new(ServerConfig::default());
        let (mut client, server_end) = tokio::io::duplex(1024);
        let serving = tokio::spawn({
            let server = server.clone();
            async move { server.serve_connection(server_end, loopback_peer()).await }
        });
        // Larger than the pipe's buffer: the relay must move it in pieces.
        connect_and_echo(&mut client, echo.addr(), &pattern(20_000)).await;
        client.shutdown().await.expect("half-close");
        let mut rest = Vec::new();
        client
            .read_to_end(&mut rest)
            .await
            .expect("the server closes after the target");
        assert!(rest.is_empty());
        serving.await.expect("session task");
        let stats = server.stats().snapshot();
        assert_eq!(stats.bytes_client_to_target, 20_000);
        assert_eq!(stats.bytes_target_to_client, 20_000);
    })
    .await;
}

#[tokio::test]
async fn a_session_whose_first_bytes_were_already_read_loses_none() {
    within(STEP, "prefixed", async {
        let echo = EchoServer::start().await;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = Server::new(ServerConfig::default());
        let serving = tokio::spawn({
            let server = server.clone();
            async move {
                let (mut stream, peer) = listener.accept().await.expect("accept");
                // What a shared port does to tell the protocols apart: read the first bytes.
                let mut first = vec![0u8; 2];
                stream.read_exact(&mut first).await.expect("first bytes");
                assert_eq!(first[0], 5, "a SOCKS5 greeting");
                server.serve_prefixed(stream, peer, first).await;
            }
        });
        // Greeting, request and payload in one write: the server read part of it before the
        // session started, and the rest follows from the socket.
        let mut client = TcpStream::connect(addr).await.expect("connect");
        let mut all = vec![5, 1, 0];
        all.extend_from_slice(&[5, 1, 0]);
        Target::Ip(echo.addr()).encode_socks5(&mut all);
        all.extend_from_slice(b"pipelined payload");
        client.write_all(&all).await.expect("send");
        let mut choice = [0u8; 2];
        client.read_exact(&mut choice).await.expect("method choice");
        assert_eq!(choice, [5, 0]);
        let reply = read_socks5_reply(&mut client).await.expect("reply");
        assert_eq!(reply.code, 0);
        let mut back = [0u8; 17];
        client.read_exact(&mut back).await.expect("echo");
        assert_eq!(&back, b"pipelined payload");
        drop(client);
        serving.await.expect("session task");
    })
    .await;
}

/// An egress that does what [`Direct`] does and counts which commands came through it.
#[derive(Debug)]
struct Counting {
    direct: Direct,
    connects: AtomicUsize,
    binds: AtomicUsize,
    udp: AtomicUsize,
    resolves: AtomicUsize,
    ptrs: AtomicUsize,
}

impl Egress for Counting {
    fn connect<'a>(&'a self, request: EgressRequest<'a>) -> EgressFuture<'a, Connected> {
        self.connects.fetch_add(1, Ordering::SeqCst);
        self.direct.connect(request)
    }

    fn bind<'a>(&'a self, request: EgressRequest<'a>) -> EgressFuture<'a, Box<dyn PendingBind>> {
        self.binds.fetch_add(1, Ordering::SeqCst);
        self.direct.bind(request)
    }

    fn udp_associate<'a>(
        &'a self,
        request: EgressRequest<'a>,
    ) -> EgressFuture<'a, Box<dyn UdpEgress>> {
        self.udp.fetch_add(1, Ordering::SeqCst);
        self.direct.udp_associate(request)
    }

    fn resolve<'a>(
        &'a self,
        request: EgressRequest<'a>,
        name: &'a DomainName,
    ) -> EgressFuture<'a, Vec<IpAddr>> {
        self.resolves.fetch_add(1, Ordering::SeqCst);
        self.direct.resolve(request, name)
    }

    fn resolve_ptr<'a>(
        &'a self,
        request: EgressRequest<'a>,
        ip: IpAddr,
    ) -> EgressFuture<'a, String> {
        self.ptrs.fetch_add(1, Ordering::SeqCst);
        self.direct.resolve_ptr(request, ip)
    }
}

#[tokio::test]
async fn every_command_goes_through_a_custom_egress() {
    within(STEP, "custom egress", async {
        let echo = EchoServer::start().await;
        let udp_echo = UdpEchoServer::start().await;
        let resolver = Arc::new(
            StaticResolver::new()
                .with_host("echo.test", [IpAddr::V4(Ipv4Addr::LOCALHOST)])
                .with_name(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9)), "nine.test"),
        );
        let egress = Arc::new(Counting {
            direct: Direct::new(resolver, Duration::from_secs(5), Duration::from_secs(5)),
            connects: AtomicUsize::new(0),
            binds: AtomicUsize::new(0),
            udp: AtomicUsize::new(0),
            resolves: AtomicUsize::new(0),
            ptrs: AtomicUsize::new(0),
        });
        let mut config = ServerConfig::default();
        config.egress = Some(egress.clone());
        let server = Running::start(config).await;

        // CONNECT, to a name the egress's resolver knows.
        let mut s = TcpStream::connect(server.addr).await.expect("connect");
        assert_eq!(socks5_greeting(&mut s, &[0]).await.expect("greeting"), 0);
        let name = Target::Domain("echo.test".into(), echo.addr().port());
        let reply = socks5_request(&mut s, CMD_CONNECT, &name)
            .await
            .expect("reply");
        assert_eq!(reply.code, 0);
        s.write_all(b"ping").await.expect("send");
        let mut back = [0u8; 4];
        s.read_exact(&mut back).await.expect("echo");
        assert_eq!(&back, b"ping");
        drop(s);

        // BIND: the egress listens; a peer connects; both replies come.
        let mut control = TcpStream::connect(server.addr).await.expect("connect");
        assert_eq!(
            socks5_greeting(&mut control, &[0]).await.expect("greeting"),
            0
        );
        let any = Target::Ip("0.0.0.0:0".parse().expect("literal"));
        let reply = socks5_request(&mut control, CMD_BIND, &any)
            .await
            .expect("reply");
        assert_eq!(reply.code, 0);
        let Target::Ip(listening) = reply.addr else {
            panic!("BIND listens on an address")
        };
        let mut peer = TcpStream::connect(listening).await.expect("peer connects");
        socks5_bind_accepted(&mut control)
            .await
            .expect("second reply");
        peer.write_all(b"from peer").await.expect("peer writes");
        let mut got = [0u8; 9];
        control.read_exact(&mut got).await.expect("relayed");
        assert_eq!(&got, b"from peer");
        drop((control, peer));

        // UDP ASSOCIATE, with a datagram to a name (resolved through the egress).
        let mut control = TcpStream::connect(server.addr).await.expect("connect");
        assert_eq!(
            socks5_greeting(&mut control, &[0]).await.expect("greeting"),
            0
        );
        let reply = socks5_request(&mut control, CMD_UDP_ASSOCIATE, &any)
            .await
            .expect("reply");
        assert_eq!(reply.code, 0);
        let Target::Ip(relay) = reply.addr else {
            panic!("the relay is an address")
        };
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("udp");
        let to = Target::Domain("echo.test".into(), udp_echo.addr().port());
        let (_, source, data) = udp_exchange(&socket, relay, &to, b"datagram").await;
        assert_eq!(data, b"datagram");
        assert_eq!(source, Target::Ip(udp_echo.addr()));
        drop(control);

        // RESOLVE and RESOLVE_PTR.
        let mut s = TcpStream::connect(server.addr).await.expect("connect");
        assert_eq!(socks5_greeting(&mut s, &[0]).await.expect("greeting"), 0);
        let reply = socks5_request(&mut s, RESOLVE, &Target::Domain("echo.test".into(), 0))
            .await
            .expect("reply");
        assert_eq!(reply.code, 0);
        assert_eq!(
            reply.addr,
            Target::Ip("127.0.0.1:0".parse().expect("literal"))
        );
        let mut s = TcpStream::connect(server.addr).await.expect("connect");
        assert_eq!(socks5_greeting(&mut s, &[0]).await.expect("greeting"), 0);
        let reply = socks5_request(
            &mut s,
            RESOLVE_PTR,
            &Target::Ip("127.0.0.9:0".parse().expect("literal")),
        )
        .await
        .expect("reply");
        assert_eq!(reply.code, 0);
        assert_eq!(reply.addr, Target::Domain("nine.test".into(), 0));

        let count = |c: &AtomicUsize| c.load(Ordering::SeqCst);
        assert_eq!(count(&egress.connects), 1, "CONNECT");
        assert_eq!(count(&egress.binds), 1, "BIND");
        assert_eq!(count(&egress.udp), 1, "UDP ASSOCIATE");
        // RESOLVE, plus the UDP destination's name.
        assert_eq!(count(&egress.resolves), 2, "RESOLVE");
        assert_eq!(count(&egress.ptrs), 1, "RESOLVE_PTR");
    })
    .await;
}

/// What the accounting heard, per user.
#[derive(Debug, Default)]
struct Ledger {
    opened: Mutex<Vec<(String, Command)>>,
    closed: Arc<Mutex<Vec<(String, Traffic)>>>,
    finished: Mutex<Vec<(Option<String>, &'static str)>>,
    denied: AtomicUsize,
}

struct Hold {
    user: String,
    closed: Arc<Mutex<Vec<(String, Traffic)>>>,
}

impl TunnelGuard for Hold {
    fn finish(&mut self, traffic: Traffic) {
        self.closed
            .lock()
            .expect("lock")
            .push((self.user.clone(), traffic));
    }
}

impl Accounting for Ledger {
    fn open(&self, session: &Session) -> Result<Option<Box<dyn TunnelGuard>>, DenyReason> {
        let user = session.user.clone().unwrap_or_default();
        if user == "mallory" {
            return Err(DenyReason::Other("mallory has no tunnels left".into()));
        }
        self.opened
            .lock()
            .expect("lock")
            .push((user.clone(), session.command));
        Ok(Some(Box::new(Hold {
            user,
            closed: Arc::clone(&self.closed),
        })))
    }

    fn record(&self, event: &Event<'_>) {
        match event {
            Event::Finished(f) => self
                .finished
                .lock()
                .expect("lock")
                .push((f.session.and_then(|s| s.user.clone()), f.outcome())),
            Event::Denied { .. } => {
                self.denied.fetch_add(1, Ordering::SeqCst);
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn the_accounting_sees_each_users_tunnels_open_close_and_bytes() {
    within(STEP, "accounting", async {
        let echo = EchoServer::start().await;
        let mut users = Users::new();
        users.insert("alice", "pw-a").expect("user");
        users.insert("bob", "pw-b").expect("user");
        users.insert("mallory", "pw-m").expect("user");
        let ledger = Arc::new(Ledger::default());
        let mut config = ServerConfig::default();
        config.auth = Some(Arc::new(users));
        config.accounting = Some(ledger.clone());
        let server = Running::start(config).await;

        let tunnel = |user: &'static str, pass: &'static str, n: usize| {
            let addr = server.addr;
            let target = echo.addr();
            async move {
                let mut s = TcpStream::connect(addr).await.expect("connect");
                let creds = Credentials::new(user, pass);
                socks5_auth(&mut s, Some(&creds)).await.expect("auth");
                let reply = socks5_request(&mut s, CMD_CONNECT, &Target::Ip(target))
                    .await
                    .expect("reply");
                if reply.code == 0 {
                    let data = pattern(n);
                    s.write_all(&data).await.expect("send");
                    let mut back = vec![0u8; n];
                    s.read_exact(&mut back).await.expect("echo");
                    s.shutdown().await.expect("half-close");
                    let mut rest = Vec::new();
                    s.read_to_end(&mut rest).await.expect("end");
                }
                reply.code
            }
        };
        assert_eq!(tunnel("alice", "pw-a", 1000).await, 0);
        assert_eq!(tunnel("alice", "pw-a", 3000).await, 0);
        assert_eq!(tunnel("bob", "pw-b", 500).await, 0);
        assert_eq!(tunnel("mallory", "pw-m", 1).await, 2, "refused with 0x02");

        server.stats_when(|s| s.sessions_active == 0).await;
        let opened = ledger.opened.lock().expect("lock").clone();
        assert_eq!(
            opened,
            vec![
                ("alice".to_owned(), Command::Connect),
                ("alice".to_owned(), Command::Connect),
                ("bob".to_owned(), Command::Connect),
            ]
        );
        let mut closed = ledger.closed.lock().expect("lock").clone();
        closed.sort_by_key(|(user, t)| (user.clone(), t.up));
        assert_eq!(
            closed,
            vec![
                (
                    "alice".to_owned(),
                    Traffic {
                        up: 1000,
                        down: 1000
                    }
                ),
                (
                    "alice".to_owned(),
                    Traffic {
                        up: 3000,
                        down: 3000
                    }
                ),
                ("bob".to_owned(), Traffic { up: 500, down: 500 }),
            ]
        );
        assert_eq!(ledger.denied.load(Ordering::SeqCst), 1);
        let finished = ledger.finished.lock().expect("lock").clone();
        assert_eq!(finished.len(), 4);
        assert!(
            finished.contains(&(Some("mallory".to_owned()), "denied")),
            "{finished:?}"
        );
        assert_eq!(finished.iter().filter(|(_, o)| *o == "ok").count(), 3);
    })
    .await;
}

/// Panics for one user name: a stand-in for a bug in a session's code path.
#[derive(Debug)]
struct PanicsForBoom;

impl socksmith::server::Authenticator for PanicsForBoom {
    fn authenticate<'a>(
        &'a self,
        credentials: &'a socksmith::Credentials,
    ) -> socksmith::server::AuthFuture<'a> {
        Box::pin(async move {
            assert!(
                credentials.username() != b"boom",
                "a bug in an authenticator"
            );
            Some(String::from_utf8_lossy(credentials.username()).into_owned())
        })
    }
}

#[tokio::test]
async fn a_session_that_panics_is_counted_and_the_server_keeps_serving() {
    within(STEP, "panic", async {
        let echo = EchoServer::start().await;
        let mut config = ServerConfig::default();
        config.auth = Some(Arc::new(PanicsForBoom));
        let server = Running::start(config).await;

        let mut s = TcpStream::connect(server.addr).await.expect("connect");
        let boom = Credentials::new("boom", "x");
        assert!(
            socks5_auth(&mut s, Some(&boom)).await.is_err(),
            "the panicking session closes the connection"
        );
        server.stats_when(|s| s.session_panics == 1).await;

        let mut s = TcpStream::connect(server.addr).await.expect("connect");
        socks5_auth(&mut s, Some(&Credentials::new("fine", "x")))
            .await
            .expect("the next client is served");
        let reply = socks5_request(&mut s, CMD_CONNECT, &Target::Ip(echo.addr()))
            .await
            .expect("reply");
        assert_eq!(reply.code, 0);
    })
    .await;
}

#[tokio::test]
async fn a_reload_applies_to_new_sessions_while_running_tunnels_keep_going() {
    within(STEP, "reload", async {
        let echo = EchoServer::start().await;
        let server = Running::start(ServerConfig::default()).await;

        let mut before = TcpStream::connect(server.addr).await.expect("connect");
        connect_and_echo(&mut before, echo.addr(), b"before the reload").await;

        let mut config = ServerConfig::default();
        config.policy = Arc::new(
            socksmith::policy::Rules::default().deny("127.0.0.0/8".parse().expect("network")),
        );
        server.server.reload(config);

        // The running tunnel carries on, byte for byte.
        let data = pattern(50_000);
        before.write_all(&data).await.expect("send");
        let mut back = vec![0u8; data.len()];
        before.read_exact(&mut back).await.expect("echo");
        assert!(back == data);

        // A new session gets the new policy.
        let mut after = TcpStream::connect(server.addr).await.expect("connect");
        assert_eq!(
            socks5_greeting(&mut after, &[0]).await.expect("greeting"),
            0
        );
        let reply = socks5_request(&mut after, CMD_CONNECT, &Target::Ip(echo.addr()))
            .await
            .expect("reply");
        assert_eq!(reply.code, 2, "denied by the reloaded policy");
    })
    .await;
}
