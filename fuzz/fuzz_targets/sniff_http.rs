//! Fuzzes the HTTP Host sniffer: never panics, answers settle (see `socksmith_proto_fuzz::sniff`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| socksmith_proto_fuzz::sniff::check_http(data));
