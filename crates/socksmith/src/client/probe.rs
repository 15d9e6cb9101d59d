//! Capability probing: placeholder
