//! `MatchCache`: topic → matching leaf handles, for topics published again and again.
//!
//! An entry remembers the trie [`generation`](PatternTrie::generation) it was computed at; any
//! insert or removal of a pattern bumps the generation, so stale entries are recomputed on their
//! next lookup (no invalidation walk). The cache is bounded by entry count and by matches per
//! entry, and evicts with CLOCK (second chance): a slot hit since the hand last passed survives
//! one more round. Slots keep their buffers, so a warm cache does not allocate on a miss either.
//!
//! A hit costs one hash of the whole topic, one probe and one compare; a direct walk costs one
//! hash per segment plus one edge lookup per active node and segment. Measured in `bench/`: a
//! hit is 8–12× cheaper than a walk and a miss 13% dearer (figures in the crate docs).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use ahash::RandomState;
use fovea_codec::topic::Topic;

use crate::seed::HashSeed;
use crate::trie::{topic_bytes, LeafId, PatternTrie};

/// Default number of cached topics.
pub const CACHE_TOPICS_MAX: usize = 1024;
/// Default bound on matches per cached topic; a topic with more is not cached (its fan-out
/// dwarfs the walk anyway, and the bound keeps the cache's memory at topics × matches × 4 bytes).
pub const CACHE_MATCHES_MAX: usize = 64;

/// What a cached lookup did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Answered from the cache.
    Hit,
    /// Walked the trie (entry absent, stale, or not cacheable).
    Miss,
}

/// Bounded per-shard cache of match results; see the module docs.
#[derive(Debug)]
pub struct MatchCache {
    /// Seeded: topics are chosen by publishers.
    hasher: RandomState,
    /// Full 64-bit topic hash → slot. A slot's topic bytes are compared on every hit, so two
    /// topics with the same hash only cost a miss, never a wrong answer.
    index: HashMap<u64, u32, BuildHasherDefault<PrehashedKey>>,
    slots: Vec<Slot>,
    /// CLOCK hand: next slot considered for eviction.
    hand: usize,
    topics_max: usize,
    matches_max: usize,
    /// The trie the entries belong to; a lookup against another trie empties the cache.
    trie_id: u64,
    hits: u64,
    misses: u64,
}

#[derive(Debug, Default)]
struct Slot {
    hash: u64,
    /// False for a slot whose last fill was not cacheable; such a slot is not in `index`.
    indexed: bool,
    /// Second-chance bit for CLOCK.
    referenced: bool,
    generation: u64,
    topic: Vec<u8>,
    leaves: Vec<LeafId>,
}

impl Default for MatchCache {
    fn default() -> Self {
        Self::new(CACHE_TOPICS_MAX, CACHE_MATCHES_MAX)
    }
}

impl MatchCache {
    /// A cache of at most `topics_max` topics with at most `matches_max` matches each.
    pub fn new(topics_max: usize, matches_max: usize) -> Self {
        Self::with_seed(topics_max, matches_max, HashSeed::random())
    }

    /// Like [`new`](Self::new) with a chosen hash seed (see [`HashSeed`]).
    pub fn with_seed(topics_max: usize, matches_max: usize, seed: HashSeed) -> Self {
        assert!(topics_max > 0 && topics_max <= u32::MAX as usize, "topics_max out of range");
        MatchCache {
            hasher: seed.bytes_hasher(),
            index: HashMap::default(),
            slots: Vec::new(),
            hand: 0,
            topics_max,
            matches_max,
            trie_id: 0,
            hits: 0,
            misses: 0,
        }
    }

    /// Calls `f` with the leaf of every pattern of `trie` matching `topic`, exactly as
    /// [`PatternTrie::for_each_match`] would, answering from the cache when it can.
    pub fn for_each_match<L>(
        &mut self,
        trie: &PatternTrie<L>,
        topic: &Topic,
        mut f: impl FnMut(&L),
    ) -> Lookup {
        if trie.id() != self.trie_id {
            self.clear();
            self.trie_id = trie.id();
        }
        let bytes = topic_bytes(topic);
        let hash = self.hasher.hash_one(bytes);
        let generation = trie.generation();

        let slot_index = match self.index.get(&hash) {
            Some(&index) => {
                let slot = &mut self.slots[index as usize];
                if slot.topic != bytes {
                    // A 64-bit collision under a random seed: answer directly, cache nothing.
                    self.misses += 1;
                    trie.for_each_match(topic, f);
                    return Lookup::Miss;
                }
                if slot.generation == generation {
                    slot.referenced = true;
                    self.hits += 1;
                    for &id in &slot.leaves {
                        if let Some(leaf) = trie.leaf(id) {
                            f(leaf);
                        }
                    }
                    return Lookup::Hit;
                }
                // Stale: refill this slot in place.
                index as usize
            }
            None => self.claim_slot(hash, bytes),
        };

        self.misses += 1;
        let matches_max = self.matches_max;
        let slot = &mut self.slots[slot_index];
        slot.leaves.clear();
        let mut cacheable = true;
        trie.for_each_match_id(topic, |id, leaf| {
            if slot.leaves.len() < matches_max {
                slot.leaves.push(id);
            } else {
                cacheable = false;
            }
            f(leaf);
        });
        slot.generation = generation;
        if !cacheable && slot.indexed {
            self.index.remove(&slot.hash);
            slot.indexed = false;
        }
        Lookup::Miss
    }

    /// Picks a slot for a new topic (a free one, else a CLOCK victim) and indexes it.
    fn claim_slot(&mut self, hash: u64, topic: &[u8]) -> usize {
        let index = if self.slots.len() < self.topics_max {
            self.slots.push(Slot::default());
            self.slots.len() - 1
        } else {
            let len = self.slots.len();
            loop {
                let candidate = self.hand;
                self.hand = (self.hand + 1) % len;
                let slot = &mut self.slots[candidate];
                if slot.referenced {
                    slot.referenced = false;
                    continue;
                }
                if slot.indexed {
                    self.index.remove(&slot.hash);
                }
                break candidate;
            }
        };
        let slot = &mut self.slots[index];
        slot.hash = hash;
        slot.indexed = true;
        slot.referenced = false;
        slot.topic.clear();
        slot.topic.extend_from_slice(topic);
        self.index.insert(hash, index as u32);
        index
    }

    /// Forgets every entry (buffers are kept).
    pub fn clear(&mut self) {
        self.index.clear();
        for slot in &mut self.slots {
            slot.indexed = false;
            slot.referenced = false;
        }
    }

    /// Topics currently cached.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Lookups answered from the cache so far.
    pub fn hits(&self) -> u64 {
        self.hits
    }

    /// Lookups that walked the trie so far.
    pub fn misses(&self) -> u64 {
        self.misses
    }
}

/// Hasher for keys that already are a good 64-bit hash: passes them through.
#[derive(Debug, Default)]
struct PrehashedKey(u64);

impl Hasher for PrehashedKey {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed with this; fold anything else in rather than panic.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}
