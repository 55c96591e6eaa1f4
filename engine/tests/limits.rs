//! Limits and hostile input: each case asserts the documented outcome (docs/OPERATIONS.md) and
//! that other peers keep their traffic. Real QUIC over loopback, in-process shards.

mod common;

use common::*;
use fovea_codec::frame::{self, Frame};
use fovea_codec::ErrorCode;

/// A bystander that must keep working while something hostile happens next to it.
fn assert_bystander_unaffected(node: std::net::SocketAddr, sub: &mut TestClient, tag: &[u8]) {
    let mut p = TestClient::connect(node, "default");
    assert!(matches!(p.publish_acked("bystander", tag, None), Frame::Ok(_)));
    let d = sub.next_deliver(WAIT).expect("bystander still served");
    assert_eq!(&d.payload[..], tag);
}

#[test]
fn frames_before_hello_close_with_hello_required() {
    let node = start_node(test_config(2));
    let mut bystander = TestClient::connect(node.quic_addr, "default");
    bystander.subscribe(1, "bystander");
    let mut c = TestClient::connect_raw(node.quic_addr);
    c.publish("t", b"too early");
    let closed = c.wait_closed(WAIT).expect("closed");
    assert_eq!(closed.code, ErrorCode::HelloRequired as u64, "{closed:?}");
    assert_bystander_unaffected(node.quic_addr, &mut bystander, b"after early frame");
    node.shutdown();
}

#[test]
fn a_second_hello_is_a_protocol_violation() {
    let node = start_node(test_config(1));
    let mut c = TestClient::connect(node.quic_addr, "default");
    c.send_session(&hello(c.peer_id, "default"));
    assert_eq!(c.wait_closed(WAIT).expect("closed").code, ErrorCode::ProtocolViolation as u64);
    node.shutdown();
}

#[test]
fn malformed_and_unknown_frames_close_only_the_offender() {
    let node = start_node(test_config(2));
    let mut bystander = TestClient::connect(node.quic_addr, "default");
    bystander.subscribe(1, "bystander");
    // A PUBLISH whose topic length runs past the end of the frame.
    let mut bad = TestClient::connect(node.quic_addr, "default");
    bad.send_raw(2, &[0x12, 0x04, 0x00, 0x00, 0x3f, b'a']);
    assert_eq!(bad.wait_closed(WAIT).unwrap().code, ErrorCode::FrameMalformed as u64);
    // An undefined type below 0x80.
    let mut unknown = TestClient::connect(node.quic_addr, "default");
    unknown.send_raw(0, &[0x7e, 0x00]);
    assert_eq!(unknown.wait_closed(WAIT).unwrap().code, ErrorCode::UnknownFrameType as u64);
    // An invalid topic.
    let mut invalid = TestClient::connect(node.quic_addr, "default");
    invalid.send_raw(2, &[0x12, 0x06, 0x00, 0x00, 0x03, b'a', b'#', b'b', 0x00]);
    assert_eq!(invalid.wait_closed(WAIT).unwrap().code, ErrorCode::FrameMalformed as u64);
    assert_bystander_unaffected(node.quic_addr, &mut bystander, b"after garbage");
    assert_eq!(metric(node.http_addr, "fovea_frames_malformed_total"), 3);
    node.shutdown();
}

#[test]
fn extension_frames_are_skipped() {
    let node = start_node(test_config(1));
    let mut c = TestClient::connect(node.quic_addr, "default");
    c.send_raw(0, &[0x9a, 0x03, 1, 2, 3]);
    c.subscribe(1, "still.works");
    node.shutdown();
}

#[test]
fn an_oversized_frame_is_refused_before_it_is_buffered() {
    let mut config = test_config(1);
    config.limits.max_payload = 1024;
    config.limits.stream_window_bytes = 64 * 1024;
    let node = start_node(config);
    let mut c = TestClient::connect(node.quic_addr, "default");
    // Only the header of a 1 MB frame is sent: the node must refuse it from the header alone.
    c.send_raw(2, &[0x12, 0x80, 0x10, 0x00, 0x00]);
    assert_eq!(c.wait_closed(WAIT).unwrap().code, ErrorCode::FrameTooLarge as u64);
    node.shutdown();
}

#[test]
fn a_payload_over_max_payload_fails_only_that_publish() {
    let mut config = test_config(1);
    config.limits.max_payload = 1024;
    config.limits.stream_window_bytes = 64 * 1024;
    let node = start_node(config);
    let mut sub = TestClient::connect(node.quic_addr, "default");
    sub.subscribe(1, "t");
    let mut c = TestClient::connect(node.quic_addr, "default");
    let reply = c.publish_acked("t", &[0u8; 2000], None);
    assert!(
        matches!(reply, Frame::Error(ref e) if e.code == ErrorCode::PayloadTooLarge as u64),
        "{reply:?}"
    );
    assert!(
        matches!(c.publish_acked("t", &[1u8; 1024], None), Frame::Ok(_)),
        "at the bound is fine"
    );
    assert_eq!(sub.next_deliver(WAIT).unwrap().payload.len(), 1024);
    node.shutdown();
}

#[test]
fn subscriptions_beyond_the_limit_fail_and_the_connection_stays() {
    let mut config = test_config(2);
    config.limits.max_subscriptions_per_peer = 3;
    let node = start_node(config);
    let mut c = TestClient::connect(node.quic_addr, "default");
    for i in 1..=3 {
        c.subscribe(i, &format!("t.{i}"));
    }
    let refused = c.try_subscribe(4, "t.4");
    assert!(
        matches!(refused, Frame::Error(ref e) if e.code == ErrorCode::TooManySubscriptions as u64),
        "{refused:?}"
    );
    let dup = {
        assert!(matches!(c.unsubscribe(3), Frame::Ok(_)));
        c.subscribe(4, "t.4");
        c.try_subscribe(4, "t.5")
    };
    assert!(
        matches!(dup, Frame::Error(ref e) if e.code == ErrorCode::DuplicateSubscription as u64),
        "{dup:?}"
    );
    let mut p = TestClient::connect(node.quic_addr, "default");
    p.publish("t.4", b"ok");
    assert_eq!(c.next_deliver(WAIT).unwrap().sub_ids.as_slice(), &[4]);
    node.shutdown();
}

#[test]
fn peers_beyond_max_peers_are_refused_and_existing_peers_unaffected() {
    let mut config = test_config(2);
    config.limits.max_peers = 3;
    let node = start_node(config);
    let mut peers: Vec<TestClient> =
        (0..3).map(|_| TestClient::connect(node.quic_addr, "default")).collect();
    peers[0].subscribe(1, "bystander");
    let mut extra = TestClient::connect_raw(node.quic_addr);
    extra.send_session(&hello(random_peer_id(), "default"));
    assert_eq!(extra.wait_closed(WAIT).unwrap().code, ErrorCode::ServerFull as u64);
    assert!(matches!(peers[1].publish_acked("bystander", b"x", None), Frame::Ok(_)));
    assert_eq!(&peers[0].next_deliver(WAIT).unwrap().payload[..], b"x");
    node.shutdown();
}

#[test]
fn a_second_connection_with_the_same_peer_id_replaces_the_first() {
    let node = start_node(test_config(2));
    let id = random_peer_id();
    let mut first = TestClient::connect_as(node.quic_addr, "default", id);
    first.subscribe(1, "t");
    let mut second = TestClient::connect_as(node.quic_addr, "default", id);
    assert_eq!(first.wait_closed(WAIT).unwrap().code, ErrorCode::Replaced as u64);
    second.subscribe(1, "t");
    let mut p = TestClient::connect(node.quic_addr, "default");
    p.publish_acked("t", b"x", None);
    assert_eq!(second.next_deliver(WAIT).unwrap().sub_ids.as_slice(), &[1]);
    assert_eq!(metric(node.http_addr, "fovea_sessions_replaced_total"), 1);
    node.shutdown();
}

#[test]
fn garbage_datagrams_harm_nobody() {
    let node = start_node(test_config(2));
    let mut sub = TestClient::connect(node.quic_addr, "default");
    sub.subscribe(1, "bystander");
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut x = rand_u64() | 1;
    for i in 0..2000usize {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = 1 + (x as usize % 1400);
        let mut buf = vec![0u8; len];
        boring::rand::rand_bytes(&mut buf).unwrap();
        // Half of them look like short-header packets to shards' CIDs.
        if i % 2 == 0 && len > 2 {
            buf[0] = 0x40;
            buf[1] = (i % 2) as u8;
        }
        let _ = sock.send_to(&buf, node.quic_addr);
    }
    assert_bystander_unaffected(node.quic_addr, &mut sub, b"after 2000 garbage datagrams");
    node.shutdown();
}

#[test]
fn slow_consumer_drop_policy_keeps_the_publisher_and_others_at_full_rate() {
    let mut config = test_config(2);
    config.limits.send_budget_bytes = 256 * 1024;
    let node = start_node(config);
    // The slow subscriber never reads: its client never pumps after subscribing.
    let mut slow = TestClient::connect(node.quic_addr, "default");
    slow.subscribe(1, "flood");
    let mut fast = TestClient::connect(node.quic_addr, "default");
    fast.subscribe(1, "flood");
    let mut p = TestClient::connect(node.quic_addr, "default");
    let payload = vec![7u8; 1000];
    let n = 3000u32;
    for i in 0..n {
        let mut msg = payload.clone();
        msg[..4].copy_from_slice(&i.to_be_bytes());
        p.publish("flood", &msg);
        // Keep the fast subscriber reading as the publisher writes: 16 KB between reads is
        // far below its window plus budget (512 KiB), the slow one's 3 MB is far above.
        if i % 16 == 0 {
            fast.step(std::time::Instant::now());
        }
    }
    assert!(matches!(p.publish_acked("flood", &[0xff; 4], None), Frame::Ok(_)));
    for i in 0..n {
        let d =
            fast.next_deliver(WAIT).unwrap_or_else(|| panic!("fast subscriber lost message {i}"));
        assert_eq!(&d.payload[..4], &i.to_be_bytes());
    }
    assert!(
        metric(node.http_addr, "fovea_drops_slow_consumer_total") > 0,
        "the slow subscriber's deliveries were dropped"
    );
    drop(slow);
    node.shutdown();
}

#[test]
fn slow_consumer_disconnect_policy_closes_with_slow_consumer() {
    let mut config = test_config(1);
    config.limits.send_budget_bytes = 16 * 1024;
    config.limits.slow_consumer = fovea_engine::config::SlowConsumerPolicy::Disconnect;
    let node = start_node(config);
    let mut slow = TestClient::connect(node.quic_addr, "default");
    slow.subscribe(1, "flood");
    let mut p = TestClient::connect(node.quic_addr, "default");
    for _ in 0..3000u32 {
        p.publish("flood", &[1u8; 1000]);
    }
    assert!(
        matches!(p.publish_acked("flood", b"", None), Frame::Ok(_)),
        "the publisher is unaffected"
    );
    assert!(
        wait_until(WAIT, || metric(node.http_addr, "fovea_slow_consumer_disconnects_total") == 1)
    );
    assert_eq!(slow.wait_closed(WAIT).unwrap().code, ErrorCode::SlowConsumer as u64);
    node.shutdown();
}

#[test]
fn ping_is_answered_with_the_echoed_id_and_timestamp() {
    let node = start_node(test_config(2));
    let mut c = TestClient::connect(node.quic_addr, "default");
    c.send_session(&Frame::Ping(frame::Ping { ping_id: 99, sent_at_us: 123_456 }));
    let pong = c.expect_frame(|f| matches!(f, Frame::Pong(_)), WAIT);
    let Frame::Pong(p) = pong else { unreachable!() };
    assert_eq!((p.ping_id, p.sent_at_us), (99, 123_456));
    assert_eq!(metric(node.http_addr, "fovea_pings_answered_total"), 1);
    node.shutdown();
}

#[test]
fn requests_pipelined_behind_a_refused_hello_keep_the_refusal_code() {
    let node = start_node(test_config(1));
    let mut c = TestClient::connect_raw(node.quic_addr);
    let Frame::Hello(mut h) = hello(random_peer_id(), "default") else { unreachable!() };
    h.version = 2;
    c.send_session(&Frame::Hello(h));
    c.send_session(&Frame::Subscribe(frame::Subscribe {
        request_id: 1,
        sub_id: 1,
        pattern: "t".parse().unwrap(),
    }));
    assert_eq!(c.wait_closed(WAIT).unwrap().code, ErrorCode::VersionUnsupported as u64);
    node.shutdown();
}
