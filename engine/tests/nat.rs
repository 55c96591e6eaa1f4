//! NAT assistance end to end over real QUIC: OBSERVED_ADDR in WELCOME and after a NAT
//! rebinding, PUNCH introductions within a realm (never across), their rate limit, realm
//! isolation of direct messages, and the relay budget (PROTOCOL.md §7.3).

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::*;
use fovea_codec::frame::{self, Frame};
use fovea_codec::ErrorCode;

fn punch_request(c: &mut TestClient, target: [u8; 32]) -> u64 {
    let r = c.request_id();
    c.send_session(&Frame::PunchRequest(frame::PunchRequest { request_id: r, target }));
    r
}

fn is_error(f: &Frame, code: ErrorCode) -> bool {
    matches!(f, Frame::Error(e) if e.code == code as u64)
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

#[test]
fn welcome_tells_the_observed_address_and_a_rebinding_sends_observed_addr() {
    let node = start_node(test_config(1));
    let mut c = TestClient::connect(node.quic_addr, "default");
    assert_eq!(c.welcome.as_ref().unwrap().observed, c.source_addr());
    c.rebind();
    let new_addr = c.source_addr();
    // Any packet from the new port shows the node the new address.
    let r = c.request_id();
    c.send_session(&Frame::Ping(frame::Ping { ping_id: r, sent_at_us: 0 }));
    let f = c.expect_frame(|f| matches!(f, Frame::ObservedAddr(_)), WAIT);
    assert!(matches!(&f, Frame::ObservedAddr(o) if o.observed == new_addr), "{f:?}");
    // The session goes on over the new path.
    c.subscribe(1, "after.rebind");
    let mut publisher = TestClient::connect(node.quic_addr, "default");
    publisher.publish("after.rebind", b"still here");
    assert_eq!(&c.next_deliver(WAIT).expect("delivery after rebinding").payload[..], b"still here");
    assert!(metric(node.http_addr, "fovea_observed_addr_changes_total") >= 1);
    node.shutdown();
}

#[test]
fn punch_introduces_two_peers_on_different_shards_with_one_start_time() {
    let node = start_node(test_config(2));
    let mut a = TestClient::connect_as(node.quic_addr, "lab", peer_on(0, 2));
    let mut b = TestClient::connect_as(node.quic_addr, "lab", peer_on(1, 2));
    let before = unix_ms();
    let r = punch_request(&mut a, b.peer_id);
    assert!(matches!(a.expect_response(r), Frame::Ok(_)));
    let Frame::Punch(to_a) = a.expect_frame(|f| matches!(f, Frame::Punch(_)), WAIT) else {
        unreachable!()
    };
    let Frame::Punch(to_b) = b.expect_frame(|f| matches!(f, Frame::Punch(_)), WAIT) else {
        unreachable!()
    };
    assert_eq!(to_a.peer, b.peer_id);
    assert_eq!(to_a.peer_addr, b.source_addr());
    assert_eq!(to_b.peer, a.peer_id);
    assert_eq!(to_b.peer_addr, a.source_addr());
    assert_eq!(to_a.start_at_ms, to_b.start_at_ms, "one common start time");
    assert!(to_a.start_at_ms >= before, "start time is in the future of the request");
    assert!(to_a.start_at_ms <= unix_ms() + 10_000);
    assert_eq!(metric(node.http_addr, "fovea_punches_total"), 1);
    node.shutdown();
}

#[test]
fn punch_fails_for_unknown_peers_self_and_other_realms() {
    let node = start_node(test_config(2));
    let mut a = TestClient::connect_as(node.quic_addr, "lab", peer_on(0, 2));
    let mut other_realm = TestClient::connect_as(node.quic_addr, "prod", peer_on(1, 2));
    for target in [random_peer_id(), a.peer_id, other_realm.peer_id] {
        let r = punch_request(&mut a, target);
        let f = a.expect_response(r);
        assert!(is_error(&f, ErrorCode::UnknownPeer), "{f:?}");
    }
    // The peer in the other realm learned nothing.
    other_realm.pump_for(Duration::from_millis(200));
    assert!(other_realm.drain_pending().iter().all(|f| !matches!(f, Frame::Punch(_))));
    node.shutdown();
}

#[test]
fn punch_requests_beyond_the_rate_limit_get_rate_limited() {
    let mut config = test_config(1);
    config.limits.punch_rate_per_s = 1;
    config.limits.punch_burst = 2;
    let node = start_node(config);
    let mut a = TestClient::connect(node.quic_addr, "default");
    let b = TestClient::connect(node.quic_addr, "default");
    let answers: Vec<Frame> = (0..3)
        .map(|_| {
            let r = punch_request(&mut a, b.peer_id);
            a.expect_response(r)
        })
        .collect();
    assert!(matches!(answers[0], Frame::Ok(_)) && matches!(answers[1], Frame::Ok(_)));
    assert!(is_error(&answers[2], ErrorCode::RateLimited), "{:?}", answers[2]);
    assert_eq!(metric(node.http_addr, "fovea_punch_rate_limited_total"), 1);
    node.shutdown();
}

#[test]
fn direct_messages_never_cross_realms() {
    let node = start_node(test_config(2));
    let mut a = TestClient::connect(node.quic_addr, "lab");
    let mut b = TestClient::connect(node.quic_addr, "prod");
    let r = a.request_id();
    a.send_data(&Frame::Send(frame::Send {
        request_id: r,
        target: b.peer_id,
        payload: Bytes::from_static(b"across"),
    }));
    assert!(is_error(&a.expect_response(r), ErrorCode::UnknownPeer));
    b.pump_for(Duration::from_millis(200));
    assert!(b.drain_pending().iter().all(|f| !matches!(f, Frame::Message(_))));
    node.shutdown();
}

#[test]
fn relay_beyond_the_budget_is_rate_limited_and_counted() {
    let mut config = test_config(1);
    config.limits.max_payload = 4096;
    config.limits.stream_window_bytes = 1 << 20;
    config.limits.relay_bytes_per_s = 1;
    config.limits.relay_burst_bytes = 4096;
    let node = start_node(config);
    let mut a = TestClient::connect(node.quic_addr, "default");
    let mut b = TestClient::connect(node.quic_addr, "default");
    let send = |a: &mut TestClient, target| {
        let r = a.request_id();
        a.send_data(&Frame::Send(frame::Send {
            request_id: r,
            target,
            payload: Bytes::from(vec![7u8; 3000]),
        }));
        a.expect_response(r)
    };
    assert!(matches!(send(&mut a, b.peer_id), Frame::Ok(_)));
    b.expect_frame(|f| matches!(f, Frame::Message(m) if m.payload.len() == 3000), WAIT);
    let f = send(&mut a, b.peer_id);
    assert!(is_error(&f, ErrorCode::RateLimited), "{f:?}");
    // Calls are charged to the same budget.
    a.send_data(&Frame::Call(frame::Call {
        idempotent: false,
        call_id: 1,
        timeout_ms: 1_000,
        procedure: "svc".parse().unwrap(),
        payload: Bytes::from(vec![1u8; 3000]),
    }));
    let f = a.expect_frame(|f| matches!(f, Frame::CallError(_)), WAIT);
    assert!(matches!(&f, Frame::CallError(e) if e.code == ErrorCode::RateLimited as u64), "{f:?}");
    assert_eq!(metric(node.http_addr, "fovea_relay_rate_limited_total"), 2);
    assert_eq!(metric(node.http_addr, "fovea_relay_bytes_total"), 3000);
    node.shutdown();
}

#[test]
fn relay_is_metered_per_peer_and_listed_at_the_relay_endpoint() {
    let node = start_node(test_config(2));
    let mut a = TestClient::connect_as(node.quic_addr, "default", peer_on(0, 2));
    let mut c = TestClient::connect_as(node.quic_addr, "default", peer_on(1, 2));
    let mut b = TestClient::connect_as(node.quic_addr, "default", peer_on(1, 2));
    let send = |from: &mut TestClient, target, len: usize| {
        let r = from.request_id();
        from.send_data(&Frame::Send(frame::Send {
            request_id: r,
            target,
            payload: Bytes::from(vec![7u8; len]),
        }));
        assert!(matches!(from.expect_response(r), Frame::Ok(_)));
    };
    for _ in 0..3 {
        send(&mut a, b.peer_id, 100);
    }
    send(&mut c, b.peer_id, 50);
    for _ in 0..4 {
        b.expect_frame(|f| matches!(f, Frame::Message(_)), WAIT);
    }
    let hex = |id: &[u8; 32]| id.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let listed = |want: usize| {
        let text = http_get(node.http_addr, "/relay");
        let body = text.split("\r\n\r\n").nth(1).expect("a body").to_owned();
        let doc: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        let peers = doc["peers"].as_array().expect("peers").clone();
        (peers.len() == want).then_some(peers)
    };
    let mut peers = None;
    // Shards refresh the list once a second; each poll is a real request.
    assert!(wait_until(WAIT, || {
        peers = listed(2);
        peers.is_some()
    }));
    let peers = peers.unwrap();
    let row = |p: &serde_json::Value| {
        let s = |k: &str| p[k].as_str().unwrap().to_owned();
        let n = |k: &str| p[k].as_u64().unwrap();
        (s("peer"), s("realm"), n("shard"), n("relayed_bytes"), n("relayed_msgs"))
    };
    assert_eq!(row(&peers[0]), (hex(&a.peer_id), "default".into(), 0, 300, 3), "most bytes first");
    assert_eq!(row(&peers[1]), (hex(&c.peer_id), "default".into(), 1, 50, 1));
    node.shutdown();
}

#[test]
fn a_rebinding_with_deliveries_in_flight_closes_the_stalled_stream_cleanly() {
    let mut config = test_config(1);
    config.limits.keepalive_ms = 500;
    config.limits.idle_timeout_ms = 30_000;
    let node = start_node(config);
    let mut sub = TestClient::connect(node.quic_addr, "default");
    sub.subscribe(1, "mig.*");
    let mut bystander = TestClient::connect(node.quic_addr, "default");
    bystander.subscribe(1, "mig.*");
    let mut publ = TestClient::connect(node.quic_addr, "default");
    // The subscriber moves while deliveries are on their way to its old address, more than its
    // stream window (256 KiB) of them.
    sub.rebind();
    for i in 0..400u32 {
        publ.publish_acked("mig.a", &[i as u8; 1024], None);
    }
    sub.conn.send_ack_eliciting().unwrap();
    let closed = sub.wait_closed(WAIT).expect("the stalled connection is closed");
    assert_eq!(closed.code, ErrorCode::SlowConsumer as u64, "{closed:?}");
    assert!(closed.by_node);
    assert_eq!(metric(node.http_addr, "fovea_path_change_stalls_total"), 1);
    // Nobody else noticed: the other subscriber got all of it.
    for i in 0..400u32 {
        let d = bystander.next_deliver(WAIT).unwrap_or_else(|| panic!("bystander, message {i}"));
        assert_eq!(d.payload[0], i as u8);
    }
    node.shutdown();
}
