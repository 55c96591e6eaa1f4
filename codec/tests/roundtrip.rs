//! Goal: every valid frame survives encode → decode unchanged however the bytes are cut up on
//! the way, the hot-path encoders produce exactly the generic encoding, and the reference topic
//! matcher means what docs/PROTOCOL.md §5.3 says.
//!
//! Method: proptest strategies build arbitrary *valid* values of every message type (topics,
//! patterns, realms, names, addresses, byte strings, varints of every length class); each
//! property encodes them with the codec and decodes them back, whole, split at every byte
//! position, or one byte at a time. The matcher is compared with a naive recursive matcher
//! written here from the doc's definition. Case counts are modest: the machine has 2 cores.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{BufMut, Bytes, BytesMut};
use fovea_codec::frame::{self, types, Sink};
use fovea_codec::varint::VARINT_MAX;
use fovea_codec::{
    decode_frame, decode_frame_bytes, encode_deliver_head, encode_deliver_tail, encode_publish,
    Frame, Limits, Name, Pattern, Realm, Topic,
};
use proptest::prelude::*;
use proptest::strategy::Union;
use proptest::test_runner::TestRunner;
use smallvec::SmallVec;

// ---------------------------------------------------------------------------------------------
// Strategies for field values.

/// Varints from every length class (1, 2, 4 and 8 bytes), boundaries included.
fn varint() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..64,
        64u64..16_384,
        16_384u64..(1 << 30),
        (1u64 << 30)..=VARINT_MAX,
        Just(VARINT_MAX),
        Just(63u64),
        Just(64u64),
    ]
}

fn id32() -> impl Strategy<Value = [u8; 32]> {
    any::<[u8; 32]>()
}

fn payload() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..48).prop_map(Bytes::from)
}

/// UTF-8 text of any characters (reasons, messages, client names, regions).
fn text() -> impl Strategy<Value = Bytes> {
    ".{0,12}".prop_map(|s: String| Bytes::from(s.into_bytes()))
}

fn addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port)),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port)),
    ]
}

/// One literal segment from the whole allowed alphabet, 1..=12 bytes (occasionally 64).
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => "[A-Za-z0-9_:@=~!-]{1,12}",
        1 => "[a-z]{64}",
    ]
}

/// Topics of 1..=16 segments, filtered to the 256-byte limit.
fn topic() -> impl Strategy<Value = Topic> {
    prop::collection::vec(segment(), 1..=16)
        .prop_map(|segs| segs.join("."))
        .prop_filter("at most 256 bytes", |s| s.len() <= 256)
        .prop_map(|s| s.parse::<Topic>().expect("strategy builds valid topics"))
}

fn name() -> impl Strategy<Value = Name> {
    topic().prop_map(|t| t.as_str().parse::<Name>().expect("a topic is a valid name"))
}

fn realm() -> impl Strategy<Value = Realm> {
    "[A-Za-z0-9_:@=~!-]{1,64}".prop_map(|s| s.parse::<Realm>().expect("valid realm"))
}

/// One pattern segment: a literal, `*` or `**`.
#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Lit(String),
    One,
    Many,
}

/// Joins segments into pattern text, dropping a `**` that directly follows another (the
/// canonical form the syntax demands).
fn pattern_text(segs: &[Seg]) -> String {
    let mut out: Vec<&str> = Vec::new();
    let mut previous_many = false;
    for s in segs {
        match s {
            Seg::Many if previous_many => continue,
            Seg::Many => out.push("**"),
            Seg::One => out.push("*"),
            Seg::Lit(l) => out.push(l),
        }
        previous_many = *s == Seg::Many;
    }
    out.join(".")
}

fn pattern_segments(
    literal: BoxedStrategy<String>,
    depth: usize,
) -> impl Strategy<Value = Vec<Seg>> {
    let seg = prop_oneof![
        3 => literal.prop_map(Seg::Lit),
        1 => Just(Seg::One),
        1 => Just(Seg::Many),
    ];
    prop::collection::vec(seg, 1..=depth)
}

fn pattern() -> impl Strategy<Value = Pattern> {
    pattern_segments(segment().boxed(), 16)
        .prop_map(|segs| pattern_text(&segs))
        .prop_filter("at most 256 bytes", |s| s.len() <= 256)
        .prop_map(|s| s.parse::<Pattern>().expect("strategy builds valid patterns"))
}

// ---------------------------------------------------------------------------------------------
// Strategies for frames.

/// Every type the strategies cover: all of `frame::types` plus an extension type.
fn covered_types() -> Vec<u8> {
    let mut t: Vec<u8> = (0u8..types::EXTENSION_MIN).filter(|&t| types::is_known(t)).collect();
    t.push(0x80);
    t
}

/// Arbitrary valid frames of type `t` (any type ≥ 0x80 gives extension frames).
fn frame_of(t: u8) -> BoxedStrategy<Frame> {
    use frame::*;
    match t {
        types::HELLO => (varint(), id32(), any::<u8>(), realm(), any::<u8>(), payload(), text())
            .prop_map(|(version, peer_id, flags, realm, cred_kind, credential, client_name)| {
                Frame::Hello(Hello {
                    version,
                    peer_id,
                    flags,
                    realm,
                    cred_kind,
                    credential,
                    client_name,
                })
            })
            .boxed(),
        types::WELCOME => {
            (varint(), id32(), addr(), prop::collection::vec((varint(), varint()), 0..8))
                .prop_map(|(version, node_id, observed, limits)| {
                    Frame::Welcome(Welcome { version, node_id, observed, limits })
                })
                .boxed()
        }
        types::CHALLENGE => {
            payload().prop_map(|nonce| Frame::Challenge(Challenge { nonce })).boxed()
        }
        types::AUTH => payload().prop_map(|signature| Frame::Auth(Auth { signature })).boxed(),
        types::GOODBYE => (varint(), text())
            .prop_map(|(code, reason)| Frame::Goodbye(Goodbye { code, reason }))
            .boxed(),
        types::PING => (varint(), any::<u64>())
            .prop_map(|(ping_id, sent_at_us)| Frame::Ping(Ping { ping_id, sent_at_us }))
            .boxed(),
        types::PONG => (varint(), any::<u64>(), any::<u64>())
            .prop_map(|(ping_id, sent_at_us, received_at_us)| {
                Frame::Pong(Pong { ping_id, sent_at_us, received_at_us })
            })
            .boxed(),
        types::OK => varint().prop_map(|request_id| Frame::Ok(Ok { request_id })).boxed(),
        types::ERROR => (varint(), varint(), text())
            .prop_map(|(request_id, code, message)| {
                Frame::Error(Error { request_id, code, message })
            })
            .boxed(),
        types::SUBSCRIBE => (varint(), varint(), pattern())
            .prop_map(|(request_id, sub_id, pattern)| {
                Frame::Subscribe(Subscribe { request_id, sub_id, pattern })
            })
            .boxed(),
        types::UNSUBSCRIBE => (varint(), varint())
            .prop_map(|(request_id, sub_id)| Frame::Unsubscribe(Unsubscribe { request_id, sub_id }))
            .boxed(),
        types::PUBLISH => publish().prop_map(Frame::Publish).boxed(),
        types::DELIVER => deliver().prop_map(Frame::Deliver).boxed(),
        types::REGISTER => (varint(), name())
            .prop_map(|(request_id, procedure)| Frame::Register(Register { request_id, procedure }))
            .boxed(),
        types::UNREGISTER => (varint(), name())
            .prop_map(|(request_id, procedure)| {
                Frame::Unregister(Unregister { request_id, procedure })
            })
            .boxed(),
        types::CALL => (any::<bool>(), varint(), varint(), name(), payload())
            .prop_map(|(idempotent, call_id, timeout_ms, procedure, payload)| {
                Frame::Call(Call { idempotent, call_id, timeout_ms, procedure, payload })
            })
            .boxed(),
        types::INVOKE => (varint(), varint(), id32(), name(), payload())
            .prop_map(|(invocation_id, timeout_ms, caller, procedure, payload)| {
                Frame::Invoke(Invoke { invocation_id, timeout_ms, caller, procedure, payload })
            })
            .boxed(),
        types::REPLY => (varint(), payload())
            .prop_map(|(id, payload)| Frame::Reply(Reply { id, payload }))
            .boxed(),
        types::CALL_ERROR => (varint(), varint(), text())
            .prop_map(|(id, code, message)| Frame::CallError(CallError { id, code, message }))
            .boxed(),
        types::SEND => (varint(), id32(), payload())
            .prop_map(|(request_id, target, payload)| {
                Frame::Send(Send { request_id, target, payload })
            })
            .boxed(),
        types::MESSAGE => (id32(), payload())
            .prop_map(|(source, payload)| Frame::Message(Message { source, payload }))
            .boxed(),
        types::OBSERVED_ADDR => {
            addr().prop_map(|observed| Frame::ObservedAddr(ObservedAddr { observed })).boxed()
        }
        types::PUNCH_REQUEST => (varint(), id32())
            .prop_map(|(request_id, target)| {
                Frame::PunchRequest(PunchRequest { request_id, target })
            })
            .boxed(),
        types::PUNCH => (id32(), addr(), any::<u64>())
            .prop_map(|(peer, peer_addr, start_at_ms)| {
                Frame::Punch(Punch { peer, peer_addr, start_at_ms })
            })
            .boxed(),
        types::FIND_NODE => (varint(), id32())
            .prop_map(|(request_id, target)| Frame::FindNode(FindNode { request_id, target }))
            .boxed(),
        types::FIND_VALUE => (varint(), id32())
            .prop_map(|(request_id, key)| Frame::FindValue(FindValue { request_id, key }))
            .boxed(),
        types::NODES => (varint(), prop::collection::vec((id32(), addr()), 0..4))
            .prop_map(|(request_id, nodes)| Frame::Nodes(Nodes { request_id, nodes }))
            .boxed(),
        types::VALUE => {
            let record = (id32(), varint(), payload())
                .prop_map(|(publisher, ttl_s, value)| ValueRecord { publisher, ttl_s, value });
            (varint(), prop::collection::vec(record, 0..4))
                .prop_map(|(request_id, records)| Frame::Value(Value { request_id, records }))
                .boxed()
        }
        types::STORE => (varint(), id32(), varint(), payload())
            .prop_map(|(request_id, key, ttl_s, value)| {
                Frame::Store(Store { request_id, key, ttl_s, value })
            })
            .boxed(),
        types::ANNOUNCE => (id32(), addr(), text(), varint(), varint(), any::<u64>())
            .prop_map(|(node_id, endpoint, region, load, capacity, hlc)| {
                Frame::Announce(Announce { node_id, endpoint, region, load, capacity, hlc })
            })
            .boxed(),
        types::SYNC_DIGEST => {
            let entry = (id32(), any::<u64>(), varint(), any::<u64>()).prop_map(
                |(origin, hlc, entries, hash)| DigestEntry { origin, hlc, entries, hash },
            );
            (varint(), prop::collection::vec(entry, 0..4))
                .prop_map(|(request_id, origins)| {
                    Frame::SyncDigest(SyncDigest { request_id, origins })
                })
                .boxed()
        }
        types::SYNC_DELTA => {
            let entry = (1u8..=2, 1u8..=2, any::<u64>(), realm(), pattern())
                .prop_map(|(kind, op, hlc, realm, name)| DeltaEntry { kind, op, hlc, realm, name });
            (varint(), id32(), prop::collection::vec(entry, 0..4))
                .prop_map(|(request_id, origin, entries)| {
                    Frame::SyncDelta(SyncDelta { request_id, origin, entries })
                })
                .boxed()
        }
        types::FORWARD_PUBLISH => {
            (id32(), any::<u8>(), any::<u8>(), varint(), realm(), topic(), payload())
                .prop_map(|(origin, hops, flags, message_id, realm, topic, payload)| {
                    Frame::ForwardPublish(ForwardPublish {
                        origin,
                        hops,
                        flags,
                        message_id,
                        realm,
                        topic,
                        payload,
                    })
                })
                .boxed()
        }
        types::FORWARD_CALL => (
            (id32(), any::<u8>(), any::<u8>(), varint(), varint()),
            (id32(), realm(), name(), payload()),
        )
            .prop_map(
                |(
                    (origin, hops, flags, forward_id, timeout_ms),
                    (caller, realm, procedure, payload),
                )| {
                    Frame::ForwardCall(ForwardCall {
                        origin,
                        hops,
                        flags,
                        forward_id,
                        timeout_ms,
                        caller,
                        realm,
                        procedure,
                        payload,
                    })
                },
            )
            .boxed(),
        types::FORWARD_REPLY => (varint(), varint(), payload())
            .prop_map(|(forward_id, code, payload)| {
                Frame::ForwardReply(ForwardReply { forward_id, code, payload })
            })
            .boxed(),
        t if t >= types::EXTENSION_MIN => (types::EXTENSION_MIN..=u8::MAX, payload())
            .prop_map(|(frame_type, body)| Frame::Extension { frame_type, body })
            .boxed(),
        t => panic!("no strategy for type 0x{t:02x}"),
    }
}

fn publish() -> impl Strategy<Value = frame::Publish> {
    (varint(), prop::option::of(varint()), topic(), payload()).prop_map(
        |(request_id, message_id, topic, payload)| frame::Publish {
            request_id,
            message_id,
            topic,
            payload,
        },
    )
}

fn deliver() -> impl Strategy<Value = frame::Deliver> {
    (prop::collection::vec(varint(), 1..6), prop::option::of(varint()), topic(), payload())
        .prop_map(|(sub_ids, message_id, topic, payload)| frame::Deliver {
            sub_ids: SmallVec::from_vec(sub_ids),
            message_id,
            topic,
            payload,
        })
}

/// A frame of any type, every type equally likely.
fn any_frame() -> impl Strategy<Value = Frame> {
    Union::new(covered_types().into_iter().map(frame_of))
}

// ---------------------------------------------------------------------------------------------
// Helpers.

fn concat(frames: &[Frame]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for f in frames {
        f.encode(&mut out);
    }
    out.to_vec()
}

/// Decodes every whole frame in `buf`; panics on a decoding error.
fn drain(buf: &mut BytesMut, out: &mut Vec<Frame>) {
    let limits = Limits::default();
    while let Some(f) = decode_frame(buf, &limits).expect("valid bytes decode") {
        out.push(f);
    }
}

// ---------------------------------------------------------------------------------------------
// Properties.

#[test]
fn strategies_cover_every_message_type() {
    let mut runner = TestRunner::deterministic();
    for t in covered_types() {
        let frame = frame_of(t).new_tree(&mut runner).expect("strategy yields a value").current();
        if t >= types::EXTENSION_MIN {
            assert!(frame.frame_type() >= types::EXTENSION_MIN);
        } else {
            assert_eq!(frame.frame_type(), t, "strategy for 0x{t:02x} builds another type");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(384))]

    #[test]
    fn every_valid_frame_decodes_to_itself(frame in any_frame()) {
        let bytes = frame.to_bytes();
        prop_assert_eq!(bytes.len(), frame.encoded_len());
        let mut buf = BytesMut::from(&bytes[..]);
        let decoded = decode_frame(&mut buf, &Limits::default());
        prop_assert_eq!(decoded, Ok(Some(frame.clone())));
        prop_assert!(buf.is_empty(), "decode_frame consumes exactly one frame");
        let (again, used) = decode_frame_bytes(&bytes, &Limits::default())
            .expect("valid")
            .expect("whole frame");
        prop_assert_eq!(again, frame);
        prop_assert_eq!(used, bytes.len());
    }

    #[test]
    fn bytes_after_the_known_fields_are_ignored(
        frame in any_frame().prop_filter("extensions have no known fields", |f| {
            f.frame_type() < types::EXTENSION_MIN
        }),
        extra in prop::collection::vec(any::<u8>(), 1..16),
    ) {
        let bytes = frame.to_bytes();
        let header = frame.encoded_len() - frame.body_len();
        let mut longer = BytesMut::new();
        longer.put_u8(frame.frame_type());
        longer.w_varint((frame.body_len() + extra.len()) as u64);
        longer.extend_from_slice(&bytes[header..]);
        longer.extend_from_slice(&extra);
        let decoded = decode_frame(&mut longer, &Limits::default());
        prop_assert_eq!(decoded, Ok(Some(frame)));
        prop_assert!(longer.is_empty());
    }

    #[test]
    fn a_frame_length_in_a_longer_varint_form_decodes_the_same(frame in any_frame()) {
        let bytes = frame.to_bytes();
        let header = frame.encoded_len() - frame.body_len();
        let mut long = BytesMut::new();
        long.put_u8(frame.frame_type());
        long.put_u64(frame.body_len() as u64 | 0xc000_0000_0000_0000);
        long.extend_from_slice(&bytes[header..]);
        prop_assert_eq!(decode_frame(&mut long, &Limits::default()), Ok(Some(frame)));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn frames_split_at_every_point_decode_to_the_same_frames(
        frames in prop::collection::vec(any_frame(), 1..4),
    ) {
        let bytes = concat(&frames);
        for split in 0..=bytes.len() {
            let mut buf = BytesMut::from(&bytes[..split]);
            let mut got = Vec::new();
            drain(&mut buf, &mut got);
            buf.extend_from_slice(&bytes[split..]);
            drain(&mut buf, &mut got);
            prop_assert!(buf.is_empty(), "split at {split}: bytes left over");
            prop_assert_eq!(&got, &frames, "split at {}", split);
        }
    }

    #[test]
    fn frames_fed_one_byte_at_a_time_decode_to_the_same_frames(
        frames in prop::collection::vec(any_frame(), 1..6),
    ) {
        let bytes = concat(&frames);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for &b in &bytes {
            buf.put_u8(b);
            drain(&mut buf, &mut got);
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got, frames);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn deliver_head_then_tail_is_the_deliver_frame(d in deliver()) {
        let tail = encode_deliver_tail(d.message_id, &d.topic, &d.payload);
        let mut fast = BytesMut::new();
        encode_deliver_head(&d.sub_ids, tail.len(), &mut fast);
        fast.extend_from_slice(&tail);
        let generic = Frame::Deliver(d).to_bytes();
        prop_assert_eq!(fast.as_ref(), generic.as_ref());
    }

    #[test]
    fn encode_publish_is_the_publish_frame(p in publish()) {
        let mut fast = BytesMut::new();
        encode_publish(p.request_id, p.message_id, &p.topic, &p.payload, &mut fast);
        let generic = Frame::Publish(p).to_bytes();
        prop_assert_eq!(fast.as_ref(), generic.as_ref());
    }

    #[test]
    fn encoders_append_after_existing_bytes(p in publish(), d in deliver()) {
        // The hot path writes into shared buffers: nothing already there may be disturbed.
        let mut out = BytesMut::from(&b"prefix"[..]);
        encode_publish(p.request_id, p.message_id, &p.topic, &p.payload, &mut out);
        let tail = encode_deliver_tail(d.message_id, &d.topic, &d.payload);
        encode_deliver_head(&d.sub_ids, tail.len(), &mut out);
        out.extend_from_slice(&tail);
        prop_assert_eq!(&out[..6], b"prefix");
        let _ = out.split_to(6);
        let mut got = Vec::new();
        drain(&mut out, &mut got);
        prop_assert_eq!(got, vec![Frame::Publish(p), Frame::Deliver(d)]);
    }
}

// ---------------------------------------------------------------------------------------------
// The matcher.

/// Matching straight from the definition (docs/PROTOCOL.md §5.3): a literal consumes one equal
/// segment, `*` any one segment, `**` any number of segments, and the whole topic must be
/// consumed. Exponential in the worst case; fine for the small inputs below.
fn naive_matches(pattern: &[Seg], topic: &[&str]) -> bool {
    match pattern.split_first() {
        None => topic.is_empty(),
        Some((Seg::Lit(l), rest)) => {
            topic.first() == Some(&l.as_str()) && naive_matches(rest, &topic[1..])
        }
        Some((Seg::One, rest)) => !topic.is_empty() && naive_matches(rest, &topic[1..]),
        Some((Seg::Many, rest)) => (0..=topic.len()).any(|k| naive_matches(rest, &topic[k..])),
    }
}

/// Parses pattern text back into segments (for the naive matcher).
fn segs_of(p: &Pattern) -> Vec<Seg> {
    p.as_str()
        .split('.')
        .map(|s| match s {
            "*" => Seg::One,
            "**" => Seg::Many,
            l => Seg::Lit(l.to_string()),
        })
        .collect()
}

/// A tiny alphabet so that literals collide often and matches are common.
fn small_literal() -> BoxedStrategy<String> {
    prop_oneof![Just("a".to_string()), Just("b".to_string()), Just("ab".to_string())].boxed()
}

fn small_topic() -> impl Strategy<Value = Topic> {
    prop::collection::vec(small_literal(), 1..=7)
        .prop_map(|segs| segs.join(".").parse::<Topic>().expect("valid"))
}

fn small_pattern() -> impl Strategy<Value = Pattern> {
    pattern_segments(small_literal(), 6)
        .prop_map(|segs| pattern_text(&segs).parse::<Pattern>().expect("valid"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn reference_matcher_agrees_with_a_naive_recursive_matcher(
        pattern in small_pattern(),
        topic in small_topic(),
    ) {
        let topic_segs: Vec<&str> = topic.as_str().split('.').collect();
        let want = naive_matches(&segs_of(&pattern), &topic_segs);
        prop_assert_eq!(pattern.matches(&topic), want, "{} vs {}", pattern, topic);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_topic_as_a_pattern_matches_only_itself(a in small_topic(), b in small_topic()) {
        let p = Pattern::from(a.clone());
        prop_assert!(p.matches(&a));
        prop_assert_eq!(p.matches(&b), a == b);
    }

    #[test]
    fn a_pattern_of_full_width_segments_matches_the_topic_it_was_built_from(
        segs in prop::collection::vec(segment(), 1..=8),
        wild in prop::collection::vec(0u8..3, 8),
    ) {
        // Replace some segments by `*` or `**`: the pattern must still match the topic.
        let topic: Topic = segs.join(".").parse().expect("valid");
        let pattern: Vec<Seg> = segs
            .iter()
            .zip(&wild)
            .map(|(s, w)| match w {
                0 => Seg::Lit(s.clone()),
                1 => Seg::One,
                _ => Seg::Many,
            })
            .collect();
        let pattern: Pattern = pattern_text(&pattern).parse().expect("valid");
        prop_assert!(pattern.matches(&topic), "{} vs {}", pattern, topic);
    }
}
