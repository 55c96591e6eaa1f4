//! Wall-clock benches of the DHT routing table (criterion).
//!
//! Groups: `dht/insert` (a known contact refreshed, a newcomer queued for a full bucket, a
//! newcomer added to an empty bucket, timed in batches and undone untimed) and `dht/closest`
//! (the k closest to a random target), each over tables that heard of 1K and 100K nodes.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use fovea_bench::dht::{table_closest, table_insert, table_remove, TableFixture, KNOWN_COUNTS};

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20)
}

fn insert(c: &mut Criterion) {
    let mut group = c.benchmark_group("dht/insert");
    for known in KNOWN_COUNTS {
        let mut fx = TableFixture::new(known);
        let label = fx.label();
        let (present, now) = (fx.present, fx.now);
        group.bench_function(BenchmarkId::new("refreshed", &label), |b| {
            b.iter(|| table_insert(&mut fx.table, present, now))
        });
        let mut next = 0;
        group.bench_function(BenchmarkId::new("queued", &label), |b| {
            b.iter(|| {
                next = (next + 1) % fx.queued.len();
                table_insert(&mut fx.table, fx.queued[next], now)
            })
        });
        let len = fx.table.len();
        group.bench_function(BenchmarkId::new("added", &label), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut done = 0;
                while done < iters {
                    let n = (iters - done).min(fx.added.len() as u64) as usize;
                    let start = Instant::now();
                    for contact in &fx.added[..n] {
                        black_box(table_insert(&mut fx.table, *contact, now));
                    }
                    total += start.elapsed();
                    for contact in &fx.added[..n] {
                        table_remove(&mut fx.table, contact);
                    }
                    done += n as u64;
                }
                total
            })
        });
        assert_eq!(fx.table.len(), len, "batches undo themselves");
    }
    group.finish();
}

fn closest(c: &mut Criterion) {
    let mut group = c.benchmark_group("dht/closest");
    for known in KNOWN_COUNTS {
        let fx = TableFixture::new(known);
        let mut next = 0;
        group.bench_function(fx.label(), |b| {
            b.iter(|| {
                next = (next + 1) % fx.targets.len();
                table_closest(&fx.table, &fx.targets[next])
            })
        });
    }
    group.finish();
}

criterion_group! { name = benches; config = config(); targets = insert, closest }
criterion_main!(benches);
