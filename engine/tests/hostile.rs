//! The hostile-input suite: wire garbage, protocol misuse, an Initial flood and forged Retry
//! tokens. Each case asserts the documented outcome (docs/OPERATIONS.md "Hostile input and
//! faults: what the node does", PROTOCOL.md §4.2, §8, §10) and that a bystander keeps its
//! traffic. Real QUIC over loopback against in-process shards; every wait polls with a
//! deadline, every loop is bounded. Cases that need the `fovea` binary (SIGKILL, the node's
//! own RSS) are in process_faults.rs.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::*;
use fovea_codec::frame::{self, Frame};
use fovea_codec::{decode_frame, ErrorCode, Limits};

const SHORT: Duration = Duration::from_millis(300);

/// Deterministic pseudo-random bytes (xorshift64*; the seed is in every assertion message).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A subscriber and a publisher in realm `default` that must keep working next to the
/// hostile peers.
struct Bystander {
    sub: TestClient,
    publisher: TestClient,
    n: u32,
}

impl Bystander {
    fn new(node: SocketAddr) -> Bystander {
        let mut sub = TestClient::connect(node, "default");
        sub.subscribe(1, "bystander");
        Bystander { sub, publisher: TestClient::connect(node, "default"), n: 0 }
    }

    fn still_served(&mut self, what: &str) {
        self.n += 1;
        let tag = self.n.to_be_bytes();
        let ok = self.publisher.publish_acked("bystander", &tag, None);
        assert!(matches!(ok, Frame::Ok(_)), "bystander publish after {what}: {ok:?}");
        let d = self.sub.next_deliver(WAIT).unwrap_or_else(|| panic!("bystander after {what}"));
        assert_eq!(&d.payload[..], &tag, "after {what}");
    }
}

fn closed_with(c: &mut TestClient, code: ErrorCode, what: &str) {
    let closed = c.wait_closed(WAIT).unwrap_or_else(|| panic!("{what}: not closed"));
    assert_eq!(closed.code, code as u64, "{what}: {closed:?}");
    assert!(closed.by_node, "{what}: {closed:?}");
}

fn ping_pong(c: &mut TestClient, stream: u64, ping_id: u64) {
    let ping = Frame::Ping(frame::Ping { ping_id, sent_at_us: 0 });
    c.send_raw(stream, &ping.to_bytes());
    c.expect_frame(|f| matches!(f, Frame::Pong(p) if p.ping_id == ping_id), WAIT);
}

// ---------------------------------------------------------------------------------------------
// Wire garbage

#[test]
fn random_datagrams_are_dropped_counted_and_answered_with_less_than_they_carry() {
    let node = start_node(test_config(2));
    let mut by = Bystander::new(node.quic_addr);
    let dropped_before = metric(node.http_addr, "fovea_packets_dropped_total");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let seed = rand_u64() | 1;
    let mut rng = Rng(seed);
    let (mut sent_bytes, mut surely_dropped) = (0usize, 0u64);
    for i in 0..3000usize {
        let len = match i % 3 {
            // Short header shorter than one CID: dropped unparsed.
            0 => 1 + (rng.next() as usize % 16),
            _ => 1 + (rng.next() as usize % 1400),
        };
        let mut buf = rng.bytes(len);
        if i % 3 == 0 {
            buf[0] &= 0x7f;
            surely_dropped += 1;
        }
        sent_bytes += len;
        let _ = sock.send_to(&buf, node.quic_addr);
    }
    assert!(
        wait_until(WAIT, || metric(node.http_addr, "fovea_packets_dropped_total")
            >= dropped_before + surely_dropped),
        "seed {seed}: at least {surely_dropped} datagrams dropped"
    );
    by.still_served("3000 garbage datagrams");
    // Whatever the node answered (stateless resets, version negotiation) is smaller than the
    // garbage: no amplification.
    sock.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 65535];
    let mut answered = 0usize;
    while let Ok((n, _)) = sock.recv_from(&mut buf) {
        answered += n;
    }
    assert!(answered <= sent_bytes, "seed {seed}: answered {answered} of {sent_bytes} bytes");
    node.shutdown();
}

#[test]
fn lengths_beyond_limits_close_with_the_documented_codes() {
    let mut config = test_config(2);
    config.limits.max_payload = 4096;
    let node = start_node(config);
    let mut by = Bystander::new(node.quic_addr);
    let cases: [(&str, Vec<u8>, ErrorCode); 4] = [
        // Frame length 2^62 - 1 (the largest varint), header only.
        ("frame length 2^62-1", vec![0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], {
            ErrorCode::FrameTooLarge
        }),
        // Frame length max_payload + 16384 + 1.
        ("frame length over max_frame_len", vec![0x12, 0x80, 0x00, 0x50, 0x01], {
            ErrorCode::FrameTooLarge
        }),
        // PUBLISH whose topic length (300) is beyond max_topic_len, in a complete frame.
        ("topic length 300", [&[0x12, 0x05, 0x00, 0x00, 0x41, 0x2c][..], b"a"].concat(), {
            ErrorCode::FrameMalformed
        }),
        // PUBLISH whose payload length is 2^62 - 1 inside a 12-byte body.
        (
            "payload length 2^62-1",
            vec![
                0x12, 0x0c, 0x00, 0x00, 0x01, b't', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            ],
            ErrorCode::FrameMalformed,
        ),
    ];
    for (what, bytes, code) in cases {
        let mut c = TestClient::connect(node.quic_addr, "default");
        c.send_raw(2, &bytes);
        closed_with(&mut c, code, what);
        by.still_served(what);
    }
    assert_eq!(metric(node.http_addr, "fovea_frames_malformed_total"), 4);
    node.shutdown();
}

#[test]
fn a_truncated_frame_waits_for_its_rest_and_a_truncated_frame_before_fin_is_ignored() {
    let node = start_node(test_config(1));
    let mut by = Bystander::new(node.quic_addr);
    let mut c = TestClient::connect(node.quic_addr, "default");
    let sub = Frame::Subscribe(frame::Subscribe {
        request_id: 77,
        sub_id: 5,
        pattern: "trunc.*".parse().unwrap(),
    })
    .to_bytes();
    c.send_raw(0, &sub[..sub.len() / 2]);
    // A partial frame is never an error (PROTOCOL.md §4.2 step 3): the connection answers on
    // its other stream, and the rest completes the frame.
    ping_pong(&mut c, 2, 1);
    assert!(c.closed().is_none());
    c.send_raw(0, &sub[sub.len() / 2..]);
    assert!(matches!(c.expect_response(77), Frame::Ok(_)));
    // A partial PUBLISH and then FIN on stream 2: today the partial bytes are ignored, the
    // connection stays open and the session stream keeps working.
    let mut out = BytesMut::new();
    fovea_codec::encode_publish(0, None, &"trunc.x".parse().unwrap(), &[9u8; 100], &mut out);
    c.conn.stream_send(2, &out[..out.len() - 10], true).unwrap();
    c.flush();
    ping_pong(&mut c, 0, 2);
    assert!(c.next_deliver(SHORT).is_none(), "nothing of the partial frame was delivered");
    assert!(c.closed().is_none());
    by.still_served("truncated frames");
    node.shutdown();
}

#[test]
fn a_valid_frame_split_at_every_byte_decodes_the_same() {
    let node = start_node(test_config(2));
    let mut sub = TestClient::connect(node.quic_addr, "default");
    sub.subscribe(1, "split.*.x");
    let mut p = TestClient::connect(node.quic_addr, "default");
    let payload: Vec<u8> = (0..40u8).collect();
    let topic = "split.every.x".parse().unwrap();
    // PUBLISH on stream 2, split in two writes at each byte; a PING/PONG on stream 0 between
    // them makes the node handle the first part before the second is sent.
    let len = {
        let mut out = BytesMut::new();
        fovea_codec::encode_publish(1000, Some(1), &topic, &payload, &mut out);
        out.len()
    };
    for k in 0..=len {
        let request_id = 1000 + k as u64;
        let mut out = BytesMut::new();
        fovea_codec::encode_publish(request_id, Some(k as u64 + 1), &topic, &payload, &mut out);
        assert_eq!(out.len(), len);
        p.send_raw(2, &out[..k]);
        ping_pong(&mut p, 0, k as u64);
        p.send_raw(2, &out[k..]);
        let r = p.expect_response(request_id);
        assert!(matches!(r, Frame::Ok(_)), "split at {k}: {r:?}");
        let d = sub.next_deliver(WAIT).unwrap_or_else(|| panic!("split at {k}: no delivery"));
        assert_eq!(d.topic.as_str(), "split.every.x", "split at {k}");
        assert_eq!(&d.payload[..], &payload[..], "split at {k}");
        assert_eq!(d.message_id, Some(k as u64 + 1), "split at {k}");
    }
    // SUBSCRIBE on stream 0, with the PING on stream 2.
    let mut c = TestClient::connect(node.quic_addr, "default");
    let sub_frame = |k: u64| {
        Frame::Subscribe(frame::Subscribe {
            request_id: 500 + k,
            sub_id: 10 + k,
            pattern: "split.sub.*".parse().unwrap(),
        })
        .to_bytes()
    };
    let slen = sub_frame(0).len();
    for k in 0..=slen {
        let bytes = sub_frame(k as u64);
        assert_eq!(bytes.len(), slen);
        c.send_raw(0, &bytes[..k]);
        ping_pong(&mut c, 2, k as u64);
        c.send_raw(0, &bytes[k..]);
        let r = c.expect_response(500 + k as u64);
        assert!(matches!(r, Frame::Ok(_)), "subscribe split at {k}: {r:?}");
    }
    p.publish_acked("split.sub.y", b"all", None);
    let d = c.next_deliver(WAIT).expect("delivered to every split subscription");
    assert_eq!(d.sub_ids.len(), slen + 1);
    // HELLO, split at every byte: a new connection per split point. Nothing may be sent on
    // stream 2 before WELCOME (§2.2 rule 2), so no PING in between: the two parts leave in
    // two packets, and the node decodes after each datagram it feeds to quiche, so it sees the
    // first part alone even when both arrive in one receive batch.
    let hello_len = hello(random_peer_id(), "default").to_bytes().len();
    for k in 1..=hello_len {
        let mut h = TestClient::connect_raw(node.quic_addr);
        let bytes = hello(h.peer_id, "default").to_bytes();
        h.send_raw(0, &bytes[..k]);
        h.flush();
        h.send_raw(0, &bytes[k..]);
        h.expect_frame(|f| matches!(f, Frame::Welcome(_)), WAIT);
    }
    assert_eq!(metric(node.http_addr, "fovea_frames_malformed_total"), 0);
    node.shutdown();
}

/// PROTOCOL.md §2.2 rule 2: a frame on stream 2 before HELLO closes with HELLO_REQUIRED, a
/// PING too (its PONG would go on a session stream the client may not have opened); never
/// INTERNAL_ERROR, and nobody else is affected.
#[test]
fn ping_before_the_session_stream_is_hello_required() {
    let node = start_node(test_config(1));
    let mut by = Bystander::new(node.quic_addr);
    let mut c = TestClient::connect_raw(node.quic_addr);
    c.send_raw(2, &Frame::Ping(frame::Ping { ping_id: 1, sent_at_us: 0 }).to_bytes());
    closed_with(&mut c, ErrorCode::HelloRequired, "PING on stream 2 before stream 0");
    by.still_served("a PING before the session stream");
    node.shutdown();
}

#[test]
fn garbage_on_a_stream_closes_with_the_code_the_decoder_gives() {
    let node = start_node(test_config(2));
    let mut by = Bystander::new(node.quic_addr);
    let seed = rand_u64() | 1;
    let mut rng = Rng(seed);
    let limits = Limits::default();
    let mut tried = 0;
    let mut seen = std::collections::BTreeSet::new();
    while tried < 24 {
        // Garbage whose first frame the codec rejects; the node must close with that code.
        let n = 64 + rng.next() as usize % 400;
        let garbage = rng.bytes(n);
        let expected = match decode_frame(&mut BytesMut::from(&garbage[..]), &limits) {
            Err(e) => e.error_code(),
            Ok(_) => continue,
        };
        tried += 1;
        let mut c = TestClient::connect(node.quic_addr, "default");
        c.send_raw(if tried % 2 == 0 { 0 } else { 2 }, &garbage);
        closed_with(&mut c, expected, &format!("seed {seed}, garbage {tried}"));
        seen.insert(expected as u64);
    }
    by.still_served("24 connections of garbage");
    assert!(seen.len() >= 2, "seed {seed}: several close codes exercised: {seen:?}");
    node.shutdown();
}

// ---------------------------------------------------------------------------------------------
// Protocol misuse

#[test]
fn a_second_hello_closes_only_that_connection() {
    let node = start_node(test_config(2));
    let mut by = Bystander::new(node.quic_addr);
    let mut c = TestClient::connect(node.quic_addr, "default");
    c.subscribe(1, "bystander");
    // A second HELLO (another realm) on an active session.
    c.send_session(&hello(c.peer_id, "elsewhere"));
    closed_with(&mut c, ErrorCode::ProtocolViolation, "second HELLO");
    by.still_served("a second HELLO");
    node.shutdown();
}

#[test]
fn frames_only_a_node_sends_close_with_protocol_violation() {
    let node = start_node(test_config(2));
    let mut by = Bystander::new(node.quic_addr);
    let frames = [
        Frame::Welcome(frame::Welcome {
            version: 1,
            node_id: [1; 32],
            observed: "127.0.0.1:1".parse().unwrap(),
            limits: vec![],
        }),
        Frame::Challenge(frame::Challenge { nonce: Bytes::from_static(&[7; 32]) }),
        Frame::Ok(frame::Ok { request_id: 1 }),
        Frame::Error(frame::Error { request_id: 1, code: 0x100, message: Bytes::new() }),
        Frame::Deliver(frame::Deliver {
            sub_ids: [1u64].into_iter().collect(),
            message_id: None,
            topic: "bystander".parse().unwrap(),
            payload: Bytes::from_static(b"forged"),
        }),
        Frame::Invoke(frame::Invoke {
            invocation_id: 1,
            timeout_ms: 100,
            caller: [2; 32],
            procedure: "p".parse().unwrap(),
            payload: Bytes::new(),
        }),
        Frame::Message(frame::Message { source: [3; 32], payload: Bytes::new() }),
        Frame::ObservedAddr(frame::ObservedAddr { observed: "127.0.0.1:2".parse().unwrap() }),
    ];
    for f in &frames {
        let mut c = TestClient::connect(node.quic_addr, "default");
        c.send_data(f);
        closed_with(&mut c, ErrorCode::ProtocolViolation, &format!("{:#04x}", f.frame_type()));
    }
    by.still_served("node-only frames");
    assert!(by.sub.next_deliver(SHORT).is_none(), "the forged DELIVER reached nobody");
    node.shutdown();
}

#[test]
fn replies_for_invocations_the_node_never_sent_are_dropped_and_counted() {
    let node = start_node(test_config(2));
    let mut by = Bystander::new(node.quic_addr);
    let mut provider = TestClient::connect(node.quic_addr, "default");
    let r = provider.request_id();
    provider.send_session(&Frame::Register(frame::Register {
        request_id: r,
        procedure: "echo".parse().unwrap(),
    }));
    assert!(matches!(provider.expect_response(r), Frame::Ok(_)));
    let before = metric(node.http_addr, "fovea_rpc_late_replies_total");
    provider.send_data(&Frame::Reply(frame::Reply {
        id: 0xdead_beef,
        payload: Bytes::from_static(b"unasked"),
    }));
    provider.send_data(&Frame::CallError(frame::CallError {
        id: 0xfeed,
        code: 0x10000,
        message: Bytes::from_static(b"unasked"),
    }));
    assert!(
        wait_until(WAIT, || metric(node.http_addr, "fovea_rpc_late_replies_total") == before + 2),
        "both answers dropped and counted"
    );
    // The provider's connection stays and it still serves a real call.
    let mut caller = TestClient::connect(node.quic_addr, "default");
    caller.send_data(&Frame::Call(frame::Call {
        idempotent: false,
        call_id: 1,
        timeout_ms: 5_000,
        procedure: "echo".parse().unwrap(),
        payload: Bytes::from_static(b"hi"),
    }));
    let Frame::Invoke(inv) = provider.expect_frame(|f| matches!(f, Frame::Invoke(_)), WAIT) else {
        unreachable!()
    };
    provider.send_data(&Frame::Reply(frame::Reply { id: inv.invocation_id, payload: inv.payload }));
    let answer = caller.expect_frame(|f| matches!(f, Frame::Reply(r) if r.id == 1), WAIT);
    assert!(matches!(answer, Frame::Reply(r) if &r.payload[..] == b"hi"));
    assert!(caller.try_expect_frame(|f| matches!(f, Frame::Reply(_)), SHORT).is_none());
    assert!(provider.closed().is_none());
    by.still_served("unknown replies");
    node.shutdown();
}

#[test]
fn subscriptions_and_registrations_beyond_their_limits_fail_only_the_request() {
    let mut config = test_config(2);
    config.limits.max_subscriptions_per_peer = 2;
    config.limits.max_registrations_per_peer = 1;
    let node = start_node(config);
    let mut by = Bystander::new(node.quic_addr);
    let mut c = TestClient::connect(node.quic_addr, "default");
    c.subscribe(1, "a");
    c.subscribe(2, "b");
    let f = c.try_subscribe(3, "c");
    assert!(matches!(&f, Frame::Error(e) if e.code == ErrorCode::TooManySubscriptions as u64));
    let register = |c: &mut TestClient, name: &str| {
        let r = c.request_id();
        c.send_session(&Frame::Register(frame::Register {
            request_id: r,
            procedure: name.parse().unwrap(),
        }));
        c.expect_response(r)
    };
    assert!(matches!(register(&mut c, "one"), Frame::Ok(_)));
    let f = register(&mut c, "two");
    assert!(matches!(&f, Frame::Error(e) if e.code == ErrorCode::TooManyRegistrations as u64));
    assert!(metric(node.http_addr, "fovea_subscribe_rejected_total") >= 1);
    // The existing subscriptions keep delivering; other peers are unaffected.
    assert!(matches!(by.publisher.publish_acked("b", b"still", None), Frame::Ok(_)));
    assert_eq!(c.next_deliver(WAIT).expect("existing subscription").sub_ids.as_slice(), &[2]);
    by.still_served("limits");
    node.shutdown();
}

// ---------------------------------------------------------------------------------------------
// Initial flood and Retry tokens

/// The first flight (Initial, padded to 1200 bytes) of a fresh quiche client on `sock`.
fn first_initial(sock: &UdpSocket, node: SocketAddr) -> (quiche::Connection, Vec<u8>) {
    let mut scid = [0u8; 16];
    boring::rand::rand_bytes(&mut scid).unwrap();
    let mut config = raw_client_config();
    let local = sock.local_addr().unwrap();
    let mut conn =
        quiche::connect(Some("localhost"), &quiche::ConnectionId::from_ref(&scid), local, node, {
            &mut config
        })
        .unwrap();
    let mut out = vec![0u8; 1500];
    let (n, _) = conn.send(&mut out).unwrap();
    out.truncate(n);
    (conn, out)
}

/// Waits for one datagram on `sock`.
fn recv_one(sock: &UdpSocket, wait: Duration) -> Option<Vec<u8>> {
    sock.set_read_timeout(Some(wait)).unwrap();
    let mut buf = vec![0u8; 65535];
    let (n, _) = sock.recv_from(&mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

#[test]
fn an_initial_flood_gets_retry_beyond_the_threshold_and_sessions_keep_working() {
    let mut config = test_config(2);
    config.limits.retry_threshold = 8;
    let node = start_node(config);
    let mut by = Bystander::new(node.quic_addr);
    let connections_before = metric(node.http_addr, "fovea_connections");
    // 300 handshakes from 300 source ports, each started with one Initial and abandoned.
    let flood: Vec<UdpSocket> = (0..300).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
    for s in &flood {
        let (_conn, initial) = first_initial(s, node.quic_addr);
        s.send_to(&initial, node.quic_addr).unwrap();
    }
    assert!(
        wait_until(WAIT, || metric(node.http_addr, "fovea_retries_sent_total") >= 300 - 16),
        "Retry for every flooded Initial beyond 8 per shard (sent {})",
        metric(node.http_addr, "fovea_retries_sent_total")
    );
    // At most retry_threshold unvalidated handshakes hold state on each of the 2 shards.
    let flooded = metric(node.http_addr, "fovea_connections") - connections_before;
    assert!(flooded <= 16, "{flooded} flooded handshakes hold state");
    // The flooders were answered with Retry packets.
    let retry = recv_one(&flood[299], WAIT).expect("an answer to the last flooder");
    let hdr = quiche::Header::from_slice(&mut retry.clone(), 16).unwrap();
    assert_eq!(hdr.ty, quiche::Type::Retry);
    // The established session keeps working, and a new client still connects (through Retry).
    by.still_served("an Initial flood");
    let retries = metric(node.http_addr, "fovea_retries_sent_total");
    let mut late = TestClient::connect(node.quic_addr, "default");
    late.subscribe(1, "bystander");
    assert!(metric(node.http_addr, "fovea_retries_sent_total") > retries, "it went through Retry");
    by.publisher.publish_acked("bystander", b"late", None);
    assert_eq!(&late.next_deliver(WAIT).expect("new client served").payload[..], b"late");
    node.shutdown();
}

/// A Retry for `conn`'s first Initial carrying `token`, as if from the node (the integrity tag
/// is computed from the Initial's DCID, so the client accepts it).
fn retry_packet(initial: &[u8], new_scid: &[u8], token: &[u8]) -> Vec<u8> {
    let hdr = quiche::Header::from_slice(&mut initial.to_vec(), 16).unwrap();
    let mut out = vec![0u8; 1500];
    let n = quiche::retry(
        &hdr.scid,
        &hdr.dcid,
        &quiche::ConnectionId::from_ref(new_scid),
        token,
        hdr.version,
        &mut out,
    )
    .unwrap();
    out.truncate(n);
    out
}

/// Feeds a Retry to `conn` and returns its next Initial (now carrying the Retry's token).
fn initial_after_retry(
    conn: &mut quiche::Connection,
    node: SocketAddr,
    sock: &UdpSocket,
    retry: &[u8],
) -> Vec<u8> {
    let info = quiche::RecvInfo { from: node, to: sock.local_addr().unwrap() };
    conn.recv(&mut retry.to_vec(), info).expect("the client accepts the Retry");
    let mut out = vec![0u8; 1500];
    let (n, _) = conn.send(&mut out).unwrap();
    out.truncate(n);
    let hdr = quiche::Header::from_slice(&mut out.clone(), 16).unwrap();
    assert_eq!(hdr.ty, quiche::Type::Initial);
    assert_eq!(hdr.token.as_deref(), Some(retry_token(retry).as_slice()));
    out
}

fn retry_token(retry: &[u8]) -> Vec<u8> {
    let hdr = quiche::Header::from_slice(&mut retry.to_vec(), 16).unwrap();
    assert_eq!(hdr.ty, quiche::Type::Retry);
    hdr.token.unwrap()
}

#[test]
fn forged_modified_and_replayed_retry_tokens_are_dropped_and_a_real_one_is_accepted() {
    let mut config = test_config(1);
    config.limits.retry_threshold = 0;
    let node = start_node(config);
    let mut by = Bystander::new(node.quic_addr);
    let handshakes = metric(node.http_addr, "fovea_handshakes_total");
    let invalid = || metric(node.http_addr, "fovea_retry_tokens_invalid_total");
    let new_scid = [0u8; 16];
    // 1. A made-up token (the insecure quiche-example format: the address in clear).
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (mut conn, initial) = first_initial(&sock, node.quic_addr);
    let mut made_up = b"quiche".to_vec();
    made_up.extend_from_slice(&sock.local_addr().unwrap().ip().to_string().into_bytes());
    let forged = initial_after_retry(
        &mut conn,
        node.quic_addr,
        &sock,
        &retry_packet(&initial, &new_scid, &made_up),
    );
    sock.send_to(&forged, node.quic_addr).unwrap();
    assert!(wait_until(WAIT, || invalid() >= 1), "made-up token counted");
    assert!(recv_one(&sock, SHORT).is_none(), "no answer to a made-up token");
    // 2. A real token from the node, modified (one bit of its MAC) before the client uses it.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (mut conn, initial) = first_initial(&sock, node.quic_addr);
    sock.send_to(&initial, node.quic_addr).unwrap();
    let real_retry = recv_one(&sock, WAIT).expect("the node answers with Retry");
    let real_token = retry_token(&real_retry);
    let node_scid = quiche::Header::from_slice(&mut real_retry.clone(), 16).unwrap().scid;
    let mut modified = real_token.clone();
    *modified.last_mut().unwrap() ^= 1;
    let tampered = retry_packet(&initial, &node_scid, &modified);
    let tampered_initial = initial_after_retry(&mut conn, node.quic_addr, &sock, &tampered);
    let before = invalid();
    sock.send_to(&tampered_initial, node.quic_addr).unwrap();
    assert!(wait_until(WAIT, || invalid() > before), "modified token counted");
    assert!(recv_one(&sock, SHORT).is_none(), "no answer to a modified token");
    // 3. The real token, replayed from another source address.
    let other = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (mut conn2, initial2) = first_initial(&other, node.quic_addr);
    let replayed = retry_packet(&initial2, &node_scid, &real_token);
    let replayed_initial = initial_after_retry(&mut conn2, node.quic_addr, &other, &replayed);
    let before = invalid();
    other.send_to(&replayed_initial, node.quic_addr).unwrap();
    assert!(wait_until(WAIT, || invalid() > before), "replayed token counted");
    assert!(recv_one(&other, SHORT).is_none(), "no answer to a replayed token");
    assert_eq!(
        metric(node.http_addr, "fovea_handshakes_total"),
        handshakes,
        "no connection state for any bad token"
    );
    // 4. The real token, unmodified, from its own address: the handshake completes.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (mut conn, initial) = first_initial(&sock, node.quic_addr);
    sock.send_to(&initial, node.quic_addr).unwrap();
    let retry = recv_one(&sock, WAIT).expect("Retry");
    let with_token = initial_after_retry(&mut conn, node.quic_addr, &sock, &retry);
    sock.send_to(&with_token, node.quic_addr).unwrap();
    let deadline = Instant::now() + WAIT;
    let local = sock.local_addr().unwrap();
    let mut buf = vec![0u8; 65535];
    while !conn.is_established() {
        assert!(Instant::now() < deadline, "handshake with a real token completes");
        sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            let _ = conn.recv(&mut buf[..n], quiche::RecvInfo { from, to: local });
        } else {
            conn.on_timeout();
        }
        let mut out = [0u8; 1500];
        while let Ok((n, info)) = conn.send(&mut out) {
            sock.send_to(&out[..n], info.to).unwrap();
        }
    }
    assert_eq!(metric(node.http_addr, "fovea_handshakes_total"), handshakes + 1);
    by.still_served("forged Retry tokens");
    node.shutdown();
}
