//! Fuzzes `Greeting::decode`: never panics, prefixes agree with the whole, decode → encode →
//! decode is the identity.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| socksmith_proto_fuzz::targets::greeting(data));
