//! A bounded cursor over received bytes: the only place in this crate that indexes a slice.
//!
//! Every read returns `None` when the input is too short, so "need more bytes" falls out of
//! the types and no decoder can read past the end or panic.

/// Outcome of [`Reader::take_until_nul`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Until<'a> {
    /// The bytes before the NUL (the NUL itself is consumed, not returned).
    Found(&'a [u8]),
    /// No NUL yet, and fewer than `limit + 1` bytes are available: more may come.
    NeedMore,
    /// No NUL within the first `limit + 1` bytes: the field is too long.
    TooLong,
}

/// A cursor over `&[u8]` that never reads past the end.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes consumed so far.
    pub(crate) fn consumed(&self) -> usize {
        todo!()
    }

    /// Bytes not yet consumed.
    pub(crate) fn remaining(&self) -> usize {
        todo!()
    }

    /// Reads one byte.
    pub(crate) fn u8(&mut self) -> Option<u8> {
        todo!()
    }

    /// Reads a big-endian `u16`.
    pub(crate) fn u16(&mut self) -> Option<u16> {
        todo!()
    }

    /// Reads exactly `N` bytes into an array.
    pub(crate) fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        todo!()
    }

    /// Reads exactly `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        todo!()
    }

    /// Reads a NUL-terminated field of at most `limit` bytes before its NUL.
    pub(crate) fn take_until_nul(&mut self, limit: usize) -> Until<'a> {
        todo!()
    }
}
