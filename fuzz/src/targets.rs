//! The body of every fuzz target, by name, so that one table serves both libFuzzer (each file in
//! `fuzz_targets/` calls its function here) and the corpus replay that `scripts/test` runs on a
//! stable toolchain (the test below feeds every file of `seeds/<target>/` and, where fuzzing
//! has run, `corpus/<target>/` through the same function).
//!
//! A new target is added in three places: its function and its row in [`TARGETS`] here, its
//! file in `fuzz_targets/` calling that function, and its `[[bin]]` in `Cargo.toml` (plus
//! seeds in `seeds/<target>/`). The replay test fails when a file or a seed directory has no
//! row, so no target escapes the replay.

use socksmith_proto::{
    AuthRequest, AuthStatus, Greeting, MethodChoice, Reply, Request, UdpHeader, V4Reply, V4Request,
};

use crate::check_stream_decoder;

/// One fuzz target: its name (the file in `fuzz_targets/`, the directory in `seeds/`) and the
/// check it runs on one input.
pub type Target = (&'static str, fn(&[u8]));

/// Every fuzz target.
pub const TARGETS: &[Target] = &[
    ("auth_request", auth_request),
    ("blocklist_parse", crate::sniff::check_blocklist),
    ("dns_query", crate::sniff::check_dns),
    ("sniff_http", crate::sniff::check_http),
    ("sniff_tls", crate::sniff::check_tls),
    ("auth_status", auth_status),
    ("config_rules", crate::config::check_rules),
    ("config_values", crate::config::check_values),
    ("http_framer", crate::server::check_http_framer),
    ("http_head", crate::server::check_http_head),
    ("proxy_header", crate::server::check_proxy_header),
    ("users_file", crate::server::check_users_file),
    ("client_handshake", client_handshake),
    ("greeting", greeting),
    ("method_choice", method_choice),
    ("server_handshake", server_handshake),
    ("udp_header", udp_header),
    ("v4_reply", v4_reply),
    ("v4_request", v4_request),
    ("v5_reply", v5_reply),
    ("v5_request", v5_request),
];

/// `AuthRequest::decode` (RFC 1929): never panics, prefixes agree with the whole, decode →
/// encode → decode is the identity and the encoding is byte-identical.
pub fn auth_request(data: &[u8]) {
    check_stream_decoder(data, AuthRequest::decode, |m, out| m.encode(out), true);
}

/// `AuthStatus::decode`, as [`auth_request`].
pub fn auth_status(data: &[u8]) {
    check_stream_decoder(data, AuthStatus::decode, |m, out| m.encode(out), true);
}

/// `ClientHandshake` fed arbitrary server bytes in arbitrary chunks.
pub fn client_handshake(data: &[u8]) {
    crate::drive_client(data);
}

/// `Greeting::decode`, as [`auth_request`].
pub fn greeting(data: &[u8]) {
    check_stream_decoder(
        data,
        Greeting::decode,
        |m, out| m.encode(out).expect("a decoded greeting re-encodes"),
        true,
    );
}

/// `MethodChoice::decode`, as [`auth_request`].
pub fn method_choice(data: &[u8]) {
    check_stream_decoder(data, MethodChoice::decode, |m, out| m.encode(out), true);
}

/// `ServerHandshake` fed arbitrary bytes, chunking and decisions.
pub fn server_handshake(data: &[u8]) {
    crate::drive_server(data);
}

/// `UdpHeader::decode`: never panics, the header length is within the datagram, and decode →
/// encode is byte-identical to the header.
pub fn udp_header(data: &[u8]) {
    if let Ok((header, len)) = UdpHeader::decode(data) {
        assert!(len <= data.len());
        let wrapped = header.wrap(&data[len..]);
        assert_eq!(wrapped, data, "re-encoding differs from the datagram");
        assert_eq!(UdpHeader::decode(&wrapped), Ok((header, len)));
    }
}

/// `V4Reply::decode`, as [`auth_request`] except that the encoding may differ (SOCKS4 replies
/// carry fields a client ignores).
pub fn v4_reply(data: &[u8]) {
    check_stream_decoder(data, V4Reply::decode, |m, out| m.encode(out), false);
}

/// `V4Request::decode`, as [`v4_reply`].
pub fn v4_request(data: &[u8]) {
    check_stream_decoder(
        data,
        V4Request::decode,
        |m, out| m.encode(out).expect("a decoded SOCKS4 request re-encodes"),
        false,
    );
}

/// SOCKS5 `Reply::decode`, as [`auth_request`].
pub fn v5_reply(data: &[u8]) {
    check_stream_decoder(data, Reply::decode, |m, out| m.encode(out), true);
}

/// SOCKS5 `Request::decode`, as [`auth_request`].
pub fn v5_request(data: &[u8]) {
    check_stream_decoder(data, Request::decode, |m, out| m.encode(out), true);
}

#[cfg(test)]
mod tests {
    //! Replays the committed seeds and any local corpus through every target: the fuzz
    //! targets' checks hold on every input fuzzing has kept, on a stable toolchain and
    //! without libFuzzer.

    use super::TARGETS;
    use std::collections::BTreeSet;
    use std::fs;
    use std::path::{Path, PathBuf};

    fn fuzz_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    /// The names of `dir`'s entries, without the extension `ext` when given (empty when `dir`
    /// does not exist).
    fn names_in(dir: &Path, ext: Option<&str>) -> BTreeSet<String> {
        let Ok(entries) = fs::read_dir(dir) else {
            return BTreeSet::new();
        };
        entries
            .map(|e| e.expect("read a directory entry").path())
            .filter_map(|p| match ext {
                Some(ext) if p.extension().and_then(|e| e.to_str()) != Some(ext) => None,
                Some(_) => p.file_stem().map(|s| s.to_string_lossy().into_owned()),
                None => p.file_name().map(|s| s.to_string_lossy().into_owned()),
            })
            .collect()
    }

    #[test]
    fn every_fuzz_target_and_seed_directory_is_replayed() {
        let table: BTreeSet<String> = TARGETS.iter().map(|(n, _)| (*n).to_owned()).collect();
        assert_eq!(table.len(), TARGETS.len(), "a target is listed twice");
        let files = names_in(&fuzz_dir().join("fuzz_targets"), Some("rs"));
        let seeds = names_in(&fuzz_dir().join("seeds"), None);
        for (what, names) in [
            ("fuzz_targets/<name>.rs", &files),
            ("seeds/<name>/", &seeds),
        ] {
            let missing: Vec<_> = names.difference(&table).collect();
            assert!(
                missing.is_empty(),
                "{what} without a row in fuzz/src/targets.rs TARGETS (so never replayed): \
                 {missing:?}"
            );
        }
        let unused: Vec<_> = table.difference(&files).collect();
        assert!(
            unused.is_empty(),
            "TARGETS rows without a fuzz_targets file: {unused:?}"
        );
        let unseeded: Vec<_> = table.difference(&seeds).collect();
        assert!(
            unseeded.is_empty(),
            "targets without seeds/<name>/: {unseeded:?}"
        );
        let manifest =
            fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("read fuzz/Cargo.toml");
        for name in &table {
            assert!(
                manifest.contains(&format!("path = \"fuzz_targets/{name}.rs\"")),
                "fuzz/Cargo.toml has no [[bin]] for {name}"
            );
        }
    }

    #[test]
    fn every_seed_and_corpus_input_passes_its_target() {
        let mut replayed = 0;
        for (name, check) in TARGETS {
            let mut inputs = 0;
            for dir in ["seeds", "corpus"] {
                let dir = fuzz_dir().join(dir).join(name);
                for file in names_in(&dir, None) {
                    let path = dir.join(&file);
                    let data = fs::read(&path).expect("read a corpus file");
                    let outcome = std::panic::catch_unwind(|| check(&data));
                    assert!(
                        outcome.is_ok(),
                        "{name} fails on {} ({} bytes: {data:02x?}); reproduce with \
                         `cargo fuzz run {name} {}`",
                        path.display(),
                        data.len(),
                        path.display()
                    );
                    inputs += 1;
                }
            }
            assert!(inputs > 0, "{name} has no seed to replay");
            replayed += inputs;
        }
        assert!(replayed >= TARGETS.len());
    }
}
