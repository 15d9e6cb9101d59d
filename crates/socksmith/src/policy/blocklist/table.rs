//! A set of normalized domain names, compact enough for lists of millions, that answers
//! "is this name or one of its parent domains in the set" in O(labels).
//!
//! Names live back to back in one byte arena, each behind its length byte; the hash table
//! holds only 4-byte offsets into it. A `HashSet<String>` would spend a 24-byte `String`
//! header and a separate heap block (16-byte minimum with the allocator's own header) on
//! every name: for a million names that is about 40 MiB more.
//!
//! The hash of a name is built label by label from the right (`com`, then `example.com`,
//! then `ads.example.com`), so a lookup gets the hash of every parent domain of the host in
//! one pass over its bytes instead of rehashing each suffix.

use hashbrown::HashTable;

/// The most labels a name can have: 255 octets on the wire, 2 octets per one-letter label.
pub(crate) const MAX_LABELS: usize = 128;

/// One name's hash state so far; see [`fold_label`].
const SEED: u64 = 0x243f_6a88_85a3_08d3;

/// The set of names.
#[derive(Debug, Default)]
pub(crate) struct DomainTable {
    /// `len, name bytes` one after another; names are lowercase ASCII.
    arena: Vec<u8>,
    /// Offsets into `arena` of each name's length byte.
    table: HashTable<u32>,
}

/// Why a name could not be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InsertError {
    /// The arena would pass 4 GiB, beyond what 32-bit offsets reach.
    Full,
}

impl DomainTable {
    /// A table with room for about `names` names of `bytes` total length.
    pub(crate) fn with_capacity(names: usize, bytes: usize) -> Self {
        DomainTable {
            arena: Vec::with_capacity(bytes),
            table: HashTable::with_capacity(names),
        }
    }

    /// Adds `name`, which must already be normalized (lowercase, no trailing dot, 1 to 253
    /// bytes). Returns `Ok(false)` when it was there already.
    pub(crate) fn insert(&mut self, name: &[u8]) -> Result<bool, InsertError> {
        debug_assert!(!name.is_empty() && name.len() <= 253);
        let hash = finish(name_hash(name));
        let arena = &self.arena;
        if self
            .table
            .find(hash, |&offset| stored(arena, offset) == name)
            .is_some()
        {
            return Ok(false);
        }
        let offset = u32::try_from(self.arena.len()).map_err(|_| InsertError::Full)?;
        let len = u8::try_from(name.len()).map_err(|_| InsertError::Full)?;
        self.arena.push(len);
        self.arena.extend_from_slice(name);
        let arena = &self.arena;
        self.table.insert_unique(hash, offset, |&offset| {
            finish(name_hash(stored(arena, offset)))
        });
        Ok(true)
    }

    /// How many names are held.
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// Bytes held on the heap (arena and table), for reports.
    pub(crate) fn heap_bytes(&self) -> usize {
        // hashbrown keeps one control byte per bucket besides the bucket itself.
        self.arena.capacity() + self.table.capacity() * (std::mem::size_of::<u32>() + 1)
    }

    /// Gives back spare capacity once loading is done.
    pub(crate) fn shrink_to_fit(&mut self) {
        self.arena.shrink_to_fit();
        let arena = &self.arena;
        self.table
            .shrink_to_fit(|&offset| finish(name_hash(stored(arena, offset))));
    }

    /// Whether the host whose parent-domain hashes are in `suffixes` (see [`Suffixes`]) is
    /// held itself or by one of its parent domains.
    pub(crate) fn contains_any(&self, suffixes: &Suffixes<'_>) -> bool {
        let arena = &self.arena;
        suffixes.iter().any(|(suffix, hash)| {
            self.table
                .find(hash, |&offset| {
                    stored(arena, offset).eq_ignore_ascii_case(suffix)
                })
                .is_some()
        })
    }
}

/// The stored name at `offset`.
fn stored(arena: &[u8], offset: u32) -> &[u8] {
    let start = offset as usize;
    let len = arena.get(start).copied().map_or(0, usize::from);
    arena.get(start + 1..start + 1 + len).unwrap_or_default()
}

/// Mixes one label (case-folded) into the hash of the labels to its right. FxHash's
/// multiply-rotate step, byte by byte: suffix hashes have to be built label by label
/// across lookups and inserts alike, which a `Hasher` fed whole strings cannot do.
fn fold_label(mut hash: u64, label: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    for &b in label {
        hash = (hash.rotate_left(5) ^ u64::from(b.to_ascii_lowercase())).wrapping_mul(K);
    }
    // The label boundary, so `a.bc` and `ab.c` differ.
    (hash.rotate_left(5) ^ u64::from(b'.')).wrapping_mul(K)
}

/// Spreads the folded state over all 64 bits (murmur3's finalizer): hashbrown picks the
/// bucket from the low bits and the tag from the high ones.
fn finish(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The hash of a whole name, built from its rightmost label leftwards.
fn name_hash(name: &[u8]) -> u64 {
    name.rsplit(|&b| b == b'.').fold(SEED, fold_label)
}

/// A host's parent domains with their hashes: `ads.example.com` gives `com`,
/// `example.com`, `ads.example.com`, computed as they are asked for (a lookup that hits on
/// `com` hashes nothing more).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Suffixes<'a> {
    host: &'a [u8],
}

impl<'a> Suffixes<'a> {
    /// The suffixes of `host`, ignoring a trailing dot. A host of more than 255 bytes cannot
    /// be a DNS name; only the labels within its last 255 bytes are taken, which still
    /// catches a listed parent domain.
    pub(crate) fn of(host: &'a [u8]) -> Self {
        let host = host.strip_suffix(b".").unwrap_or(host);
        let host = match host.len().checked_sub(255) {
            Some(excess) if excess > 0 => {
                // Start at a label boundary inside the last 255 bytes.
                let tail = host.get(excess..).unwrap_or_default();
                match tail.iter().position(|&b| b == b'.') {
                    Some(dot) => tail.get(dot + 1..).unwrap_or_default(),
                    None => &[],
                }
            }
            _ => host,
        };
        Suffixes { host }
    }

    /// Each suffix with its hash, shortest first; at most [`MAX_LABELS`].
    fn iter(&self) -> impl Iterator<Item = (&'a [u8], u64)> {
        let host = self.host;
        let mut hash = SEED;
        let mut end = Some(host.len()).filter(|&len| len > 0);
        std::iter::from_fn(move || {
            let label_end = end?;
            let before = host.get(..label_end).unwrap_or_default();
            let start = before
                .iter()
                .rposition(|&b| b == b'.')
                .map_or(0, |dot| dot + 1);
            hash = fold_label(hash, host.get(start..label_end).unwrap_or_default());
            end = start.checked_sub(1);
            Some((host.get(start..).unwrap_or_default(), finish(hash)))
        })
        .take(MAX_LABELS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffix_hashes_equal_whole_name_hashes() {
        let suffixes = Suffixes::of(b"X.Ads.Example.COM.");
        let seen: Vec<(&[u8], u64)> = suffixes.iter().collect();
        let names: Vec<&[u8]> = seen.iter().map(|(s, _)| *s).collect();
        assert_eq!(
            names,
            [
                &b"COM"[..],
                b"Example.COM",
                b"Ads.Example.COM",
                b"X.Ads.Example.COM"
            ]
        );
        for (suffix, hash) in seen {
            assert_eq!(
                hash,
                finish(name_hash(&suffix.to_ascii_lowercase())),
                "{suffix:?}"
            );
        }
        assert_ne!(finish(name_hash(b"a.bc")), finish(name_hash(b"ab.c")));
        assert_eq!(Suffixes::of(b"").iter().count(), 0);
        assert_eq!(Suffixes::of(b".").iter().count(), 0);
    }

    #[test]
    fn insert_find_and_dedup() {
        let mut table = DomainTable::default();
        assert_eq!(table.insert(b"ads.example.com"), Ok(true));
        assert_eq!(table.insert(b"ads.example.com"), Ok(false));
        assert_eq!(table.insert(b"tracker.test"), Ok(true));
        assert_eq!(table.len(), 2);
        let hit =
            |table: &DomainTable, host: &str| table.contains_any(&Suffixes::of(host.as_bytes()));
        let hit_now = |host: &str| hit(&table, host);
        assert!(hit_now("ads.example.com"));
        assert!(hit_now("deep.x.ADS.example.com."));
        assert!(!hit_now("example.com"));
        assert!(!hit_now("notads.example.com"));
        assert!(!hit_now("ads.example.com.evil"));
        assert!(!hit_now(""));
        table.shrink_to_fit();
        assert!(hit(&table, "a.tracker.test"));
    }

    #[test]
    fn many_names_grow_the_table_without_losing_any() {
        let mut table = DomainTable::with_capacity(4, 16);
        for i in 0..20_000 {
            assert_eq!(
                table.insert(format!("host{i}.example").as_bytes()),
                Ok(true)
            );
        }
        for i in (0..20_000).step_by(97) {
            assert!(table.contains_any(&Suffixes::of(format!("a.host{i}.example").as_bytes())));
        }
        assert!(!table.contains_any(&Suffixes::of(b"host20000.example")));
        assert!(table.heap_bytes() > 20_000 * 4);
    }

    #[test]
    fn overlong_hosts_are_cut_at_a_label_boundary() {
        let mut table = DomainTable::default();
        table.insert(b"example.com").expect("room");
        let long = format!("{}example.com", "a.".repeat(200));
        assert!(table.contains_any(&Suffixes::of(long.as_bytes())));
        let one_label = "a".repeat(300);
        assert!(!table.contains_any(&Suffixes::of(one_label.as_bytes())));
        let many = ".".repeat(400);
        assert!(!table.contains_any(&Suffixes::of(many.as_bytes())));
    }
}
