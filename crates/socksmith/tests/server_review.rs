//! Regression tests for findings of reviews of the server, each failing before its fix:
//! names through a `socks5://` upstream were never checked by the policy, UDP answers came
//! into an association from denied sources, RESOLVE_PTR answered for denied ranges, and a
//! client's lookups past its share failed at once instead of waiting for room.

mod server_support;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use server_support::{udp_associate, udp_exchange, v5_request, Running, SlowNames, STEP};
use socksmith::client::Client;
use socksmith::policy::{IpNet, Rules};
use socksmith::resolve::StaticResolver;
use socksmith::server::ServerConfig;
use socksmith_testkit::raw::{socks5_greeting, socks5_request, udp_wrap};
use socksmith_testkit::{within, Target, UdpEchoServer};
use tokio::net::{TcpStream, UdpSocket};

const RESOLVE_PTR: u8 = 0xF1;

#[tokio::test]
async fn a_name_resolved_here_for_a_socks5_upstream_is_checked_by_the_policy() {
    within(STEP, "upstream name check", async {
        let parent = Running::start(ServerConfig::default()).await;
        // The chain resolves names on this host (socks5://, not socks5h://): this one
        // points at the cloud metadata address.
        let resolver = StaticResolver::new().with_host(
            "metadata.test",
            [IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254))],
        );
        let client = Client::builder()
            .proxy(
                format!("socks5://{}", parent.addr)
                    .parse()
                    .expect("proxy URL"),
            )
            .resolver(Arc::new(resolver))
            .build()
            .expect("client");
        let mut config = ServerConfig::default();
        config.set_upstream(client);
        let server = Running::start(config).await;

        let target = Target::Domain("metadata.test".into(), 80);
        let (_s, code, _) = v5_request(server.addr, 1, &target).await;
        assert_eq!(code, 0x02, "refused as the direct egress refuses it");
        assert_eq!(
            parent.stats().sessions_accepted,
            0,
            "the upstream was never asked"
        );
    })
    .await;
}

#[tokio::test]
async fn udp_answers_from_a_denied_source_never_reach_the_client() {
    within(STEP, "udp sender policy", async {
        let denied: IpNet = "127.0.0.77/32".parse().expect("prefix");
        let mut config = ServerConfig::default();
        config.policy = Arc::new(Rules::default().deny(denied));
        let server = Running::start(config).await;

        // A target that tells us where the relay's datagrams leave from.
        let target = UdpSocket::bind("127.0.0.1:0").await.expect("target");
        let target_addr = target.local_addr().expect("addr");

        let (control, relay) = udp_associate(server.addr).await;
        let client = UdpSocket::bind("127.0.0.1:0").await.expect("client");
        client
            .send_to(&udp_wrap(&Target::Ip(target_addr), b"hello"), relay)
            .await
            .expect("send");
        let mut buf = [0u8; 2048];
        let (n, egress_addr) = tokio::time::timeout(STEP, target.recv_from(&mut buf))
            .await
            .expect("the datagram arrives")
            .expect("recv");
        assert_eq!(&buf[..n], b"hello");

        // The denied host speaks first, then the real target answers: the client must get
        // the real answer and nothing from the denied host.
        let intruder = UdpSocket::bind("127.0.0.77:0").await.expect("intruder");
        intruder
            .send_to(b"injected", egress_addr)
            .await
            .expect("send");
        tokio::time::sleep(Duration::from_millis(50)).await;
        target.send_to(b"answer", egress_addr).await.expect("send");
        let (n, _) = tokio::time::timeout(STEP, client.recv_from(&mut buf))
            .await
            .expect("an answer")
            .expect("recv");
        let (source, data) =
            socksmith_testkit::raw::udp_unwrap(&buf[..n]).expect("a SOCKS5 datagram");
        assert_eq!(source, Target::Ip(target_addr));
        assert_eq!(data, b"answer");
        let stats = server.stats_when(|s| s.udp_foreign_dropped >= 1).await;
        assert_eq!(stats.udp_datagrams_target_to_client, 1);
        drop(control);
    })
    .await;
}

#[tokio::test]
async fn resolve_ptr_of_a_denied_range_is_refused_before_any_lookup() {
    within(STEP, "ptr policy", async {
        let denied: IpNet = "10.0.0.0/8".parse().expect("prefix");
        let mut config = ServerConfig::default();
        config.policy = Arc::new(Rules::default().deny(denied));
        config.resolver = Arc::new(
            StaticResolver::new()
                .with_name(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)), "db.internal.test")
                .with_name(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), "ok.test"),
        );
        let server = Running::start(config).await;

        let (_s, code, _) = v5_request(
            server.addr,
            RESOLVE_PTR,
            &Target::Ip("10.1.2.3:0".parse().expect("literal")),
        )
        .await;
        assert_eq!(code, 0x02, "no reverse lookups of denied ranges");
        let (_s, code, addr) = v5_request(
            server.addr,
            RESOLVE_PTR,
            &Target::Ip("192.0.2.1:0".parse().expect("literal")),
        )
        .await;
        assert_eq!(code, 0);
        assert_eq!(addr, Target::Domain("ok.test".into(), 0));
    })
    .await;
}

#[tokio::test]
async fn udp_round_trips_still_work_beside_the_sender_check() {
    within(STEP, "udp round trip", async {
        let echo = UdpEchoServer::start().await;
        let server = Running::start(ServerConfig::default()).await;
        let (_control, relay) = udp_associate(server.addr).await;
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("client");
        for i in 0..20u8 {
            let payload = [i; 100];
            let (_, source, data) =
                udp_exchange(&socket, relay, &Target::Ip(echo.addr()), &payload).await;
            assert_eq!(source, Target::Ip(echo.addr()));
            assert_eq!(data, payload);
        }
    })
    .await;
}

#[tokio::test]
async fn one_client_with_slow_names_cannot_stall_everyone_elses_lookups() {
    within(STEP, "lookups per client", async {
        let echo = socksmith_testkit::EchoServer::start().await;
        let mut config = ServerConfig::default();
        config.resolver = Arc::new(SlowNames);
        config.resolve_timeout = Duration::from_secs(30);
        let server = Running::start(config).await;
        let limit = socksmith::server::LOOKUPS_PER_CLIENT;

        // One client (127.0.0.1) fills its share with names that hang...
        let mut hanging = Vec::new();
        for i in 0..limit {
            let mut s = TcpStream::connect(server.addr).await.expect("connect");
            assert_eq!(socks5_greeting(&mut s, &[0]).await.expect("greeting"), 0);
            let mut request = vec![5, 1, 0];
            Target::Domain(format!("slow{i}.test"), 80).encode_socks5(&mut request);
            tokio::io::AsyncWriteExt::write_all(&mut s, &request)
                .await
                .expect("request");
            hanging.push(s);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        // ...its next lookup waits for room (the resolve timeout, 30 s, at most)...
        let mut waiting = TcpStream::connect(server.addr).await.expect("connect");
        assert_eq!(
            socks5_greeting(&mut waiting, &[0]).await.expect("greeting"),
            0
        );
        let next = Target::Domain("fast-more.test".into(), echo.addr().port());
        let request = socks5_request(&mut waiting, 1, &next);
        assert!(
            tokio::time::timeout(Duration::from_millis(300), request)
                .await
                .is_err(),
            "the lookup waits while its client holds every lookup slot"
        );

        // ...while another client's lookups go through.
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.2:0".parse().expect("literal"))
            .expect("bind 127.0.0.2");
        let mut s = socket.connect(server.addr).await.expect("connect");
        assert_eq!(socks5_greeting(&mut s, &[0]).await.expect("greeting"), 0);
        let reply = socks5_request(
            &mut s,
            1,
            &Target::Domain("fast.test".into(), echo.addr().port()),
        )
        .await
        .expect("reply");
        assert_eq!(
            reply.code, 0,
            "another client resolves while the first one waits"
        );
        drop(hanging);
    })
    .await;
}

/// A resolver whose names starting with "gated" resolve (to 127.0.0.1) only once the test
/// opens the gate for them, one permit a name; other names resolve at once. It counts the
/// lookups that reached it.
#[derive(Debug)]
struct GatedNames {
    gate: Arc<tokio::sync::Semaphore>,
    asked: Arc<std::sync::atomic::AtomicUsize>,
}

impl socksmith::resolve::Resolve for GatedNames {
    fn lookup_name<'a>(&'a self, name: &'a str) -> socksmith::resolve::Lookup<'a, Vec<IpAddr>> {
        Box::pin(async move {
            self.asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if name.starts_with("gated") {
                self.gate
                    .acquire()
                    .await
                    .expect("the gate stays open")
                    .forget();
            }
            Ok(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)])
        })
    }

    fn lookup_addr(&self, ip: IpAddr) -> socksmith::resolve::Lookup<'_, String> {
        Box::pin(async move { Ok(ip.to_string()) })
    }
}

#[tokio::test]
async fn a_lookup_past_the_clients_share_runs_once_an_earlier_one_finishes() {
    within(STEP, "lookup waits for room", async {
        let echo = socksmith_testkit::EchoServer::start().await;
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut config = ServerConfig::default();
        config.resolver = Arc::new(GatedNames {
            gate: Arc::clone(&gate),
            asked: Arc::clone(&asked),
        });
        config.resolve_timeout = Duration::from_secs(30);
        let server = Running::start(config).await;
        let port = echo.addr().port();

        // A browser opening a page: more names at once than one client's share of lookups.
        let limit = socksmith::server::LOOKUPS_PER_CLIENT;
        let addr = server.addr;
        let open = |name: String| {
            tokio::spawn(async move { v5_request(addr, 1, &Target::Domain(name, port)).await.1 })
        };
        let mut sessions: Vec<_> = (0..limit).map(|i| open(format!("gated{i}.test"))).collect();
        // Every slot is held by a gated lookup before the last name comes.
        while asked.load(std::sync::atomic::Ordering::SeqCst) < limit {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        sessions.push(open("next.test".into()));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let last = sessions.pop().expect("the last session");
        assert!(!last.is_finished(), "the last lookup waits for room");
        // One gated lookup finishes: its slot goes to the waiting one, which connects.
        gate.add_permits(1);
        assert_eq!(last.await.expect("task"), 0, "the waiting lookup ran");
        gate.add_permits(limit);
        for session in sessions {
            assert_eq!(session.await.expect("task"), 0);
        }
    })
    .await;
}

#[tokio::test]
async fn repeated_wrong_passwords_from_one_address_are_answered_ever_later() {
    within(Duration::from_secs(30), "login back-off", async {
        let mut users = socksmith::server::Users::new();
        users.insert("alice", "right").expect("user");
        let mut config = ServerConfig::default();
        config.auth = Some(Arc::new(users));
        let server = Running::start(config).await;
        let wrong = socksmith_testkit::Credentials::new("alice", "wrong");

        // Sequential guesses from 127.0.0.1: the first few are free, then each waits longer.
        let started = tokio::time::Instant::now();
        for _ in 0..7 {
            let mut s = TcpStream::connect(server.addr).await.expect("connect");
            let result = socksmith_testkit::raw::socks5_auth(&mut s, Some(&wrong)).await;
            assert!(result.is_err(), "wrong password refused");
        }
        let guessing = started.elapsed();
        let stats = server.stats();
        assert!(stats.auth_backoff_delays >= 3, "{stats:?}");
        // 250 ms, then 500 ms, then 1 s at least (a lower bound: a loaded machine only adds).
        assert!(guessing >= Duration::from_millis(1750), "{guessing:?}");
        assert_eq!(server.server.clients_in_backoff(), 1);

        // Another address is answered without any wait, and the right password still works.
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.2:0".parse().expect("literal"))
            .expect("bind 127.0.0.2");
        let mut s = socket.connect(server.addr).await.expect("connect");
        let right = socksmith_testkit::Credentials::new("alice", "right");
        socksmith_testkit::raw::socks5_auth(&mut s, Some(&right))
            .await
            .expect("the other address logs in");
        assert_eq!(
            server.stats().auth_backoff_delays,
            stats.auth_backoff_delays,
            "no wait for the other address"
        );
    })
    .await;
}

/// Remembers the errors of finished sessions.
#[derive(Debug, Default)]
struct Endings(std::sync::Mutex<Vec<(String, u64, u64)>>);

impl socksmith::server::Accounting for Endings {
    fn record(&self, event: &socksmith::server::accounting::Event<'_>) {
        if let socksmith::server::accounting::Event::Finished(f) = event {
            let error = f.error.map(ToString::to_string).unwrap_or_default();
            self.0
                .lock()
                .expect("lock")
                .push((error, f.traffic.up, f.traffic.down));
        }
    }
}

#[tokio::test]
async fn a_tunnel_cut_at_shutdown_is_still_logged_with_its_bytes() {
    within(STEP, "aborted at shutdown", async {
        let echo = socksmith_testkit::EchoServer::start().await;
        let endings = Arc::new(Endings::default());
        let mut config = ServerConfig::default();
        config.shutdown_grace = Duration::from_millis(200);
        config.accounting = Some(endings.clone());
        let server = Running::start(config).await;

        let (mut tunnel, code, _) = v5_request(server.addr, 1, &Target::Ip(echo.addr())).await;
        assert_eq!(code, 0);
        let data = socksmith_testkit::pattern(1000);
        tokio::io::AsyncWriteExt::write_all(&mut tunnel, &data)
            .await
            .expect("send");
        let mut back = vec![0u8; data.len()];
        tokio::io::AsyncReadExt::read_exact(&mut tunnel, &mut back)
            .await
            .expect("echo");
        // The tunnel stays open past the grace period: the server cuts it.
        let stats = server.stats();
        server.shutdown().await.expect("shutdown");
        let endings = endings.0.lock().expect("lock").clone();
        assert_eq!(
            endings,
            vec![("aborted at shutdown".to_owned(), 1000, 1000)]
        );
        assert_eq!(stats.bytes_client_to_target, 0, "not booked before the end");
        drop(tunnel);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handshake_deadline_holds_under_a_thousand_slow_clients() {
    // A thousand sockets each side of loopback, in this one process.
    let _ = rlimit::increase_nofile_limit(8192);
    within(Duration::from_secs(60), "slow clients", async {
        let echo = socksmith_testkit::EchoServer::start().await;
        let mut config = ServerConfig::default();
        config.handshake_timeout = Duration::from_secs(2);
        let server = Running::start(config).await;

        // From four addresses, so that the per-client share is not what stops them.
        let mut slow = Vec::new();
        for i in 0..1000u32 {
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            let source = format!("127.0.0.{}:0", 2 + i % 4);
            socket
                .bind(source.parse().expect("literal"))
                .expect("bind a loopback source");
            let mut s = socket.connect(server.addr).await.expect("connect");
            // Half a greeting, then nothing.
            tokio::io::AsyncWriteExt::write_all(&mut s, &[5])
                .await
                .expect("send");
            slow.push(s);
        }

        // A normal client is served while they hang.
        let (_s, code, _) = v5_request(server.addr, 1, &Target::Ip(echo.addr())).await;
        assert_eq!(code, 0);

        // And every slow one is cut by the deadline.
        for mut s in slow {
            let mut rest = Vec::new();
            let closed = tokio::time::timeout(
                Duration::from_secs(20),
                tokio::io::AsyncReadExt::read_to_end(&mut s, &mut rest),
            )
            .await;
            assert!(
                closed.is_ok(),
                "a slow client outlived the handshake deadline"
            );
        }
        let stats = server
            .stats_when(|s| s.handshake_timeouts + s.sessions_refused_per_client >= 1000)
            .await;
        assert!(stats.handshake_timeouts > 0, "{stats:?}");
    })
    .await;
}
