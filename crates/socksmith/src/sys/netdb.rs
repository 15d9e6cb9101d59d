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
mod tests {
    use super::*;

    #[test]
    fn localhost_resolves_to_loopback() {
        let name = c_name("localhost").expect("no NUL");
        let ips = lookup_name(&name).expect("localhost resolves");
        assert!(!ips.is_empty());
        assert!(ips.iter().all(IpAddr::is_loopback), "{ips:?}");
    }

    #[test]
    fn numeric_names_come_back_as_themselves() {
        let name = c_name("::1").expect("no NUL");
        assert_eq!(
            lookup_name(&name).expect("numeric"),
            [IpAddr::V6(Ipv6Addr::LOCALHOST)]
        );
    }

    #[test]
    fn loopback_has_a_name() {
        // /etc/hosts maps 127.0.0.1 on every system we run on.
        let name = lookup_addr(IpAddr::V4(Ipv4Addr::LOCALHOST)).expect("reverse of 127.0.0.1");
        assert!(!name.is_empty());
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
