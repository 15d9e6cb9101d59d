//! Fuzzes the HTTP request framer in front of hyper: any split gives the same bytes (see `socksmith_proto_fuzz::server`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| socksmith_proto_fuzz::server::check_http_framer(data));
