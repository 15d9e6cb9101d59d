//! Fuzzes `V4Request::decode`: never panics, prefixes agree with the whole, decode → encode →
//! decode is the identity (not byte-exact: SOCKS4a's DSTIP 0.0.0.x is re-encoded as 0.0.0.1).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| socksmith_proto_fuzz::targets::v4_request(data));
