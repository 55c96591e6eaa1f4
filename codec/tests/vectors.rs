//! Goal: docs/PROTOCOL.md and the codec cannot drift apart. The doc's byte example of every
//! message type, its error-code table, its frame-type table and its WELCOME limit-key table are
//! exactly what the codec produces, accepts and defines.
//!
//! Method: the doc is compiled in (`include_str!`). Every `Example: NAME` line is followed by a
//! fenced `hex` block; each block is decoded with `decode_frame`, its type must be NAME's, its
//! fields must equal the values the doc's prose states (listed in [`documented_examples`]), and
//! re-encoding must give the same bytes. Tables are parsed row by row and compared with
//! `ErrorCode::ALL`, `frame::types` and `frame::limit_keys`. When an example is missing or
//! wrong, the failure message prints the block to paste into the doc.

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use fovea_codec::frame::{self, limit_keys, types};
use fovea_codec::{decode_frame, ErrorCode, Frame, Limits, Name, Pattern, Realm, Topic};
use smallvec::smallvec;

const DOC: &str = include_str!("../../docs/PROTOCOL.md");

/// Every message type of v1: its name in the doc and its type byte.
const MESSAGE_TYPES: &[(&str, u8)] = &[
    ("HELLO", types::HELLO),
    ("WELCOME", types::WELCOME),
    ("CHALLENGE", types::CHALLENGE),
    ("AUTH", types::AUTH),
    ("GOODBYE", types::GOODBYE),
    ("PING", types::PING),
    ("PONG", types::PONG),
    ("OK", types::OK),
    ("ERROR", types::ERROR),
    ("SUBSCRIBE", types::SUBSCRIBE),
    ("UNSUBSCRIBE", types::UNSUBSCRIBE),
    ("PUBLISH", types::PUBLISH),
    ("DELIVER", types::DELIVER),
    ("REGISTER", types::REGISTER),
    ("UNREGISTER", types::UNREGISTER),
    ("CALL", types::CALL),
    ("INVOKE", types::INVOKE),
    ("REPLY", types::REPLY),
    ("CALL_ERROR", types::CALL_ERROR),
    ("SEND", types::SEND),
    ("MESSAGE", types::MESSAGE),
    ("OBSERVED_ADDR", types::OBSERVED_ADDR),
    ("PUNCH_REQUEST", types::PUNCH_REQUEST),
    ("PUNCH", types::PUNCH),
    ("FIND_NODE", types::FIND_NODE),
    ("FIND_VALUE", types::FIND_VALUE),
    ("NODES", types::NODES),
    ("VALUE", types::VALUE),
    ("STORE", types::STORE),
    ("ANNOUNCE", types::ANNOUNCE),
    ("SYNC_DIGEST", types::SYNC_DIGEST),
    ("SYNC_DELTA", types::SYNC_DELTA),
    ("FORWARD_PUBLISH", types::FORWARD_PUBLISH),
    ("FORWARD_CALL", types::FORWARD_CALL),
    ("FORWARD_REPLY", types::FORWARD_REPLY),
];

/// The example of an extension frame (a type ≥ 0x80) uses this name and type.
const EXTENSION_NAME: &str = "EXTENSION";
const EXTENSION_TYPE: u8 = 0xA0;
/// Extension types this version names (decoded as `Frame::Extension`, bodies read by their
/// own helpers).
const NAMED_EXTENSIONS: &[(&str, u8)] = &[(EXTENSION_NAME, EXTENSION_TYPE), ("SWIM", types::SWIM)];

fn extension_type_of(name: &str) -> Option<u8> {
    NAMED_EXTENSIONS.iter().find(|(n, _)| *n == name).map(|&(_, t)| t)
}

fn id(byte: u8) -> [u8; 32] {
    [byte; 32]
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("valid address literal")
}

fn bytes(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

/// The values each example in the doc states in its prose, in the doc's order.
fn documented_examples() -> Vec<(&'static str, Frame)> {
    let acme = Realm::from_static("acme");
    let kitchen = Topic::from_static("sensors.kitchen.temp");
    let add = Name::from_static("math.add");
    let hlc = 0x0000_0199_3a4f_0001;
    vec![
        (
            "HELLO",
            Frame::Hello(frame::Hello {
                version: 1,
                peer_id: id(0x11),
                flags: 0,
                realm: acme.clone(),
                cred_kind: 0,
                credential: Bytes::new(),
                client_name: bytes("fovea-cli/0.1"),
            }),
        ),
        (
            "WELCOME",
            Frame::Welcome(frame::Welcome {
                version: 1,
                node_id: id(0x22),
                observed: addr("192.0.2.7:50123"),
                limits: vec![
                    (limit_keys::MAX_PAYLOAD, 1_048_576),
                    (limit_keys::MAX_FRAME_LEN, 1_064_960),
                    (limit_keys::MAX_TOPIC_LEN, 256),
                    (limit_keys::MAX_TOPIC_DEPTH, 16),
                    (limit_keys::MAX_SUBSCRIPTIONS, 1024),
                    (limit_keys::MAX_REGISTRATIONS, 64),
                    (limit_keys::MAX_INFLIGHT_CALLS, 1024),
                    (limit_keys::IDLE_TIMEOUT_MS, 30_000),
                    (limit_keys::KEEPALIVE_MS, 10_000),
                ],
            }),
        ),
        ("CHALLENGE", Frame::Challenge(frame::Challenge { nonce: (0u8..32).collect() })),
        ("AUTH", Frame::Auth(frame::Auth { signature: Bytes::from(vec![0x5a; 64]) })),
        (
            "GOODBYE",
            Frame::Goodbye(frame::Goodbye {
                code: ErrorCode::ShuttingDown as u64,
                reason: bytes("node is shutting down"),
            }),
        ),
        ("PING", Frame::Ping(frame::Ping { ping_id: 1, sent_at_us: 1_000_000 })),
        (
            "PONG",
            Frame::Pong(frame::Pong {
                ping_id: 1,
                sent_at_us: 1_000_000,
                received_at_us: 5_000_250,
            }),
        ),
        ("OK", Frame::Ok(frame::Ok { request_id: 7 })),
        (
            "ERROR",
            Frame::Error(frame::Error {
                request_id: 8,
                code: ErrorCode::TooManySubscriptions as u64,
                message: bytes("max_subscriptions_per_peer reached"),
            }),
        ),
        (
            "SUBSCRIBE",
            Frame::Subscribe(frame::Subscribe {
                request_id: 7,
                sub_id: 1,
                pattern: Pattern::from_static("sensors.*.temp"),
            }),
        ),
        ("UNSUBSCRIBE", Frame::Unsubscribe(frame::Unsubscribe { request_id: 9, sub_id: 1 })),
        (
            "PUBLISH",
            Frame::Publish(frame::Publish {
                request_id: 10,
                message_id: Some(42),
                topic: kitchen.clone(),
                payload: bytes("21.5"),
            }),
        ),
        (
            "DELIVER",
            Frame::Deliver(frame::Deliver {
                sub_ids: smallvec![1, 3],
                message_id: Some(42),
                topic: kitchen.clone(),
                payload: bytes("21.5"),
            }),
        ),
        ("REGISTER", Frame::Register(frame::Register { request_id: 11, procedure: add.clone() })),
        (
            "UNREGISTER",
            Frame::Unregister(frame::Unregister { request_id: 12, procedure: add.clone() }),
        ),
        (
            "CALL",
            Frame::Call(frame::Call {
                idempotent: true,
                call_id: 5,
                timeout_ms: 2000,
                procedure: add.clone(),
                payload: bytes("[2,3]"),
            }),
        ),
        (
            "INVOKE",
            Frame::Invoke(frame::Invoke {
                invocation_id: 77,
                timeout_ms: 1990,
                caller: id(0x11),
                procedure: add.clone(),
                payload: bytes("[2,3]"),
            }),
        ),
        ("REPLY", Frame::Reply(frame::Reply { id: 5, payload: bytes("5") })),
        (
            "CALL_ERROR",
            Frame::CallError(frame::CallError {
                id: 5,
                code: ErrorCode::NoProvider as u64,
                message: bytes("no provider is registered"),
            }),
        ),
        (
            "SEND",
            Frame::Send(frame::Send { request_id: 13, target: id(0x33), payload: bytes("hi") }),
        ),
        ("MESSAGE", Frame::Message(frame::Message { source: id(0x11), payload: bytes("hi") })),
        (
            "OBSERVED_ADDR",
            Frame::ObservedAddr(frame::ObservedAddr { observed: addr("[2001:db8::7]:50123") }),
        ),
        (
            "PUNCH_REQUEST",
            Frame::PunchRequest(frame::PunchRequest { request_id: 14, target: id(0x33) }),
        ),
        (
            "PUNCH",
            Frame::Punch(frame::Punch {
                peer: id(0x33),
                peer_addr: addr("198.51.100.9:40000"),
                start_at_ms: 1_767_225_600_000,
            }),
        ),
        ("FIND_NODE", Frame::FindNode(frame::FindNode { request_id: 15, target: id(0x44) })),
        ("FIND_VALUE", Frame::FindValue(frame::FindValue { request_id: 16, key: id(0x55) })),
        (
            "NODES",
            Frame::Nodes(frame::Nodes {
                request_id: 15,
                nodes: vec![
                    (id(0x66), addr("203.0.113.5:4433")),
                    (id(0x77), addr("[2001:db8::5]:4433")),
                ],
            }),
        ),
        (
            "VALUE",
            Frame::Value(frame::Value {
                request_id: 16,
                records: vec![frame::ValueRecord {
                    publisher: id(0x11),
                    ttl_s: 3600,
                    value: bytes("math.add@203.0.113.5:4433"),
                }],
            }),
        ),
        (
            "STORE",
            Frame::Store(frame::Store {
                request_id: 17,
                key: id(0x55),
                ttl_s: 3600,
                value: bytes("math.add@203.0.113.5:4433"),
            }),
        ),
        (
            "ANNOUNCE",
            Frame::Announce(frame::Announce {
                node_id: id(0x22),
                endpoint: addr("203.0.113.5:4433"),
                region: bytes("eu-west"),
                load: 1200,
                capacity: 20_000,
                hlc,
            }),
        ),
        (
            "SYNC_DIGEST",
            Frame::SyncDigest(frame::SyncDigest {
                request_id: 18,
                origins: vec![frame::DigestEntry {
                    origin: id(0x22),
                    hlc,
                    entries: 2,
                    hash: 0x0123_4567_89ab_cdef,
                }],
            }),
        ),
        (
            "SYNC_DELTA",
            Frame::SyncDelta(frame::SyncDelta {
                request_id: 18,
                origin: id(0x22),
                entries: vec![
                    frame::DeltaEntry {
                        kind: 1,
                        op: 1,
                        hlc,
                        realm: acme.clone(),
                        name: Pattern::from_static("sensors.*.temp"),
                    },
                    frame::DeltaEntry {
                        kind: 2,
                        op: 2,
                        hlc: hlc + 1,
                        realm: acme.clone(),
                        name: Pattern::from_static("math.add"),
                    },
                ],
            }),
        ),
        (
            "FORWARD_PUBLISH",
            Frame::ForwardPublish(frame::ForwardPublish {
                origin: id(0x22),
                hops: 1,
                flags: 0,
                message_id: 42,
                realm: acme.clone(),
                topic: kitchen,
                payload: bytes("21.5"),
            }),
        ),
        (
            "FORWARD_CALL",
            Frame::ForwardCall(frame::ForwardCall {
                origin: id(0x22),
                hops: 1,
                flags: frame::FLAG_IDEMPOTENT,
                forward_id: 900,
                timeout_ms: 1500,
                caller: id(0x11),
                realm: acme,
                procedure: add,
                payload: bytes("[2,3]"),
            }),
        ),
        (
            "FORWARD_REPLY",
            Frame::ForwardReply(frame::ForwardReply {
                forward_id: 900,
                code: 0,
                payload: bytes("5"),
            }),
        ),
        (
            EXTENSION_NAME,
            Frame::Extension { frame_type: EXTENSION_TYPE, body: Bytes::from_static(&[1, 2, 3]) },
        ),
        (
            "SWIM",
            frame::Swim { datagram: Bytes::from_static(&[0xde, 0xad, 0xbe, 0xef]) }.to_frame(),
        ),
    ]
}

/// One `Example:` block of the doc.
struct Example {
    name: String,
    line: usize,
    bytes: Vec<u8>,
}

/// Extracts every `Example: NAME` + fenced `hex` block. Panics on a malformed block, so a typo
/// in the doc cannot hide an example from the checks.
fn doc_examples(doc: &str) -> Vec<Example> {
    let mut out = Vec::new();
    let mut lines = doc.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        let Some(name) = line.strip_prefix("Example: ") else { continue };
        let name = name.trim().to_string();
        let fence = lines.by_ref().map(|(_, l)| l.trim()).find(|l| !l.is_empty());
        assert_eq!(
            fence,
            Some("```hex"),
            "line {}: `Example: {name}` must open a hex block",
            i + 1
        );
        let mut bytes = Vec::new();
        let mut closed = false;
        for (j, l) in lines.by_ref() {
            if l.trim() == "```" {
                closed = true;
                break;
            }
            for token in l.split_whitespace() {
                assert_eq!(token.len(), 2, "line {}: `{token}` is not one hex byte", j + 1);
                let b = u8::from_str_radix(token, 16)
                    .unwrap_or_else(|_| panic!("line {}: `{token}` is not hex", j + 1));
                bytes.push(b);
            }
        }
        assert!(closed, "line {}: the hex block of {name} is not closed", i + 1);
        out.push(Example { name, line: i + 1, bytes });
    }
    out
}

/// The doc form of an encoded frame: the header (type and length) on the first line, the body
/// 16 bytes per line.
fn hex_block(name: &str, frame: &Frame) -> String {
    let encoded = frame.to_bytes();
    let header_len = encoded.len() - frame.body_len();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(" ");
    let mut s = format!("Example: {name}\n\n```hex\n{}\n", hex(&encoded[..header_len]));
    for chunk in encoded[header_len..].chunks(16) {
        s.push_str(&hex(chunk));
        s.push('\n');
    }
    s.push_str("```\n");
    s
}

fn type_of(name: &str) -> Option<u8> {
    MESSAGE_TYPES.iter().find(|(n, _)| *n == name).map(|&(_, t)| t)
}

#[test]
fn message_type_list_covers_every_type_the_codec_knows() {
    let listed: Vec<u8> = MESSAGE_TYPES.iter().map(|&(_, t)| t).collect();
    let known: Vec<u8> = (0u8..types::EXTENSION_MIN).filter(|&t| types::is_known(t)).collect();
    assert_eq!(listed, known);
}

#[test]
fn every_message_type_has_exactly_one_example_in_the_doc() {
    let examples = doc_examples(DOC);
    let mut missing = String::new();
    for (name, frame) in documented_examples() {
        match examples.iter().filter(|e| e.name == name).count() {
            0 => missing.push_str(&hex_block(name, &frame)),
            1 => {}
            n => panic!("{name} has {n} examples in docs/PROTOCOL.md"),
        }
    }
    assert!(missing.is_empty(), "docs/PROTOCOL.md lacks these examples:\n{missing}");
    for e in &examples {
        assert!(
            type_of(&e.name).is_some() || extension_type_of(&e.name).is_some(),
            "line {}: `Example: {}` names no message type",
            e.line,
            e.name
        );
    }
    for &(name, _) in MESSAGE_TYPES {
        assert!(documented_examples().iter().any(|(n, _)| *n == name), "no values for {name}");
    }
}

#[test]
fn every_example_decodes_to_the_documented_values_and_reencodes_byte_exactly() {
    let expected = documented_examples();
    let limits = Limits::default();
    for e in doc_examples(DOC) {
        let (_, want) = expected
            .iter()
            .find(|(n, _)| *n == e.name)
            .unwrap_or_else(|| panic!("line {}: no documented values for {}", e.line, e.name));
        let fix = hex_block(&e.name, want);
        let mut buf = BytesMut::from(&e.bytes[..]);
        let frame = match decode_frame(&mut buf, &limits) {
            Ok(Some(f)) => f,
            other => {
                panic!("line {}: {} does not decode ({other:?}); expected:\n{fix}", e.line, e.name)
            }
        };
        assert!(buf.is_empty(), "line {}: {} has bytes after its frame", e.line, e.name);
        let want_type = type_of(&e.name).or_else(|| extension_type_of(&e.name)).expect("named");
        assert_eq!(frame.frame_type(), want_type, "line {}: type of {}", e.line, e.name);
        assert_eq!(&frame, want, "line {}: fields of {}; expected:\n{fix}", e.line, e.name);
        assert_eq!(
            frame.to_bytes().as_ref(),
            &e.bytes[..],
            "line {}: {} does not re-encode to the same bytes",
            e.line,
            e.name
        );
    }
}

/// Rows `| a | b | ... |` of the first table after `heading`, split into trimmed cells, without
/// the header and separator rows.
fn table_after<'a>(doc: &'a str, heading: &str) -> Vec<Vec<&'a str>> {
    let start = doc.find(heading).unwrap_or_else(|| panic!("docs/PROTOCOL.md has no `{heading}`"));
    let rows: Vec<Vec<&str>> = doc[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .map(|l| l.trim().trim_matches('|').split('|').map(str::trim).collect())
        .collect();
    assert!(rows.len() > 2, "no table after `{heading}`");
    rows[2..].to_vec()
}

fn hex_cell(cell: &str) -> u64 {
    let digits = cell.trim_matches('`').strip_prefix("0x").expect("hex cell starts with 0x");
    u64::from_str_radix(digits, 16).expect("hex cell")
}

#[test]
fn error_code_table_matches_error_code_all() {
    let rows = table_after(DOC, "<!-- error-codes -->");
    let doc: Vec<(u64, &str, bool, &str)> = rows
        .iter()
        .map(|r| {
            assert_eq!(r.len(), 4, "error-code row {r:?} needs 4 cells");
            let closes = match r[2] {
                "closes" => true,
                "request" => false,
                other => panic!("closes cell must be `closes` or `request`, not `{other}`"),
            };
            (hex_cell(r[0]), r[1].trim_matches('`'), closes, r[3])
        })
        .collect();
    let code: Vec<(u64, &str, bool, &str)> = ErrorCode::ALL
        .iter()
        .map(|&c| (c as u64, c.name(), c.closes_connection(), c.meaning()))
        .collect();
    assert_eq!(doc, code, "docs/PROTOCOL.md §8 and ErrorCode::ALL disagree");
    // The doc's rule: 0x00-0xFF close the connection, 0x100-0xFFFF fail only the request.
    for &c in ErrorCode::ALL {
        assert_eq!(c.closes_connection(), (c as u64) < 0x100, "{c} breaks the range rule");
        assert!((c as u64) < 0x10000, "{c} is in the application range");
    }
}

#[test]
fn frame_type_table_names_every_type_with_its_code() {
    let rows = table_after(DOC, "<!-- frame-types -->");
    let doc: Vec<(u8, &str)> =
        rows.iter().map(|r| (hex_cell(r[0]) as u8, r[1].trim_matches('`'))).collect();
    let code: Vec<(u8, &str)> = MESSAGE_TYPES.iter().map(|&(n, t)| (t, n)).collect();
    assert_eq!(doc, code);
}

#[test]
fn welcome_limit_key_table_matches_limit_keys() {
    let rows = table_after(DOC, "<!-- limit-keys -->");
    let doc: Vec<(u64, &str)> =
        rows.iter().map(|r| (r[0].parse().expect("decimal key"), r[1].trim_matches('`'))).collect();
    let code = vec![
        (limit_keys::MAX_PAYLOAD, "max_payload"),
        (limit_keys::MAX_FRAME_LEN, "max_frame_len"),
        (limit_keys::MAX_TOPIC_LEN, "max_topic_len"),
        (limit_keys::MAX_TOPIC_DEPTH, "max_topic_depth"),
        (limit_keys::MAX_SUBSCRIPTIONS, "max_subscriptions"),
        (limit_keys::MAX_REGISTRATIONS, "max_registrations"),
        (limit_keys::MAX_INFLIGHT_CALLS, "max_inflight_calls"),
        (limit_keys::IDLE_TIMEOUT_MS, "idle_timeout_ms"),
        (limit_keys::KEEPALIVE_MS, "keepalive_ms"),
        (limit_keys::PUBLISH_RATE_PER_S, "publish_rate_per_s"),
        (limit_keys::PUBLISH_BURST, "publish_burst"),
    ];
    assert_eq!(doc, code);
}

/// Backticked items of a table cell: "`a`, `b`" → ["a", "b"].
fn ticked(cell: &str) -> Vec<&str> {
    cell.split(',').map(|t| t.trim().trim_matches('`')).filter(|t| !t.is_empty()).collect()
}

#[test]
fn matching_examples_in_the_doc_agree_with_the_reference_matcher() {
    let rows = table_after(DOC, "<!-- matching-examples -->");
    for r in rows {
        let pattern: Pattern = r[0].trim_matches('`').parse().expect("doc pattern is valid");
        for t in ticked(r[1]) {
            let topic: Topic = t.parse().expect("doc topic is valid");
            assert!(pattern.matches(&topic), "doc says {pattern} matches {topic}");
        }
        for t in ticked(r[2]) {
            let topic: Topic = t.parse().expect("doc topic is valid");
            assert!(!pattern.matches(&topic), "doc says {pattern} does not match {topic}");
        }
    }
}

#[test]
fn syntax_examples_in_the_doc_agree_with_the_validators() {
    let rows = table_after(DOC, "<!-- syntax-examples -->");
    let yes = |cell: &str| match cell {
        "yes" => true,
        "no" => false,
        other => panic!("validity cell must be yes or no, not `{other}`"),
    };
    for r in rows {
        let text = r[0].trim_matches('`');
        assert_eq!(text.parse::<Topic>().is_ok(), yes(r[1]), "`{text}` as a topic");
        assert_eq!(text.parse::<Pattern>().is_ok(), yes(r[2]), "`{text}` as a pattern");
    }
}

#[test]
fn example_parser_reads_bytes_across_lines_and_rejects_non_hex() {
    let doc = "text\nExample: OK\n\n```hex\n08 01\n07\n```\nmore\n";
    let examples = doc_examples(doc);
    assert_eq!(examples.len(), 1);
    assert_eq!(examples[0].name, "OK");
    assert_eq!(examples[0].bytes, vec![0x08, 0x01, 0x07]);
    let bad = std::panic::catch_unwind(|| doc_examples("Example: OK\n```hex\n0g\n```\n"));
    assert!(bad.is_err(), "a non-hex token must not be skipped silently");
}

#[test]
fn the_swim_example_reads_back_as_foca_bytes() {
    let example = doc_examples(DOC).into_iter().find(|e| e.name == "SWIM").expect("SWIM example");
    let mut buf = BytesMut::from(&example.bytes[..]);
    let limits = Limits::default();
    let frame = decode_frame(&mut buf, &limits).expect("decodes").expect("whole frame");
    let swim = frame::Swim::from_frame(&frame, &limits).expect("a SWIM frame").expect("valid");
    assert_eq!(swim.datagram.as_ref(), &[0xde, 0xad, 0xbe, 0xef]);
    let other = Frame::Extension { frame_type: EXTENSION_TYPE, body: Bytes::new() };
    assert!(frame::Swim::from_frame(&other, &limits).is_none());
}
