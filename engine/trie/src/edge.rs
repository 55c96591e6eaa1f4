//! Literal edges of all nodes, in one hash table keyed by (parent node, segment id).
//!
//! One shared table instead of a map per node: most nodes of a large trie have one child (the
//! tail of a long pattern), and a per-node map would cost an allocation and a header each. The
//! key is two `u32`s packed into a `u64`, so hashing it is a couple of multiplies, and a lookup
//! costs the same for a node with one child as for one with a hundred thousand.

use std::collections::HashMap;

use ahash::RandomState;

use crate::node::NodeId;
use crate::segment::SegId;

/// Map from `(parent, segment)` to child.
#[derive(Debug)]
pub(crate) struct LiteralEdges {
    // Keys are ids we hand out, not attacker bytes; the seeded hash is kept anyway because the
    // order in which ids are assigned follows subscriber behaviour.
    map: HashMap<u64, NodeId, RandomState>,
}

#[inline]
fn key(parent: NodeId, seg: SegId) -> u64 {
    (u64::from(parent.0) << 32) | u64::from(seg.0)
}

impl LiteralEdges {
    pub(crate) fn new() -> Self {
        LiteralEdges { map: HashMap::default() }
    }

    #[inline]
    pub(crate) fn get(&self, parent: NodeId, seg: SegId) -> Option<NodeId> {
        self.map.get(&key(parent, seg)).copied()
    }

    pub(crate) fn insert(&mut self, parent: NodeId, seg: SegId, child: NodeId) {
        let previous = self.map.insert(key(parent, seg), child);
        debug_assert!(previous.is_none(), "literal edge inserted twice");
    }

    pub(crate) fn remove(&mut self, parent: NodeId, seg: SegId) -> Option<NodeId> {
        self.map.remove(&key(parent, seg))
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// All edges as `(parent, segment, child)`, for invariant checks.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (NodeId, SegId, NodeId)> + '_ {
        self.map.iter().map(|(&k, &child)| (NodeId((k >> 32) as u32), SegId(k as u32), child))
    }
}
