//! A brute-force reference index and a differential harness, for property tests and fuzz targets.
//!
//! [`BruteForce`] keeps patterns in a list and matches with the codec's own
//! [`Pattern::matches`], the simplest matcher there is. [`Differential`] drives a
//! [`PatternTrie`], a [`MatchCache`] over it and a [`BruteForce`] with the same [`Op`]s and panics
//! on the first disagreement, after checking the trie's structural invariants. A `trie_ops` fuzz
//! target is then three lines:
//!
//! ```
//! # let data: &[u8] = b"\x00\x03a.*\x02\x03a.b\x01\x03a.*";
//! let mut harness = fovea_trie::model::Differential::new();
//! for op in fovea_trie::model::Op::parse_all(data) {
//!     harness.apply(&op);
//! }
//! ```

use fovea_codec::topic::{Pattern, Topic};

use crate::cache::MatchCache;
use crate::trie::{pattern_bytes, PatternTrie};

/// Patterns in a list, matched one by one.
#[derive(Debug, Clone)]
pub struct BruteForce<L> {
    entries: Vec<(Pattern, L)>,
}

impl<L> Default for BruteForce<L> {
    fn default() -> Self {
        BruteForce { entries: Vec::new() }
    }
}

impl<L: Default> BruteForce<L> {
    /// Same contract as [`PatternTrie::entry`].
    pub fn entry(&mut self, pattern: &Pattern) -> &mut L {
        let position = match self.position(pattern) {
            Some(position) => position,
            None => {
                self.entries.push((pattern.clone(), L::default()));
                self.entries.len() - 1
            }
        };
        &mut self.entries[position].1
    }
}

impl<L> BruteForce<L> {
    /// Same contract as [`PatternTrie::remove_with`].
    pub fn remove_with(&mut self, pattern: &Pattern, remove: impl FnOnce(&mut L) -> bool) -> bool {
        let Some(position) = self.position(pattern) else { return false };
        if !remove(&mut self.entries[position].1) {
            return false;
        }
        self.entries.swap_remove(position);
        true
    }

    /// Same contract as [`PatternTrie::for_each_match`].
    pub fn for_each_match(&self, topic: &Topic, mut f: impl FnMut(&L)) {
        for (pattern, leaf) in &self.entries {
            if pattern.matches(topic) {
                f(leaf);
            }
        }
    }

    /// Number of patterns held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no pattern is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn position(&self, pattern: &Pattern) -> Option<usize> {
        let key = pattern_bytes(pattern);
        self.entries.iter().position(|(p, _)| pattern_bytes(p) == key)
    }
}

/// One step of a differential run.
#[derive(Debug, Clone)]
pub enum Op {
    /// Take one reference on the pattern (creating its leaf at the first).
    Subscribe(Pattern),
    /// Drop one reference; the leaf goes when its count reaches zero.
    Unsubscribe(Pattern),
    /// Match a topic on all three indexes and compare.
    Publish(Topic),
}

impl Op {
    /// Decodes a fuzzer's bytes into operations: each is a kind byte (`% 3`: subscribe,
    /// unsubscribe, publish), a length byte, then that many bytes of pattern or topic text.
    /// Text the codec rejects is skipped (validation is the codec's job and has its own fuzz
    /// target); a truncated last operation is dropped.
    pub fn parse_all(mut data: &[u8]) -> Vec<Op> {
        let mut ops = Vec::new();
        while let [kind, len, rest @ ..] = data {
            let len = usize::from(*len).min(rest.len());
            let (text, tail) = rest.split_at(len);
            data = tail;
            let Ok(text) = std::str::from_utf8(text) else { continue };
            let op = match kind % 3 {
                0 => text.parse().ok().map(Op::Subscribe),
                1 => text.parse().ok().map(Op::Unsubscribe),
                _ => text.parse().ok().map(Op::Publish),
            };
            ops.extend(op);
        }
        ops
    }
}

/// Leaf used by [`Differential`]: the pattern's text (to tell leaves apart) and a count, the
/// shape of the engine's cross-shard interest index.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct CountedLeaf {
    /// Text of the pattern this leaf belongs to.
    pub pattern: Vec<u8>,
    /// References taken and not yet dropped.
    pub refs: u32,
}

/// A trie, a cache and a brute-force model driven in lockstep.
#[derive(Debug)]
pub struct Differential {
    trie: PatternTrie<CountedLeaf>,
    cache: MatchCache,
    model: BruteForce<CountedLeaf>,
}

impl Default for Differential {
    fn default() -> Self {
        // A tiny cache, so that eviction and refills are exercised too.
        Differential {
            trie: PatternTrie::new(),
            cache: MatchCache::new(4, 8),
            model: BruteForce::default(),
        }
    }
}

impl Differential {
    /// Fresh, empty indexes.
    pub fn new() -> Self {
        Self::default()
    }

    /// The trie under test.
    pub fn trie(&self) -> &PatternTrie<CountedLeaf> {
        &self.trie
    }

    /// Applies `op` to every index; panics if they disagree or the trie breaks an invariant.
    pub fn apply(&mut self, op: &Op) {
        match op {
            Op::Subscribe(pattern) => {
                subscribe(self.trie.entry(pattern), pattern);
                subscribe(self.model.entry(pattern), pattern);
            }
            Op::Unsubscribe(pattern) => {
                let trie = self.trie.remove_with(pattern, unsubscribe);
                let model = self.model.remove_with(pattern, unsubscribe);
                assert_eq!(trie, model, "unsubscribe {op:?}: trie removed {trie}, model {model}");
            }
            Op::Publish(topic) => {
                let mut expected = Vec::new();
                self.model.for_each_match(topic, |leaf| expected.push(leaf.clone()));
                expected.sort();
                let mut direct = Vec::new();
                self.trie.for_each_match(topic, |leaf| direct.push(leaf.clone()));
                direct.sort();
                assert_eq!(direct, expected, "trie and brute force disagree on {topic:?}");
                for _ in 0..2 {
                    let mut cached = Vec::new();
                    self.cache.for_each_match(&self.trie, topic, |leaf| cached.push(leaf.clone()));
                    cached.sort();
                    assert_eq!(cached, expected, "cache and brute force disagree on {topic:?}");
                }
            }
        }
        assert_eq!(self.trie.len(), self.model.len(), "pattern counts differ after {op:?}");
        self.trie.check_invariants();
        if self.trie.is_empty() {
            assert_eq!(self.trie.node_count(), 1, "an empty trie keeps nodes besides the root");
        }
    }
}

fn subscribe(leaf: &mut CountedLeaf, pattern: &Pattern) {
    if leaf.refs == 0 {
        leaf.pattern = pattern_bytes(pattern).to_vec();
    }
    leaf.refs += 1;
}

fn unsubscribe(leaf: &mut CountedLeaf) -> bool {
    leaf.refs -= 1;
    leaf.refs == 0
}
