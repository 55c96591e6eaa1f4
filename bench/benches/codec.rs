//! Wall-clock benches of the codec (criterion).
//!
//! Groups: `codec/decode` (stream decoder, one frame), `codec/decode_split` (the frame arrives in
//! two pieces), `codec/encode` (direct encoders where the hot path has one, else the generic
//! `Frame::encode`), each per frame kind and payload size.

use std::time::Duration;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use fovea_bench::codec::{
    decode, decode_split, encode_deliver_head_into, encode_deliver_tail_once, encode_frame,
    encode_publish_into, FrameFixture, Kind, PAYLOAD_SIZES, SUB_IDS,
};

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20)
}

/// Every benched (kind, payload size) pair; SUBSCRIBE has no payload.
fn fixtures() -> Vec<FrameFixture> {
    let mut all: Vec<FrameFixture> = Kind::WITH_PAYLOAD
        .iter()
        .flat_map(|&kind| PAYLOAD_SIZES.iter().map(move |&size| FrameFixture::new(kind, size)))
        .collect();
    all.push(FrameFixture::new(Kind::Subscribe, 0));
    all
}

fn id(fx: &FrameFixture) -> BenchmarkId {
    BenchmarkId::new(fx.kind.name(), fx.payload.len())
}

fn decoding(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec/decode");
    for fx in fixtures() {
        let decoded = decode(&mut fx.stream(), &fx.limits).expect("valid").expect("whole");
        assert_eq!(decoded, fx.frame);
        group.bench_function(id(&fx), |b| {
            b.iter_batched_ref(|| fx.stream(), |buf| decode(buf, &fx.limits), BatchSize::SmallInput)
        });
    }
    group.finish();

    let mut group = c.benchmark_group("codec/decode_split");
    for size in [64, 1024] {
        let fx = FrameFixture::new(Kind::Publish, size);
        let half = fx.bytes.len() / 2;
        let rest = &fx.bytes[half..];
        assert_eq!(
            decode_split(&mut fx.split_stream(half), rest, &fx.limits),
            Some(fx.frame.clone())
        );
        group.bench_function(id(&fx), |b| {
            b.iter_batched_ref(
                || fx.split_stream(half),
                |buf| decode_split(buf, rest, &fx.limits),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn encoding(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec/encode");
    for mut fx in fixtures() {
        let size = fx.payload.len();
        let mut out = std::mem::take(&mut fx.out);
        match fx.kind {
            Kind::Publish => {
                encode_publish_into(&fx.topic, &fx.payload, &mut out);
                assert_eq!(out, fx.bytes);
                group.bench_function(id(&fx), |b| {
                    b.iter(|| encode_publish_into(&fx.topic, &fx.payload, &mut out))
                });
            }
            Kind::Deliver => {
                let tail = encode_deliver_tail_once(&fx.topic, &fx.payload);
                encode_deliver_head_into(&SUB_IDS, tail.len(), &mut out);
                let mut whole = BytesMut::from(&out[..]);
                whole.extend_from_slice(&tail);
                assert_eq!(whole, fx.bytes, "head + tail is the DELIVER frame");
                group.bench_function(BenchmarkId::new("deliver_head", size), |b| {
                    b.iter(|| encode_deliver_head_into(&SUB_IDS, tail.len(), &mut out))
                });
                group.bench_function(BenchmarkId::new("deliver_tail", size), |b| {
                    b.iter(|| encode_deliver_tail_once(&fx.topic, &fx.payload))
                });
            }
            Kind::Subscribe | Kind::Call | Kind::Reply => {
                encode_frame(&fx.frame, &mut out);
                assert_eq!(out, fx.bytes);
                group.bench_function(id(&fx), |b| b.iter(|| encode_frame(&fx.frame, &mut out)));
            }
        }
    }
    group.finish();
}

criterion_group! { name = benches; config = config(); targets = decoding, encoding }
criterion_main!(benches);
