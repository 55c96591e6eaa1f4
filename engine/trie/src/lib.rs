//! Fovea's pattern trie: which subscriptions does a published topic reach?
//!
//! One [`PatternTrie`] per shard, generic over its leaf: the shard's local subscriptions use a
//! small list of (connection slot, subscription id) per pattern, the cross-shard interest index a
//! per-shard reference count. Single-threaded, no locks.
//!
//! In scope: the index from validated [`Pattern`](fovea_codec::topic::Pattern)s to leaves,
//! matching a validated [`Topic`](fovea_codec::topic::Topic), a bounded hot-topic
//! [`MatchCache`], and a brute-force [`model`] for tests and fuzzing. Out of scope: topic syntax
//! and validation (the codec owns it: `*` is exactly one segment, `**` zero or more, anywhere,
//! never two adjacent), fan-out, and anything that knows about connections.
//!
//! # Use, in call order
//! 1. [`PatternTrie::new`].
//! 2. [`PatternTrie::entry`] (creates the path, returns the leaf) on subscribe;
//!    [`PatternTrie::get_mut`] to change a leaf in place.
//! 3. [`PatternTrie::for_each_match`] per publish (or [`MatchCache::for_each_match`]).
//! 4. [`PatternTrie::remove_with`] on unsubscribe: the closure edits the leaf and says whether it
//!    is now empty; then the leaf is dropped and the nodes it leaves empty are pruned.
//!
//! # Costs
//! - Match: `O(depth × active)` where `active` is the number of trie nodes whose pattern prefix
//!   matches the topic prefix at that depth (bounded by the number of nodes; for typical tries a
//!   handful). Patterns that diverge from the topic are never looked at: literal children are
//!   found by hash (the first one inline in the node), `*` and `**` children are fields of their
//!   parent. Per segment, the segment's bytes are hashed once (into an interned id), then each
//!   active node costs an integer compare (inline child) or one probe of a table keyed by two
//!   integers. `**` is a self-loop state; per-step dedup marks make several `**` linear, not
//!   exponential, and every matching leaf is reported exactly once. No allocation once the
//!   trie's scratch buffers have grown.
//! - Insert: `O(depth)` hash operations; remove the same plus pruning (no parent pointers: the
//!   descent records its path on the stack).
//! - Memory: one 28-byte node per distinct pattern prefix, one edge-table entry per literal edge
//!   beyond a node's first, one interned copy of each distinct literal segment.
//! - Measured (`bench/`, instructions per call under callgrind, fixed hash seed): depth-5 topic
//!   against 100K patterns, no random wildcards: ~1,500 when nothing matches after a full-depth
//!   walk, ~325 when the first segment is unknown, ~135 more per match; with 10% wildcards
//!   (`*` and `**` in every position, so 2–4 nodes stay active per segment) ~2,300 and ~200
//!   more per match. Roughly a third of a step is the segment hash and interner probe, a third
//!   the per-node work, a third the step itself.
//!
//! # Match cache
//! [`MatchCache`] maps a topic to the handles of its matching leaves, checked against the
//! trie's [`generation`](PatternTrie::generation). Measured on the depth-5, 100K-pattern,
//! 10%-wildcard trie (`bench/README.md`): a hit costs 206 instructions / 13 ns (1 match) and
//! 327 / 25 ns (8 matches) against 2,512 / 156 ns and 3,862 / 211 ns for a direct walk, 8–12×
//! less. A miss costs the walk plus the fill: +770 to +1,220 instructions, +61 ns (+13%) with
//! 4096 topics cycling through 1024 entries. So it pays off when more than about one lookup in
//! eight hits (one in four by instruction count), which hot topics do. It stays out of the
//! default path: [`PatternTrie::for_each_match`] does not use it; a shard that sees repeated
//! topics wraps its lookups in one cache per trie.
//!
//! # Testing and fuzzing
//! [`PatternTrie::check_invariants`] checks the whole structure; [`model::Differential`] runs a
//! trie, a cache and a brute-force model in lockstep, and [`model::Op::parse_all`] turns fuzzer
//! bytes into operations for it.

#![warn(missing_docs)]
#![warn(unreachable_pub)]

mod cache;
mod edge;
mod invariants;
pub mod model;
mod node;
mod seed;
mod segment;
mod trie;
mod walk;

#[cfg(test)]
mod tests;

pub use cache::{Lookup, MatchCache, CACHE_MATCHES_MAX, CACHE_TOPICS_MAX};
pub use seed::HashSeed;
pub use trie::{LeafId, PatternTrie};
