//! Instruction counts (iai-callgrind) of the same measured calls as the criterion benches:
//! codec, fan-out and the DHT table (this file, quick enough for CI), and the pattern trie
//! (`instructions_trie.rs`, several minutes under valgrind: its 100K-pattern fixtures).
//!
//! Fixtures are built in `setup` and checked in `teardown`, both outside the counted region; the
//! bench function hands its boxed fixture back so that neither a move of a large struct nor its
//! drop is counted. `bench/check-budgets.sh` runs both and compares with `bench/budgets.toml`.
//! Cache simulation is off: budgets are on instructions, and it makes the 100K setups several
//! times slower under valgrind.

use bytes::{Bytes, BytesMut};
use fovea_bench::codec::{
    decode, decode_split, encode_deliver_head_into, encode_deliver_tail_once, encode_frame,
    encode_publish_into, FrameFixture, Kind, SUB_IDS,
};
use fovea_bench::dht::{table_closest, table_insert, TableFixture};
use fovea_bench::fanout::{handoff_batch, plan_publish, FanoutFixture, HandoffFixture};
use fovea_codec::Frame;
use fovea_control::dht::{Contact, Inserted};
use fovea_fanout::PlanOutcome;
use iai_callgrind::{
    library_benchmark, library_benchmark_group, main, Callgrind, LibraryBenchmarkConfig,
};

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

// ---- control: the DHT routing table ----

/// Which insert a bench measures: a contact already known, a newcomer for a full bucket, or a
/// newcomer for a bucket with room.
#[derive(Debug, Clone, Copy)]
enum Insert {
    Refreshed,
    Queued,
    Added,
}

type InsertRun = (Inserted, Insert, Box<TableFixture>);

fn table_fixture(known: usize, which: Insert) -> (Contact, Insert, Box<TableFixture>) {
    let fx = Box::new(TableFixture::new(known));
    let contact = match which {
        Insert::Refreshed => fx.present,
        Insert::Queued => fx.queued[0],
        Insert::Added => fx.added[0],
    };
    (contact, which, fx)
}

fn check_insert_kind((got, which, _): InsertRun) {
    let want = match which {
        Insert::Refreshed => Inserted::Refreshed,
        Insert::Queued => Inserted::Queued,
        Insert::Added => Inserted::Added,
    };
    assert_eq!(got, want, "{which:?}");
}

#[library_benchmark(setup = table_fixture, teardown = check_insert_kind)]
#[bench::k1_refreshed(1_000, Insert::Refreshed)]
#[bench::k1_queued(1_000, Insert::Queued)]
#[bench::k1_added(1_000, Insert::Added)]
#[bench::k100_refreshed(100_000, Insert::Refreshed)]
#[bench::k100_queued(100_000, Insert::Queued)]
#[bench::k100_added(100_000, Insert::Added)]
fn dht_insert((contact, which, mut fx): (Contact, Insert, Box<TableFixture>)) -> InsertRun {
    let now = fx.now;
    (table_insert(&mut fx.table, contact, now), which, fx)
}

fn closest_fixture(known: usize) -> Box<TableFixture> {
    Box::new(TableFixture::new(known))
}

fn check_closest((closest, _): (Vec<Contact>, Box<TableFixture>)) {
    assert_eq!(closest.len(), fovea_control::dht::K, "k contacts");
}

#[library_benchmark(setup = closest_fixture, teardown = check_closest)]
#[bench::k1(1_000)]
#[bench::k100(100_000)]
fn dht_closest(fx: Box<TableFixture>) -> (Vec<Contact>, Box<TableFixture>) {
    (table_closest(&fx.table, &fx.targets[0]), fx)
}

library_benchmark_group!(name = control; benchmarks = dht_insert, dht_closest);

main!(
    config = LibraryBenchmarkConfig::default().tool(Callgrind::with_args(["--cache-sim=no"]));
    library_benchmark_groups = codec, fanout, control
);
