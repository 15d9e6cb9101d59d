//! The bytes the bench sends and how it checks them: a deterministic pattern, so that a relay
//! that drops, repeats, reorders or corrupts bytes is caught instead of scoring like an honest
//! one.
//!
//! Byte `i` of a stream is `i % 251` (a prime period, so a shifted or repeated chunk does not
//! line up by accident); the testkit's `pattern` is the same function. Writers and checkers
//! slice one precomputed table instead of generating bytes, so checking costs one `memcmp`
//! per read and nothing is allocated per tunnel or per datagram.

use std::sync::LazyLock;

/// The pattern's period.
pub const PERIOD: usize = 251;

/// Longest slice of the pattern [`at`] hands out.
pub const MAX_SLICE: usize = 256 * 1024;

/// `MAX_SLICE + PERIOD` bytes of the pattern, so that a slice of up to `MAX_SLICE` bytes may
/// start at any phase.
static TABLE: LazyLock<Box<[u8]>> = LazyLock::new(|| pattern(MAX_SLICE + PERIOD).into());

/// `n` bytes of the pattern from offset 0.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % PERIOD) as u8).collect()
}

/// The pattern from stream offset `offset`, `len` bytes (at most [`MAX_SLICE`]).
pub fn at(offset: u64, len: usize) -> &'static [u8] {
    let phase = (offset % PERIOD as u64) as usize;
    let len = len.min(MAX_SLICE);
    &TABLE[phase..phase + len]
}

/// Checks a byte stream against the pattern as it arrives, in pieces of any size.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StreamCheck {
    offset: u64,
    mismatch: bool,
}

impl StreamCheck {
    /// Checks the next piece; `false` once any byte so far differed (a stream that went wrong
    /// stays wrong: every later offset is suspect).
    pub fn feed(&mut self, piece: &[u8]) -> bool {
        if !self.mismatch {
            for chunk in piece.chunks(MAX_SLICE) {
                if chunk != at(self.offset, chunk.len()) {
                    self.mismatch = true;
                    break;
                }
                self.offset += chunk.len() as u64;
            }
        }
        !self.mismatch
    }

    /// Bytes checked and found right.
    pub fn verified(&self) -> u64 {
        self.offset
    }

    /// Whether a byte differed.
    pub fn failed(&self) -> bool {
        self.mismatch
    }
}

/// Length of the sequence number in front of a datagram's pattern.
pub const SEQ_LEN: usize = 8;

/// Fills `out` as datagram number `seq`: the sequence number (little endian), then the pattern
/// from phase `seq`, so that every datagram's bytes differ from its neighbours'.
pub fn write_datagram(seq: u64, out: &mut [u8]) {
    let (head, body) = out.split_at_mut(SEQ_LEN.min(out.len()));
    head.copy_from_slice(&seq.to_le_bytes()[..head.len()]);
    body.copy_from_slice(at(seq, body.len()));
}

/// Whether `got` is a datagram [`write_datagram`] made with `len` bytes; its sequence number.
pub fn check_datagram(got: &[u8], len: usize) -> Option<u64> {
    if got.len() != len || len < SEQ_LEN {
        return None;
    }
    let (head, body) = got.split_at(SEQ_LEN);
    let seq = u64::from_le_bytes(head.try_into().ok()?);
    (body == at(seq, body.len())).then_some(seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_continue_the_pattern_at_any_offset() {
        let whole = pattern(3 * PERIOD + 17);
        for offset in [0u64, 1, 250, 251, 252, 600] {
            let slice = at(offset, 100);
            assert_eq!(slice, &whole[offset as usize..offset as usize + 100]);
        }
        assert_eq!(at(7, MAX_SLICE + 10).len(), MAX_SLICE);
    }

    #[test]
    fn stream_check_accepts_the_pattern_in_any_pieces_and_catches_one_wrong_byte() {
        let data = pattern(10_000);
        let mut check = StreamCheck::default();
        for piece in data.chunks(333) {
            assert!(check.feed(piece));
        }
        assert_eq!(check.verified(), 10_000);

        let mut bad = data.clone();
        bad[5_000] ^= 1;
        let mut check = StreamCheck::default();
        let ok = bad.chunks(1000).map(|p| check.feed(p)).collect::<Vec<_>>();
        assert_eq!(ok.iter().filter(|ok| **ok).count(), 5, "{ok:?}");
        assert!(check.failed());
        assert_eq!(check.verified(), 5_000);
    }

    #[test]
    fn zeros_are_not_the_pattern() {
        let mut check = StreamCheck::default();
        assert!(!check.feed(&[0u8; 10]), "zeros differ from byte 1 on");
        assert!(check.failed());
    }

    #[test]
    fn datagrams_carry_their_number_and_are_checked_whole() {
        let mut d = [0u8; 512];
        write_datagram(77, &mut d);
        assert_eq!(check_datagram(&d, 512), Some(77));
        assert_eq!(check_datagram(&d[..511], 512), None, "short");
        let mut other = [0u8; 512];
        write_datagram(78, &mut other);
        assert_ne!(d[SEQ_LEN..], other[SEQ_LEN..], "neighbours differ");
        d[300] ^= 0x80;
        assert_eq!(check_datagram(&d, 512), None, "one flipped bit");
    }
}
