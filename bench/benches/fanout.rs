//! Wall-clock benches of fan-out (criterion): `fanout/plan` plans one 64-byte publish onto N
//! local subscribers with the engine's planner; `fanout/handoff` hands a batch of DELIVER
//! messages from one shard's outbox to another shard's inbox and consumes it.
//!
//! Plans are timed in runs of `PLANS_PER_RESET` back to back, then the queues are emptied
//! untimed (the shard's flush does that between publishes); throughput is per subscriber.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fovea_bench::fanout::{
    handoff_batch, plan_publish, FanoutFixture, HandoffFixture, HANDOFF_BATCHES, SUBSCRIBER_COUNTS,
};

const PLANS_PER_RESET: u64 = 8;

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20)
}

fn plan(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout/plan");
    for n in SUBSCRIBER_COUNTS {
        let mut fx = FanoutFixture::new(n);
        let outcome = plan_publish(&mut fx);
        fx.check(outcome, 1);
        fx.reset();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut done = 0;
                while done < iters {
                    let k = (iters - done).min(PLANS_PER_RESET);
                    let start = Instant::now();
                    for _ in 0..k {
                        black_box(plan_publish(&mut fx));
                    }
                    total += start.elapsed();
                    done += k;
                    fx.reset();
                }
                total
            })
        });
    }
    g.finish();
}

fn handoff(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout/handoff");
    for n in HANDOFF_BATCHES {
        let fx = HandoffFixture::new(n);
        assert_eq!(handoff_batch(&fx), n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::from_parameter(n), |b| b.iter(|| handoff_batch(&fx)));
    }
    g.finish();
}

criterion_group!(name = benches; config = config(); targets = plan, handoff);
criterion_main!(benches);
