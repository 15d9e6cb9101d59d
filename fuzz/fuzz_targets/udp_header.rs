//! Fuzzes `UdpHeader::decode`: never panics, the header length is within the datagram, and
//! decode → encode is byte-identical to the header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socksmith_proto::UdpHeader;

fuzz_target!(|data: &[u8]| {
    if let Ok((header, len)) = UdpHeader::decode(data) {
        assert!(len <= data.len());
        let wrapped = header.wrap(&data[len..]);
        assert_eq!(wrapped, data, "re-encoding differs from the datagram");
        assert_eq!(UdpHeader::decode(&wrapped), Ok((header, len)));
    }
});
