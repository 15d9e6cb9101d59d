//! Measures the relay's throughput for one stream on loopback: splice(2) with several pipe
//! sizes against the copying relay, and the loopback ceiling without any relay.
//!
//! ```text
//! cargo run --release -p socksmith --example relay_throughput -- [GIB] [MODE...]
//! ```
//! MODE is `direct` (no relay), `copy`, `splice64k`, `splice256k`, `splice1m`, each followed by
//! `-both` to push GIB each way at once (e.g. `splice1m-both`); the default runs them all one
//! way, then `copy-both` and `splice1m-both`. The sender and receiver are plain blocking
//! threads with 1 MiB buffers; the relay runs on a single-threaded tokio runtime, as it would
//! under load with one tunnel per task. Prints Gbit/s of payload per direction (wall clock) and
//! the Gbit/s the relay moves per second of its own CPU time, which other load on the machine
//! disturbs much less.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread;
use std::time::Instant;

use socksmith::relay::{relay, RelayOptions};

/// A connected pair of blocking loopback sockets.
fn pair() -> io::Result<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let a = TcpStream::connect(listener.local_addr()?)?;
    let (b, _) = listener.accept()?;
    a.set_nodelay(true)?;
    b.set_nodelay(true)?;
    Ok((a, b))
}

/// Writes `len` bytes, then shuts down the write half.
fn send(mut s: TcpStream, len: u64) -> io::Result<()> {
    let buf = vec![0x5a_u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        s.write_all(&buf[..n])?;
        left -= n as u64;
    }
    s.shutdown(Shutdown::Write)
}

/// Reads to end of stream; returns the count.
fn receive(mut s: TcpStream) -> io::Result<u64> {
    let mut buf = vec![0_u8; 1 << 20];
    let mut total = 0;
    loop {
        match s.read(&mut buf)? {
            0 => return Ok(total),
            n => total += n as u64,
        }
    }
}

fn options(mode: &str) -> Option<RelayOptions> {
    let mut opts = RelayOptions::default();
    match mode {
        "copy" => opts.zero_copy = false,
        "splice64k" => opts.pipe_size = 64 << 10,
        "splice256k" => opts.pipe_size = 256 << 10,
        "splice1m" => opts.pipe_size = 1 << 20,
        _ => return None,
    }
    Some(opts)
}

/// CPU time this thread has run, in seconds (Linux; 0 elsewhere). Wall-clock figures depend
/// on what else the machine runs; the relay's own CPU time much less.
fn thread_cpu_secs() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0.0, |ns| ns as f64 / 1e9)
}

/// One measurement: Gbit/s per direction, and Gbit/s the relay moves (all directions) per
/// second of its own CPU time.
struct Figures {
    wall: f64,
    per_cpu: Option<f64>,
}

fn run(mode: &str, len: u64) -> io::Result<Figures> {
    let (base, both) = match mode.strip_suffix("-both") {
        Some(base) => (base, true),
        None => (mode, false),
    };
    if base == "direct" {
        // No relay: the loopback ceiling for this machine.
        let (tx, rx) = pair()?;
        let start = Instant::now();
        let sink = thread::spawn(move || receive(rx));
        send(tx, len)?;
        let got = sink
            .join()
            .map_err(|_| io::Error::other("receiver panicked"))??;
        return Ok(Figures {
            wall: got as f64 * 8.0 / start.elapsed().as_secs_f64() / 1e9,
            per_cpu: None,
        });
    }
    let opts = options(base).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("unknown mode {mode}"))
    })?;
    let (client_user, client_inner) = pair()?;
    let (target_inner, target_user) = pair()?;
    let start = Instant::now();
    let mut threads = Vec::new();
    let up_rx = target_user.try_clone()?;
    let up_tx = client_user.try_clone()?;
    threads.push(thread::spawn(move || receive(up_rx)));
    if both {
        let down_rx = client_user.try_clone()?;
        let down_tx = target_user.try_clone()?;
        threads.push(thread::spawn(move || receive(down_rx)));
        thread::spawn(move || send(down_tx, len));
    } else {
        // Nothing flows back: end that direction now.
        target_user.shutdown(Shutdown::Write)?;
    }
    thread::spawn(move || send(up_tx, len));

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let cpu = thread_cpu_secs();
    let outcome = rt.block_on(async move {
        client_inner.set_nonblocking(true)?;
        target_inner.set_nonblocking(true)?;
        let client = tokio::net::TcpStream::from_std(client_inner)?;
        let target = tokio::net::TcpStream::from_std(target_inner)?;
        io::Result::Ok(relay(client, target, b"", &opts).await)
    })?;
    let cpu = thread_cpu_secs() - cpu;
    for t in threads {
        let got = t
            .join()
            .map_err(|_| io::Error::other("receiver panicked"))??;
        assert_eq!(got, len, "{mode}: bytes lost");
    }
    let secs = start.elapsed().as_secs_f64();
    outcome.result.map_err(io::Error::other)?;
    let moved = (outcome.client_to_target + outcome.target_to_client) as f64 * 8.0 / 1e9;
    Ok(Figures {
        wall: len as f64 * 8.0 / secs / 1e9,
        per_cpu: (cpu > 0.0).then(|| moved / cpu),
    })
}

fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let gib: f64 = match args.next() {
        Some(a) => a
            .parse()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "GIB must be a number"))?,
        None => 4.0,
    };
    let mut modes: Vec<String> = args.collect();
    if modes.is_empty() {
        modes = [
            "direct",
            "copy",
            "splice64k",
            "splice256k",
            "splice1m",
            "copy-both",
            "splice1m-both",
        ]
        .map(String::from)
        .to_vec();
    }
    let len = (gib * (1u64 << 30) as f64) as u64;
    println!("{gib} GiB per direction, one stream");
    for mode in &modes {
        let f = run(mode, len)?;
        match f.per_cpu {
            Some(per_cpu) => println!(
                "{mode:>16}: {:6.2} Gbit/s per direction, relay {per_cpu:6.2} Gbit/s per CPU-second",
                f.wall
            ),
            None => println!("{mode:>16}: {:6.2} Gbit/s", f.wall),
        }
    }
    Ok(())
}
