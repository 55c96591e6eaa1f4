//! The blocking `Client` over loopback UDP: against the test node in a thread, against a
//! socket that never answers, and against a port where nothing listens. Every wait has a
//! deadline; nothing sleeps.

mod support;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use fovea_client::codec::frame::Frame;
use fovea_client::codec::ErrorCode;
use fovea_client::{Client, ClientError, ConnectOptions, Event, Verify};
use support::{Identity, UdpNode, NODE_ID};

/// Generous bound for waits that should end at once (shared CI machines).
const WAIT: Duration = Duration::from_secs(10);

fn options() -> ConnectOptions {
    let mut o = ConnectOptions { request_timeout: WAIT, ..ConnectOptions::default() };
    o.config.verify = Verify::Insecure;
    o
}

fn connect(node: &UdpNode) -> Client {
    Client::connect(node.addr, &options(), Instant::now() + WAIT).expect("connects")
}

#[test]
fn subscribe_publish_deliver_ping_and_close() {
    let identity = Identity::generate();
    let node = UdpNode::start(&identity);
    let mut client = connect(&node);
    assert_eq!(client.welcome().node_id, NODE_ID);
    assert_eq!(client.welcome().observed, client.local_addr());
    client.subscribe(7, "room.*").unwrap();
    client.publish("room.kitchen", b"21.5", true).unwrap();
    client.publish_with_id("room.hall", b"19", Some(42), false).unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        match client.next_event(Instant::now() + WAIT) {
            Some(Event::Frame(Frame::Deliver(d))) => got.push(d),
            other => panic!("expected DELIVER, got {other:?}"),
        }
    }
    assert_eq!(got[0].topic.as_str(), "room.kitchen");
    assert_eq!(&got[0].payload[..], b"21.5");
    assert_eq!(&got[0].sub_ids[..], &[7]);
    assert_eq!((got[1].topic.as_str(), got[1].message_id), ("room.hall", Some(42)));
    let rtt = client.ping().unwrap();
    assert!(rtt < WAIT);
    client.flush().unwrap();
    client.close().expect("the node confirms the GOODBYE with NO_ERROR");
    // The GOODBYE followed the publishes on the data stream.
    let streams: Vec<(u64, u8)> =
        node.received().iter().map(|(s, f)| (*s, f.frame_type())).collect();
    assert_eq!(streams.last(), Some(&(2, 0x05)), "{streams:?}");
}

#[test]
fn a_rejected_request_names_the_code_and_the_session_goes_on() {
    let identity = Identity::generate();
    let node = UdpNode::start(&identity);
    let mut client = connect(&node);
    let err = client.subscribe(1, "denied.**").unwrap_err();
    match &err {
        ClientError::Rejected { request, code, message } => {
            assert_eq!(*request, "SUBSCRIBE");
            assert_eq!(*code, ErrorCode::PermissionDenied as u64);
            assert_eq!(message, "not for you");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert!(err.to_string().contains("PERMISSION_DENIED"), "{err}");
    client.subscribe(2, "fine.**").unwrap();
    client.ping().unwrap();
}

#[test]
fn invalid_arguments_fail_before_anything_is_sent() {
    let identity = Identity::generate();
    let node = UdpNode::start(&identity);
    let mut client = connect(&node);
    let err = client.subscribe(1, "a.#").unwrap_err();
    assert!(matches!(err, ClientError::Invalid { what: "pattern", .. }), "{err}");
    let err = client.publish("a.*", b"", false).unwrap_err();
    assert!(matches!(err, ClientError::Invalid { what: "topic", .. }), "{err}");
    let err = client.publish("big", &vec![0; support::MAX_PAYLOAD as usize + 1], true).unwrap_err();
    assert!(matches!(err, ClientError::PayloadTooLarge { .. }), "{err}");
    client.ping().unwrap();
}

#[test]
fn calls_return_the_reply_or_the_call_error() {
    let identity = Identity::generate();
    let node = UdpNode::start(&identity);
    let mut client = connect(&node);
    assert_eq!(&client.call("echo", b"[2,3]", 1000, false).unwrap()[..], b"[2,3]");
    let err = client.call("nobody.home", b"", 1000, true).unwrap_err();
    assert!(
        matches!(err, ClientError::CallFailed { code, .. } if code == ErrorCode::NoProvider as u64)
    );
    assert!(err.to_string().contains("NO_PROVIDER"), "{err}");
}

#[test]
fn a_close_by_the_node_ends_next_event_and_later_requests() {
    let identity = Identity::generate();
    let node = UdpNode::start(&identity);
    let mut client = connect(&node);
    client.publish("close.me", b"", false).unwrap();
    match client.next_event(Instant::now() + WAIT) {
        Some(Event::Closed { error_code, by_peer: true, is_app: true, reason }) => {
            assert_eq!(error_code, ErrorCode::ShuttingDown as u64);
            assert_eq!(reason, "draining");
        }
        other => panic!("expected Closed, got {other:?}"),
    }
    assert_eq!(client.next_event(Instant::now() + WAIT), None);
    let err = client.ping().unwrap_err();
    assert!(matches!(err, ClientError::Closed(ref c) if c.by_peer), "{err}");
}

#[test]
fn next_event_returns_none_at_its_deadline() {
    let identity = Identity::generate();
    let node = UdpNode::start(&identity);
    let mut client = connect(&node);
    let start = Instant::now();
    assert_eq!(client.next_event(start + Duration::from_millis(200)), None);
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(200) && waited < WAIT, "{waited:?}");
}

#[test]
fn a_silent_port_times_out_at_the_deadline() {
    // Bound but never read: no ICMP error, so only the deadline ends the wait.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let start = Instant::now();
    let err = Client::connect(addr, &options(), start + Duration::from_millis(700)).unwrap_err();
    let waited = start.elapsed();
    assert!(matches!(err, ClientError::HandshakeTimeout { .. }), "{err}");
    assert!(err.to_string().contains("no answer from"), "{err}");
    assert!(waited >= Duration::from_millis(700), "{waited:?}");
    assert!(waited < Duration::from_secs(2), "{waited:?}");
}

#[test]
fn a_port_where_nothing_listens_is_refused_at_once() {
    let addr = {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    };
    let start = Instant::now();
    let err = Client::connect(addr, &options(), start + WAIT).unwrap_err();
    assert!(matches!(err, ClientError::ConnectionRefused { .. }), "{err}");
    assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
}
