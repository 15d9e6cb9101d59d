//! Fuzzes `V4Reply::decode`: never panics, prefixes agree with the whole, decode → encode →
//! decode is the identity (not byte-exact: VN 0x04 is accepted and re-encoded as 0x00).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| socksmith_proto_fuzz::targets::v4_reply(data));
