//! Interning of literal pattern segments.
//!
//! Every distinct literal segment that appears in some pattern gets a small integer id. A topic
//! segment is then hashed once per walk step, however many trie nodes are active at that step,
//! and each literal edge is found by hashing a pair of integers instead of bytes. A topic segment
//! that no pattern mentions is not in the table at all, which lets the walk skip every literal
//! lookup for that step.

use std::hash::{Hash, Hasher};

use ahash::RandomState;
use hashbrown::HashTable;

/// Id of an interned literal segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct SegId(pub(crate) u32);

impl SegId {
    /// Sentinel for "no segment"; never handed out (see `acquire`).
    pub(crate) const NONE: SegId = SegId(u32::MAX);
}

/// Hashes a byte string without the length prefix `[u8]`'s `Hash` adds: the hasher mixes the
/// length in anyway, and only whole segments are hashed, so the prefix buys nothing.
struct Unprefixed<'a>(&'a [u8]);

impl Hash for Unprefixed<'_> {
    #[inline(always)]
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.0);
    }
}

/// `a == b`, without a call to `bcmp` for the short strings segments usually are: two
/// overlapping word compares cover 4 to 16 bytes.
#[inline(always)]
pub(crate) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word = |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().expect("8 bytes"));
    let half = |s: &[u8], at: usize| u32::from_le_bytes(s[at..at + 4].try_into().expect("4 bytes"));
    match n {
        8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        4..=7 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        _ => a == b,
    }
}

/// One interned segment. `refs == 0` marks a free id.
#[derive(Debug)]
struct Entry {
    hash: u64,
    refs: u32,
    bytes: Box<[u8]>,
}

/// Reference-counted map from segment bytes to [`SegId`].
///
/// The count is the number of literal edges labelled with the segment; when it falls to zero the
/// segment is forgotten and its id reused. Segment bytes come from subscribers and publishers, so
/// they are hashed with a randomly seeded hash (no hash flooding by chosen segment names). The
/// table holds bare ids and the bytes live in `entries`: a lookup hashes the bytes once and
/// compares them once, with no key type in between.
#[derive(Debug)]
pub(crate) struct SegmentInterner {
    hasher: RandomState,
    table: HashTable<SegId>,
    entries: Vec<Entry>,
    free: Vec<SegId>,
}

impl SegmentInterner {
    pub(crate) fn new(hasher: RandomState) -> Self {
        SegmentInterner { hasher, table: HashTable::new(), entries: Vec::new(), free: Vec::new() }
    }

    #[inline(always)]
    fn hash(&self, bytes: &[u8]) -> u64 {
        self.hasher.hash_one(Unprefixed(bytes))
    }

    /// The id of `bytes` if some edge uses it. Once per walk step: inlined, because as a call
    /// its register spills cost a quarter of it.
    #[inline(always)]
    pub(crate) fn get(&self, bytes: &[u8]) -> Option<SegId> {
        let entries = &self.entries;
        self.table
            .find(self.hash(bytes), |id| same_bytes(&entries[id.0 as usize].bytes, bytes))
            .copied()
    }

    /// Takes one more reference on `bytes`, interning it if needed.
    pub(crate) fn acquire(&mut self, bytes: &[u8]) -> SegId {
        let hash = self.hash(bytes);
        let entries = &self.entries;
        if let Some(&id) = self.table.find(hash, |id| *entries[id.0 as usize].bytes == *bytes) {
            self.entries[id.0 as usize].refs += 1;
            return id;
        }
        let entry = Entry { hash, refs: 1, bytes: bytes.into() };
        let id = match self.free.pop() {
            Some(id) => {
                self.entries[id.0 as usize] = entry;
                id
            }
            None => {
                assert!(self.entries.len() < SegId::NONE.0 as usize, "segment interner exhausted");
                self.entries.push(entry);
                SegId((self.entries.len() - 1) as u32)
            }
        };
        let entries = &self.entries;
        self.table.insert_unique(hash, id, |id| entries[id.0 as usize].hash);
        id
    }

    /// Drops one reference taken by [`acquire`](Self::acquire).
    pub(crate) fn release(&mut self, id: SegId) {
        let entry = &mut self.entries[id.0 as usize];
        assert!(entry.refs > 0, "segment released more often than acquired");
        entry.refs -= 1;
        if entry.refs == 0 {
            let hash = entry.hash;
            entry.bytes = Box::default();
            match self.table.find_entry(hash, |other| *other == id) {
                Ok(found) => {
                    found.remove();
                }
                Err(_) => unreachable!("an interned segment is in the table"),
            }
            self.free.push(id);
        }
    }

    /// Distinct segments currently interned.
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// Sum of all reference counts: must equal the number of literal edges.
    pub(crate) fn total_refs(&self) -> u64 {
        self.entries.iter().map(|e| u64::from(e.refs)).sum()
    }
}
