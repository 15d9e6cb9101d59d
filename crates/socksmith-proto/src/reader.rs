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
        self.pos
    }

    /// Reads a message's version byte: `Ok(false)` when the input is empty (need more),
    /// an error naming both bytes when it is not `expected`.
    pub(crate) fn version(&mut self, expected: u8) -> Result<bool, crate::ProtocolError> {
        match self.u8() {
            None => Ok(false),
            Some(found) if found == expected => Ok(true),
            Some(found) => Err(crate::error::Malformed::WrongVersion { found, expected }.into()),
        }
    }

    /// Reads one byte.
    pub(crate) fn u8(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    /// Reads a big-endian `u16`.
    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.array::<2>().map(u16::from_be_bytes)
    }

    /// Reads exactly `N` bytes into an array.
    pub(crate) fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let bytes = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(bytes);
        Some(a)
    }

    /// Reads exactly `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let bytes = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(bytes)
    }

    /// Reads a NUL-terminated field of at most `limit` bytes before its NUL.
    pub(crate) fn take_until_nul(&mut self, limit: usize) -> Until<'a> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        // Look at no more than `limit` field bytes plus the NUL itself.
        let window = rest.get(..limit.saturating_add(1)).unwrap_or(rest);
        match window.iter().position(|&b| b == 0) {
            Some(len) => {
                let field = rest.get(..len).unwrap_or_default();
                self.pos += len + 1;
                Until::Found(field)
            }
            None if window.len() > limit => Until::TooLong,
            None => Until::NeedMore,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_in_order_and_stops_at_the_end() {
        let mut r = Reader::new(&[1, 2, 3, 4, 5]);
        assert_eq!(r.u8(), Some(1));
        assert_eq!(r.u16(), Some(0x0203));
        assert_eq!(r.array::<3>(), None);
        assert_eq!(r.consumed(), 3, "a failed read consumes nothing");
        assert_eq!(r.take(2), Some(&[4, 5][..]));
        assert_eq!(r.u8(), None);
        assert_eq!(r.take(usize::MAX), None);
        assert_eq!(r.take(0), Some(&[][..]));
    }

    #[test]
    fn nul_terminated_fields_are_bounded() {
        let mut r = Reader::new(b"ab\0cd");
        assert_eq!(r.take_until_nul(2), Until::Found(b"ab"));
        assert_eq!(r.consumed(), 3);
        assert_eq!(r.take_until_nul(2), Until::NeedMore);
        assert_eq!(r.consumed(), 3);

        assert_eq!(Reader::new(b"abc").take_until_nul(2), Until::TooLong);
        assert_eq!(Reader::new(b"ab").take_until_nul(2), Until::NeedMore);
        assert_eq!(Reader::new(b"\0").take_until_nul(0), Until::Found(b""));
        assert_eq!(Reader::new(b"a").take_until_nul(0), Until::TooLong);
        assert_eq!(Reader::new(b"").take_until_nul(usize::MAX), Until::NeedMore);
    }
}
