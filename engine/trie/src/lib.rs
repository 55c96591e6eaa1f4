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
//!   found by hash, `*` and `**` children are fields of their parent. Per segment, the segment's
//!   bytes are hashed once (into an interned id), then each active node costs one lookup in a
//!   table keyed by two integers. `**` is a self-loop state; per-step dedup marks make several
//!   `**` linear, not exponential, and every matching leaf is reported exactly once.
//!   No allocation once the trie's scratch buffers have grown.
//! - Insert: `O(depth)` hash operations; remove the same plus pruning.
//! - Memory: one 20-byte node per distinct pattern prefix, one edge-table entry per literal
//!   edge, one interned copy of each distinct literal segment.
//!
//! # Match cache
//! See [`MatchCache`] and the bench figures in `bench/` (summarised in the cache's docs).

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
