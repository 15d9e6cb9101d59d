//! Reply codes that need a network without routes, inside a network namespace the test
//! creates (`unshare -n`, only `lo` up): 0x03 network unreachable, 0x04 host unreachable for a
//! failed name lookup (CONNECT, RESOLVE, SOCKS4a), and 0x02 for the link-local metadata
//! address the default policy refuses and for a target this host's own routes prohibit. Also what needs a listener on a non-loopback address
//! (a documentation address added to the namespace's `lo`): loopback targets refused.
//!
//! The server and its clients (a raw-byte Python client and curl) run together in the
//! namespace, so no packet can leave the machine whatever happens: the targets are
//! documentation addresses (192.0.2.0/24, 2001:db8::/32) and the kernel answers ENETUNREACH
//! without sending anything; the resolver has no route to its name server.

mod serve_support;

use std::path::{Path, PathBuf};

use serve_support::*;
use socksmith_testkit::process::run_command;
use socksmith_testkit::tools::{require_root, require_tool};
use socksmith_testkit::{within, CmdOutput, TEST_DEADLINE};

/// `unshare` and `python3`, once root, `unshare`, `ip` and `python3` are all there (else `None`,
/// by the missing-peer policy).
fn netns_tools() -> Option<(PathBuf, PathBuf)> {
    require_root("unshare -n needs root")?;
    let unshare = require_tool("unshare")?;
    require_tool("ip")?;
    let python = require_tool("python3")?;
    Some((unshare, python))
}

/// Runs the shell `script` in a new network namespace (`unshare -n`), bounded, and checks that
/// it succeeded.
async fn run_in_netns(unshare: &Path, script: &str) -> CmdOutput {
    let mut cmd = tokio::process::Command::new(unshare);
    cmd.args(["-n", "sh", "-c", script]);
    let out = run_command(cmd, b"", STEP * 4).await;
    out.assert_success();
    out
}

/// What follows `NAME ` on the first stdout line that starts with it.
fn line_value(out: &CmdOutput, name: &str) -> String {
    out.stdout_str()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} line:\n{out}"))
        .to_owned()
}

/// A raw SOCKS client: each case prints `NAME REPLY-BYTES-HEX`.
const CLIENT: &str = r#"
import socket, sys
port = int(sys.argv[1])
def exchange(name, data, greeting=True):
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    s.sendall(data)
    want = 2 + 4 if greeting else 8
    got = b""
    while len(got) < want:
        chunk = s.recv(want - len(got))
        if not chunk:
            break
        got += chunk
    print(name, got.hex(), flush=True)
    s.close()
def v5(name, cmd, addr):
    exchange(name, bytes([5, 1, 0, 5, cmd, 0]) + addr)
name = b"nonexistent.invalid"
v5("v6-doc", 1, bytes([4, 0x20, 0x01, 0x0d, 0xb8] + [0] * 11 + [1, 0, 80]))
v5("v4-doc", 1, bytes([1, 192, 0, 2, 1, 0, 80]))
v5("dns", 1, bytes([3, len(name)]) + name + bytes([0, 80]))
v5("resolve", 0xF0, bytes([3, len(name)]) + name + bytes([0, 0]))
v5("metadata", 1, bytes([1, 169, 254, 169, 254, 0, 80]))
v5("prohibited", 1, bytes([1, 198, 51, 100, 7, 0, 80]))
exchange("v4a-dns", bytes([4, 1, 0, 80, 0, 0, 0, 1]) + b"\0" + name + b"\0", greeting=False)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_networks_and_failed_lookups_get_their_codes() {
    within(TEST_DEADLINE, "network namespace replies", async {
        let Some((unshare, python)) = netns_tools() else {
            return;
        };
        let Some(curl) = require_tool("curl") else {
            return;
        };
        let dir = TestDir::new("netns");
        let client = dir.path().join("client.py");
        std::fs::write(&client, CLIENT).expect("write the client");
        // Everything below runs in the new namespace. `timeout` bounds the server even if this
        // test dies; the FIFO hands over the `listening on` line without polling.
        let script = format!(
            r#"set -eu
ip link set lo up
ip route add prohibit 198.51.100.0/24
cd "{dir}"
mkfifo out
timeout 60 "{bin}" serve --listen 127.0.0.1:0 >out 2>serve.log &
server=$!
read -r line <out
port=${{line##*:}}
"{python}" client.py "$port"
"{curl}" -sS --max-time 10 -x "socks5h://127.0.0.1:$port" "http://[2001:db8::1]/" 2>&1 || true
kill -TERM "$server"
wait "$server" && echo "server exit 0"
cat serve.log >&2
"#,
            dir = dir.path().display(),
            bin = bin().display(),
            python = python.display(),
            curl = curl.display(),
        );
        let out = run_in_netns(&unshare, &script).await;
        let stdout = out.stdout_str();
        let reply = |name: &str| line_value(&out, name);
        // Method choice 05 00, then VER 05 | REP.
        assert_eq!(
            &reply("v6-doc")[..8],
            "05000503",
            "IPv6 network unreachable: {out}"
        );
        assert_eq!(
            &reply("v4-doc")[..8],
            "05000503",
            "IPv4 network unreachable: {out}"
        );
        assert_eq!(&reply("dns")[..8], "05000504", "failed lookup: {out}");
        assert_eq!(&reply("resolve")[..8], "05000504", "failed RESOLVE: {out}");
        assert_eq!(
            &reply("metadata")[..8],
            "05000502",
            "link-local refused: {out}"
        );
        assert_eq!(
            &reply("prohibited")[..8],
            "05000502",
            "refused by this host's own route: not allowed: {out}"
        );
        assert_eq!(
            &reply("v4a-dns")[..4],
            "005b",
            "SOCKS4a failed lookup: {out}"
        );
        assert!(stdout.contains("(3)"), "curl reports REP 3: {out}");
        assert!(stdout.contains("server exit 0"), "{out}");

        let log = out.stderr_str();
        for reason in [
            "destination=[2001:db8::1]:80",
            "Network is unreachable",
            "outcome=DNS lookup failed: nonexistent.invalid",
            "denied by policy: target 169.254.169.254 is link-local",
            "destination=198.51.100.7:80",
            "Permission denied",
        ] {
            assert!(log.contains(reason), "{reason:?} not in the log:\n{log}");
        }
    })
    .await;
}

/// A target on 127.0.0.1 and a raw SOCKS5 client with username/password: for each proxy
/// given (`HOST:PORT`), prints `NAME-ip REP` and `NAME-name REP` for CONNECT to the target by
/// address and by the name `localhost`.
const LOOPBACK_CLIENT: &str = r#"
import socket, sys, threading
target = socket.socket()
target.bind(("127.0.0.1", 0))
target.listen(16)
port = target.getsockname()[1]
def serve():
    while True:
        c, _ = target.accept()
        c.close()
threading.Thread(target=serve, daemon=True).start()
def connect(proxy, addr):
    host, pport = proxy.rsplit(":", 1)
    s = socket.create_connection((host, int(pport)), timeout=20)
    s.sendall(bytes([5, 1, 2, 1, 1]) + b"u" + bytes([2]) + b"pw" + bytes([5, 1, 0]) + addr)
    got = b""
    while len(got) < 2 + 2 + 4:
        chunk = s.recv(8 - len(got))
        if not chunk:
            break
        got += chunk
    s.close()
    return got.hex()[8:12]
for name, proxy in zip(["public", "allowed", "local"], sys.argv[1:]):
    print(name + "-ip", connect(proxy, bytes([1, 127, 0, 0, 1]) + port.to_bytes(2, "big")), flush=True)
    print(name + "-name", connect(proxy, bytes([3, 9]) + b"localhost" + port.to_bytes(2, "big")), flush=True)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_server_refuses_loopback_targets_unless_allowed() {
    within(TEST_DEADLINE, "loopback targets", async {
        let Some((unshare, python)) = netns_tools() else {
            return;
        };
        let dir = TestDir::new("netns-loopback");
        std::fs::write(dir.path().join("client.py"), LOOPBACK_CLIENT).expect("write the client");
        // Three servers with users: on 192.0.2.10 (not loopback), the same with
        // --allow-loopback-targets, and on 127.0.0.1.
        let script = format!(
            r#"set -eu
ip link set lo up
ip addr add 192.0.2.10/32 dev lo
cd "{dir}"
mkfifo out1 out2 out3
timeout 60 "{bin}" serve --listen 192.0.2.10:0 --user u:pw >out1 2>public.log &
s1=$!
read -r l1 <out1
timeout 60 "{bin}" serve --listen 192.0.2.10:0 --user u:pw --allow-loopback-targets >out2 2>allowed.log &
s2=$!
read -r l2 <out2
timeout 60 "{bin}" serve --listen 127.0.0.1:0 --user u:pw >out3 2>local.log &
s3=$!
read -r l3 <out3
"{python}" client.py "${{l1#listening on }}" "${{l2#listening on }}" "${{l3#listening on }}"
kill -TERM "$s1" "$s2" "$s3"
wait "$s1" && wait "$s2" && wait "$s3" && echo "servers exit 0"
cat public.log >&2
"#,
            dir = dir.path().display(),
            bin = bin().display(),
            python = python.display(),
        );
        let out = run_in_netns(&unshare, &script).await;
        let stdout = out.stdout_str();
        let reply = |name: &str| line_value(&out, name);
        // Method choice 05 02, status 01 00, then VER 05 | REP: the hex shown is `05 REP`.
        assert_eq!(reply("public-ip"), "0502", "refused by address: {out}");
        assert_eq!(reply("public-name"), "0502", "refused by name: {out}");
        assert_eq!(reply("allowed-ip"), "0500", "allowed by the flag: {out}");
        assert_eq!(reply("allowed-name"), "0500", "allowed by the flag: {out}");
        assert_eq!(reply("local-ip"), "0500", "a loopback server's clients: {out}");
        assert_eq!(reply("local-name"), "0500", "a loopback server's clients: {out}");
        assert!(stdout.contains("servers exit 0"), "{out}");
        let log = out.stderr_str();
        assert!(
            log.contains("denied by policy: target 127.0.0.1 is on the proxy host's loopback"),
            "{log}"
        );
    })
    .await;
}
