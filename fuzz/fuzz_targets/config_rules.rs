//! Fuzzes `[[rules]]` and `default` through toml into `RuleSet::from_config` (see `socksmith_proto_fuzz::config`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| socksmith_proto_fuzz::config::check_rules(data));
