//! Drives `ClientHandshake` with arbitrary configurations, server bytes and chunking.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| socksmith_proto_fuzz::targets::client_handshake(data));
