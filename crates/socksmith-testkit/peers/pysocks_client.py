#!/usr/bin/python3
"""A PySocks client for socksmith-testkit (run with Debian's /usr/bin/python3 + python3-socks).

Connects through a SOCKS proxy to a target, sends a payload, and reads the answer back:
  tcp-echo: connect, send, read back as many bytes as were sent (or to EOF), close; needs no
            half-close, so it works through every proxy;
  tcp-half-close: connect, send, shut down the write half, read to EOF;
  udp: SOCKS5 UDP ASSOCIATE, send one datagram, wait for one datagram back.
Prints one JSON line: {"ok": true, "received_hex": "..."} or {"ok": false, "error": "..."}.
Exit status 0 on success, 1 on a SOCKS or network error, 2 on bad arguments.
"""
import argparse
import binascii
import json
import socket
import sys

import socks


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--type", choices=["socks4", "socks5"], required=True)
    p.add_argument("--proxy-host", required=True)
    p.add_argument("--proxy-port", type=int, required=True)
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--rdns", action="store_true", help="let the proxy resolve names (4a/5h)")
    p.add_argument("--target-host", required=True)
    p.add_argument("--target-port", type=int, required=True)
    p.add_argument("--mode", choices=["tcp-echo", "tcp-half-close", "udp"], default="tcp-echo")
    p.add_argument("--payload-hex", default="")
    p.add_argument("--timeout", type=float, default=10.0)
    a = p.parse_args()

    proxy_type = socks.SOCKS4 if a.type == "socks4" else socks.SOCKS5
    payload = binascii.unhexlify(a.payload_hex)
    # The socket talks to the proxy (and its UDP relay), so its family is the proxy's.
    family = socket.AF_INET6 if ":" in a.proxy_host else socket.AF_INET
    kind = socket.SOCK_DGRAM if a.mode == "udp" else socket.SOCK_STREAM
    s = socks.socksocket(family, kind)
    s.set_proxy(proxy_type, a.proxy_host, a.proxy_port, rdns=a.rdns,
                username=a.user, password=a.password)
    s.settimeout(a.timeout)
    received = b""
    try:
        if a.mode == "tcp-echo":
            s.connect((a.target_host, a.target_port))
            # Small payloads only (the echo is read after the whole send), which is what the
            # testkit sends: socket buffers hold them.
            s.sendall(payload)
            while len(received) < len(payload):
                chunk = s.recv(65536)
                if not chunk:
                    break
                received += chunk
        elif a.mode == "tcp-half-close":
            s.connect((a.target_host, a.target_port))
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                received += chunk
        else:
            s.sendto(payload, (a.target_host, a.target_port))
            received, _ = s.recvfrom(65536)
    except (socks.ProxyError, OSError) as e:
        print(json.dumps({"ok": False, "error": "%s: %s" % (type(e).__name__, e)}))
        return 1
    finally:
        s.close()
    print(json.dumps({"ok": True, "received_hex": binascii.hexlify(received).decode()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
