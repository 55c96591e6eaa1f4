//! Trie nodes and the arena that holds them.
//!
//! Nodes live in one `Vec` and refer to each other by `u32` index: a walk touches a few small,
//! densely packed records instead of chasing boxed pointers, and a pruned node's slot goes on a
//! free list for the next insert. A node keeps one literal child inline and counts the others,
//! which live in the shared edge table (see [`crate::edge`]).

use crate::segment::SegId;

/// Index of a node in the [`NodeArena`]. `NodeId::NONE` stands for "no such child".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct NodeId(pub(crate) u32);

impl NodeId {
    /// The root is created with the arena and never freed.
    pub(crate) const ROOT: NodeId = NodeId(0);
    /// Sentinel for an absent child or leaf; `u32::MAX` is never a valid index (see `alloc`).
    pub(crate) const NONE: NodeId = NodeId(u32::MAX);

    pub(crate) fn index(self) -> usize {
        self.0 as usize
    }

    pub(crate) fn is_none(self) -> bool {
        self == Self::NONE
    }
}

/// Sentinel leaf slot meaning "no pattern ends here".
pub(crate) const LEAF_NONE: u32 = u32::MAX;

/// One pattern prefix (28 bytes).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Node {
    /// Label of the literal child kept inline (see [`crate::edge`]), or `SegId::NONE`.
    pub(crate) inline_seg: SegId,
    /// Child reached through `inline_seg`, or `NodeId::NONE`.
    pub(crate) inline_child: NodeId,
    /// Child reached through a `*` segment.
    pub(crate) one: NodeId,
    /// Child reached through a `**` segment.
    pub(crate) many: NodeId,
    /// Slot in the trie's leaf slab, or `LEAF_NONE`.
    pub(crate) leaf: u32,
    /// Number of literal children, inline one included. Lets the walk skip the lookup for nodes
    /// without literal children and lets pruning see emptiness.
    pub(crate) literal_children: u32,
    /// True when this node was reached through a `**` edge: it may consume any number of further
    /// segments and stay where it is (a self-loop in the matching automaton).
    pub(crate) self_loop: bool,
}

impl Node {
    fn new(self_loop: bool) -> Self {
        Node {
            inline_seg: SegId::NONE,
            inline_child: NodeId::NONE,
            one: NodeId::NONE,
            many: NodeId::NONE,
            leaf: LEAF_NONE,
            literal_children: 0,
            self_loop,
        }
    }

    /// A node that holds no leaf and no child can be pruned (the root excepted).
    pub(crate) fn is_empty(&self) -> bool {
        self.leaf == LEAF_NONE
            && self.one.is_none()
            && self.many.is_none()
            && self.literal_children == 0
    }
}

/// Slab of nodes with a free list; slot 0 is the root.
#[derive(Debug)]
pub(crate) struct NodeArena {
    nodes: Vec<Node>,
    free: Vec<NodeId>,
}

impl NodeArena {
    pub(crate) fn new() -> Self {
        NodeArena { nodes: vec![Node::new(false)], free: Vec::new() }
    }

    /// Allocates a fresh node, reusing a freed slot when there is one.
    pub(crate) fn alloc(&mut self, self_loop: bool) -> NodeId {
        if let Some(id) = self.free.pop() {
            self.nodes[id.index()] = Node::new(self_loop);
            return id;
        }
        let index = self.nodes.len();
        // u32::MAX is the NONE sentinel; an arena that large is far beyond any shard's limits.
        assert!(index < u32::MAX as usize, "trie node arena exhausted");
        self.nodes.push(Node::new(self_loop));
        NodeId(index as u32)
    }

    /// Returns a pruned node's slot to the free list.
    pub(crate) fn release(&mut self, id: NodeId) {
        debug_assert!(id != NodeId::ROOT, "the root is never freed");
        debug_assert!(self.nodes[id.index()].is_empty(), "only empty nodes are freed");
        self.free.push(id);
    }

    /// Slots ever allocated, freed ones included: the size of any per-node side table.
    pub(crate) fn capacity(&self) -> usize {
        self.nodes.len()
    }

    /// Nodes in use, the root included.
    pub(crate) fn live(&self) -> usize {
        self.nodes.len() - self.free.len()
    }

    pub(crate) fn free_slots(&self) -> &[NodeId] {
        &self.free
    }
}

impl std::ops::Index<NodeId> for NodeArena {
    type Output = Node;

    fn index(&self, id: NodeId) -> &Node {
        &self.nodes[id.index()]
    }
}

impl std::ops::IndexMut<NodeId> for NodeArena {
    fn index_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.nodes[id.index()]
    }
}
