//! Fuzzes the PROXY protocol header decoder and reader: prefixes agree, re-encoding decodes the same (see `socksmith_proto_fuzz::server`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| socksmith_proto_fuzz::server::check_proxy_header(data));
