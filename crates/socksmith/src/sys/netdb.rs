//! `getaddrinfo(3)` and `getnameinfo(3)`: the C library's resolver, blocking, with its error
//! codes kept so that "no such name" can be told apart from "the resolver failed".
//!
//! These calls block (files, DNS, NSS modules): the resolve module runs them on tokio's blocking
//! pool. Names reach here as `CStr`, so a name with an interior NUL cannot be cut short.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::mem::{self, MaybeUninit};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ptr;

/// How a lookup failed, sorted the way callers act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GaiKind {
    /// The name (or address) has no entry: `EAI_NONAME`, `EAI_NODATA`.
    NotFound,
    /// Anything else: `EAI_AGAIN` (no answer from the servers), `EAI_FAIL`, `EAI_SYSTEM`, ...
    Other,
}

/// A failed lookup: its kind and the C library's own words for it.
#[derive(Debug, Clone)]
pub(crate) struct GaiError {
    pub(crate) kind: GaiKind,
    pub(crate) message: String,
}

/// Every address `name` resolves to (IPv4 and IPv6, the resolver's order, duplicates removed).
pub(crate) fn lookup_name(name: &CStr) -> Result<Vec<IpAddr>, GaiError> {
    // SAFETY: `addrinfo` is a plain C struct of integers and pointers; all-zero is a valid
    // value (null pointers), and the form getaddrinfo expects for unused hint fields.
    let mut hints: libc::addrinfo = unsafe { mem::zeroed() };
    hints.ai_family = libc::AF_UNSPEC;
    // One entry per address instead of one per socket type.
    hints.ai_socktype = libc::SOCK_STREAM;
    let mut list: *mut libc::addrinfo = ptr::null_mut();
    // SAFETY: `name` is a NUL-terminated string, the service may be null, `hints` is initialised
    // and `list` is a valid place for the result pointer. All outlive the call.
    let rc = unsafe { libc::getaddrinfo(name.as_ptr(), ptr::null(), &hints, &mut list) };
    if rc != 0 {
        return Err(gai_error(rc));
    }
    let list = AddrInfoList(list);

    let mut ips = Vec::new();
    let mut cur = list.0;
    while !cur.is_null() {
        // SAFETY: `cur` is a non-null node of the list getaddrinfo returned, which stays
        // allocated until `list` is dropped at the end of this function.
        let node = unsafe { &*cur };
        if let Some(ip) = node_ip(node) {
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
        cur = node.ai_next;
    }
    Ok(ips)
}

/// The host name `ip` maps back to (a PTR lookup or `/etc/hosts`); `NotFound` when it has none.
pub(crate) fn lookup_addr(ip: IpAddr) -> Result<String, GaiError> {
    let (storage, len) = sockaddr_of(SocketAddr::new(ip, 0));
    // NI_MAXHOST (1025) is the longest name glibc returns.
    let mut host = [0 as libc::c_char; 1025];
    // SAFETY: `storage` holds an initialised sockaddr of `len` bytes; `host` is a writable
    // buffer whose exact length is passed; the service buffer is null with length 0, which
    // getnameinfo accepts. NI_NAMEREQD makes "no name" an error instead of a numeric answer.
    let rc = unsafe {
        libc::getnameinfo(
            ptr::from_ref(&storage).cast::<libc::sockaddr>(),
            len,
            host.as_mut_ptr(),
            host.len() as libc::socklen_t,
            ptr::null_mut(),
            0,
            libc::NI_NAMEREQD,
        )
    };
    if rc != 0 {
        return Err(gai_error(rc));
    }
    // SAFETY: on success getnameinfo wrote a NUL-terminated string into `host`.
    let name = unsafe { CStr::from_ptr(host.as_ptr()) };
    Ok(name.to_string_lossy().into_owned())
}

/// Frees a getaddrinfo result list on drop.
struct AddrInfoList(*mut libc::addrinfo);

impl Drop for AddrInfoList {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the pointer came from a successful getaddrinfo and is freed only here.
            unsafe { libc::freeaddrinfo(self.0) };
        }
    }
}

fn node_ip(node: &libc::addrinfo) -> Option<IpAddr> {
    if node.ai_addr.is_null() {
        return None;
    }
    let len = node.ai_addrlen as usize;
    match node.ai_family {
        libc::AF_INET if len >= mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family and length say `ai_addr` points to a `sockaddr_in`; an
            // unaligned read makes no assumption about the allocation's alignment.
            let sin = unsafe { ptr::read_unaligned(node.ai_addr.cast::<libc::sockaddr_in>()) };
            Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                sin.sin_addr.s_addr,
            ))))
        }
        libc::AF_INET6 if len >= mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for `sockaddr_in6`.
            let sin6 = unsafe { ptr::read_unaligned(node.ai_addr.cast::<libc::sockaddr_in6>()) };
            Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
        }
        _ => None,
    }
}

/// `addr` as a C socket address and its length.
fn sockaddr_of(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    let mut storage = MaybeUninit::<libc::sockaddr_storage>::zeroed();
    let len = match addr {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*v4.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: `sockaddr_storage` is larger than and aligned for every sockaddr type.
            unsafe { storage.as_mut_ptr().cast::<libc::sockaddr_in>().write(sin) };
            mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: as above, for `sockaddr_in6`.
            unsafe {
                storage
                    .as_mut_ptr()
                    .cast::<libc::sockaddr_in6>()
                    .write(sin6)
            };
            mem::size_of::<libc::sockaddr_in6>()
        }
    };
    // SAFETY: zeroed storage is a valid `sockaddr_storage`, and one sockaddr was written over it.
    let storage = unsafe { storage.assume_init() };
    (storage, len as libc::socklen_t)
}

fn gai_error(code: libc::c_int) -> GaiError {
    let kind = match code {
        libc::EAI_NONAME | libc::EAI_NODATA => GaiKind::NotFound,
        _ => GaiKind::Other,
    };
    let message = if code == libc::EAI_SYSTEM {
        std::io::Error::last_os_error().to_string()
    } else {
        // SAFETY: gai_strerror returns a pointer to a static NUL-terminated message (or null,
        // which is checked) that is never freed.
        let text = unsafe { libc::gai_strerror(code) };
        if text.is_null() {
            format!("resolver error {code}")
        } else {
            // SAFETY: non-null, static and NUL-terminated, as said above.
            unsafe { CStr::from_ptr(text) }
                .to_string_lossy()
                .into_owned()
        }
    };
    GaiError { kind, message }
}

/// `name` as a C string, or `None` when it holds a NUL byte (which C would cut it at).
pub(crate) fn c_name(name: &str) -> Option<CString> {
    CString::new(name).ok()
}

#[cfg(test)]
pub(crate) mod private_resolver {
    //! A resolver world of the test's own making, so that resolver tests depend neither on the
    //! machine's network nor on its `/etc/hosts`: the test re-runs itself in private network and
    //! mount namespaces where `/etc/hosts`, `/etc/nsswitch.conf` and `/etc/resolv.conf` are the
    //! ones below, and the only DNS server is [`serve_nxdomain`] on 127.0.0.1:53 inside.

    use std::net::UdpSocket;
    use std::process::Command;

    /// Set in the re-run test: it is inside the private world.
    const INSIDE: &str = "SOCKSMITH_TEST_PRIVATE_RESOLVER";

    /// The private `/etc/hosts`.
    pub(crate) const HOSTS: &str = "127.0.0.1 localhost\n::1 localhost\n\
                                    192.0.2.10 fixture.socksmith.test\n";
    const NSSWITCH: &str = "hosts: files dns\n";
    const RESOLV_CONF: &str = "nameserver 127.0.0.1\noptions timeout:2 attempts:1\n";

    /// `true` inside the private world: go on with the test's body. Outside, re-runs the test
    /// `module::name` (`module_path!()`, the function's name) in that world, fails unless it
    /// passed there, and returns `false`.
    ///
    /// Needs `unshare` and `ip` and root (or unprivileged user namespaces); missing ones go
    /// through the testkit's missing-peer rule.
    pub(crate) fn inside(module: &str, name: &str) -> bool {
        if std::env::var_os(INSIDE).is_some() {
            return true;
        }
        let (Some(unshare), Some(ip)) = (
            socksmith_testkit::require_tool("unshare"),
            socksmith_testkit::require_tool("ip"),
        ) else {
            return false;
        };
        // libtest names tests by their path without the crate's name.
        let module = module.split_once("::").map_or("", |(_, rest)| rest);
        let test = format!("{module}::{name}");
        let dir = std::env::temp_dir().join(format!(
            "socksmith-private-resolver-{}-{name}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let files = [
            ("hosts", HOSTS),
            ("nsswitch.conf", NSSWITCH),
            ("resolv.conf", RESOLV_CONF),
        ];
        for (file, text) in files {
            std::fs::write(dir.join(file), text).expect("write a private /etc file");
        }
        let mut cmd = Command::new(unshare);
        if !socksmith_testkit::tools::is_root() {
            cmd.arg("--map-root-user");
        }
        let script = r#"set -e
            "$1" link set lo up
            for f in hosts nsswitch.conf resolv.conf; do mount --bind "$2/$f" "/etc/$f"; done
            shift 2
            exec "$@""#;
        let output = cmd
            .args([
                "--mount",
                "--net",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
            ])
            .arg(script)
            .arg("sh")
            .arg(ip)
            .arg(&dir)
            .arg(std::env::current_exe().expect("the test binary's path"))
            .args(["--exact", &test, "--nocapture", "--test-threads=1"])
            .env(INSIDE, "1")
            .output()
            .expect("run unshare");
        let _ = std::fs::remove_dir_all(&dir);
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            output.status.success(),
            "{test} in a private resolver world:\n{log}"
        );
        assert!(log.contains("1 passed"), "{test} did not run:\n{log}");
        false
    }

    /// Answers every DNS query on 127.0.0.1:53 with NXDOMAIN ("no such name"), from a thread, for
    /// as long as the test process lives. Only used inside the private world.
    pub(crate) fn serve_nxdomain() {
        let socket = UdpSocket::bind("127.0.0.1:53").expect("bind the private DNS server");
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = socket.recv_from(&mut buf) {
                if let Some(answer) = nxdomain(&buf[..n]) {
                    let _ = socket.send_to(&answer, from);
                }
            }
        });
    }

    /// The NXDOMAIN answer to `query` (RFC 1035 4.1): its ID and question, QR and RA set, RCODE 3.
    fn nxdomain(query: &[u8]) -> Option<Vec<u8>> {
        let header = query.get(..12)?;
        // The question: labels up to the empty one, then QTYPE and QCLASS.
        let mut at = 12;
        loop {
            let len = usize::from(*query.get(at)?);
            at += 1 + len;
            if len == 0 {
                break;
            }
        }
        let question = query.get(12..at + 4)?;
        let mut answer = Vec::with_capacity(12 + question.len());
        answer.extend_from_slice(&header[..2]);
        answer.extend_from_slice(&[0x80 | (header[2] & 0x79), 0x80 | 3]);
        answer.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
        answer.extend_from_slice(question);
        Some(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::private_resolver::{inside, serve_nxdomain};

    #[test]
    fn localhost_resolves_to_loopback() {
        if !inside(module_path!(), "localhost_resolves_to_loopback") {
            return;
        }
        let name = c_name("localhost").expect("no NUL");
        let mut ips = lookup_name(&name).expect("localhost resolves");
        ips.sort();
        assert_eq!(
            ips,
            [
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST)
            ]
        );
    }

    #[test]
    fn names_come_from_the_hosts_file_then_dns() {
        if !inside(module_path!(), "names_come_from_the_hosts_file_then_dns") {
            return;
        }
        serve_nxdomain();
        let name = c_name("fixture.socksmith.test").expect("no NUL");
        assert_eq!(
            lookup_name(&name).expect("listed in the hosts file"),
            [IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10))]
        );
        let name = c_name("absent.socksmith.test").expect("no NUL");
        let err = lookup_name(&name).expect_err("the DNS server says NXDOMAIN");
        assert_eq!(err.kind, GaiKind::NotFound, "{err:?}");
    }

    #[test]
    fn numeric_names_come_back_as_themselves() {
        for (text, ip) in [
            ("::1", IpAddr::V6(Ipv6Addr::LOCALHOST)),
            ("192.0.2.1", IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))),
        ] {
            let name = c_name(text).expect("no NUL");
            assert_eq!(lookup_name(&name).expect("numeric"), [ip]);
        }
    }

    #[test]
    fn loopback_has_a_name() {
        if !inside(module_path!(), "loopback_has_a_name") {
            return;
        }
        serve_nxdomain();
        let name = lookup_addr(IpAddr::V4(Ipv4Addr::LOCALHOST)).expect("reverse of 127.0.0.1");
        assert_eq!(name, "localhost");
        let err = lookup_addr(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 99))).expect_err("no name");
        assert_eq!(err.kind, GaiKind::NotFound, "{err:?}");
    }

    #[test]
    fn names_with_nul_are_refused_before_c_sees_them() {
        assert!(c_name("good.example\0evil").is_none());
    }

    #[test]
    fn error_codes_are_sorted_and_described() {
        let err = gai_error(libc::EAI_NONAME);
        assert_eq!(err.kind, GaiKind::NotFound);
        assert!(!err.message.is_empty());
        assert_eq!(gai_error(libc::EAI_AGAIN).kind, GaiKind::Other);
    }
}
