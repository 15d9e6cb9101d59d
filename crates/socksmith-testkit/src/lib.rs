//! Test support shared by the integration tests of every crate: real third-party peers and
//! loopback targets. Never used by the product itself.
