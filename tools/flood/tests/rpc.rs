//! RPC through a real node (in-process shards on loopback) driven by the flood library: every
//! call answered exactly once, and round robin spreading the calls evenly over the providers.

mod common;

use fovea_flood::params::Rpc;
use fovea_flood::schedule::Arrivals;

fn rpc(providers: usize, callers: usize, rate: f64) -> Rpc {
    Rpc {
        providers,
        callers,
        procedure: "bench.echo".into(),
        rate,
        arrivals: Arrivals::Uniform,
        payload: 64,
        deadline_ms: 5_000,
        idempotent: false,
    }
}

fn invocations(r: &fovea_flood::report::Report) -> Vec<u64> {
    r.json["invocations_per_provider"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|v| v.as_u64().expect("a count"))
        .collect()
}

fn assert_exact(r: &fovea_flood::report::Report, calls: f64) {
    assert_eq!(r.num("calls"), calls, "{}", r.human);
    assert_eq!(r.num("replies"), calls, "{}", r.human);
    for k in
        ["timeouts", "duplicates", "unexpected", "call_errors_total", "errors", "calls_skipped"]
    {
        assert_eq!(r.num(k), 0.0, "{k}: {}", r.human);
    }
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    assert_eq!(invocations(r).iter().sum::<u64>() as f64, calls, "{}", r.human);
}

#[test]
fn every_call_answered_once_and_round_robin_is_even() {
    let node = common::start_node(1);
    let mut c = common::common(&node);
    c.warmup_s = 0.5;
    c.duration_s = 1.0;
    let r = fovea_flood::rpc(&c, &rpc(2, 3, 600.0)).expect("run completes");
    // 200 calls/s per caller for 1.5 s on a fixed schedule: exactly 300 each.
    assert_exact(&r, 900.0);
    assert_eq!(r.num("calls_measured"), 600.0, "{}", r.human);
    assert_eq!(r.num("samples"), 600.0, "warm-up calls are not timed: {}", r.human);
    assert!(r.num("p50_us") > 0.0 && r.num("p99_us") >= r.num("p50_us"), "{}", r.human);
    // One shard holds one round-robin cursor per procedure and steps it once per call, so two
    // providers' counts can differ by at most one, whatever the arrival order of the calls.
    let inv = invocations(&r);
    assert_eq!(inv.len(), 2);
    assert!(inv[0].abs_diff(inv[1]) <= 1, "{inv:?}");
    node.shutdown();
}

#[test]
fn two_shards_two_threads_spread_within_one_call_per_shard() {
    let node = common::start_node(2);
    let mut c = common::common(&node);
    c.threads = 2;
    c.duration_s = 1.0;
    let mut p = rpc(2, 4, 800.0);
    p.idempotent = true;
    p.payload = 1_000;
    let r = fovea_flood::rpc(&c, &p).expect("run completes");
    assert_exact(&r, 800.0);
    // Each shard keeps its own cursor (engine/src/shard/rpc.rs, `Ring`): every shard's calls
    // alternate between the two providers, so the totals differ by at most one per shard.
    let inv = invocations(&r);
    assert!(inv[0].abs_diff(inv[1]) <= 2, "{inv:?}");
    node.shutdown();
}

#[test]
fn no_provider_is_an_answer_counted_by_code() {
    let node = common::start_node(1);
    let mut c = common::common(&node);
    c.duration_s = 0.5;
    let r = fovea_flood::rpc(&c, &rpc(0, 2, 200.0)).expect("run completes");
    assert_eq!(r.num("calls"), 100.0, "{}", r.human);
    assert_eq!(r.json["call_errors"]["NO_PROVIDER"], 100, "{}", r.human);
    assert_eq!(r.num("replies"), 0.0, "{}", r.human);
    assert_eq!(r.num("timeouts"), 0.0, "{}", r.human);
    assert!(r.failures.is_empty(), "every call was answered: {:?}", r.failures);
    node.shutdown();
}
