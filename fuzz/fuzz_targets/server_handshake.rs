//! Drives `ServerHandshake` with arbitrary bytes, chunking and decisions.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| socksmith_proto_fuzz::targets::server_handshake(data));
