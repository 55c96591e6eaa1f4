//! Interning of literal pattern segments.
//!
//! Every distinct literal segment that appears in some pattern gets a small integer id. A topic
//! segment is then hashed once per walk step, however many trie nodes are active at that step,
//! and each literal edge is found by hashing a pair of integers instead of bytes. A topic segment
//! that no pattern mentions is not in the table at all, which lets the walk skip every literal
//! lookup for that step.

use std::collections::HashMap;

use ahash::RandomState;

/// Id of an interned literal segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct SegId(pub(crate) u32);

impl SegId {
    /// Sentinel for "no segment"; never handed out (see `acquire`).
    pub(crate) const NONE: SegId = SegId(u32::MAX);
}

/// Reference-counted map from segment bytes to [`SegId`].
///
/// The count is the number of literal edges labelled with the segment; when it falls to zero the
/// segment is forgotten and its id reused. Segment bytes come from subscribers and publishers, so
/// the map uses a randomly seeded hash (no hash flooding by chosen segment names).
#[derive(Debug)]
pub(crate) struct SegmentInterner {
    ids: HashMap<Box<[u8]>, SegId, RandomState>,
    /// Edge count per id; 0 marks a free id.
    refs: Vec<u32>,
    free: Vec<SegId>,
}

impl SegmentInterner {
    pub(crate) fn new() -> Self {
        SegmentInterner { ids: HashMap::default(), refs: Vec::new(), free: Vec::new() }
    }

    /// The id of `bytes` if some edge uses it.
    #[inline]
    pub(crate) fn get(&self, bytes: &[u8]) -> Option<SegId> {
        self.ids.get(bytes).copied()
    }

    /// Takes one more reference on `bytes`, interning it if needed.
    pub(crate) fn acquire(&mut self, bytes: &[u8]) -> SegId {
        if let Some(&id) = self.ids.get(bytes) {
            self.refs[id.0 as usize] += 1;
            return id;
        }
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                assert!(self.refs.len() < u32::MAX as usize, "segment interner exhausted");
                self.refs.push(0);
                SegId((self.refs.len() - 1) as u32)
            }
        };
        self.refs[id.0 as usize] = 1;
        self.ids.insert(bytes.into(), id);
        id
    }

    /// Drops one reference taken by [`acquire`](Self::acquire) with the same bytes.
    pub(crate) fn release(&mut self, id: SegId, bytes: &[u8]) {
        let refs = &mut self.refs[id.0 as usize];
        assert!(*refs > 0, "segment released more often than acquired");
        *refs -= 1;
        if *refs == 0 {
            let removed = self.ids.remove(bytes);
            debug_assert_eq!(removed, Some(id), "release with bytes of another segment");
            self.free.push(id);
        }
    }

    /// Distinct segments currently interned.
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }

    /// Sum of all reference counts: must equal the number of literal edges.
    pub(crate) fn total_refs(&self) -> u64 {
        self.refs.iter().map(|&r| u64::from(r)).sum()
    }
}
