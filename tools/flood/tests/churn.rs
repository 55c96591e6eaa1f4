//! Subscription churn through a real node: subscribers subscribe, unsubscribe and reconnect
//! while a publisher publishes; every stably active subscription must get every message
//! published in its window exactly once and in order.

mod common;

use fovea_flood::params::Churn;

#[test]
fn churn_with_reconnects_breaks_no_promise() {
    let node = common::start_node(1);
    let mut c = common::common(&node);
    c.duration_s = 2.0;
    let p = Churn {
        publishers: 1,
        subscribers: 6,
        payload: 64,
        rate: 500.0,
        churn_rate: 60.0,
        reconnect_every_s: 0.7,
        topic: "flood.churn".into(),
    };
    let r = fovea_flood::churn(&c, &p).expect("run completes");
    assert_eq!(r.num("publishes"), 1000.0, "{}", r.human);
    for k in ["violations", "window_missing", "duplicated_or_reordered", "unexpected", "errors"] {
        assert_eq!(r.num(k), 0.0, "{k}: {}", r.human);
    }
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    // The churn happened: 120 operations due, alternating per subscriber, and each of the 6
    // connections replaced twice (at 0.7 s + k/6 of 0.7 s, and 0.7 s later, inside 2 s).
    assert!(r.num("subscribes") >= 30.0 && r.num("unsubscribes") >= 30.0, "{}", r.human);
    assert!(r.num("reconnects") >= 6.0, "{}", r.human);
    // Windows: the 6 initial subscriptions, the re-subscriptions and those after reconnects.
    assert!(r.num("windows") > 40.0, "{}", r.human);
    assert!(r.num("deliveries") > 0.0, "{}", r.human);
    node.shutdown();
}
