//! `HashSeed`: the keys of the trie's and the cache's hash tables.

use ahash::RandomState;

/// Keys for the hash tables of a [`PatternTrie`](crate::PatternTrie) or a
/// [`MatchCache`](crate::MatchCache).
///
/// Production code wants [`random`](Self::random) (what `new` uses): segment and topic bytes
/// come from peers, and unknown keys keep them from aiming collisions. Benchmarks and
/// reproductions want [`fixed`](Self::fixed): with random keys the probe sequences, and so the
/// instruction counts, differ by a few percent from run to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashSeed([u64; 4]);

impl HashSeed {
    /// Keys drawn from the process's random source.
    pub fn random() -> Self {
        let state = RandomState::new();
        HashSeed([0, 1, 2, 3].map(|i: u64| state.hash_one(i)))
    }

    /// Keys derived from `seed` only: the same tables, probes and costs on every run.
    pub fn fixed(seed: u64) -> Self {
        // Spread one number over four keys; any fixed odd constants do.
        HashSeed(
            [
                0x243F_6A88_85A3_08D3,
                0x1319_8A2E_0370_7344,
                0xA409_3822_299F_31D0,
                0x082E_FA98_EC4E_6C89,
            ]
            .map(|k| k ^ seed),
        )
    }

    /// Seeded hasher for byte strings (segments, topics).
    pub(crate) fn bytes_hasher(self) -> RandomState {
        let [a, b, c, d] = self.0;
        RandomState::with_seeds(a, b, c, d)
    }

    /// Key of the edge table's multiply hash.
    pub(crate) fn edge_key(self) -> u64 {
        self.0[0].rotate_left(17) ^ self.0[3]
    }
}
