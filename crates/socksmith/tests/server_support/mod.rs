//! Helpers shared by the `server_*` integration tests: a library [`Server`] running on a
//! loopback listener, raw SOCKS5 requests to it, UDP datagrams through its relay, and a
//! resolver with names that never resolve ([`SlowNames`]).

#![allow(dead_code)] // each test binary uses a different subset

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use socksmith::server::{Server, ServerConfig, ServerError, StatsSnapshot};
use socksmith_testkit::raw::{socks5_greeting, socks5_request, udp_unwrap, udp_wrap};
use socksmith_testkit::{within, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Bound on any single wait for the server in these tests.
pub const STEP: Duration = Duration::from_secs(10);

/// A server on 127.0.0.1:0 (or a given address), stopped when the sender is dropped or by
/// [`Running::shutdown`].
pub struct Running {
    pub addr: SocketAddr,
    pub server: Server,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServerError>>,
}

impl Running {
    pub async fn start(config: ServerConfig) -> Running {
        Running::start_on(config, "127.0.0.1:0".parse().expect("literal")).await
    }

    pub async fn start_on(config: ServerConfig, addr: SocketAddr) -> Running {
        let listener = TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let server = Server::new(config);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn({
            let server = server.clone();
            async move {
                server
                    .serve(vec![listener], async {
                        let _ = stopped.await;
                    })
                    .await
            }
        });
        Running {
            addr,
            server,
            stop: Some(stop),
            task,
        }
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.server.stats().snapshot()
    }

    /// Fires the shutdown and waits for `serve` to return.
    pub async fn shutdown(mut self) -> Result<(), ServerError> {
        drop(self.stop.take());
        tokio::time::timeout(STEP, &mut self.task)
            .await
            .expect("serve returns after the grace period")
            .expect("serve task")
    }

    /// Waits until the counters satisfy `done` (sessions count after closing their sockets).
    pub async fn stats_when(&self, done: impl Fn(&StatsSnapshot) -> bool) -> StatsSnapshot {
        within(STEP, "counters", async {
            loop {
                let s = self.stats();
                if done(&s) {
                    return s;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
    }
}

/// A SOCKS5 request (no authentication) for `cmd` to `target`: the stream, the reply code and
/// the reply's address.
pub async fn v5_request(proxy: SocketAddr, cmd: u8, target: &Target) -> (TcpStream, u8, Target) {
    let mut s = TcpStream::connect(proxy).await.expect("connect");
    assert_eq!(socks5_greeting(&mut s, &[0]).await.expect("greeting"), 0);
    let reply = socks5_request(&mut s, cmd, target).await.expect("reply");
    (s, reply.code, reply.addr)
}

/// Sends `payload` for `target` from `socket` to the UDP `relay` and waits (bounded) for the
/// next datagram: where it came from, and its unwrapped source and data.
pub async fn udp_exchange(
    socket: &UdpSocket,
    relay: SocketAddr,
    target: &Target,
    payload: &[u8],
) -> (SocketAddr, Target, Vec<u8>) {
    socket
        .send_to(&udp_wrap(target, payload), relay)
        .await
        .expect("send");
    let mut buf = vec![0u8; 2048];
    let (n, from) = tokio::time::timeout(STEP, socket.recv_from(&mut buf))
        .await
        .expect("an answer in time")
        .expect("recv");
    let (source, data) = udp_unwrap(&buf[..n]).expect("a valid SOCKS5 datagram");
    (from, source, data)
}

/// A SOCKS4 BIND for any peer (0.0.0.0:0, no user id): the stream and the 8-byte reply.
pub async fn v4_bind_any(proxy: SocketAddr) -> (TcpStream, [u8; 8]) {
    let mut s = TcpStream::connect(proxy).await.expect("connect");
    s.write_all(&[4, 2, 0, 0, 0, 0, 0, 0, 0])
        .await
        .expect("request");
    let mut reply = [0u8; 8];
    s.read_exact(&mut reply).await.expect("reply");
    (s, reply)
}

/// A SOCKS5 UDP ASSOCIATE (no authentication, any client port): the control connection,
/// which keeps the association alive, and the relay's address.
pub async fn udp_associate(proxy: SocketAddr) -> (TcpStream, SocketAddr) {
    let any = Target::Ip("0.0.0.0:0".parse().expect("literal"));
    let (control, code, relay) = v5_request(proxy, 3, &any).await;
    assert_eq!(code, 0, "UDP ASSOCIATE succeeded");
    let Target::Ip(relay) = relay else {
        panic!("the relay is an address, got {relay}")
    };
    (control, relay)
}

/// Names starting with `slow` never resolve (until the resolve timeout); others are loopback.
#[derive(Debug)]
pub struct SlowNames;

impl socksmith::resolve::Resolve for SlowNames {
    fn lookup_name<'a>(&'a self, name: &'a str) -> socksmith::resolve::Lookup<'a, Vec<IpAddr>> {
        Box::pin(async move {
            if name.starts_with("slow") {
                std::future::pending::<()>().await;
            }
            Ok(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)])
        })
    }

    fn lookup_addr(&self, _ip: IpAddr) -> socksmith::resolve::Lookup<'_, String> {
        Box::pin(async { Ok("localhost".to_owned()) })
    }
}
