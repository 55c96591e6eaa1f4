//! Literal edges: the first child of a node inline in the node, the rest in one hash table keyed
//! by (parent node, segment id).
//!
//! Most nodes of a large trie have exactly one literal child (the tail of a long pattern), so the
//! inline slot answers most lookups with one integer compare. The shared table holds the others:
//! one table instead of a map per node saves an allocation and a header per node, and its key is
//! two `u32`s packed into a `u64`, hashed with a single seeded multiply. A lookup costs the same
//! for a node with two children as for one with a hundred thousand.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

use crate::node::{Node, NodeId};
use crate::segment::SegId;

/// Overflow table from `(parent, segment)` to child.
#[derive(Debug)]
pub(crate) struct LiteralEdges {
    map: HashMap<u64, NodeId, EdgeHashBuilder>,
}

#[inline]
fn key(parent: NodeId, seg: SegId) -> u64 {
    (u64::from(parent.0) << 32) | u64::from(seg.0)
}

impl LiteralEdges {
    /// `seed` keys the table's hash (see [`HashSeed`](crate::HashSeed)).
    pub(crate) fn new(seed: u64) -> Self {
        LiteralEdges { map: HashMap::with_hasher(EdgeHashBuilder { seed: seed | 1 }) }
    }

    /// The child of `node` (whose id is `id`) along `seg`.
    #[inline]
    pub(crate) fn child(&self, id: NodeId, node: &Node, seg: SegId) -> Option<NodeId> {
        if node.inline_seg == seg {
            return Some(node.inline_child);
        }
        // The table is only worth probing if some literal child lives there.
        let inline = u32::from(!node.inline_child.is_none());
        if node.literal_children > inline {
            self.map.get(&key(id, seg)).copied()
        } else {
            None
        }
    }

    /// Adds the edge `id --seg--> child`; the edge must not exist yet.
    pub(crate) fn insert(&mut self, id: NodeId, node: &mut Node, seg: SegId, child: NodeId) {
        if node.inline_child.is_none() {
            node.inline_seg = seg;
            node.inline_child = child;
        } else {
            let previous = self.map.insert(key(id, seg), child);
            debug_assert!(previous.is_none(), "literal edge inserted twice");
        }
        node.literal_children += 1;
    }

    /// Removes the edge `id --seg-->` and returns its child. The inline slot is left empty
    /// rather than refilled from the table: the table cannot list a node's children cheaply,
    /// and lookups stay correct either way.
    pub(crate) fn remove(&mut self, id: NodeId, node: &mut Node, seg: SegId) -> Option<NodeId> {
        let child = if node.inline_seg == seg {
            node.inline_seg = SegId::NONE;
            Some(std::mem::replace(&mut node.inline_child, NodeId::NONE))
        } else {
            self.map.remove(&key(id, seg))
        };
        if child.is_some() {
            node.literal_children -= 1;
        }
        child
    }

    /// Edges in the table (inline ones excluded).
    pub(crate) fn table_len(&self) -> usize {
        self.map.len()
    }

    /// Table edges as `(parent, segment, child)`, for invariant checks.
    pub(crate) fn table_iter(&self) -> impl Iterator<Item = (NodeId, SegId, NodeId)> + '_ {
        self.map.iter().map(|(&k, &child)| (NodeId((k >> 32) as u32), SegId(k as u32), child))
    }
}

/// Builds [`EdgeHasher`]s with a per-table random seed. Keys are ids we assign, not bytes a
/// peer chose, so one multiply mixes enough; the seed keeps the layout unpredictable anyway,
/// since the order ids are handed out in follows subscriber behaviour.
#[derive(Debug, Clone)]
struct EdgeHashBuilder {
    seed: u64,
}

impl BuildHasher for EdgeHashBuilder {
    type Hasher = EdgeHasher;

    #[inline]
    fn build_hasher(&self) -> EdgeHasher {
        EdgeHasher { state: self.seed }
    }
}

/// Folded 64×64→128 multiply of the key with the seed: high and low halves both well mixed,
/// which is what the table's bucket index (low bits) and tag (high bits) need.
#[derive(Debug)]
pub(crate) struct EdgeHasher {
    state: u64,
}

impl Hasher for EdgeHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.state
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    #[inline]
    fn write_u64(&mut self, value: u64) {
        let product = u128::from(value ^ self.state) * u128::from(0x9E37_79B9_7F4A_7C15_u64);
        self.state = (product as u64) ^ ((product >> 64) as u64);
    }
}
