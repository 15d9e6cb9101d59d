//! CONNECT through a SOCKS proxy with the client library.
//!
//! ```sh
//! cargo run -p socksmith --example connect                                # self-contained
//! cargo run -p socksmith --example connect -- socks5h://127.0.0.1:1080    # your local proxy
//! ```
//!
//! Without an argument the example starts socksmith's own server on 127.0.0.1:0; either way it
//! starts an echo server on 127.0.0.1:0 as the target, so the proxy must run on this machine.
//! Nothing leaves loopback.

use std::net::Ipv4Addr;

use socksmith::client::Client;
use socksmith::server::{Server, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proxy_url = match std::env::args().nth(1) {
        Some(url) => url,
        None => format!("socks5h://{}", start_local_server().await?),
    };
    let echo = start_echo().await?;

    let client = Client::from_url(&proxy_url)?;
    // A name works too: ("localhost", port). socks5h lets the proxy resolve it.
    let mut stream = client.connect(echo).await?;
    println!("connected to {echo} through {}", client.last_hop());
    println!("the proxy reports bound address {}", stream.bound_addr());

    stream.write_all(b"hello through the proxy").await?;
    let mut answer = [0u8; 23];
    stream.read_exact(&mut answer).await?;
    println!("echoed: {}", String::from_utf8_lossy(&answer));

    // After the handshake the transport can be taken back, e.g. for a zero-copy relay.
    let parts = stream.into_parts();
    println!(
        "transport: {:?} -> {:?}, {} early bytes",
        parts.io.local_addr()?,
        parts.io.peer_addr()?,
        parts.read_buf.len()
    );
    Ok(())
}

/// socksmith's server on 127.0.0.1:0, running until the example exits.
async fn start_local_server() -> std::io::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let server = Server::new(ServerConfig::default());
        let _ = server.serve(vec![listener], std::future::pending()).await;
    });
    Ok(addr)
}

/// A TCP echo server on 127.0.0.1:0.
async fn start_echo() -> std::io::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = conn.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    Ok(addr)
}
