//! Fuzzes `UdpHeader::decode`: never panics, the header length is within the datagram, and
//! decode → encode is byte-identical to the header.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| socksmith_proto_fuzz::targets::udp_header(data));
