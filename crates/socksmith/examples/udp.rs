//! UDP ASSOCIATE through a SOCKS5 proxy: datagrams with the SOCKS5 UDP header added and
//! removed by the library.
//!
//! ```sh
//! cargo run -p socksmith --example udp                               # self-contained
//! cargo run -p socksmith --example udp -- socks5://127.0.0.1:1080    # your local proxy
//! ```
//!
//! Without an argument the example starts socksmith's own server on 127.0.0.1:0; either way it
//! starts a UDP echo server on 127.0.0.1:0 as the target, so the proxy must run on this machine.
//! Nothing leaves loopback.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use socksmith::client::{Client, MAX_UDP_HEADER_LEN};
use socksmith::server::{Server, ServerConfig};
use tokio::net::{TcpListener, UdpSocket};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proxy_url = match std::env::args().nth(1) {
        Some(url) => url,
        None => format!("socks5://{}", start_local_server().await?),
    };
    let echo = start_udp_echo().await?;
    let client = Client::from_url(&proxy_url)?;

    let udp = client.udp_associate().await?;
    println!(
        "associated: local {} -> relay {}",
        udp.local_addr()?,
        udp.relay_addr()
    );
    let mut buf = vec![0u8; 1500 + MAX_UDP_HEADER_LEN];
    // UDP may lose a datagram even on loopback: a few bounded tries.
    for attempt in 1..=3 {
        udp.send_to(b"ping through the proxy", echo).await?;
        match tokio::time::timeout(Duration::from_secs(1), udp.recv_from(&mut buf)).await {
            Ok(received) => {
                let (len, from) = received?;
                println!("{from} answered: {}", String::from_utf8_lossy(&buf[..len]));
                return Ok(());
            }
            Err(_) => println!("attempt {attempt}: no answer yet"),
        }
    }
    Err("no answer through the UDP association".into())
}

/// socksmith's server on 127.0.0.1:0, running until the example exits.
async fn start_local_server() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let server = Server::new(ServerConfig::default());
        let _ = server.serve(vec![listener], std::future::pending()).await;
    });
    Ok(addr)
}

/// A UDP echo server on 127.0.0.1:0.
async fn start_udp_echo() -> std::io::Result<SocketAddr> {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = socket.local_addr()?;
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(&buf[..n], from).await;
        }
    });
    Ok(addr)
}
