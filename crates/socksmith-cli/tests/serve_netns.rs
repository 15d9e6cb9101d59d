//! Reply codes that need a network without routes, inside a network namespace the test
//! creates (`unshare -n`, only `lo` up): 0x03 network unreachable, 0x04 host unreachable for a
//! failed name lookup (CONNECT, RESOLVE, SOCKS4a), and 0x02 for the link-local metadata
//! address the default policy refuses.
//!
//! The server and its clients (a raw-byte Python client and curl) run together in the
//! namespace, so no packet can leave the machine whatever happens: the targets are
//! documentation addresses (192.0.2.0/24, 2001:db8::/32) and the kernel answers ENETUNREACH
//! without sending anything; the resolver has no route to its name server.

mod serve_support;

use serve_support::*;
use socksmith_testkit::process::run_command;
use socksmith_testkit::tools::{require_root, require_tool};
use socksmith_testkit::{within, TEST_DEADLINE};

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
exchange("v4a-dns", bytes([4, 1, 0, 80, 0, 0, 0, 1]) + b"\0" + name + b"\0", greeting=False)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_networks_and_failed_lookups_get_their_codes() {
    within(TEST_DEADLINE, "network namespace replies", async {
        let Some(()) = require_root("unshare -n needs root") else {
            return;
        };
        let Some(unshare) = require_tool("unshare") else {
            return;
        };
        let Some(_) = require_tool("ip") else { return };
        let Some(python) = require_tool("python3") else {
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
        let mut cmd = tokio::process::Command::new(unshare);
        cmd.args(["-n", "sh", "-c", &script]);
        let out = run_command(cmd, b"", STEP * 4).await;
        out.assert_success();
        let stdout = out.stdout_str();
        let reply = |name: &str| -> String {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .unwrap_or_else(|| panic!("no {name} line:\n{out}"))
                .to_owned()
        };
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
        ] {
            assert!(log.contains(reason), "{reason:?} not in the log:\n{log}");
        }
    })
    .await;
}
