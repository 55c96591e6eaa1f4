//! Wall-clock benches of the pattern trie and its match cache (criterion).
//!
//! Groups: `trie/match` (hit and miss topic per shape), `trie/insert`, `trie/remove` (per pattern,
//! timed in batches so the timer's own cost is amortised), `trie/target` (the depth-5, 100K trie
//! the instruction targets refer to) and `trie/cache` (direct walk versus cache hit and miss).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use fovea_bench::rng::Rng;
use fovea_bench::trie::{
    bench_cache, cache_match_count, topic, trie_insert, trie_match_count, trie_remove,
    TargetFixture, TrieFixture, TrieShape, ABSENT_COUNT,
};
use fovea_codec::topic::{Pattern, Topic};
use fovea_trie::{Lookup, PatternTrie};

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20)
}

/// Times `op` on `batch` patterns per round and `undo` untimed, until `iters` ops are timed.
fn batched(
    iters: u64,
    trie: &mut PatternTrie<u32>,
    batch: &[Pattern],
    op: fn(&mut PatternTrie<u32>, &Pattern),
    undo: fn(&mut PatternTrie<u32>, &Pattern),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let n = (iters - done).min(batch.len() as u64) as usize;
        let start = Instant::now();
        for p in &batch[..n] {
            op(trie, p);
        }
        total += start.elapsed();
        for p in &batch[..n] {
            undo(trie, p);
        }
        done += n as u64;
    }
    total
}

fn insert(trie: &mut PatternTrie<u32>, p: &Pattern) {
    trie_insert(trie, p);
}

fn remove(trie: &mut PatternTrie<u32>, p: &Pattern) {
    assert!(trie_remove(trie, p));
}

fn shapes(c: &mut Criterion) {
    for shape in TrieShape::matrix() {
        let mut fx = TrieFixture::new(shape);
        let label = shape.label();
        assert_eq!(trie_match_count(&fx.trie, &fx.topic_hit), fx.topic_hit_matches);
        assert_eq!(trie_match_count(&fx.trie, &fx.topic_miss), 0);

        let mut group = c.benchmark_group("trie/match");
        group.bench_function(BenchmarkId::new("hit", &label), |b| {
            b.iter(|| trie_match_count(&fx.trie, &fx.topic_hit))
        });
        group.bench_function(BenchmarkId::new("miss", &label), |b| {
            b.iter(|| trie_match_count(&fx.trie, &fx.topic_miss))
        });
        group.finish();

        let spread = fx.present.len() / ABSENT_COUNT;
        let victims: Vec<Pattern> =
            fx.present.iter().step_by(spread.max(1)).take(ABSENT_COUNT).cloned().collect();
        let (len, nodes) = (fx.trie.len(), fx.trie.node_count());
        c.benchmark_group("trie/insert").bench_function(&label, |b| {
            b.iter_custom(|iters| batched(iters, &mut fx.trie, &fx.absent, insert, remove))
        });
        c.benchmark_group("trie/remove").bench_function(&label, |b| {
            b.iter_custom(|iters| batched(iters, &mut fx.trie, &victims, remove, insert))
        });
        assert_eq!((fx.trie.len(), fx.trie.node_count()), (len, nodes), "batches undo themselves");
    }
}

fn target(c: &mut Criterion) {
    let mut group = c.benchmark_group("trie/target");
    for wildcard_percent in [0, 10] {
        let fx = TargetFixture::new(wildcard_percent);
        for (name, t) in [
            ("miss_first", &fx.miss_first),
            ("miss_deep", &fx.miss_deep),
            ("hit_one", &fx.hit_one),
            ("hit_many", &fx.hit_many),
        ] {
            let id = BenchmarkId::new(name, format!("w{wildcard_percent}"));
            group.bench_function(id, |b| b.iter(|| trie_match_count(&fx.trie, t)));
        }
    }
    group.finish();
}

/// Distinct topics of the target trie's vocabulary, more than the cache holds.
fn cycling_topics(count: usize) -> Vec<Topic> {
    let mut rng = Rng::new(0xCAC4E);
    (0..count)
        .map(|i| {
            topic(&format!(
                "org{}.realm{}.site{}.device{}.kind{i}",
                rng.below(8),
                rng.below(32),
                rng.below(4096),
                rng.below(4096)
            ))
        })
        .collect()
}

fn cache(c: &mut Criterion) {
    let fx = TargetFixture::new(10);
    let mut group = c.benchmark_group("trie/cache");
    for (name, t) in [("hit_one", &fx.hit_one), ("hit_many", &fx.hit_many)] {
        let mut cache = bench_cache();
        assert_eq!(cache_match_count(&mut cache, &fx.trie, t).0, Lookup::Miss);
        let expected = trie_match_count(&fx.trie, t);
        assert_eq!(cache_match_count(&mut cache, &fx.trie, t), (Lookup::Hit, expected));
        group.bench_function(BenchmarkId::new("direct", name), |b| {
            b.iter(|| trie_match_count(&fx.trie, t))
        });
        group.bench_function(BenchmarkId::new("cached_hit", name), |b| {
            b.iter(|| cache_match_count(&mut cache, &fx.trie, t))
        });
    }
    // Every lookup misses: 4096 topics through a 1024-entry cache, in order.
    let topics = cycling_topics(4096);
    let mut cache = bench_cache();
    let mut next = 0;
    group.bench_function("cached_miss/cycling", |b| {
        b.iter(|| {
            next = (next + 1) % topics.len();
            let (lookup, n) = cache_match_count(&mut cache, &fx.trie, &topics[next]);
            black_box(n);
            lookup
        })
    });
    assert_eq!(cache.hits(), 0, "the cycling bench must only miss");
    let mut next = 0;
    group.bench_function("direct/cycling", |b| {
        b.iter(|| {
            next = (next + 1) % topics.len();
            trie_match_count(&fx.trie, &topics[next])
        })
    });
    group.finish();
}

criterion_group! { name = benches; config = config(); targets = target, cache, shapes }
criterion_main!(benches);
