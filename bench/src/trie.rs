//! Trie fixtures: seeded pattern sets of a given size, wildcard share and depth, plus topics with
//! a known number of matches, and the measured trie and cache calls.
//!
//! Patterns look like a sensor hierarchy (`org3.realm17.site2040.…`): few values at the top,
//! thousands further down, so patterns share prefixes the way real subscriptions do. A wildcard
//! pattern replaces one or two segments by `*`, truncates with a trailing `**`, or collapses a run
//! of segments (at the start or in the middle) into `**`.

use std::collections::HashSet;
use std::hint::black_box;

use fovea_codec::topic::{Pattern, Topic};
use fovea_trie::{HashSeed, Lookup, MatchCache, PatternTrie, CACHE_MATCHES_MAX, CACHE_TOPICS_MAX};

use crate::rng::Rng;

/// Hash seed of every bench trie and cache: fixed, so that instruction counts repeat exactly
/// (with random seeds, probe sequences and so counts move by a few percent between runs).
pub const TABLE_SEED: u64 = 0xF0EA;

/// A match cache of the default size with the fixed bench seed.
pub fn bench_cache() -> MatchCache {
    MatchCache::with_seed(CACHE_TOPICS_MAX, CACHE_MATCHES_MAX, HashSeed::fixed(TABLE_SEED))
}

/// Leaf of the bench tries: a reference count, the cross-shard interest index's shape.
pub type Leaf = u32;

/// Pattern counts benched.
pub const PATTERN_COUNTS: [usize; 3] = [1_000, 10_000, 100_000];
/// Shares of wildcard patterns benched, in percent.
pub const WILDCARD_PERCENTS: [u32; 3] = [0, 10, 50];
/// Pattern and topic depths benched.
pub const DEPTHS: [usize; 2] = [3, 8];
/// Patterns kept out of each trie for the insert bench.
pub const ABSENT_COUNT: usize = 256;

const LEVEL_NAMES: [&str; 8] = ["org", "realm", "site", "device", "kind", "metric", "unit", "part"];

/// One point of the trie bench matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrieShape {
    /// Patterns in the trie.
    pub patterns: usize,
    /// Percent of them with a wildcard.
    pub wildcard_percent: u32,
    /// Segments per literal pattern and per topic.
    pub depth: usize,
}

impl TrieShape {
    /// Every combination of [`PATTERN_COUNTS`], [`WILDCARD_PERCENTS`] and [`DEPTHS`].
    pub fn matrix() -> Vec<TrieShape> {
        let mut shapes = Vec::new();
        for patterns in PATTERN_COUNTS {
            for wildcard_percent in WILDCARD_PERCENTS {
                for depth in DEPTHS {
                    shapes.push(TrieShape { patterns, wildcard_percent, depth });
                }
            }
        }
        shapes
    }

    /// Bench id, e.g. `100k_w10_d3`.
    pub fn label(&self) -> String {
        format!("{}k_w{}_d{}", self.patterns / 1000, self.wildcard_percent, self.depth)
    }

    fn seed(&self) -> u64 {
        (self.patterns as u64) << 16 | u64::from(self.wildcard_percent) << 8 | self.depth as u64
    }
}

/// Values per level: few at the top, many below, so 100K distinct patterns exist at depth 3.
fn level_values(level: usize) -> u64 {
    match level {
        0 => 8,
        1 => 32,
        _ => 4096,
    }
}

fn level_name(level: usize) -> &'static str {
    LEVEL_NAMES[level % LEVEL_NAMES.len()]
}

fn literal_segments(rng: &mut Rng, depth: usize) -> Vec<String> {
    (0..depth)
        .map(|level| format!("{}{}", level_name(level), rng.below(level_values(level))))
        .collect()
}

/// Turns a literal pattern into a wildcard one (see the module docs for the mix).
fn add_wildcards(rng: &mut Rng, segments: &mut Vec<String>) {
    let depth = segments.len();
    let kind = rng.below(100);
    if kind < 40 || depth < 2 {
        segments[rng.below(depth as u64) as usize] = "*".into();
    } else if kind < 60 {
        let first = rng.below(depth as u64) as usize;
        let second = (first + 1 + rng.below(depth as u64 - 1) as usize) % depth;
        segments[first] = "*".into();
        segments[second] = "*".into();
    } else if kind < 85 {
        // A prefix subscription: at least two literal levels, then everything below.
        let keep = 2.min(depth - 1) + rng.below((depth - 2.min(depth - 1)) as u64) as usize;
        segments.truncate(keep.max(1));
        segments.push("**".into());
    } else {
        // `**` replacing a run, at the start or in the middle, keeping the last segment literal.
        let start = rng.below(depth as u64 - 1) as usize;
        let end = start + 1 + rng.below((depth - 1 - start) as u64) as usize;
        segments.splice(start..end, ["**".to_owned()]);
    }
}

fn generate_pattern(rng: &mut Rng, shape: TrieShape) -> String {
    let mut segments = literal_segments(rng, shape.depth);
    if rng.percent(shape.wildcard_percent) {
        add_wildcards(rng, &mut segments);
    }
    segments.join(".")
}

/// Parses fixture text; fixtures are generated valid, so failure is a bug in this file.
pub fn pattern(text: &str) -> Pattern {
    text.parse().unwrap_or_else(|e| panic!("fixture pattern {text:?} invalid: {e:?}"))
}

/// Parses fixture text; see [`pattern`].
pub fn topic(text: &str) -> Topic {
    text.parse().unwrap_or_else(|e| panic!("fixture topic {text:?} invalid: {e:?}"))
}

/// A filled trie and what the benches feed it.
#[derive(Debug)]
pub struct TrieFixture {
    /// The shape it was built for.
    pub shape: TrieShape,
    /// The trie, every leaf a count of 1.
    pub trie: PatternTrie<Leaf>,
    /// Every pattern in the trie, in insertion order.
    pub present: Vec<Pattern>,
    /// [`ABSENT_COUNT`] patterns of the same distribution that are not in the trie.
    pub absent: Vec<Pattern>,
    /// A topic equal to some literal pattern in the trie (so at least one match).
    pub topic_hit: Topic,
    /// Matches of `topic_hit`, counted by brute force.
    pub topic_hit_matches: usize,
    /// A full-depth topic sharing the longest possible prefix with the trie that matches nothing.
    pub topic_miss: Topic,
}

impl TrieFixture {
    /// Builds the fixture for `shape`; deterministic for a given shape.
    pub fn new(shape: TrieShape) -> Self {
        let mut rng = Rng::new(shape.seed());
        let mut seen = HashSet::with_capacity(shape.patterns + ABSENT_COUNT);
        let mut texts = Vec::with_capacity(shape.patterns + ABSENT_COUNT);
        while texts.len() < shape.patterns + ABSENT_COUNT {
            let text = generate_pattern(&mut rng, shape);
            if seen.insert(text.clone()) {
                texts.push(text);
            }
        }
        let mut present: Vec<Pattern> = texts.iter().map(|t| pattern(t)).collect();
        let absent = present.split_off(shape.patterns);
        let mut trie = PatternTrie::with_seed(HashSeed::fixed(TABLE_SEED));
        for p in &present {
            *trie.entry(p) += 1;
        }

        let literal = texts[..shape.patterns]
            .iter()
            .find(|t| !t.contains('*'))
            .cloned()
            .unwrap_or_else(|| literal_segments(&mut rng, shape.depth).join("."));
        let topic_hit = topic(&literal);
        let topic_hit_matches = brute_force_count(&present, &topic_hit);
        let topic_miss = miss_topic(&trie, &literal);
        assert_eq!(brute_force_count(&present, &topic_miss), 0, "miss topic matches");
        TrieFixture { shape, trie, present, absent, topic_hit, topic_hit_matches, topic_miss }
    }
}

/// Replaces the last 1, 2, … segments of `literal` with names no pattern uses, until no pattern
/// matches: the deepest walk that still ends in nothing.
fn miss_topic(trie: &PatternTrie<Leaf>, literal: &str) -> Topic {
    let mut segments: Vec<String> = literal.split('.').map(str::to_owned).collect();
    for replaced in 1..=segments.len() {
        let at = segments.len() - replaced;
        segments[at] = format!("{}none", level_name(at));
        let candidate = topic(&segments.join("."));
        if trie_match_count(trie, &candidate) == 0 {
            return candidate;
        }
    }
    panic!("every topic matches something: the fixture has a match-all pattern")
}

/// Matches by brute force with the codec's reference matcher. A pattern without `*` matches only
/// the identical topic, so those are compared as bytes: the reference matcher allocates, and
/// running it 100K times would dominate fixture setup under valgrind.
pub fn brute_force_count(patterns: &[Pattern], topic: &Topic) -> usize {
    let wildcard = |p: &Pattern| p.as_bytes().contains(&b'*');
    patterns
        .iter()
        .filter(|p| if wildcard(p) { p.matches(topic) } else { p.as_bytes() == topic.as_bytes() })
        .count()
}

/// The depth-5, 100K-pattern trie the instruction targets are stated for, with planted patterns
/// so that topics with exactly 0, 1 and 8 matches exist (names outside the random vocabulary, so
/// random patterns cannot match them by accident).
#[derive(Debug)]
pub struct TargetFixture {
    /// Random patterns (10% wildcards) plus the planted ones.
    pub trie: PatternTrie<Leaf>,
    /// Depth 5, shares four levels with planted patterns, matches nothing.
    pub miss_deep: Topic,
    /// Unknown first segment: matches nothing.
    pub miss_first: Topic,
    /// Matches exactly one (literal) pattern.
    pub hit_one: Topic,
    /// Matches exactly [`TargetFixture::MANY`] patterns.
    pub hit_many: Topic,
}

impl TargetFixture {
    /// Matches of `hit_many`.
    pub const MANY: usize = 8;
    /// Random patterns besides the planted ones.
    pub const PATTERNS: usize = 100_000;
    /// Depth of the random patterns and of every target topic.
    pub const DEPTH: usize = 5;

    /// Builds the fixture (deterministic) with `wildcard_percent` of the random patterns
    /// wildcarded, and checks the planted counts by brute force.
    pub fn new(wildcard_percent: u32) -> Self {
        let shape = TrieShape { patterns: Self::PATTERNS, wildcard_percent, depth: Self::DEPTH };
        let mut rng = Rng::new(shape.seed());
        let mut seen = HashSet::with_capacity(shape.patterns);
        let mut trie = PatternTrie::with_seed(HashSeed::fixed(TABLE_SEED));
        let mut present = Vec::with_capacity(shape.patterns + 80);
        while present.len() < shape.patterns {
            let text = generate_pattern(&mut rng, shape);
            if seen.insert(text.clone()) {
                present.push(pattern(&text));
            }
        }
        let planted_literals = (0..64).map(|i| format!("orgP.realmP.siteP.deviceP.kindP{i}"));
        let planted_wildcards = [
            "orgP.realmQ.siteP.deviceP.kindP",
            "orgP.realmQ.siteP.deviceP.*",
            "orgP.realmQ.siteP.*.kindP",
            "orgP.realmQ.*.deviceP.kindP",
            "orgP.*.siteP.deviceP.kindP",
            "orgP.realmQ.**",
            "orgP.realmQ.**.kindP",
            "orgP.realmQ.siteP.**",
        ];
        present.extend(planted_literals.map(|t| pattern(&t)));
        present.extend(planted_wildcards.iter().map(|t| pattern(t)));
        for p in &present {
            *trie.entry(p) += 1;
        }
        let fixture = TargetFixture {
            trie,
            miss_deep: topic("orgP.realmP.siteP.deviceP.kindnone"),
            miss_first: topic("orgnone.realmP.siteP.deviceP.kindP"),
            hit_one: topic("orgP.realmP.siteP.deviceP.kindP7"),
            hit_many: topic("orgP.realmQ.siteP.deviceP.kindP"),
        };
        for (t, expected) in [
            (&fixture.miss_deep, 0),
            (&fixture.miss_first, 0),
            (&fixture.hit_one, 1),
            (&fixture.hit_many, Self::MANY),
        ] {
            assert_eq!(brute_force_count(&present, t), expected, "planted topic {t:?}");
            assert_eq!(trie_match_count(&fixture.trie, t), expected, "trie on {t:?}");
        }
        fixture
    }
}

impl Default for TargetFixture {
    fn default() -> Self {
        Self::new(10)
    }
}
/// Measured: match `topic`, count the leaves.
#[inline(never)]
pub fn trie_match_count(trie: &PatternTrie<Leaf>, topic: &Topic) -> usize {
    let mut count = 0;
    trie.for_each_match(black_box(topic), |leaf| count += black_box(*leaf) as usize);
    black_box(count)
}

/// Measured: take one reference on `pattern` (the subscribe path).
#[inline(never)]
pub fn trie_insert(trie: &mut PatternTrie<Leaf>, pattern: &Pattern) -> Leaf {
    let leaf = trie.entry(black_box(pattern));
    *leaf += 1;
    black_box(*leaf)
}

/// Measured: drop one reference on `pattern`, removing it at zero (the unsubscribe path).
#[inline(never)]
pub fn trie_remove(trie: &mut PatternTrie<Leaf>, pattern: &Pattern) -> bool {
    black_box(trie.remove_with(black_box(pattern), |count| {
        *count -= 1;
        *count == 0
    }))
}

/// Measured: match through the cache, count the leaves.
#[inline(never)]
pub fn cache_match_count(
    cache: &mut MatchCache,
    trie: &PatternTrie<Leaf>,
    topic: &Topic,
) -> (Lookup, usize) {
    let mut count = 0;
    let lookup =
        cache.for_each_match(trie, black_box(topic), |leaf| count += black_box(*leaf) as usize);
    black_box((lookup, count))
}
