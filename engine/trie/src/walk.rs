//! Matching a topic: a breadth-first walk over sets of trie nodes, one set per topic segment.
//!
//! The trie read as an automaton: a node is a state; a topic segment moves a state along its
//! literal edge for that segment, along its `*` edge, and keeps it in place if the node was
//! reached through `**` (a `**` node swallows any segment). Entering a state also enters its `**`
//! child, because `**` may match zero segments. After the last segment, every state that holds a
//! leaf is a match.
//!
//! Each set is deduplicated with a per-node mark (the number of the step that last entered the
//! node), so a node is expanded at most once per step however many paths reach it. That bounds a
//! walk by `depth × active nodes` (no exponential blow-up with several `**`), and it is why a leaf
//! is reported exactly once: the final set holds each node once (`**.b.**` on `b.b` reaches the
//! last `**` node by two paths and reports it once).
//!
//! The sets and the mark table live in a [`Scratch`] kept in the trie and reused by every walk,
//! so matching allocates nothing once the buffers have grown to the largest set seen.

use std::mem;

use fovea_codec::topic::Topic;

use crate::node::{NodeArena, NodeId, LEAF_NONE};
use crate::trie::{topic_segments, LeafId, PatternTrie};

/// Reusable buffers of the walk.
#[derive(Debug)]
pub(crate) struct Scratch {
    current: Vec<NodeId>,
    next: Vec<NodeId>,
    /// Per node: the step number that last entered it. Never 0 for a live step, so a fresh slot
    /// (0) is never mistaken for "already entered".
    marks: Vec<u32>,
    step: u32,
}

impl Scratch {
    pub(crate) fn new(nodes: usize) -> Self {
        Scratch { current: Vec::new(), next: Vec::new(), marks: vec![0; nodes], step: 0 }
    }

    /// Grows the mark table to cover `nodes` node slots.
    pub(crate) fn cover(&mut self, nodes: usize) {
        if self.marks.len() < nodes {
            self.marks.resize(nodes, 0);
        }
    }

    pub(crate) fn covers(&self, nodes: usize) -> bool {
        self.marks.len() >= nodes
    }

    /// Starts a new step: a fresh mark value that no node carries yet.
    #[inline]
    fn next_step(&mut self) -> u32 {
        if self.step == u32::MAX {
            // Once every four billion steps: forget all marks rather than compare stale ones.
            self.marks.fill(0);
            self.step = 0;
        }
        self.step += 1;
        self.step
    }
}

/// A topic's segments, found a word at a time: the byte-at-a-time split was a tenth of a walk.
/// Gives the same pieces as splitting at every `.`.
#[derive(Debug, Clone)]
pub(crate) struct Segments<'t> {
    rest: Option<&'t [u8]>,
}

impl<'t> Segments<'t> {
    pub(crate) fn new(bytes: &'t [u8]) -> Self {
        Segments { rest: Some(bytes) }
    }
}

impl<'t> Iterator for Segments<'t> {
    type Item = &'t [u8];

    #[inline]
    fn next(&mut self) -> Option<&'t [u8]> {
        let rest = self.rest?;
        match find_dot(rest) {
            Some(at) => {
                self.rest = Some(&rest[at + 1..]);
                Some(&rest[..at])
            }
            None => {
                self.rest = None;
                Some(rest)
            }
        }
    }
}

/// Index of the first `.` in `bytes`. Eight bytes per step: a byte of `word ^ DOTS` is zero where
/// a dot is, and the lowest bit set by the zero-byte test marks the first such byte exactly
/// (borrows only run towards higher bytes).
#[inline]
fn find_dot(bytes: &[u8]) -> Option<usize> {
    const DOTS: u64 = u64::from_le_bytes([b'.'; 8]);
    const LOW_BITS: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGH_BITS: u64 = u64::from_le_bytes([0x80; 8]);
    let mut chunks = bytes.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().expect("chunks of eight")) ^ DOTS;
        let zero_bytes = word.wrapping_sub(LOW_BITS) & !word & HIGH_BITS;
        if zero_bytes != 0 {
            return Some(offset + (zero_bytes.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    chunks.remainder().iter().position(|&b| b == b'.').map(|at| offset + at)
}

/// Adds `node`, and the chain of `**` children hanging off it, to `set` unless already there.
#[inline]
fn enter(nodes: &NodeArena, marks: &mut [u32], step: u32, set: &mut Vec<NodeId>, node: NodeId) {
    let mut node = node;
    // The chain is at most one long for canonical patterns (`**.**` is rejected by the codec);
    // following it in a loop keeps the walk right even if that rule ever changes.
    while !node.is_none() {
        let mark = &mut marks[node.index()];
        if *mark == step {
            return;
        }
        *mark = step;
        set.push(node);
        node = nodes[node].many;
    }
}

impl<L> PatternTrie<L> {
    /// Calls `f` once with the leaf of every pattern that matches `topic`, in no particular order.
    ///
    /// `f` may itself match on this trie (it gets a temporary scratch buffer then); it cannot
    /// modify the trie, which `&self` already rules out.
    pub fn for_each_match(&self, topic: &Topic, mut f: impl FnMut(&L)) {
        self.for_each_match_id(topic, |_, leaf| f(leaf));
    }

    /// Like [`for_each_match`](Self::for_each_match), also passing each leaf's handle.
    pub fn for_each_match_id(&self, topic: &Topic, f: impl FnMut(LeafId, &L)) {
        self.walk_segments(topic_segments(topic), f);
    }

    /// The walk over already-split topic segments. Not public: segments are trusted to be valid
    /// topic segments, which only the codec's `Topic` guarantees.
    pub(crate) fn walk_segments<'t>(
        &self,
        segments: impl Iterator<Item = &'t [u8]>,
        mut f: impl FnMut(LeafId, &L),
    ) {
        match self.scratch.try_borrow_mut() {
            Ok(mut scratch) => self.walk_with(&mut scratch, segments, &mut f),
            // Re-entered from inside `f`: correct but allocating.
            Err(_) => self.walk_with(&mut Scratch::new(self.nodes.capacity()), segments, &mut f),
        }
    }

    fn walk_with<'t>(
        &self,
        scratch: &mut Scratch,
        segments: impl Iterator<Item = &'t [u8]>,
        f: &mut impl FnMut(LeafId, &L),
    ) {
        // The sets live in locals for the walk so that their pointers and lengths stay in
        // registers instead of being written back to the scratch at every push.
        let mut current = mem::take(&mut scratch.current);
        let mut next = mem::take(&mut scratch.next);
        current.clear();
        let step = scratch.next_step();
        enter(&self.nodes, &mut scratch.marks, step, &mut current, NodeId::ROOT);

        for segment in segments {
            let step = scratch.next_step();
            let marks = &mut scratch.marks[..];
            next.clear();
            // Hashing the segment bytes is the dearest part of a step; do it at most once, and
            // not at all when no active node has a literal child.
            let mut seg = None;
            for &id in current.iter() {
                let node = self.nodes[id];
                if node.literal_children != 0 {
                    if let Some(seg) = *seg.get_or_insert_with(|| self.segments.get(segment)) {
                        if let Some(child) = self.edges.child(id, &node, seg) {
                            enter(&self.nodes, marks, step, &mut next, child);
                        }
                    }
                }
                if !node.one.is_none() {
                    enter(&self.nodes, marks, step, &mut next, node.one);
                }
                if node.self_loop {
                    enter(&self.nodes, marks, step, &mut next, id);
                }
            }
            mem::swap(&mut current, &mut next);
            if current.is_empty() {
                break;
            }
        }

        for &id in current.iter() {
            let leaf = self.nodes[id].leaf;
            if leaf != LEAF_NONE {
                if let Some(value) = &self.leaves[leaf as usize].value {
                    f(LeafId(leaf), value);
                }
            }
        }
        scratch.current = current;
        scratch.next = next;
    }
}
