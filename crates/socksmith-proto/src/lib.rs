//! Sans-IO SOCKS4, SOCKS4a and SOCKS5 protocol: wire codecs and handshake state machines.
//!
//! This crate owns every byte of the SOCKS wire format. It performs no I/O, has no clock and
//! no async runtime: bytes go in, messages, replies and events come out.
