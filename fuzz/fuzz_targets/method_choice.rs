//! Fuzzes `MethodChoice::decode`: never panics, prefixes agree with the whole, decode → encode →
//! decode is the identity.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socksmith_proto::MethodChoice;

fuzz_target!(|data: &[u8]| {
    socksmith_proto_fuzz::check_stream_decoder(
        data,
        MethodChoice::decode,
        |m, out| m.encode(out),
        true,
    );
});
