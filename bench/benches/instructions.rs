//! Instruction counts (iai-callgrind) of the same measured calls as the criterion benches.
//!
//! Fixtures are built in `setup` and checked in `teardown`, both outside the counted region; the
//! bench function hands its boxed fixture back so that neither a move of a large struct nor its
//! drop is counted. `bench/check-budgets.sh` runs this and compares with `bench/budgets.toml`.
//! Cache simulation is off: budgets are on instructions, and it makes the 100K-pattern setups
//! several times slower under valgrind.

use bytes::{Bytes, BytesMut};
use fovea_bench::codec::{
    decode, decode_split, encode_deliver_head_into, encode_deliver_tail_once, encode_frame,
    encode_publish_into, FrameFixture, Kind, SUB_IDS,
};
use fovea_bench::fanout::{handoff_batch, plan_publish, FanoutFixture, HandoffFixture};
use fovea_bench::trie::{
    bench_cache, cache_match_count, trie_insert, trie_match_count, trie_remove, TargetFixture,
    TrieFixture, TrieShape,
};
use fovea_codec::{Frame, Topic};
use fovea_fanout::PlanOutcome;
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

// ---- codec ----

/// Lists the payload sizes once for each codec bench function over payload-carrying kinds.
macro_rules! per_size {
    ($name:ident, $setup:ident, $teardown:ident, $kind:expr, $run:ty, |$input:pat_param| $body:expr) => {
        #[library_benchmark(setup = $setup, teardown = $teardown)]
        #[bench::b16($kind, 16)]
        #[bench::b64($kind, 64)]
        #[bench::b1k($kind, 1024)]
        #[bench::b16k($kind, 16 * 1024)]
        fn $name($input: Box<(FrameFixture, BytesMut)>) -> $run {
            $body
        }
    };
}

/// A frame fixture and the buffer its bench works on (a receive stream, or an output buffer).
type CodecRun = (usize, Box<(FrameFixture, BytesMut)>);

fn stream_fixture(kind: Kind, size: usize) -> Box<(FrameFixture, BytesMut)> {
    let fx = FrameFixture::new(kind, size);
    let stream = fx.stream();
    Box::new((fx, stream))
}

fn output_fixture(kind: Kind, size: usize) -> Box<(FrameFixture, BytesMut)> {
    let mut fx = FrameFixture::new(kind, size);
    let out = std::mem::take(&mut fx.out);
    Box::new((fx, out))
}

/// A decode bench hands back the frame (compared and dropped in teardown, uncounted).
type DecodeRun = (Frame, Box<(FrameFixture, BytesMut)>);

fn decode_next(mut state: Box<(FrameFixture, BytesMut)>) -> DecodeRun {
    let (fx, buf) = &mut *state;
    let frame = decode(buf, &fx.limits).expect("valid").expect("whole frame");
    (frame, state)
}

fn check_len((len, state): CodecRun) {
    assert_eq!(len, state.0.bytes.len(), "{:?}: encoded length", state.0.kind);
}

fn check_decoded((frame, state): DecodeRun) {
    assert_eq!(frame, state.0.frame, "{:?}: decoded frame", state.0.kind);
    assert!(state.1.is_empty(), "{:?}: one frame consumed", state.0.kind);
}

per_size!(decode_publish, stream_fixture, check_decoded, Kind::Publish, DecodeRun, |s| {
    decode_next(s)
});
per_size!(decode_deliver, stream_fixture, check_decoded, Kind::Deliver, DecodeRun, |s| {
    decode_next(s)
});
per_size!(decode_call, stream_fixture, check_decoded, Kind::Call, DecodeRun, |s| decode_next(s));
per_size!(decode_reply, stream_fixture, check_decoded, Kind::Reply, DecodeRun, |s| {
    decode_next(s)
});

#[library_benchmark(setup = stream_fixture, teardown = check_decoded)]
#[bench::pattern(Kind::Subscribe, 0)]
fn decode_subscribe(s: Box<(FrameFixture, BytesMut)>) -> DecodeRun {
    decode_next(s)
}

/// The first half of a PUBLISH in the receive buffer, the second half to feed.
fn split_fixture(size: usize) -> Box<(FrameFixture, BytesMut)> {
    let fx = FrameFixture::new(Kind::Publish, size);
    let first = fx.split_stream(fx.bytes.len() / 2);
    Box::new((fx, first))
}

#[library_benchmark(setup = split_fixture, teardown = check_decoded)]
#[bench::publish_b64(64)]
#[bench::publish_b1k(1024)]
fn decode_publish_split(mut s: Box<(FrameFixture, BytesMut)>) -> DecodeRun {
    let (fx, buf) = &mut *s;
    let rest = &fx.bytes[fx.bytes.len() / 2..];
    let frame = decode_split(buf, rest, &fx.limits).expect("whole frame");
    (frame, s)
}

per_size!(encode_publish, output_fixture, check_len, Kind::Publish, CodecRun, |mut s| {
    let (fx, out) = &mut *s;
    (encode_publish_into(&fx.topic, &fx.payload, out), s)
});
per_size!(encode_deliver_head, output_fixture, check_head, Kind::Deliver, CodecRun, |mut s| {
    let (fx, out) = &mut *s;
    (encode_deliver_head_into(&SUB_IDS, fx.deliver_tail.len(), out), s)
});
per_size!(encode_deliver_tail, output_fixture, check_tail, Kind::Deliver, TailRun, |s| {
    (encode_deliver_tail_once(&s.0.topic, &s.0.payload), s)
});
per_size!(encode_call, output_fixture, check_len, Kind::Call, CodecRun, |mut s| {
    let (fx, out) = &mut *s;
    (encode_frame(&fx.frame, out), s)
});
per_size!(encode_reply, output_fixture, check_len, Kind::Reply, CodecRun, |mut s| {
    let (fx, out) = &mut *s;
    (encode_frame(&fx.frame, out), s)
});

#[library_benchmark(setup = output_fixture, teardown = check_len)]
#[bench::pattern(Kind::Subscribe, 0)]
fn encode_subscribe(mut s: Box<(FrameFixture, BytesMut)>) -> CodecRun {
    let (fx, out) = &mut *s;
    (encode_frame(&fx.frame, out), s)
}

fn check_head((len, state): CodecRun) {
    let (fx, out) = &*state;
    assert_eq!(len + fx.deliver_tail.len(), fx.bytes.len(), "head + tail = DELIVER");
    assert_eq!(out[..], fx.bytes[..len], "head bytes");
}

/// The tail is a fresh `Bytes`: compared and dropped in teardown.
type TailRun = (Bytes, Box<(FrameFixture, BytesMut)>);

fn check_tail((tail, state): TailRun) {
    assert_eq!(tail, state.0.deliver_tail, "tail bytes");
}

library_benchmark_group!(
    name = codec;
    benchmarks = decode_publish, decode_deliver, decode_subscribe, decode_call, decode_reply,
        decode_publish_split, encode_publish, encode_deliver_head, encode_deliver_tail,
        encode_subscribe, encode_call, encode_reply
);

// ---- fan-out: planning one publish onto N subscribers, the cross-shard handoff ----

fn fanout_fixture(subscribers: usize) -> Box<FanoutFixture> {
    Box::new(FanoutFixture::new(subscribers))
}

fn check_plan((outcome, fx): (PlanOutcome, Box<FanoutFixture>)) {
    fx.check(outcome, 1);
}

#[library_benchmark(setup = fanout_fixture, teardown = check_plan)]
#[bench::n1(1)]
#[bench::n10(10)]
#[bench::n100(100)]
#[bench::n1000(1_000)]
#[bench::n10000(10_000)]
fn plan(mut fx: Box<FanoutFixture>) -> (PlanOutcome, Box<FanoutFixture>) {
    (plan_publish(&mut fx), fx)
}

fn handoff_fixture(batch: usize) -> Box<HandoffFixture> {
    Box::new(HandoffFixture::new(batch))
}

fn check_handoff((received, fx): (usize, Box<HandoffFixture>)) {
    assert_eq!(received, fx.batch, "every message of the batch received");
}

#[library_benchmark(setup = handoff_fixture, teardown = check_handoff)]
#[bench::batch1(1)]
#[bench::batch64(64)]
fn handoff(fx: Box<HandoffFixture>) -> (usize, Box<HandoffFixture>) {
    (handoff_batch(&fx), fx)
}

library_benchmark_group!(name = fanout; benchmarks = plan, handoff);

main!(
    config = LibraryBenchmarkConfig::default().tool(Callgrind::with_args(["--cache-sim=no"]));
    library_benchmark_groups = codec, fanout, trie_target, trie
);
