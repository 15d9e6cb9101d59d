//! Measures what an idle tunnel costs the process: resident memory per tunnel (the tokio task,
//! the relay's state and both sockets' registrations) and open descriptors, before and after
//! each tunnel has carried traffic.
//!
//! ```text
//! cargo run --release -p socksmith --example relay_idle_memory -- [TUNNELS] [copy|splice] [idle]
//! ```
//! `idle` adds a 5-minute idle timeout (a timer per tunnel). The far ends of the tunnels are
//! plain blocking sockets, which cost the process no memory of their own; kernel socket buffers
//! are not resident memory of the process and are not counted.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use socksmith::relay::{relay, RelayOptions};

/// Resident memory of the process, in bytes.
fn rss() -> io::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| io::Error::other("no VmRSS in /proc/self/status"))
}

fn open_fds() -> io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/fd")?.count())
}

fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let mut opts = RelayOptions::default();
    for arg in args {
        match arg.as_str() {
            "copy" => opts.zero_copy = false,
            "splice" => opts.zero_copy = true,
            "idle" => opts.idle_timeout = Some(Duration::from_secs(300)),
            other => return Err(io::Error::other(format!("unknown argument {other}"))),
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    // All connections first, as plain sockets: 4 per tunnel.
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let mut far_ends = Vec::with_capacity(2 * n);
    let mut inner = Vec::with_capacity(n);
    for _ in 0..n {
        let client = TcpStream::connect(addr)?;
        let (client_inner, _) = listener.accept()?;
        let target_inner = TcpStream::connect(addr)?;
        let (target, _) = listener.accept()?;
        client_inner.set_nonblocking(true)?;
        target_inner.set_nonblocking(true)?;
        far_ends.push((client, target));
        inner.push((client_inner, target_inner));
    }
    drop(listener);
    // Let the runtime set itself up before measuring.
    rt.block_on(tokio::task::yield_now());
    let fds_before = open_fds()?;
    let rss_before = rss()?;

    let mut future_size = 0;
    for (client, target) in inner {
        let opts = opts.clone();
        let task = async move {
            let client = tokio::net::TcpStream::from_std(client)?;
            let target = tokio::net::TcpStream::from_std(target)?;
            io::Result::Ok(relay(client, target, b"", &opts).await)
        };
        future_size = std::mem::size_of_val(&task);
        rt.spawn(task);
    }
    std::thread::sleep(Duration::from_millis(500));
    let rss_idle = rss()?;
    let fds_idle = open_fds()?;

    // One exchange through every tunnel, then idle again.
    let mut buf = vec![0u8; 64 << 10];
    for (client, target) in &mut far_ends {
        client.write_all(&buf)?;
        target.read_exact(&mut buf)?;
        target.write_all(&buf)?;
        client.read_exact(&mut buf)?;
    }
    std::thread::sleep(Duration::from_millis(500));
    let rss_after = rss()?;
    let fds_after = open_fds()?;

    let per = |bytes: u64| bytes as f64 / n as f64;
    println!(
        "{n} tunnels, {} relay{}",
        if opts.zero_copy { "splice" } else { "copy" },
        if opts.idle_timeout.is_some() {
            ", idle timeout"
        } else {
            ""
        }
    );
    println!("task future: {future_size} bytes (before its first poll)");
    // The descriptors counted before include every tunnel's two sockets: what is printed is
    // what the relays opened on top of them.
    println!(
        "idle, before any traffic: {:.0} bytes resident per tunnel, {} extra descriptors",
        per(rss_idle.saturating_sub(rss_before)),
        fds_idle as i64 - fds_before as i64
    );
    println!(
        "idle, after 64 KiB each way: {:.0} bytes resident per tunnel, {} extra descriptors",
        per(rss_after.saturating_sub(rss_before)),
        fds_after as i64 - fds_before as i64,
    );
    #[cfg(target_os = "linux")]
    println!(
        "pooled pipes (shared by all tunnels): {}",
        socksmith::relay::pooled_pipes()
    );
    drop(far_ends);
    Ok(())
}
