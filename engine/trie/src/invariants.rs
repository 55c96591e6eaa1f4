//! Structural self-check, for tests and fuzz targets.

use crate::node::{NodeId, LEAF_NONE};
use crate::segment::SegId;
use crate::trie::PatternTrie;

impl<L> PatternTrie<L> {
    /// Checks every structural invariant and panics with a description of the first one broken.
    ///
    /// O(nodes + edges + leaves) with allocation: meant to run after each operation of a test or
    /// fuzz case, never on the data path. Checked: the nodes reachable from the root form a tree
    /// that covers exactly the live arena slots; no reachable node other than the root is empty
    /// (pruning is complete); `**` children and only they are self-looping; literal child counts
    /// agree with the edge table; every literal edge holds exactly one segment reference; leaves
    /// and nodes point at each other; `len` counts the occupied leaf slots.
    pub fn check_invariants(&self) {
        let capacity = self.nodes.capacity();
        let mut free = vec![false; capacity];
        for &id in self.nodes.free_slots() {
            assert!(!free[id.index()], "node {} is on the free list twice", id.0);
            free[id.index()] = true;
        }
        assert!(!free[NodeId::ROOT.index()], "the root is on the free list");

        let mut literal_children: Vec<Vec<NodeId>> = vec![Vec::new(); capacity];
        for (parent, seg, child) in self.edges.table_iter() {
            assert!(parent.index() < capacity && child.index() < capacity, "edge out of range");
            assert!(
                self.nodes[parent].inline_seg != seg,
                "edge {} --{}--> is both inline and in the table",
                parent.0,
                seg.0
            );
            literal_children[parent.index()].push(child);
        }
        let mut inline_edges = 0usize;
        for id in (0..capacity as u32).map(NodeId).filter(|id| !free[id.index()]) {
            let node = self.nodes[id];
            assert_eq!(
                node.inline_seg == SegId::NONE,
                node.inline_child.is_none(),
                "node {}: half-filled inline edge",
                id.0
            );
            if !node.inline_child.is_none() {
                literal_children[id.index()].push(node.inline_child);
                inline_edges += 1;
            }
        }
        let edges = self.edges.table_len() + inline_edges;
        assert_eq!(
            edges as u64,
            self.segments.total_refs(),
            "literal edges and segment references disagree"
        );
        assert!(self.segments.len() <= edges, "an interned segment has no edge");

        let mut seen = vec![false; capacity];
        let mut stack = vec![(NodeId::ROOT, false)];
        let mut reached = 0usize;
        let mut leaves = 0usize;
        while let Some((id, via_many)) = stack.pop() {
            assert!(!free[id.index()], "node {} is reachable but free", id.0);
            assert!(!seen[id.index()], "node {} is reachable by two paths", id.0);
            seen[id.index()] = true;
            reached += 1;
            let node = self.nodes[id];
            assert_eq!(node.self_loop, via_many, "node {}: self_loop differs from its edge", id.0);
            assert!(id == NodeId::ROOT || !node.is_empty(), "node {} is empty, not pruned", id.0);
            assert_eq!(
                node.literal_children as usize,
                literal_children[id.index()].len(),
                "node {}: literal child count is off",
                id.0
            );
            if node.leaf != LEAF_NONE {
                let slot = &self.leaves[node.leaf as usize];
                assert!(slot.value.is_some(), "node {} points at a free leaf slot", id.0);
                assert_eq!(slot.node, id, "leaf {} points back at another node", node.leaf);
                leaves += 1;
            }
            stack.extend(literal_children[id.index()].iter().map(|&c| (c, false)));
            if !node.one.is_none() {
                stack.push((node.one, false));
            }
            if !node.many.is_none() {
                stack.push((node.many, true));
            }
        }
        assert_eq!(reached, self.nodes.live(), "live nodes unreachable from the root");
        assert_eq!(leaves, self.len(), "len differs from the leaves reachable");
        let occupied = self.leaves.iter().filter(|slot| slot.value.is_some()).count();
        assert_eq!(occupied, self.len(), "len differs from the occupied leaf slots");
        assert_eq!(occupied + self.free_leaves.len(), self.leaves.len(), "leaf free list is off");
        assert!(self.scratch.borrow().covers(capacity), "walk marks do not cover every node");
    }
}
