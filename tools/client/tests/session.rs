//! `ClientSession` against an in-memory test node: handshake, HELLO/WELCOME, the stream rules,
//! partial writes under flow control, PING answers, closes from either side, and TLS
//! verification. No sockets and no sleeps: each step drives both sides until they are quiet.

mod support;

use std::time::Duration;

use bytes::Bytes;
use fovea_client::codec::frame::{self, Frame};
use fovea_client::codec::{ErrorCode, Realm, Topic};
use fovea_client::{ClientConfig, ClientError, Credential, Event, StreamKind, Verify};
use support::{Identity, Pipe, NODE_ID};

fn insecure() -> ClientConfig {
    ClientConfig { verify: Verify::Insecure, ..ClientConfig::default() }
}

fn publish(request_id: u64, topic: &'static str, payload: &[u8]) -> Frame {
    Frame::Publish(frame::Publish {
        request_id,
        message_id: None,
        topic: Topic::from_static(topic),
        payload: Bytes::copy_from_slice(payload),
    })
}

fn delivers(events: &[Event]) -> Vec<frame::Deliver> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Frame(Frame::Deliver(d)) => Some(d.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn hello_goes_out_after_the_handshake_and_welcome_comes_back() {
    let identity = Identity::generate();
    let config = ClientConfig {
        realm: Realm::from_static("acme"),
        peer_id: Some([0x11; 32]),
        credential: Credential::Token(Bytes::from_static(b"secret")),
        client_name: "tests/1".into(),
        ..insecure()
    };
    let mut pipe = Pipe::new(&config, &identity, 1 << 20);
    let events = pipe.events();
    assert!(pipe.client.is_established());
    match &events[..] {
        [Event::Welcome { node_id, observed, limits }] => {
            assert_eq!(*node_id, NODE_ID);
            assert_eq!(*observed, pipe.client_addr);
            assert!(!limits.is_empty());
        }
        other => panic!("expected exactly WELCOME, got {other:?}"),
    }
    let frames = pipe.node.frames();
    match &frames[..] {
        [Frame::Hello(h)] => {
            assert_eq!(h.version, 1);
            assert_eq!(h.peer_id, [0x11; 32]);
            assert_eq!(h.realm.as_str(), "acme");
            assert_eq!(h.cred_kind, 1);
            assert_eq!(&h.credential[..], b"secret");
            assert_eq!(&h.client_name[..], b"tests/1");
        }
        other => panic!("expected exactly HELLO, got {other:?}"),
    }
    assert_eq!(pipe.node.received[0].0, 0, "HELLO is on the session stream");
}

#[test]
fn a_random_peer_id_is_drawn_per_session() {
    let identity = Identity::generate();
    let a = Pipe::new(&insecure(), &identity, 1 << 20);
    let b = Pipe::new(&insecure(), &identity, 1 << 20);
    assert_ne!(a.client.peer_id(), b.client.peer_id());
    assert_ne!(*a.client.peer_id(), [0u8; 32]);
}

#[test]
fn frames_queued_before_welcome_keep_the_stream_rules() {
    let identity = Identity::generate();
    let mut pipe = Pipe::new(&insecure(), &identity, 1 << 20);
    // Queued before any packet moved: the session request may pipeline behind HELLO
    // (PROTOCOL §6.10 step 4); the publish on the data stream must wait for WELCOME.
    let subscribe = Frame::Subscribe(frame::Subscribe {
        request_id: 1,
        sub_id: 1,
        pattern: "room.*".parse().unwrap(),
    });
    pipe.client.send_frame(&subscribe, StreamKind::Session).unwrap();
    pipe.client.send_frame(&publish(2, "room.kitchen", b"21.5"), StreamKind::Data).unwrap();
    let publish_len = publish(2, "room.kitchen", b"21.5").encoded_len();
    assert_eq!(pipe.client.pending_bytes(StreamKind::Data), publish_len);
    let events = pipe.events();
    assert!(!pipe.node.frame_before_hello, "{:?}", pipe.node.received);
    let streams: Vec<(u64, u8)> =
        pipe.node.received.iter().map(|(s, f)| (*s, f.frame_type())).collect();
    assert_eq!(streams, vec![(0, 0x01), (0, 0x10), (2, 0x12)]);
    assert!(matches!(events[0], Event::Welcome { .. }));
    let oks: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            Event::Frame(Frame::Ok(ok)) => Some(ok.request_id),
            _ => None,
        })
        .collect();
    assert_eq!(oks, vec![1, 2]);
    let d = delivers(&events);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].topic.as_str(), "room.kitchen");
    assert_eq!(&d[0].payload[..], b"21.5");
    assert_eq!(&d[0].sub_ids[..], &[1]);
    assert_eq!(pipe.client.pending_bytes(StreamKind::Data), 0);
}

#[test]
fn large_publishes_survive_partial_writes_under_flow_control() {
    let identity = Identity::generate();
    // The node's stream window (16 KiB) is far below what is queued: every write is partial
    // and the rest waits in the outbox for MAX_STREAM_DATA.
    let mut pipe = Pipe::new(&insecure(), &identity, 16 * 1024);
    pipe.events();
    let mut expected = Vec::new();
    for i in 0..20u32 {
        let payload: Vec<u8> = (0..60_000u32).map(|j| (i.wrapping_mul(31) ^ j) as u8).collect();
        let topic = Topic::from_static("bulk.data");
        pipe.client
            .send_publish(0, Some(u64::from(i)), &topic, &payload, StreamKind::Data)
            .unwrap();
        expected.push(payload);
    }
    assert!(pipe.client.pending_bytes(StreamKind::Data) > 16 * 1024);
    let events = pipe.events();
    let got = delivers(&events);
    assert_eq!(got.len(), expected.len());
    for (i, (d, want)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(d.message_id, Some(i as u64));
        assert!(d.payload[..] == want[..], "payload {i} differs");
    }
    assert_eq!(pipe.client.pending_bytes(StreamKind::Data), 0);
    assert!(pipe.client.closed().is_none());
}

#[test]
fn the_nodes_data_stream_is_read_only_as_fast_as_events_are_polled() {
    let identity = Identity::generate();
    let mut pipe = Pipe::new(&insecure(), &identity, 1 << 20);
    pipe.events();
    let n = fovea_client::DATA_QUEUE_FRAMES_MAX + 500;
    for i in 0..n {
        let d = Frame::Deliver(frame::Deliver {
            sub_ids: smallvec::smallvec![1],
            message_id: Some(i as u64),
            topic: Topic::from_static("t"),
            payload: Bytes::from_static(b"x"),
        });
        pipe.node.send(true, &d);
    }
    pipe.drive();
    // The session holds at most its bound; the rest waits in QUIC.
    let mut ids = Vec::new();
    let mut held = 0;
    while let Some(Event::Frame(Frame::Deliver(d))) = pipe.client.poll_event() {
        held += 1;
        ids.push(d.message_id.unwrap());
        if held == fovea_client::DATA_QUEUE_FRAMES_MAX {
            break;
        }
    }
    assert_eq!(held, fovea_client::DATA_QUEUE_FRAMES_MAX);
    for e in pipe.events() {
        if let Event::Frame(Frame::Deliver(d)) = e {
            ids.push(d.message_id.unwrap());
        }
    }
    assert_eq!(ids, (0..n as u64).collect::<Vec<_>>(), "every frame, in order");
}

#[test]
fn the_nodes_pings_are_answered_and_not_reported() {
    let identity = Identity::generate();
    let mut pipe = Pipe::new(&insecure(), &identity, 1 << 20);
    pipe.events();
    pipe.node.send(false, &Frame::Ping(frame::Ping { ping_id: 9, sent_at_us: 1234 }));
    let events = pipe.events();
    assert!(events.is_empty(), "{events:?}");
    let pongs: Vec<_> = pipe
        .node
        .frames()
        .into_iter()
        .filter_map(|f| match f {
            Frame::Pong(p) => Some((p.ping_id, p.sent_at_us)),
            _ => None,
        })
        .collect();
    assert_eq!(pongs, vec![(9, 1234)]);
}

#[test]
fn a_close_by_the_node_is_the_last_event_and_fails_later_sends() {
    let identity = Identity::generate();
    let mut pipe = Pipe::new(&insecure(), &identity, 1 << 20);
    pipe.events();
    pipe.client.send_frame(&publish(0, "before.close", b"1"), StreamKind::Data).unwrap();
    pipe.drive();
    pipe.client.send_frame(&publish(0, "close.me", b""), StreamKind::Data).unwrap();
    let events = pipe.events();
    assert_eq!(delivers(&events).len(), 1);
    assert_eq!(
        events.last(),
        Some(&Event::Closed {
            error_code: ErrorCode::ShuttingDown as u64,
            reason: "draining".into(),
            by_peer: true,
            is_app: true,
        })
    );
    assert!(pipe.client.poll_event().is_none(), "Closed is reported once");
    let err = pipe.client.send_frame(&publish(0, "after", b""), StreamKind::Data).unwrap_err();
    assert!(matches!(err, ClientError::Closed(ref c) if c.code_name() == "SHUTTING_DOWN"), "{err}");
}

#[test]
fn a_malformed_frame_from_the_node_closes_with_the_matching_code() {
    let identity = Identity::generate();
    let mut pipe = Pipe::new(&insecure(), &identity, 1 << 20);
    pipe.events();
    // Type 0x7f is below the extension range and undefined: UNKNOWN_FRAME_TYPE.
    pipe.node.send_raw(false, &[0x7f, 0x00]);
    let events = pipe.events();
    match events.last() {
        Some(Event::Closed { error_code, by_peer: false, is_app: true, .. }) => {
            assert_eq!(*error_code, ErrorCode::UnknownFrameType as u64);
        }
        other => panic!("expected a local close, got {other:?}"),
    }
    let at_node = pipe.node.conn.peer_error().expect("the node saw the close");
    assert_eq!(at_node.error_code, ErrorCode::UnknownFrameType as u64);
    assert!(at_node.is_app);
}

#[test]
fn a_local_close_reaches_the_node() {
    let identity = Identity::generate();
    let mut pipe = Pipe::new(&insecure(), &identity, 1 << 20);
    pipe.events();
    pipe.client.close(ErrorCode::NoError as u64, "done");
    let events = pipe.events();
    assert!(
        matches!(events[..], [Event::Closed { error_code: 0, by_peer: false, .. }]),
        "{events:?}"
    );
    let at_node = pipe.node.conn.peer_error().expect("the node saw the close");
    assert_eq!((at_node.error_code, &at_node.reason[..]), (0, &b"done"[..]));
}

#[test]
fn frames_longer_than_the_nodes_limit_are_refused_before_sending() {
    let identity = Identity::generate();
    let mut pipe = Pipe::new(&insecure(), &identity, 1 << 20);
    pipe.events();
    let big = vec![0u8; support::MAX_PAYLOAD as usize + 1];
    let topic = Topic::from_static("t");
    let err = pipe.client.send_publish(0, None, &topic, &big, StreamKind::Data).unwrap_err();
    assert!(matches!(err, ClientError::PayloadTooLarge { max, .. } if max == support::MAX_PAYLOAD));
    let err = pipe.client.send_frame(&publish(0, "t", &[0; 1 << 20 | 20_000]), StreamKind::Data);
    assert!(matches!(err, Err(ClientError::FrameTooLarge { .. })), "{err:?}");
    assert_eq!(pipe.client.pending_bytes(StreamKind::Data), 0);
}

#[test]
fn the_ca_file_pins_the_nodes_certificate() {
    let identity = Identity::generate();
    let pem = identity.write_cert_pem();
    let config = ClientConfig { verify: Verify::CaFile(pem.clone()), ..ClientConfig::default() };
    let mut pipe = Pipe::new(&config, &identity, 1 << 20);
    let events = pipe.events();
    assert!(matches!(events[..], [Event::Welcome { .. }]), "{events:?}");
    std::fs::remove_file(pem).unwrap();
}

#[test]
fn a_certificate_from_another_ca_fails_the_handshake_with_a_tls_alert() {
    let identity = Identity::generate();
    let other = Identity::generate();
    let pem = other.write_cert_pem();
    let config = ClientConfig { verify: Verify::CaFile(pem.clone()), ..ClientConfig::default() };
    let mut pipe = Pipe::new(&config, &identity, 1 << 20);
    let events = pipe.events();
    match &events[..] {
        [Event::Closed { error_code, is_app: false, by_peer: false, .. }] => {
            assert!((0x100..=0x1ff).contains(error_code), "TLS alert, got {error_code:#x}");
        }
        other => panic!("expected a TLS failure, got {other:?}"),
    }
    assert!(pipe.client.closed().unwrap().is_tls_failure());
    assert!(pipe.node.frames().is_empty(), "no HELLO without a trusted node");
    std::fs::remove_file(pem).unwrap();
}

#[test]
fn the_certificate_must_name_the_server() {
    let identity = Identity::generate();
    let pem = identity.write_cert_pem();
    let config = ClientConfig { verify: Verify::CaFile(pem.clone()), ..ClientConfig::default() };
    let mut pipe = Pipe::with_server_name(&config, &identity, 1 << 20, Some("node.example"));
    let events = pipe.events();
    assert!(matches!(events[..], [Event::Closed { is_app: false, .. }]), "{events:?}");
    std::fs::remove_file(pem).unwrap();
}

#[test]
fn a_missing_ca_file_is_a_configuration_error() {
    let config = ClientConfig {
        verify: Verify::CaFile("/nonexistent/fovea-ca.pem".into()),
        ..ClientConfig::default()
    };
    let err = config.quic_config().err().expect("a missing file fails");
    assert!(
        matches!(err, ClientError::Config(ref m) if m.contains("/nonexistent/fovea-ca.pem")),
        "{err}"
    );
}

#[test]
fn an_idle_session_sends_a_keep_alive_once_the_interval_passes() {
    let identity = Identity::generate();
    let every = Duration::from_millis(30);
    let config = ClientConfig { keepalive: Some(every), ..insecure() };
    let mut pipe = Pipe::new(&config, &identity, 1 << 20);
    pipe.events();
    let mut buf = [0u8; 1500];
    assert!(pipe.client.poll_transmit(&mut buf).is_none(), "quiet after the handshake");
    let timeout = pipe.client.timeout().expect("a timer is armed");
    assert!(timeout <= every, "the keep-alive bounds the timer: {timeout:?}");
    // The timer is what is under test: wait for it (bounded), as a driver would.
    let due = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < due {
        std::hint::spin_loop();
    }
    pipe.client.on_timeout();
    let (n, to) = pipe.client.poll_transmit(&mut buf).expect("a keep-alive packet");
    assert_eq!(to, pipe.node_addr);
    let acked_before = pipe.node.conn.stats().recv;
    pipe.node.recv(&mut buf[..n], pipe.client_addr, pipe.node_addr);
    assert_eq!(pipe.node.conn.stats().recv, acked_before + 1, "the node took the packet");
    assert!(pipe.client.timeout().unwrap() > Duration::ZERO, "no second keep-alive at once");

    let config = ClientConfig { keepalive: None, ..insecure() };
    let mut pipe = Pipe::new(&config, &identity, 1 << 20);
    pipe.events();
    assert!(pipe.client.timeout().is_none_or(|t| t > every), "no keep-alive when off");
}
