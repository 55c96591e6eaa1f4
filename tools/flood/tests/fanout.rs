//! Fan-out through a real node (in-process shards on loopback) driven by the flood library:
//! the counts must be exact, with nothing lost, duplicated, reordered or unexpected.

mod common;

use fovea_flood::params::Fanout;
use fovea_flood::schedule::Arrivals;

fn fanout(publishers: usize, subscribers: usize, rate: f64) -> Fanout {
    Fanout {
        publishers,
        subscribers,
        payload: 64,
        rate,
        arrivals: Arrivals::Uniform,
        topic: "flood.{p}".into(),
        patterns: vec!["flood.*".into()],
    }
}

#[test]
fn two_publishers_five_subscribers_exact_counts() {
    let node = common::start_node(1);
    let mut c = common::common(&node);
    c.warmup_s = 0.5;
    let p = fanout(2, 5, 500.0);
    let r = fovea_flood::fanout(&c, &p).expect("run completes");
    // 250 msg/s per publisher for 2.5 s, on a fixed schedule: exactly 625 each.
    assert_eq!(r.num("publishes"), 1250.0, "{}", r.human);
    assert_eq!(r.num("expected_deliveries"), 1250.0 * 5.0, "{}", r.human);
    assert_eq!(r.num("deliveries"), 1250.0 * 5.0, "{}", r.human);
    for k in ["lost", "duplicates", "reordered", "unexpected", "errors", "publishes_skipped"] {
        assert_eq!(r.num(k), 0.0, "{k}: {}", r.human);
    }
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    // Warm-up excluded: only the 2 s window's 1000 publishes are measured and timed.
    assert_eq!(r.num("publishes_measured"), 1000.0, "{}", r.human);
    assert_eq!(r.num("samples"), 1000.0 * 5.0, "{}", r.human);
    assert!(r.num("p50_us") > 0.0 && r.num("p99_us") >= r.num("p50_us"), "{}", r.human);
    node.shutdown();
}

#[test]
fn overlapping_patterns_deliver_once_and_unmatched_publishers_not_at_all() {
    // Two shards and two flood threads: connections and publishers spread over both.
    let node = common::start_node(2);
    let mut c = common::common(&node);
    c.threads = 2;
    c.duration_s = 1.0;
    let mut p = fanout(3, 4, 300.0);
    // Publisher 0 matches both patterns (one DELIVER listing both subscriptions), 1 matches
    // one, 2 matches none.
    p.patterns = vec!["flood.0".into(), "*.0".into(), "flood.1".into()];
    let r = fovea_flood::fanout(&c, &p).expect("run completes");
    assert_eq!(r.num("publishes"), 300.0, "{}", r.human);
    // Publishers 0 and 1 are matched: 100 messages each, to 4 subscribers.
    assert_eq!(r.num("expected_deliveries"), 800.0, "{}", r.human);
    assert_eq!(r.num("deliveries"), 800.0, "{}", r.human);
    for k in ["lost", "duplicates", "reordered", "unexpected", "errors"] {
        assert_eq!(r.num(k), 0.0, "{k}: {}", r.human);
    }
    node.shutdown();
}

#[test]
fn legacy_driver_and_poisson_arrivals() {
    let node = common::start_node(1);
    let mut c = common::common(&node);
    c.duration_s = 1.0;
    let mut p = fanout(1, 3, 400.0);
    p.arrivals = Arrivals::Poisson;
    let r = fovea_flood::fanout_with(&c, &p, true).expect("run completes");
    assert_eq!(r.json["io_driver"], "legacy");
    let published = r.num("publishes");
    // A Poisson process of mean 400 over 1 s: far from 0, near 400.
    assert!((250.0..550.0).contains(&published), "{}", r.human);
    assert_eq!(r.num("deliveries"), published * 3.0, "{}", r.human);
    assert_eq!(r.num("lost"), 0.0, "{}", r.human);
    node.shutdown();
}

#[test]
fn pingpong_and_connect_storm() {
    let node = common::start_node(1);
    let mut c = common::common(&node);
    c.duration_s = 1.0;
    let pp =
        fovea_flood::params::Pingpong { connections: 8, rate: 400.0, arrivals: Arrivals::Uniform };
    let r = fovea_flood::pingpong(&c, &pp).expect("pingpong completes");
    assert_eq!(r.num("pings"), 400.0, "{}", r.human);
    assert_eq!(r.num("pongs"), 400.0, "{}", r.human);
    assert_eq!(r.num("lost"), 0.0, "{}", r.human);
    assert!(r.num("p50_us") > 0.0, "{}", r.human);

    let storm =
        fovea_flood::params::Connect { connections: 60, rate: 0.0, inflight: 16, hold_s: 0.2 };
    let r = fovea_flood::connect(&c, &storm).expect("storm completes");
    assert_eq!(r.num("connected"), 60.0, "{}", r.human);
    assert_eq!(r.num("failed"), 0.0, "{}", r.human);
    assert_eq!(r.num("held_at_end"), 60.0, "{}", r.human);
    assert_eq!(r.num("samples"), 60.0, "{}", r.human);
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    node.shutdown();
}

#[test]
fn hold_after_keeps_the_peers_connected_and_reads_the_nodes_memory_then() {
    let node = common::start_node(1);
    let mut c = common::common(&node);
    c.warmup_s = 0.0;
    c.duration_s = 0.5;
    c.hold_after_s = 0.5;
    // The node runs in this process: its memory is ours.
    c.node_pid = Some(std::process::id());
    let r = fovea_flood::fanout(&c, &fanout(1, 3, 100.0)).expect("run completes");
    assert_eq!(r.num("lost"), 0.0, "{}", r.human);
    assert_eq!(r.num("hold_after_s"), 0.5, "{}", r.human);
    assert!(r.num("node_rss_kib_after_hold") > 0.0, "{}", r.json);
    node.shutdown();
}
