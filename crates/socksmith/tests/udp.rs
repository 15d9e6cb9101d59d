//! The UDP ASSOCIATE relay moves datagrams in batches (`recvmmsg`, UDP GSO and GRO): what
//! batching could break, on real loopback sockets. Bursts longer than one batch, datagrams of
//! different sizes and to different targets in one batch, a denied sender's answers among
//! allowed ones, and a client's GSO burst the relay receives coalesced (GRO) and must split.
//!
//! The tests run on tokio's current-thread runtime: a burst the test sends without yielding is
//! all waiting on the relay's socket before the server's task runs, so it is taken in one
//! batch (or, when longer, in several full ones).

mod server_support;

use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use server_support::{udp_associate, Running, SlowNames, STEP};
use socksmith::policy::{IpNet, Rules};
use socksmith::server::{
    Connected, Direct, Egress, EgressFuture, EgressRequest, ServerConfig, UdpEgress,
};
use socksmith_testkit::raw::{udp_unwrap, udp_wrap};
use socksmith_testkit::{within, Target};
use tokio::net::UdpSocket;

/// Receives `count` datagrams on `socket` (bounded by [`STEP`] each): their bytes and senders.
async fn receive(socket: &UdpSocket, count: usize) -> Vec<(Vec<u8>, SocketAddr)> {
    let mut buf = vec![0u8; 70_000];
    let mut got = Vec::with_capacity(count);
    for i in 0..count {
        let (n, from) = tokio::time::timeout(STEP, socket.recv_from(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("datagram {i} of {count} arrives in time"))
            .expect("recv");
        got.push((buf[..n].to_vec(), from));
    }
    got
}

/// Answers from the relay, unwrapped: the source each names and its data.
async fn receive_answers(client: &UdpSocket, count: usize) -> Vec<(Target, Vec<u8>)> {
    receive(client, count)
        .await
        .into_iter()
        .map(|(datagram, _)| udp_unwrap(&datagram).expect("a SOCKS5 datagram"))
        .collect()
}

/// A payload of `len` bytes that says which datagram it is (`seq`) in every byte.
fn payload(seq: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| (seq * 31 + i) as u8).collect()
}

/// An association and a target: the client socket, the relay address, the target socket and
/// the control connection (which keeps the association alive).
async fn association_and_target(
    server: &Running,
) -> (UdpSocket, SocketAddr, UdpSocket, tokio::net::TcpStream) {
    let (control, relay) = udp_associate(server.addr).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.expect("client");
    let target = UdpSocket::bind("127.0.0.1:0").await.expect("target");
    (client, relay, target, control)
}

/// [`association_and_target`] with a first datagram through it ("open"): the client socket,
/// the relay address, the target socket, the target as the client names it, the relay's
/// egress address (where the target's answers go) and the control connection.
async fn opened_association(
    server: &Running,
) -> (
    UdpSocket,
    SocketAddr,
    UdpSocket,
    Target,
    SocketAddr,
    tokio::net::TcpStream,
) {
    let (client, relay, target, control) = association_and_target(server).await;
    let to = Target::Ip(target.local_addr().expect("addr"));
    client
        .send_to(&udp_wrap(&to, b"open"), relay)
        .await
        .expect("send");
    let egress = receive(&target, 1).await[0].1;
    (client, relay, target, to, egress, control)
}

#[tokio::test]
async fn a_burst_longer_than_a_batch_arrives_in_order_both_ways() {
    within(STEP * 3, "long burst", async {
        let server = Running::start(ServerConfig::default()).await;
        let (client, relay, target, _control) = association_and_target(&server).await;
        let to = Target::Ip(target.local_addr().expect("addr"));
        // More than one receive batch (32) and more than one send batch (64).
        const COUNT: usize = 150;
        for seq in 0..COUNT {
            client
                .send_to(&udp_wrap(&to, &payload(seq, 200)), relay)
                .await
                .expect("send");
        }
        let arrived = receive(&target, COUNT).await;
        for (seq, (data, _)) in arrived.iter().enumerate() {
            assert_eq!(
                data,
                &payload(seq, 200),
                "datagram {seq} in order, every byte"
            );
        }
        let egress = arrived[0].1;

        for seq in 0..COUNT {
            target
                .send_to(&payload(seq + 1000, 300), egress)
                .await
                .expect("answer");
        }
        let answers = receive_answers(&client, COUNT).await;
        for (seq, (source, data)) in answers.iter().enumerate() {
            assert_eq!(source, &to, "answer {seq} names its sender");
            assert_eq!(data, &payload(seq + 1000, 300), "answer {seq} in order");
        }
        let stats = server
            .stats_when(|s| s.udp_datagrams_target_to_client >= COUNT as u64)
            .await;
        assert_eq!(stats.udp_datagrams_client_to_target, COUNT as u64);
        assert_eq!(stats.udp_datagrams_target_to_client, COUNT as u64);
    })
    .await;
}

#[tokio::test]
async fn datagrams_of_different_sizes_in_one_burst_keep_their_sizes() {
    within(STEP, "mixed sizes", async {
        let server = Running::start(ServerConfig::default()).await;
        let (client, relay, target, _control) = association_and_target(&server).await;
        let to = Target::Ip(target.local_addr().expect("addr"));
        // Runs a GSO send could take, broken by a shorter one, a longer one, empty ones,
        // and datagrams too large for GSO (one of them near the largest there is).
        let sizes = [
            512, 512, 512, 100, 512, 512, 0, 0, 513, 512, 1, 1232, 1232, 1233, 1233, 60_000, 512,
            512, 7, 9000, 512,
        ];
        for (seq, len) in sizes.iter().enumerate() {
            client
                .send_to(&udp_wrap(&to, &payload(seq, *len)), relay)
                .await
                .expect("send");
        }
        let arrived = receive(&target, sizes.len()).await;
        for (seq, ((data, _), len)) in arrived.iter().zip(sizes).enumerate() {
            assert_eq!(data.len(), len, "datagram {seq} keeps its size");
            assert_eq!(data, &payload(seq, len), "datagram {seq} keeps its bytes");
        }
        let egress = arrived[0].1;

        for (seq, len) in sizes.iter().enumerate() {
            target
                .send_to(&payload(seq + 50, *len), egress)
                .await
                .expect("answer");
        }
        let answers = receive_answers(&client, sizes.len()).await;
        for (seq, ((source, data), len)) in answers.iter().zip(sizes).enumerate() {
            assert_eq!(source, &to);
            assert_eq!(data.len(), len, "answer {seq} keeps its size");
            assert_eq!(
                data,
                &payload(seq + 50, len),
                "answer {seq} keeps its bytes"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn a_burst_to_two_targets_reaches_each_in_order() {
    within(STEP, "two targets", async {
        let server = Running::start(ServerConfig::default()).await;
        let (client, relay, first, _control) = association_and_target(&server).await;
        let second = UdpSocket::bind("127.0.0.1:0").await.expect("second target");
        let targets = [
            Target::Ip(first.local_addr().expect("addr")),
            Target::Ip(second.local_addr().expect("addr")),
        ];
        // Same sizes throughout, so only the destination tells runs apart.
        let order = [0, 0, 1, 0, 1, 1, 1, 0, 0, 0, 1, 0];
        for (seq, which) in order.iter().enumerate() {
            client
                .send_to(&udp_wrap(&targets[*which], &payload(seq, 64)), relay)
                .await
                .expect("send");
        }
        for (which, socket) in [&first, &second].into_iter().enumerate() {
            let expected: Vec<usize> = (0..order.len())
                .filter(|seq| order[*seq] == which)
                .collect();
            let arrived = receive(socket, expected.len()).await;
            for ((data, _), seq) in arrived.iter().zip(&expected) {
                assert_eq!(
                    data,
                    &payload(*seq, 64),
                    "target {which} gets datagram {seq}"
                );
            }
            // And each answers once: the client learns who answered.
            socket
                .send_to(format!("from {which}").as_bytes(), arrived[0].1)
                .await
                .expect("answer");
        }
        let mut answers = receive_answers(&client, 2).await;
        answers.sort_by(|a, b| a.1.cmp(&b.1));
        assert_eq!(answers[0], (targets[0].clone(), b"from 0".to_vec()));
        assert_eq!(answers[1], (targets[1].clone(), b"from 1".to_vec()));
        // Nothing for either target was left over or sent twice.
        let mut buf = [0u8; 256];
        for socket in [&first, &second] {
            assert!(socket.try_recv_from(&mut buf).is_err(), "no extra datagram");
        }
    })
    .await;
}

#[tokio::test]
async fn answers_from_a_denied_sender_are_dropped_inside_a_batch_and_the_rest_pass() {
    within(STEP, "denied sender in a batch", async {
        let denied: IpNet = "127.0.0.77/32".parse().expect("prefix");
        let mut config = ServerConfig::default();
        config.policy = Arc::new(Rules::default().deny(denied));
        let server = Running::start(config).await;
        let (client, _relay, target, to, egress, _control) = opened_association(&server).await;

        // Interleaved, without yielding: one batch at the relay.
        let intruder = UdpSocket::bind("127.0.0.77:0").await.expect("intruder");
        const EACH: usize = 10;
        for seq in 0..EACH {
            intruder.send_to(b"injected", egress).await.expect("inject");
            target
                .send_to(&payload(seq, 100), egress)
                .await
                .expect("answer");
        }
        let answers = receive_answers(&client, EACH).await;
        for (seq, (source, data)) in answers.iter().enumerate() {
            assert_eq!(source, &to, "answer {seq} is from the target");
            assert_eq!(data, &payload(seq, 100), "answer {seq} in order");
        }
        let stats = server
            .stats_when(|s| s.udp_foreign_dropped >= EACH as u64)
            .await;
        assert_eq!(stats.udp_foreign_dropped, EACH as u64);
        assert_eq!(stats.udp_datagrams_target_to_client, EACH as u64);
        let mut buf = [0u8; 256];
        assert!(
            client.try_recv_from(&mut buf).is_err(),
            "nothing from the intruder"
        );
    })
    .await;
}

/// Sends `contents` from `socket` to `dest` as datagrams of `segment` bytes with one UDP GSO
/// `sendmsg`.
fn send_gso(socket: &std::net::UdpSocket, contents: &[u8], segment: usize, dest: SocketAddr) {
    let state = UdpSocketState::new(socket.into()).expect("socket state");
    assert!(state.max_gso_segments() > 1, "this kernel does UDP GSO");
    state
        .try_send(
            socket.into(),
            &Transmit {
                destination: dest,
                ecn: None,
                contents,
                segment_size: Some(segment),
                src_ip: None,
            },
        )
        .expect("GSO send");
}

#[tokio::test]
async fn a_gso_burst_from_the_client_is_split_back_into_datagrams() {
    within(STEP, "GRO at the relay", async {
        // First, that loopback here really hands a GSO burst over coalesced to a socket with
        // GRO on: otherwise this test would not test the split.
        let receiver = std::net::UdpSocket::bind("127.0.0.1:0").expect("receiver");
        let receiver_state = UdpSocketState::new((&receiver).into()).expect("state");
        receiver.set_nonblocking(false).expect("blocking");
        receiver.set_read_timeout(Some(STEP)).expect("read timeout");
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").expect("sender");
        send_gso(
            &sender,
            &[7u8; 400],
            100,
            receiver.local_addr().expect("addr"),
        );
        let mut buf = vec![0u8; 65_536];
        let mut meta = [RecvMeta::default()];
        let n = receiver_state
            .recv(
                (&receiver).into(),
                &mut [IoSliceMut::new(&mut buf)],
                &mut meta,
            )
            .expect("recv");
        assert_eq!(n, 1);
        assert_eq!(
            (meta[0].len, meta[0].stride),
            (400, 100),
            "four datagrams in one buffer (GRO)"
        );

        let server = Running::start(ServerConfig::default()).await;
        let (control, relay) = udp_associate(server.addr).await;
        let first = UdpSocket::bind("127.0.0.1:0").await.expect("first target");
        let second = UdpSocket::bind("127.0.0.1:0").await.expect("second target");
        let targets = [
            Target::Ip(first.local_addr().expect("addr")),
            Target::Ip(second.local_addr().expect("addr")),
        ];
        // Ten SOCKS datagrams of one size (IPv4 header, 90-byte payloads), alternating
        // targets, in one GSO send; then one shorter, which GSO allows last.
        let mut burst = Vec::new();
        for seq in 0..10 {
            burst.extend_from_slice(&udp_wrap(&targets[seq % 2], &payload(seq, 90)));
        }
        burst.extend_from_slice(&udp_wrap(&targets[0], &payload(10, 5)));
        let client = std::net::UdpSocket::bind("127.0.0.1:0").expect("client");
        send_gso(&client, &burst, 100, relay);

        for (which, socket) in [&first, &second].into_iter().enumerate() {
            let expected: Vec<(usize, usize)> = (0..11)
                .filter(|seq| {
                    if *seq == 10 {
                        which == 0
                    } else {
                        seq % 2 == which
                    }
                })
                .map(|seq| (seq, if seq == 10 { 5 } else { 90 }))
                .collect();
            let arrived = receive(socket, expected.len()).await;
            for ((data, _), (seq, len)) in arrived.iter().zip(&expected) {
                assert_eq!(
                    data,
                    &payload(*seq, *len),
                    "target {which} gets datagram {seq}"
                );
            }
        }
        let stats = server
            .stats_when(|s| s.udp_datagrams_client_to_target >= 11)
            .await;
        assert_eq!(stats.udp_datagrams_client_to_target, 11);
        assert_eq!(stats.udp_invalid_dropped, 0);
        drop(control);
    })
    .await;
}

#[tokio::test]
async fn answers_to_the_client_leave_in_gso_runs_the_client_sees_as_datagrams() {
    within(STEP, "GSO to the client", async {
        let server = Running::start(ServerConfig::default()).await;
        let (control, relay) = udp_associate(server.addr).await;
        let target = UdpSocket::bind("127.0.0.1:0").await.expect("target");
        let to = Target::Ip(target.local_addr().expect("addr"));
        // The client reads with GRO on: answers the relay sent as one GSO run come
        // coalesced, each segment a whole SOCKS datagram with its own header.
        let client = std::net::UdpSocket::bind("127.0.0.1:0").expect("client");
        let state = UdpSocketState::new((&client).into()).expect("state");
        let client = UdpSocket::from_std(client).expect("tokio socket");
        client
            .send_to(&udp_wrap(&to, b"open"), relay)
            .await
            .expect("send");
        let egress = receive(&target, 1).await[0].1;
        for seq in 0..20 {
            target
                .send_to(&payload(seq, 200), egress)
                .await
                .expect("answer");
        }
        let mut answers = Vec::new();
        let mut coalesced = 0;
        let mut buf = vec![0u8; 65_536];
        while answers.len() < 20 {
            client.readable().await.expect("readable");
            let mut meta = [RecvMeta::default()];
            let received = client.try_io(tokio::io::Interest::READABLE, || {
                state.recv(
                    (&client).into(),
                    &mut [IoSliceMut::new(&mut buf)],
                    &mut meta,
                )
            });
            let Ok(1) = received else { continue };
            let RecvMeta { len, stride, .. } = meta[0];
            if len > stride {
                coalesced += 1;
            }
            for segment in buf[..len].chunks(stride.max(1)) {
                answers.push(udp_unwrap(segment).expect("each segment a SOCKS datagram"));
            }
        }
        for (seq, (source, data)) in answers.iter().enumerate() {
            assert_eq!(source, &to);
            assert_eq!(data, &payload(seq, 200), "answer {seq}");
        }
        assert!(
            coalesced > 0,
            "the relay sent the burst's answers as a GSO run"
        );
        drop(control);
    })
    .await;
}

#[tokio::test]
async fn a_targets_gso_burst_reaches_the_client_as_datagrams_with_their_headers() {
    within(STEP, "GRO at the egress", async {
        let server = Running::start(ServerConfig::default()).await;
        let (client, _relay, target, to, egress, _control) = opened_association(&server).await;
        let target = target.into_std().expect("std socket");

        // Ten 100-byte answers and a 30-byte one in one GSO send; then two bursts of 64
        // tiny ones (the most one send carries: a full buffer of headers to write in front,
        // and more answers than the relay sends on at once).
        let mut burst = Vec::new();
        for seq in 0..10 {
            burst.extend_from_slice(&payload(seq, 100));
        }
        burst.extend_from_slice(&payload(10, 30));
        send_gso(&target, &burst, 100, egress);
        let mut expected: Vec<Vec<u8>> = (0..10).map(|seq| payload(seq, 100)).collect();
        expected.push(payload(10, 30));
        for round in 0..2 {
            let tiny: Vec<u8> = (0..64)
                .flat_map(|seq| payload(100 + round * 64 + seq, 8))
                .collect();
            send_gso(&target, &tiny, 8, egress);
            expected.extend((0..64).map(|seq| payload(100 + round * 64 + seq, 8)));
        }

        let answers = receive_answers(&client, expected.len()).await;
        for (seq, ((source, data), want)) in answers.iter().zip(&expected).enumerate() {
            assert_eq!(source, &to, "answer {seq} names the target");
            assert_eq!(data, want, "answer {seq} whole and in order");
        }
        let stats = server
            .stats_when(|s| s.udp_datagrams_target_to_client >= expected.len() as u64)
            .await;
        assert_eq!(stats.udp_datagrams_target_to_client, expected.len() as u64);
    })
    .await;
}

/// An egress as a user writes one: UDP through `Direct`'s, with only the single-datagram
/// methods delegated (the batch ones are the trait's defaults).
#[derive(Debug)]
struct OneAtATime(Direct);

struct OneAtATimeUdp(Box<dyn UdpEgress>);

impl UdpEgress for OneAtATimeUdp {
    fn poll_send_to(
        &self,
        cx: &mut Context<'_>,
        payload: &[u8],
        dest: &socksmith_proto::TargetAddr,
    ) -> Poll<std::io::Result<()>> {
        self.0.poll_send_to(cx, payload, dest)
    }

    fn poll_recv_from(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<(usize, socksmith_proto::TargetAddr)>> {
        self.0.poll_recv_from(cx, buf)
    }
}

impl Egress for OneAtATime {
    fn connect<'a>(&'a self, request: EgressRequest<'a>) -> EgressFuture<'a, Connected> {
        self.0.connect(request)
    }

    fn udp_associate<'a>(
        &'a self,
        request: EgressRequest<'a>,
    ) -> EgressFuture<'a, Box<dyn UdpEgress>> {
        Box::pin(async move {
            let inner = self.0.udp_associate(request).await?;
            Ok(Box::new(OneAtATimeUdp(inner)) as Box<dyn UdpEgress>)
        })
    }
}

#[tokio::test]
async fn an_egress_with_only_the_single_datagram_methods_still_gets_every_answer() {
    within(STEP, "single-datagram egress", async {
        let mut config = ServerConfig::default();
        config.egress = Some(Arc::new(OneAtATime(Direct::new(
            Arc::new(socksmith::resolve::StaticResolver::new()),
            STEP,
            STEP,
        ))));
        let server = Running::start(config).await;
        let (client, relay, target, _control) = association_and_target(&server).await;
        let to = Target::Ip(target.local_addr().expect("addr"));
        for seq in 0..40 {
            client
                .send_to(&udp_wrap(&to, &payload(seq, 50)), relay)
                .await
                .expect("send");
        }
        let arrived = receive(&target, 40).await;
        for (seq, (data, _)) in arrived.iter().enumerate() {
            assert_eq!(data, &payload(seq, 50), "datagram {seq}");
        }
        // A GSO burst from the target: `Direct`'s single receive must not hand over the
        // answers coalesced (it turns GRO off), so each reaches the client on its own.
        let egress = arrived[0].1;
        let target = target.into_std().expect("std socket");
        let burst: Vec<u8> = (0..8).flat_map(|seq| payload(seq + 60, 40)).collect();
        send_gso(&target, &burst, 40, egress);
        let answers = receive_answers(&client, 8).await;
        for (seq, (source, data)) in answers.iter().enumerate() {
            assert_eq!(source, &to);
            assert_eq!(data, &payload(seq + 60, 40), "answer {seq}");
        }
    })
    .await;
}

#[tokio::test]
async fn datagrams_ahead_of_a_slow_name_in_a_batch_do_not_wait_for_its_lookup() {
    within(STEP, "lookup in a batch", async {
        let mut config = ServerConfig::default();
        config.resolver = Arc::new(SlowNames);
        config.resolve_timeout = STEP * 3;
        let server = Running::start(config).await;
        let (client, relay, target, _control) = association_and_target(&server).await;
        let to = Target::Ip(target.local_addr().expect("addr"));
        let slow = Target::Domain("slow.test".into(), 9);
        // One batch: two for the target, one to a name that takes 30 s to resolve.
        for (seq, dest) in [&to, &to, &slow].into_iter().enumerate() {
            client
                .send_to(&udp_wrap(dest, &payload(seq, 64)), relay)
                .await
                .expect("send");
        }
        let arrived = receive(&target, 2).await;
        assert_eq!(arrived[0].0, payload(0, 64));
        assert_eq!(arrived[1].0, payload(1, 64));
    })
    .await;
}

#[tokio::test]
async fn datagrams_the_kernel_drops_on_a_full_relay_buffer_are_counted() {
    within(STEP, "kernel drops", async {
        let server = Running::start(ServerConfig::default()).await;
        let (client, relay, _target, to, _egress, _control) = opened_association(&server).await;

        // The server runs on this test's one thread: while this loop does not yield, nothing
        // reads the relay's socket, and what does not fit its receive buffer is dropped.
        let burst = udp_wrap(&to, &[7u8; 60_000]);
        let sender = client.into_std().expect("std socket");
        sender.set_nonblocking(false).expect("blocking");
        let sent = (0..1_750)
            .filter(|_| sender.send_to(&burst, relay).is_ok())
            .count() as u64;
        // The relay's buffer (at most 2 MiB as the kernel counts it) holds about 30 of them;
        // the rest are the relay socket's drops (allowing a tenth for any lost before it, in
        // the loopback device's own queue, which no socket counts).
        let stats = server
            .stats_when(|s| s.udp_receive_buffer_dropped >= (sent - 40) * 9 / 10)
            .await;
        assert!(
            stats.udp_receive_buffer_dropped + stats.udp_datagrams_client_to_target <= sent + 1,
            "no datagram is counted twice: {} dropped, {} relayed of {sent} sent",
            stats.udp_receive_buffer_dropped,
            stats.udp_datagrams_client_to_target
        );
    })
    .await;
}
