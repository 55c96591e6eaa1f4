//! The pattern trie: patterns in, leaves out.
//!
//! Structure: an arena of [`Node`]s (one per distinct pattern prefix), a shared table of literal
//! edges keyed by (parent, interned segment), and a slab of leaves. A node's `*` and `**` children
//! are fields of the node, so a walk never scans siblings. See [`crate::walk`] for matching.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use fovea_codec::limits::TOPIC_DEPTH_MAX;
use fovea_codec::topic::{Pattern, PatternSegment, Topic};
use smallvec::SmallVec;

use crate::edge::LiteralEdges;
use crate::node::{NodeArena, NodeId, LEAF_NONE};
use crate::seed::HashSeed;
use crate::segment::{SegId, SegmentInterner};
use crate::walk::{Scratch, Segments};

/// Stable handle of a leaf, valid until its pattern is removed (then the slot may be reused).
///
/// The engine can key per-pattern side tables by [`index`](LeafId::index); the
/// [`MatchCache`](crate::MatchCache) stores these instead of leaf values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeafId(pub(crate) u32);

impl LeafId {
    /// Dense slot index, below the largest number of leaves the trie ever held at once.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// One slot of the leaf slab.
#[derive(Debug)]
pub(crate) struct LeafSlot<L> {
    /// `None` while the slot is on the free list.
    pub(crate) value: Option<L>,
    /// The node whose `leaf` field points here; checked by `check_invariants`.
    pub(crate) node: NodeId,
}

/// Path step recorded while descending, so that removal can prune without parent pointers.
#[derive(Debug, Clone, Copy)]
enum Step {
    Literal(SegId),
    One,
    Many,
}

/// A removal path: one step per pattern segment, so the codec's depth limit keeps it inline.
type Path = SmallVec<[(NodeId, Step); TOPIC_DEPTH_MAX]>;

/// Source of [`PatternTrie::id`]: lets a [`MatchCache`](crate::MatchCache) notice it is being
/// used with a different trie than the one that filled it.
static NEXT_TRIE_ID: AtomicU64 = AtomicU64::new(1);

/// Pattern → leaf index with wildcard matching; see the crate docs for the syntax and costs.
///
/// Single-threaded by design (one per shard): it is `Send` but not `Sync`, because the match walk
/// reuses scratch buffers through a `RefCell` so that matching needs only `&self`.
#[derive(Debug)]
pub struct PatternTrie<L> {
    pub(crate) nodes: NodeArena,
    pub(crate) edges: LiteralEdges,
    pub(crate) segments: SegmentInterner,
    pub(crate) leaves: Vec<LeafSlot<L>>,
    pub(crate) free_leaves: Vec<u32>,
    len: usize,
    generation: u64,
    id: u64,
    pub(crate) scratch: RefCell<Scratch>,
}

impl<L> Default for PatternTrie<L> {
    fn default() -> Self {
        Self::new()
    }
}

/// The codec owns topic syntax; the trie reads patterns and topics only through these adapters.
#[inline]
pub(crate) fn pattern_segments(pattern: &Pattern) -> impl Iterator<Item = PatternSegment<'_>> {
    pattern.segments()
}

#[inline]
pub(crate) fn topic_segments(topic: &Topic) -> Segments<'_> {
    // Same pieces as `topic.segments()`, found faster (see `Segments`).
    Segments::new(topic.as_bytes())
}

pub(crate) fn pattern_bytes(pattern: &Pattern) -> &[u8] {
    pattern.as_bytes()
}

#[inline]
pub(crate) fn topic_bytes(topic: &Topic) -> &[u8] {
    topic.as_bytes()
}

impl<L> PatternTrie<L> {
    /// An empty trie (a root node and nothing else) with random hash seeds.
    pub fn new() -> Self {
        Self::with_seed(HashSeed::random())
    }

    /// An empty trie whose hash tables use `seed` (see [`HashSeed`]).
    pub fn with_seed(seed: HashSeed) -> Self {
        let nodes = NodeArena::new();
        let scratch = RefCell::new(Scratch::new(nodes.capacity()));
        PatternTrie {
            nodes,
            edges: LiteralEdges::new(seed.edge_key()),
            segments: SegmentInterner::new(seed.bytes_hasher()),
            leaves: Vec::new(),
            free_leaves: Vec::new(),
            len: 0,
            generation: 0,
            id: NEXT_TRIE_ID.fetch_add(1, Ordering::Relaxed),
            scratch,
        }
    }

    /// Number of patterns that have a leaf.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no pattern has a leaf.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Nodes in use, the root included: 1 for an empty trie. Tests use it to see that removal
    /// prunes everything it should.
    pub fn node_count(&self) -> usize {
        self.nodes.live()
    }

    /// Bumped whenever a leaf is created or removed, i.e. whenever the set of patterns (and so the
    /// answer of some match) changes. Changing a leaf's value through [`get_mut`](Self::get_mut)
    /// does not bump it: caches hold [`LeafId`]s, not values.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Process-unique identity of this trie, for caches that must not be mixed up between tries.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The leaf of `pattern`, if it has one.
    pub fn get(&self, pattern: &Pattern) -> Option<&L> {
        self.leaf_id(pattern).and_then(|id| self.leaf(id))
    }

    /// The leaf of `pattern` for in-place changes, if it has one.
    pub fn get_mut(&mut self, pattern: &Pattern) -> Option<&mut L> {
        self.leaf_id(pattern).and_then(|id| self.leaf_mut(id))
    }

    /// The handle of `pattern`'s leaf, if it has one.
    pub fn leaf_id(&self, pattern: &Pattern) -> Option<LeafId> {
        let node = self.find(pattern, None)?;
        let leaf = self.nodes[node].leaf;
        (leaf != LEAF_NONE).then_some(LeafId(leaf))
    }

    /// The leaf behind a handle; `None` if that leaf was removed.
    pub fn leaf(&self, id: LeafId) -> Option<&L> {
        self.leaves.get(id.index()).and_then(|slot| slot.value.as_ref())
    }

    /// The leaf behind a handle, mutably; `None` if that leaf was removed.
    pub fn leaf_mut(&mut self, id: LeafId) -> Option<&mut L> {
        self.leaves.get_mut(id.index()).and_then(|slot| slot.value.as_mut())
    }

    /// Calls `remove` on the leaf of `pattern`; if it returns true, the leaf is dropped and the
    /// nodes left without leaf or child are pruned. Returns true when a leaf was removed, false
    /// when the pattern had no leaf (then `remove` is not called) or `remove` returned false.
    ///
    /// The closure is how both leaf kinds remove "their" share: a subscription list drops one
    /// (slot, sub id) and asks for removal when the list is empty; a reference count decrements
    /// and asks for removal at zero.
    pub fn remove_with(&mut self, pattern: &Pattern, remove: impl FnOnce(&mut L) -> bool) -> bool {
        let mut path = Path::new();
        let Some(node) = self.find(pattern, Some(&mut path)) else { return false };
        let leaf = self.nodes[node].leaf;
        if leaf == LEAF_NONE {
            return false;
        }
        let value = self.leaves[leaf as usize].value.as_mut().expect("a node's leaf is occupied");
        if !remove(value) {
            return false;
        }
        self.take_leaf(node, &mut path);
        true
    }

    /// Removes the leaf of `pattern` unconditionally and returns it, pruning as `remove_with`.
    pub fn remove(&mut self, pattern: &Pattern) -> Option<L> {
        let mut path = Path::new();
        let node = self.find(pattern, Some(&mut path))?;
        if self.nodes[node].leaf == LEAF_NONE {
            return None;
        }
        Some(self.take_leaf(node, &mut path))
    }

    /// Detaches the leaf of `node` (which has one), frees its slot and prunes along `path`.
    fn take_leaf(&mut self, node: NodeId, path: &mut Path) -> L {
        let leaf = self.nodes[node].leaf;
        let value = self.leaves[leaf as usize].value.take().expect("a node's leaf is occupied");
        self.free_leaves.push(leaf);
        self.nodes[node].leaf = LEAF_NONE;
        self.len -= 1;
        self.generation += 1;
        self.prune(node, path);
        value
    }

    /// Walks `pattern` from the root without creating anything; records the path if asked.
    fn find(&self, pattern: &Pattern, mut path: Option<&mut Path>) -> Option<NodeId> {
        let mut node = NodeId::ROOT;
        for segment in pattern_segments(pattern) {
            let (child, step) = match segment {
                PatternSegment::Literal(bytes) => {
                    let seg = self.segments.get(bytes)?;
                    (self.edges.child(node, &self.nodes[node], seg)?, Step::Literal(seg))
                }
                PatternSegment::One => (self.nodes[node].one, Step::One),
                PatternSegment::Many => (self.nodes[node].many, Step::Many),
            };
            if child.is_none() {
                return None;
            }
            if let Some(path) = path.as_deref_mut() {
                path.push((node, step));
            }
            node = child;
        }
        Some(node)
    }

    /// Frees `node` and its ancestors while they hold neither leaf nor child.
    fn prune(&mut self, mut node: NodeId, path: &mut Path) {
        while let Some((parent, step)) = path.pop() {
            if !self.nodes[node].is_empty() {
                break;
            }
            match step {
                Step::Literal(seg) => {
                    let removed = self.edges.remove(parent, &mut self.nodes[parent], seg);
                    debug_assert_eq!(removed, Some(node));
                    self.segments.release(seg);
                }
                Step::One => self.nodes[parent].one = NodeId::NONE,
                Step::Many => self.nodes[parent].many = NodeId::NONE,
            }
            self.nodes.release(node);
            node = parent;
        }
    }

    /// Allocates a node and keeps the walk's per-node mark table as large as the arena.
    fn alloc_node(&mut self, self_loop: bool) -> NodeId {
        let id = self.nodes.alloc(self_loop);
        self.scratch.get_mut().cover(self.nodes.capacity());
        id
    }

    fn child_or_insert(&mut self, node: NodeId, segment: PatternSegment<'_>) -> NodeId {
        match segment {
            PatternSegment::Literal(bytes) => {
                if let Some(seg) = self.segments.get(bytes) {
                    if let Some(child) = self.edges.child(node, &self.nodes[node], seg) {
                        return child;
                    }
                }
                let seg = self.segments.acquire(bytes);
                let child = self.alloc_node(false);
                self.edges.insert(node, &mut self.nodes[node], seg, child);
                child
            }
            PatternSegment::One => {
                let child = self.nodes[node].one;
                if !child.is_none() {
                    return child;
                }
                let child = self.alloc_node(false);
                self.nodes[node].one = child;
                child
            }
            PatternSegment::Many => {
                let child = self.nodes[node].many;
                if !child.is_none() {
                    return child;
                }
                let child = self.alloc_node(true);
                self.nodes[node].many = child;
                child
            }
        }
    }

    fn alloc_leaf(&mut self, node: NodeId, value: L) -> u32 {
        if let Some(leaf) = self.free_leaves.pop() {
            self.leaves[leaf as usize] = LeafSlot { value: Some(value), node };
            return leaf;
        }
        assert!(self.leaves.len() < LEAF_NONE as usize, "trie leaf slab exhausted");
        self.leaves.push(LeafSlot { value: Some(value), node });
        (self.leaves.len() - 1) as u32
    }
}

impl<L: Default> PatternTrie<L> {
    /// The leaf of `pattern`, created (with `L::default()`) along with any missing nodes.
    pub fn entry(&mut self, pattern: &Pattern) -> &mut L {
        let id = self.entry_id(pattern);
        self.leaves[id.index()].value.as_mut().expect("entry_id returns an occupied slot")
    }

    /// Like [`entry`](Self::entry), returning the leaf's handle.
    pub fn entry_id(&mut self, pattern: &Pattern) -> LeafId {
        let mut node = NodeId::ROOT;
        for segment in pattern_segments(pattern) {
            node = self.child_or_insert(node, segment);
        }
        let leaf = self.nodes[node].leaf;
        if leaf != LEAF_NONE {
            return LeafId(leaf);
        }
        let leaf = self.alloc_leaf(node, L::default());
        self.nodes[node].leaf = leaf;
        self.len += 1;
        self.generation += 1;
        LeafId(leaf)
    }
}
