//! Fuzzes `V4Request::decode`: never panics, prefixes agree with the whole, decode → encode →
//! decode is the identity (not byte-exact: SOCKS4a's DSTIP 0.0.0.x is re-encoded as 0.0.0.1).
#![no_main]

use libfuzzer_sys::fuzz_target;
use socksmith_proto::V4Request;

fuzz_target!(|data: &[u8]| {
    socksmith_proto_fuzz::check_stream_decoder(
        data,
        V4Request::decode,
        |m, out| m.encode(out).expect("a decoded SOCKS4 request re-encodes"),
        false,
    );
});
