//! Instruction counts (iai-callgrind) of the pattern trie and its match cache: the shape
//! matrix (1K, 10K, 100K patterns) and the depth-5, 100K-pattern target. See `instructions.rs`
//! for the conventions; `bench/check-budgets.sh` runs both files (`--quick` only the other).

use fovea_bench::trie::{
    bench_cache, cache_match_count, trie_insert, trie_match_count, trie_remove, TargetFixture,
    TrieFixture, TrieShape,
};
use fovea_codec::Topic;
use fovea_trie::{Lookup, MatchCache};
use iai_callgrind::{
    library_benchmark, library_benchmark_group, main, Callgrind, LibraryBenchmarkConfig,
};

// ---- trie: the shape matrix ----

fn fixture(patterns: usize, wildcard_percent: u32, depth: usize) -> Box<TrieFixture> {
    Box::new(TrieFixture::new(TrieShape { patterns, wildcard_percent, depth }))
}

/// Lists the bench matrix once for each trie bench function.
macro_rules! per_shape {
    ($name:ident, $teardown:ident, |$fx:ident| $body:expr) => {
        per_shape!(@bench $name, $teardown, $fx, $fx, $body);
    };
    ($name:ident, $teardown:ident, |mut $fx:ident| $body:expr) => {
        per_shape!(@bench $name, $teardown, mut $fx, $fx, $body);
    };
    (@bench $name:ident, $teardown:ident, $binding:pat_param, $fx:ident, $body:expr) => {
        #[library_benchmark(setup = fixture, teardown = $teardown)]
        #[bench::k1_w0_d3(1_000, 0, 3)]
        #[bench::k1_w0_d8(1_000, 0, 8)]
        #[bench::k1_w10_d3(1_000, 10, 3)]
        #[bench::k1_w10_d8(1_000, 10, 8)]
        #[bench::k1_w50_d3(1_000, 50, 3)]
        #[bench::k1_w50_d8(1_000, 50, 8)]
        #[bench::k10_w0_d3(10_000, 0, 3)]
        #[bench::k10_w0_d8(10_000, 0, 8)]
        #[bench::k10_w10_d3(10_000, 10, 3)]
        #[bench::k10_w10_d8(10_000, 10, 8)]
        #[bench::k10_w50_d3(10_000, 50, 3)]
        #[bench::k10_w50_d8(10_000, 50, 8)]
        #[bench::k100_w0_d3(100_000, 0, 3)]
        #[bench::k100_w0_d8(100_000, 0, 8)]
        #[bench::k100_w10_d3(100_000, 10, 3)]
        #[bench::k100_w10_d8(100_000, 10, 8)]
        #[bench::k100_w50_d3(100_000, 50, 3)]
        #[bench::k100_w50_d8(100_000, 50, 8)]
        fn $name($binding: Box<TrieFixture>) -> (usize, Box<TrieFixture>) {
            let out = $body;
            (out, $fx)
        }
    };
}

fn check_hit((count, fx): (usize, Box<TrieFixture>)) {
    assert_eq!(count, fx.topic_hit_matches, "{}: hit count", fx.shape.label());
}

fn check_miss((count, fx): (usize, Box<TrieFixture>)) {
    assert_eq!(count, 0, "{}: miss count", fx.shape.label());
}

fn check_insert((count, fx): (usize, Box<TrieFixture>)) {
    assert_eq!(count, 1, "{}: inserted a fresh pattern", fx.shape.label());
    assert_eq!(fx.trie.len(), fx.present.len() + 1);
}

fn check_remove((removed, fx): (usize, Box<TrieFixture>)) {
    assert_eq!(removed, 1, "{}: removed", fx.shape.label());
    assert_eq!(fx.trie.len(), fx.present.len() - 1);
}

per_shape!(match_hit, check_hit, |fx| trie_match_count(&fx.trie, &fx.topic_hit));
per_shape!(match_miss, check_miss, |fx| trie_match_count(&fx.trie, &fx.topic_miss));
per_shape!(insert, check_insert, |mut fx| trie_insert(&mut fx.trie, &fx.absent[0]) as usize);
per_shape!(remove, check_remove, |mut fx| {
    let victim = fx.present.len() / 2;
    usize::from(trie_remove(&mut fx.trie, &fx.present[victim]))
});

library_benchmark_group!(name = trie; benchmarks = match_hit, match_miss, insert, remove);

// ---- trie: the depth-5, 100K-pattern target, and the match cache ----

/// Which topic of the target fixture a bench matches.
#[derive(Debug, Clone, Copy)]
enum Target {
    MissFirst,
    MissDeep,
    HitOne,
    HitMany,
}

fn target_topic(which: Target, fx: &TargetFixture) -> (&Topic, usize) {
    match which {
        Target::MissFirst => (&fx.miss_first, 0),
        Target::MissDeep => (&fx.miss_deep, 0),
        Target::HitOne => (&fx.hit_one, 1),
        Target::HitMany => (&fx.hit_many, TargetFixture::MANY),
    }
}

type TargetRun = (usize, Target, Box<TargetFixture>);

fn target_fixture(wildcard_percent: u32, which: Target) -> (Target, Box<TargetFixture>) {
    (which, Box::new(TargetFixture::new(wildcard_percent)))
}

fn check_target((count, which, fx): TargetRun) {
    assert_eq!(count, target_topic(which, &fx).1, "{which:?}");
}

#[library_benchmark(setup = target_fixture, teardown = check_target)]
#[bench::w0_miss_first(0, Target::MissFirst)]
#[bench::w0_miss_deep(0, Target::MissDeep)]
#[bench::w0_hit_one(0, Target::HitOne)]
#[bench::w0_hit_many(0, Target::HitMany)]
#[bench::w10_miss_first(10, Target::MissFirst)]
#[bench::w10_miss_deep(10, Target::MissDeep)]
#[bench::w10_hit_one(10, Target::HitOne)]
#[bench::w10_hit_many(10, Target::HitMany)]
fn target_match((which, fx): (Target, Box<TargetFixture>)) -> TargetRun {
    let (topic, _) = target_topic(which, &fx);
    (trie_match_count(&fx.trie, topic), which, fx)
}

type CacheRun = ((Lookup, usize), Target, Box<TargetFixture>, Box<MatchCache>);

/// The 10%-wildcard target trie with a warm cache (the topic looked up once) or a cold one.
fn cache_fixture(which: Target, warm: bool) -> (Target, Box<TargetFixture>, Box<MatchCache>) {
    let fx = Box::new(TargetFixture::new(10));
    let mut cache = Box::new(bench_cache());
    if warm {
        cache_match_count(&mut cache, &fx.trie, target_topic(which, &fx).0);
    }
    (which, fx, cache)
}

fn check_cache_hit(((lookup, count), which, fx, _): CacheRun) {
    assert_eq!((lookup, count), (Lookup::Hit, target_topic(which, &fx).1), "{which:?}");
}

fn check_cache_miss(((lookup, count), which, fx, _): CacheRun) {
    assert_eq!((lookup, count), (Lookup::Miss, target_topic(which, &fx).1), "{which:?}");
}

#[library_benchmark(setup = cache_fixture, teardown = check_cache_hit)]
#[bench::hit_one(Target::HitOne, true)]
#[bench::hit_many(Target::HitMany, true)]
fn cache_hit((which, fx, mut cache): (Target, Box<TargetFixture>, Box<MatchCache>)) -> CacheRun {
    let (topic, _) = target_topic(which, &fx);
    (cache_match_count(&mut cache, &fx.trie, topic), which, fx, cache)
}

#[library_benchmark(setup = cache_fixture, teardown = check_cache_miss)]
#[bench::hit_one(Target::HitOne, false)]
#[bench::hit_many(Target::HitMany, false)]
fn cache_miss((which, fx, mut cache): (Target, Box<TargetFixture>, Box<MatchCache>)) -> CacheRun {
    let (topic, _) = target_topic(which, &fx);
    (cache_match_count(&mut cache, &fx.trie, topic), which, fx, cache)
}

library_benchmark_group!(name = trie_target; benchmarks = target_match, cache_hit, cache_miss);

main!(
    config = LibraryBenchmarkConfig::default().tool(Callgrind::with_args(["--cache-sim=no"]));
    library_benchmark_groups = trie_target, trie
);
