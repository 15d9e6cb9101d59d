//! BIND through a SOCKS proxy: the proxy listens for one connection on the client's behalf.
//!
//! ```sh
//! cargo run -p socksmith --example bind                               # self-contained
//! cargo run -p socksmith --example bind -- socks4://127.0.0.1:1080    # your local proxy
//! ```
//!
//! Without an argument the example starts socksmith's own server on 127.0.0.1:0. The "peer"
//! that connects to the proxy's listening address is this example too, from 127.0.0.1, so the
//! proxy must run on this machine. Nothing leaves loopback.

use std::net::{Ipv4Addr, SocketAddr};

use socksmith::client::Client;
use socksmith::server::{Server, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proxy_url = match std::env::args().nth(1) {
        Some(url) => url,
        None => format!("socks5://{}", start_local_server().await?),
    };
    let client = Client::from_url(&proxy_url)?;

    // Name the peer expected to connect (port 0: any port); the proxy may refuse others.
    let listener = client
        .bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await?;
    let listen = listener.listen_addr().clone();
    println!("the proxy listens on {listen}");

    // Play the peer: connect to the listening address and say hello.
    let peer_addr = listen
        .ip_literal()
        .ok_or("the proxy answered with a name")?;
    let peer = tokio::spawn(async move {
        let mut conn = TcpStream::connect(peer_addr).await?;
        conn.write_all(b"hello from the peer").await?;
        let mut answer = [0u8; 21];
        conn.read_exact(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    });

    let (mut stream, from) = listener.accept().await?;
    println!("{from} connected");
    let mut greeting = [0u8; 19];
    stream.read_exact(&mut greeting).await?;
    println!("peer says: {}", String::from_utf8_lossy(&greeting));
    stream.write_all(b"hello from the client").await?;
    let answer = peer.await??;
    println!("client says: {}", String::from_utf8_lossy(&answer));
    Ok(())
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
