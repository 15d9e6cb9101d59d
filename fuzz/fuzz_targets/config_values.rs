//! Fuzzes the config file's value parsers (`IpNet`, `Proxy` URLs, `Rate`): round trips (see `socksmith_proto_fuzz::config`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| socksmith_proto_fuzz::config::check_values(data));
