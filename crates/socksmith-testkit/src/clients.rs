//! Real SOCKS clients, run as child processes against a [`Proxy`]: curl, ncat and PySocks.
//!
//! Each runner returns `None` when its program is missing (by the
//! [`crate::tools::peer_missing`] policy) and otherwise a [`CmdOutput`] (or [`PySocksResult`]),
//! killed after [`crate::process::CLIENT_DEADLINE`]. None of them panics on a failed transfer:
//! the test decides, usually with [`CmdOutput::assert_success`], which prints the command line,
//! status, stdout and stderr.
//!
//! How each speaks SOCKS:
//! - curl: `-x socks4|socks4a|socks5|socks5h://[user:pass@]host:port` (credentials in the URL).
//! - ncat: `--proxy host:port --proxy-type socks4|socks5 [--proxy-auth user:pass]
//!   --proxy-dns local|remote` (remote DNS with socks4 is SOCKS4a).
//! - PySocks: `peers/pysocks_client.py` under `/usr/bin/python3` (Debian's, which has
//!   python3-socks), TCP or SOCKS5 UDP.

use std::net::SocketAddr;

use tokio::process::Command;

use crate::process::{run_command, CmdOutput, CLIENT_DEADLINE};
use crate::proxy::{Proxy, ProxyKind};
use crate::raw::Target;
use crate::tools::{require_pysocks, require_tool};

/// The PySocks client script.
pub const PYSOCKS_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/peers/pysocks_client.py");

/// `curl -sS --max-time 10 -x PROXY_URL [EXTRA...] URL`; the body is in `stdout`.
pub async fn curl(proxy: &Proxy, url: &str, extra_args: &[&str]) -> Option<CmdOutput> {
    let curl = require_tool("curl")?;
    let mut cmd = Command::new(curl);
    cmd.args(["-sS", "--max-time", "10", "-x"])
        .arg(proxy.url())
        .args(extra_args)
        .arg(url);
    Some(run_command(cmd, b"", CLIENT_DEADLINE).await)
}

/// `curl -sS --max-time 10 -x PROXY_URL [EXTRA...] URL` for a proxy URL of any scheme curl
/// takes (`http://user:pass@host:port` for an HTTP proxy; add `-p` for a CONNECT tunnel).
/// `None` when curl is missing and peers are not required.
pub async fn curl_via(proxy_url: &str, url: &str, extra_args: &[&str]) -> Option<CmdOutput> {
    let curl = require_tool("curl")?;
    let mut cmd = Command::new(curl);
    cmd.args(["-sS", "--max-time", "10", "-x", proxy_url])
        .args(extra_args)
        .arg(url);
    Some(run_command(cmd, b"", CLIENT_DEADLINE).await)
}

/// `ncat --proxy ADDR --proxy-type socks4|socks5 [--proxy-auth U:P] --proxy-dns local|remote
/// [EXTRA...] HOST PORT`, with `stdin` sent and then closed. Against an echo target, `stdout` is
/// `stdin`.
///
/// At the end of stdin ncat half-closes and reads until the target closes, which needs a proxy
/// that relays half-close (not microsocks: there, pass `--recv-only` and use a
/// [`crate::targets::SourceServer`]). For SOCKS4, `--proxy-auth` is the USERID (only the
/// username is sent).
pub async fn ncat(
    proxy: &Proxy,
    host: &str,
    port: u16,
    stdin: &[u8],
    extra_args: &[&str],
) -> Option<CmdOutput> {
    let ncat = require_tool("ncat")?;
    let mut cmd = Command::new(ncat);
    cmd.arg("--proxy")
        .arg(proxy.addr.to_string())
        .arg("--proxy-type")
        .arg(if proxy.kind.is_v4() {
            "socks4"
        } else {
            "socks5"
        })
        .arg("--proxy-dns")
        .arg(if proxy.kind.remote_dns() {
            "remote"
        } else {
            "local"
        });
    if let Some(c) = &proxy.auth {
        let auth = if proxy.kind.is_v4() {
            c.user.clone()
        } else {
            format!("{}:{}", c.user, c.pass)
        };
        cmd.arg("--proxy-auth").arg(auth);
    }
    cmd.args(extra_args).arg(host).arg(port.to_string());
    Some(run_command(cmd, stdin, CLIENT_DEADLINE).await)
}

/// What [`pysocks`] does through the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PyMode {
    /// CONNECT, send, read back as many bytes as were sent (or to EOF), close. Needs no
    /// half-close, so it works through every peer. The payload is sent before reading: keep it
    /// under ~1 MB so socket buffers hold it.
    TcpEcho,
    /// CONNECT, send, shut down the write half, read to EOF.
    TcpHalfClose,
    /// UDP ASSOCIATE (SOCKS5 only), one datagram each way.
    Udp,
}

/// What the PySocks script reported.
#[derive(Clone, Debug)]
pub struct PySocksResult {
    /// Whether the exchange completed.
    pub ok: bool,
    /// What came back from the target.
    pub received: Vec<u8>,
    /// PySocks' error, when not `ok`.
    pub error: Option<String>,
    /// The raw process output.
    pub output: CmdOutput,
}

impl PySocksResult {
    /// Panics, showing the error and process output, unless the exchange completed.
    #[track_caller]
    pub fn assert_ok(&self) -> &Self {
        assert!(
            self.ok,
            "PySocks failed: {}\n{}",
            self.error.as_deref().unwrap_or("?"),
            self.output
        );
        self
    }
}

#[derive(serde::Deserialize)]
struct ScriptReport {
    ok: bool,
    #[serde(default)]
    received_hex: String,
    #[serde(default)]
    error: Option<String>,
}

/// Runs `peers/pysocks_client.py`: through `proxy` to `target`, sends `payload` and collects
/// the answer. `ProxyKind::Socks4a`/`Socks5h` set PySocks' `rdns`; credentials are passed as
/// PySocks' username/password (for SOCKS4 the username is the USERID).
pub async fn pysocks(
    proxy: &Proxy,
    target: &Target,
    mode: PyMode,
    payload: &[u8],
) -> Option<PySocksResult> {
    let python = require_pysocks()?;
    let (host, port) = match target {
        Target::Ip(a) => (a.ip().to_string(), a.port()),
        Target::Domain(n, p) => (n.clone(), *p),
    };
    let mut cmd = Command::new(python);
    cmd.arg(PYSOCKS_SCRIPT)
        .arg("--type")
        .arg(if proxy.kind.is_v4() {
            "socks4"
        } else {
            "socks5"
        })
        .arg("--proxy-host")
        .arg(proxy.addr.ip().to_string())
        .arg("--proxy-port")
        .arg(proxy.addr.port().to_string())
        .arg("--target-host")
        .arg(host)
        .arg("--target-port")
        .arg(port.to_string())
        .arg("--mode")
        .arg(match mode {
            PyMode::TcpEcho => "tcp-echo",
            PyMode::TcpHalfClose => "tcp-half-close",
            PyMode::Udp => "udp",
        })
        .arg("--payload-hex")
        .arg(hex(payload));
    if proxy.kind.remote_dns() {
        cmd.arg("--rdns");
    }
    if let Some(c) = &proxy.auth {
        cmd.arg("--user")
            .arg(&c.user)
            .arg("--password")
            .arg(&c.pass);
    }
    let output = run_command(cmd, b"", CLIENT_DEADLINE).await;
    let report: Option<ScriptReport> = output
        .stdout_str()
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok());
    Some(match report {
        Some(r) => PySocksResult {
            ok: r.ok && output.success(),
            received: unhex(&r.received_hex),
            error: r.error,
            output,
        },
        None => PySocksResult {
            ok: false,
            received: Vec::new(),
            error: Some("the script printed no JSON report".to_owned()),
            output,
        },
    })
}

/// A [`Proxy`] of `kind` at `addr` with no credentials: shorthand for runner calls.
pub fn proxy(kind: ProxyKind, addr: SocketAddr) -> Proxy {
    Proxy::new(kind, addr)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        let data = [0u8, 1, 0x7f, 0xff, 0x10];
        assert_eq!(hex(&data), "00017fff10");
        assert_eq!(unhex(&hex(&data)), data);
    }
}
