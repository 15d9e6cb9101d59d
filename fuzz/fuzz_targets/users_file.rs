//! Fuzzes the users file parser (`UsersFile::parse`): parse → render → parse is the identity (see `socksmith_proto_fuzz::server`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| socksmith_proto_fuzz::server::check_users_file(data));
