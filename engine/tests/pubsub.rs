//! Pub/sub end to end: real QUIC (quiche + BoringSSL) over loopback UDP against in-process
//! shards on the io_uring runtime. Each test states the behaviour it checks.

mod common;

use std::time::Duration;

use common::*;
use fovea_codec::frame::Frame;

#[test]
fn a_publish_reaches_a_subscriber_with_its_subscription_id() {
    let node = start_node(test_config(2));
    let mut sub = TestClient::connect(node.quic_addr, "default");
    sub.subscribe(7, "sensors.temp");
    let mut publisher = TestClient::connect(node.quic_addr, "default");
    publisher.publish("sensors.temp", b"21.5");
    let d = sub.next_deliver(WAIT).expect("delivery");
    assert_eq!(d.sub_ids.as_slice(), &[7]);
    assert_eq!(d.topic.as_str(), "sensors.temp");
    assert_eq!(&d.payload[..], b"21.5");
    node.shutdown();
}

/// Deterministic pseudo-random numbers for test data (xorshift; seed printed on failure).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

#[test]
fn wildcards_match_exactly_what_the_reference_matcher_says() {
    let seed = rand_u64() | 1;
    eprintln!("seed {seed}");
    let mut rng = Rng(seed);
    let node = start_node(test_config(2));
    // A small alphabet so that patterns and topics collide often.
    let words = ["a", "b", "c"];
    let mut subscribers = Vec::new();
    for _ in 0..6 {
        let mut client = TestClient::connect(node.quic_addr, "default");
        let mut patterns = Vec::new();
        for sub_id in 1..=4u64 {
            let depth = 1 + rng.next() % 4;
            let mut segs: Vec<&str> = Vec::new();
            for _ in 0..depth {
                let seg = match rng.next() % 6 {
                    0 => "*",
                    1 if segs.last() != Some(&"**") => "**",
                    _ => rng.pick(&words),
                };
                segs.push(seg);
            }
            let pattern = segs.join(".");
            client.subscribe(sub_id, &pattern);
            patterns.push((sub_id, pattern.parse::<fovea_codec::Pattern>().unwrap()));
        }
        subscribers.push((client, patterns));
    }
    let mut publisher = TestClient::connect(node.quic_addr, "default");
    let mut topics = Vec::new();
    for i in 0..40u32 {
        let depth = 1 + rng.next() % 4;
        let topic: Vec<&str> = (0..depth).map(|_| rng.pick(&words)).collect();
        let topic = topic.join(".");
        publisher.publish(&topic, &i.to_be_bytes());
        topics.push(topic.parse::<fovea_codec::Topic>().unwrap());
    }
    // A final acknowledged publish orders the check: once it is acknowledged, every earlier
    // publish has been fanned out. It is checked like the others.
    assert!(matches!(
        publisher.publish_acked("c.c.c.c.c", &40u32.to_be_bytes(), None),
        Frame::Ok(_)
    ));
    topics.push("c.c.c.c.c".parse::<fovea_codec::Topic>().unwrap());
    for (client, patterns) in &mut subscribers {
        for (i, topic) in topics.iter().enumerate() {
            let expected: Vec<u64> =
                patterns.iter().filter(|(_, p)| p.matches(topic)).map(|(id, _)| *id).collect();
            if expected.is_empty() {
                continue;
            }
            let d = client
                .next_deliver(WAIT)
                .unwrap_or_else(|| panic!("seed {seed}: no delivery of {topic:?}"));
            assert_eq!(d.topic, *topic, "seed {seed}: deliveries arrive in publish order");
            assert_eq!(&d.payload[..], &(i as u32).to_be_bytes());
            let mut got = d.sub_ids.to_vec();
            got.sort_unstable();
            assert_eq!(got, expected, "seed {seed}: {topic:?} against {patterns:?}");
        }
        client.pump_for(Duration::from_millis(50));
        assert!(
            client.next_deliver(Duration::ZERO).is_none(),
            "seed {seed}: a delivery nobody matched"
        );
    }
    node.shutdown();
}

#[test]
fn realms_are_isolated() {
    let node = start_node(test_config(2));
    let mut a = TestClient::connect(node.quic_addr, "tenant-a");
    a.subscribe(1, "**");
    let mut b = TestClient::connect(node.quic_addr, "tenant-b");
    b.subscribe(1, "**");
    let mut pub_b = TestClient::connect(node.quic_addr, "tenant-b");
    assert!(matches!(pub_b.publish_acked("x.y", b"for b", None), Frame::Ok(_)));
    let d = b.next_deliver(WAIT).expect("same realm delivers");
    assert_eq!(&d.payload[..], b"for b");
    a.pump_for(Duration::from_millis(100));
    assert!(a.next_deliver(Duration::ZERO).is_none(), "no delivery crosses realms");
    node.shutdown();
}

#[test]
fn fan_out_reaches_subscribers_on_every_shard_once() {
    let node = start_node(test_config(2));
    let mut subs: Vec<TestClient> = (0..12)
        .map(|_| {
            let mut c = TestClient::connect(node.quic_addr, "default");
            c.subscribe(1, "fleet.*.status");
            c.subscribe(2, "fleet.**");
            c
        })
        .collect();
    // Peers are spread over both shards by the hash of their random ids.
    let mut publisher = TestClient::connect(node.quic_addr, "default");
    for i in 0..20u32 {
        publisher.publish("fleet.truck7.status", &i.to_be_bytes());
    }
    for c in &mut subs {
        for i in 0..20u32 {
            let d = c
                .next_deliver(WAIT)
                .unwrap_or_else(|| panic!("delivery {i}: closed {:?}", c.closed()));
            let mut ids = d.sub_ids.to_vec();
            ids.sort_unstable();
            assert_eq!(ids, vec![1, 2], "one DELIVER listing both matching subscriptions");
            assert_eq!(&d.payload[..], &i.to_be_bytes(), "per-publisher order");
        }
    }
    let handed = metric(node.http_addr, "fovea_cross_shard_messages_in_total");
    assert!(handed > 0, "both shards took part");
    node.shutdown();
}

#[test]
fn unsubscribe_stops_delivery() {
    let node = start_node(test_config(2));
    let mut sub = TestClient::connect(node.quic_addr, "default");
    sub.subscribe(1, "t");
    let mut publisher = TestClient::connect(node.quic_addr, "default");
    publisher.publish_acked("t", b"1", None);
    assert_eq!(&sub.next_deliver(WAIT).unwrap().payload[..], b"1");
    assert!(matches!(sub.unsubscribe(1), Frame::Ok(_)));
    assert!(
        matches!(sub.unsubscribe(1), Frame::Error(e) if e.code == fovea_codec::ErrorCode::UnknownSubscription as u64)
    );
    publisher.publish_acked("t", b"2", None);
    sub.pump_for(Duration::from_millis(100));
    assert!(sub.next_deliver(Duration::ZERO).is_none());
    node.shutdown();
}

#[test]
fn a_repeated_message_id_is_delivered_once() {
    let node = start_node(test_config(1));
    let mut sub = TestClient::connect(node.quic_addr, "default");
    sub.subscribe(1, "t");
    let mut publisher = TestClient::connect(node.quic_addr, "default");
    assert!(matches!(publisher.publish_acked("t", b"x", Some(42)), Frame::Ok(_)));
    assert!(
        matches!(publisher.publish_acked("t", b"x", Some(42)), Frame::Ok(_)),
        "a retry is acknowledged"
    );
    assert!(matches!(publisher.publish_acked("t", b"y", Some(43)), Frame::Ok(_)));
    assert_eq!(&sub.next_deliver(WAIT).unwrap().payload[..], b"x");
    assert_eq!(&sub.next_deliver(WAIT).unwrap().payload[..], b"y");
    assert_eq!(metric(node.http_addr, "fovea_duplicates_dropped_total"), 1);
    node.shutdown();
}
