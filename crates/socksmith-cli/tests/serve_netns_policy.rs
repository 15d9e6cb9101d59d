//! What needs a network namespace the test makes (`unshare -n`, only `lo` up, so nothing can
//! leave the machine): `--outbound-address` seen by the target (a second address on the
//! namespace's `lo`), and a real browser, headless Chromium with
//! `--proxy-server=socks5://...` (which sends names to the proxy), that does not load a
//! listed domain and does load an allowed one. For the browser the namespace also gets its
//! own `/etc/hosts` (`unshare --mount`, bind-mounted), so that the server's system resolver
//! answers the test's names with 127.0.0.1. And DNS through UDP ASSOCIATE, with a name server
//! on the namespace's 127.0.0.1:53: a listed name is answered NXDOMAIN by the proxy itself.

mod serve_support;

use std::path::{Path, PathBuf};

use serve_support::*;
use socksmith_testkit::process::run_command;
use socksmith_testkit::tools::{require_root, require_tool};
use socksmith_testkit::{within, CmdOutput, TEST_DEADLINE};

/// `unshare` and `python3`, once root, `unshare`, `ip` and `python3` are all there.
fn netns_tools() -> Option<(PathBuf, PathBuf)> {
    require_root("unshare -n needs root")?;
    let unshare = require_tool("unshare")?;
    require_tool("ip")?;
    let python = require_tool("python3")?;
    Some((unshare, python))
}

/// Runs the shell `script` with `unshare ARGS sh -c`, bounded, and checks that it succeeded.
async fn run_unshared(unshare: &Path, args: &[&str], script: &str) -> CmdOutput {
    let mut cmd = tokio::process::Command::new(unshare);
    cmd.args(args).args(["sh", "-c", script]);
    let out = run_command(cmd, b"", STEP * 9).await;
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

/// Starts the server with the given flags in the background of a namespace script, and sets
/// `$port` (the FIFO hands over the `listening on` line without polling).
fn start_server(bin: &Path, flags: &str) -> String {
    format!(
        r#"mkfifo out
timeout 100 "{bin}" serve --listen 127.0.0.1:0 {flags} >out 2>serve.log &
server=$!
read -r line <out
port=${{line##*:}}
"#,
        bin = bin.display()
    )
}

/// A TCP and a UDP target on 127.0.0.1 that print the source address they see, reached
/// through the proxy with raw SOCKS5 (CONNECT, then UDP ASSOCIATE).
const SOURCES: &str = r#"
import socket, struct, sys
proxy = int(sys.argv[1])
def exact(s, n):
    got = b""
    while len(got) < n:
        chunk = s.recv(n - len(got))
        if not chunk:
            raise SystemExit("proxy closed after %r" % got)
        got += chunk
    return got
tcp = socket.socket()
tcp.bind(("127.0.0.1", 0))
tcp.listen(1)
tcp.settimeout(10)
c = socket.create_connection(("127.0.0.1", proxy), timeout=10)
c.sendall(bytes([5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1]) + struct.pack(">H", tcp.getsockname()[1]))
reply = exact(c, 12)
print("tcp-reply", reply[1], flush=True)
conn, addr = tcp.accept()
print("tcp-source", addr[0], flush=True)
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(("127.0.0.1", 0))
udp.settimeout(10)
a = socket.create_connection(("127.0.0.1", proxy), timeout=10)
a.sendall(bytes([5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0]))
reply = exact(a, 12)
relay = (socket.inet_ntoa(reply[6:10]), struct.unpack(">H", reply[10:12])[0])
client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
client.bind(("127.0.0.1", 0))
header = bytes([0, 0, 0, 1, 127, 0, 0, 1]) + struct.pack(">H", udp.getsockname()[1])
client.sendto(header + b"ping", relay)
data, addr = udp.recvfrom(100)
print("udp-source", addr[0], data.decode(), flush=True)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_address_is_the_source_the_targets_see() {
    within(TEST_DEADLINE, "--outbound-address", async {
        let Some((unshare, python)) = netns_tools() else {
            return;
        };
        let dir = TestDir::new("outbound");
        std::fs::write(dir.path().join("sources.py"), SOURCES).expect("write the client");
        let script = format!(
            r#"set -eu
ip link set lo up
ip addr add 10.200.0.1/32 dev lo
cd "{dir}"
{server}
"{python}" sources.py "$port"
kill -TERM "$server"
wait "$server" && echo "server exit 0"
cat serve.log >&2
"#,
            dir = dir.path().display(),
            server = start_server(bin(), "--outbound-address 10.200.0.1"),
            python = python.display(),
        );
        let out = run_unshared(&unshare, &["-n"], &script).await;
        assert_eq!(line_value(&out, "tcp-reply"), "0", "{out}");
        assert_eq!(line_value(&out, "tcp-source"), "10.200.0.1", "{out}");
        assert_eq!(line_value(&out, "udp-source"), "10.200.0.1 ping", "{out}");
        assert!(out.stdout_str().contains("server exit 0"), "{out}");
    })
    .await;
}

/// A web target on 127.0.0.1 that answers every GET with a page and logs each Host header.
const WEB: &str = r#"
import http.server, sys
class Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with open("requests.log", "a") as log:
            log.write(self.headers.get("Host", "-") + "\n")
        body = b"<html><body>PAGE-FROM-TARGET</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), Page)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_does_not_load_a_listed_domain_and_loads_an_allowed_one() {
    within(TEST_DEADLINE, "Chromium through the blocklist", async {
        let Some((unshare, python)) = netns_tools() else {
            return;
        };
        let Some(chromium) = require_tool("chromium") else {
            return;
        };
        let dir = TestDir::new("chromium");
        let d = dir.path().display();
        std::fs::write(dir.path().join("web.py"), WEB).expect("write the target");
        std::fs::write(
            dir.path().join("hosts"),
            "127.0.0.1 localhost\n127.0.0.1 allowed.test ads.test x.ads.test\n",
        )
        .expect("write the namespace's hosts file");
        std::fs::write(dir.path().join("list.txt"), "0.0.0.0 ads.test\n").expect("write list");
        let browse = |name: &str| {
            format!(
                // Chromium now and then hangs at start-up without a system bus (seen once in
                // thirty runs): a start that writes no page at all is retried, twice at most.
                r#"for attempt in 1 2 3; do
  timeout 25 "{chromium}" --headless --no-sandbox --disable-gpu \
  --disable-background-networking --disable-component-update --disable-sync --no-first-run \
  --user-data-dir="{d}/profile-{name}-$attempt" --proxy-server="socks5://127.0.0.1:$port" \
  --dump-dom "http://{name}:$web/" >"{d}/{name}.dom" 2>"{d}/{name}.err" || true
  [ -s "{d}/{name}.dom" ] && break
done
"#,
                chromium = chromium.display(),
            )
        };
        let script = format!(
            r#"set -eu
ip link set lo up
mount --bind "{d}/hosts" /etc/hosts
cd "{d}"
mkfifo webout
"{python}" web.py >webout 2>web.err &
webpid=$!
read -r web <webout
{server}
{allowed}
{blocked}
{sub}
kill -TERM "$server" "$webpid"
wait "$server" && echo "server exit 0"
cat serve.log >&2
"#,
            python = python.display(),
            server = start_server(bin(), &format!("--blocklist {d}/list.txt")),
            allowed = browse("allowed.test"),
            blocked = browse("ads.test"),
            sub = browse("x.ads.test"),
        );
        let out = run_unshared(&unshare, &["-n", "--mount"], &script).await;
        let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
        let allowed = read("allowed.test.dom");
        assert!(
            allowed.contains("PAGE-FROM-TARGET"),
            "the allowed page loads: {allowed:?}\n{}\n{out}",
            read("allowed.test.err")
        );
        for blocked in ["ads.test", "x.ads.test"] {
            let dom = read(&format!("{blocked}.dom"));
            assert!(
                !dom.contains("PAGE-FROM-TARGET"),
                "{blocked} loaded: {dom:?}"
            );
            let err = read(&format!("{blocked}.err"));
            assert!(
                err.contains("ERR_SOCKS_CONNECTION_FAILED"),
                "{blocked}: {err}"
            );
        }
        let requests = read("requests.log");
        assert!(
            requests
                .lines()
                .all(|host| host.starts_with("allowed.test:")),
            "{requests}"
        );
        assert!(
            !requests.is_empty(),
            "the target saw the allowed page's request"
        );
        let log = out.stderr_str();
        assert!(
            log.contains("\\\"ads.test\\\" is on the blocklist"),
            "{log}"
        );
        assert!(
            log.contains("\\\"x.ads.test\\\" is on the blocklist"),
            "{log}"
        );
        assert!(out.stdout_str().contains("server exit 0"), "{out}");
    })
    .await;
}

/// A name server on 127.0.0.1:53 that answers every query (QR set, RCODE 0) and logs the
/// names it was asked, and a client that asks it through UDP ASSOCIATE: a listed name and an
/// unlisted one. Prints `NAME RCODE` per answer.
const DNS: &str = r#"
import socket, struct, sys, threading
proxy = int(sys.argv[1])
def qname(packet):
    labels, i = [], 12
    while packet[i]:
        labels.append(packet[i + 1:i + 1 + packet[i]].decode())
        i += 1 + packet[i]
    return ".".join(labels)
ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
ns.bind(("127.0.0.1", 53))
def serve():
    while True:
        data, addr = ns.recvfrom(512)
        with open("ns.log", "a") as log:
            log.write(qname(data) + "\n")
        ns.sendto(data[:2] + bytes([0x81, 0x80]) + data[4:], addr)
threading.Thread(target=serve, daemon=True).start()
def exact(s, n):
    got = b""
    while len(got) < n:
        chunk = s.recv(n - len(got))
        if not chunk:
            raise SystemExit("proxy closed")
        got += chunk
    return got
control = socket.create_connection(("127.0.0.1", proxy), timeout=10)
control.sendall(bytes([5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0]))
reply = exact(control, 12)
relay = (socket.inet_ntoa(reply[6:10]), struct.unpack(">H", reply[10:12])[0])
client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
client.bind(("127.0.0.1", 0))
client.settimeout(10)
for n, name in enumerate(["x.ads.example.com", "fine.example.com"]):
    question = b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0"
    query = struct.pack(">HHHHHH", 0x1200 + n, 0x0100, 1, 0, 0, 0) + question + struct.pack(">HH", 1, 1)
    client.sendto(bytes([0, 0, 0, 1, 127, 0, 0, 1, 0, 53]) + query, relay)
    data, _ = client.recvfrom(600)
    answer = data[10:]
    assert answer[:2] == query[:2], "the answer's id"
    print(name, answer[3] & 0x0F, flush=True)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_through_udp_associate_gets_nxdomain_for_a_listed_name_from_the_proxy() {
    within(TEST_DEADLINE, "DNS over UDP ASSOCIATE", async {
        let Some((unshare, python)) = netns_tools() else {
            return;
        };
        let dir = TestDir::new("udp-dns");
        let d = dir.path().display();
        std::fs::write(dir.path().join("dns.py"), DNS).expect("write the client");
        std::fs::write(dir.path().join("list.txt"), "||ads.example.com^\n").expect("write list");
        let script = format!(
            r#"set -eu
ip link set lo up
cd "{d}"
{server}
"{python}" dns.py "$port"
kill -TERM "$server"
wait "$server" && echo "server exit 0"
cat serve.log >&2
"#,
            server = start_server(bin(), &format!("--blocklist {d}/list.txt")),
            python = python.display(),
        );
        let out = run_unshared(&unshare, &["-n"], &script).await;
        assert_eq!(
            line_value(&out, "x.ads.example.com"),
            "3",
            "NXDOMAIN: {out}"
        );
        assert_eq!(
            line_value(&out, "fine.example.com"),
            "0",
            "forwarded: {out}"
        );
        let asked = std::fs::read_to_string(dir.path().join("ns.log")).unwrap_or_default();
        assert_eq!(
            asked, "fine.example.com\n",
            "the name server never saw the listed name"
        );
        assert!(out.stdout_str().contains("server exit 0"), "{out}");
    })
    .await;
}
