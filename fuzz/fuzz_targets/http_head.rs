//! Fuzzes the HTTP proxy request head checks: prefixes agree, targets and credentials check out (see `socksmith_proto_fuzz::server`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| socksmith_proto_fuzz::server::check_http_head(data));
