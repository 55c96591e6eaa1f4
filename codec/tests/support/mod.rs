//! Strategies shared by the codec's property tests: arbitrary *valid* values of every field
//! kind and frames of every message type.

#![allow(dead_code)] // each test file uses a different subset

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::Bytes;
use fovea_codec::frame::{self, types};
use fovea_codec::varint::VARINT_MAX;
use fovea_codec::{Frame, Name, Pattern, Realm, Topic};
use proptest::prelude::*;
use proptest::strategy::Union;
use smallvec::SmallVec;

// ---------------------------------------------------------------------------------------------
// Strategies for field values.

/// Varints from every length class (1, 2, 4 and 8 bytes), boundaries included.
pub(crate) fn varint() -> impl Strategy<Value = u64> {
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

pub(crate) fn id32() -> impl Strategy<Value = [u8; 32]> {
    any::<[u8; 32]>()
}

pub(crate) fn payload() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..48).prop_map(Bytes::from)
}

/// UTF-8 text of any characters (reasons, messages, client names, regions).
pub(crate) fn text() -> impl Strategy<Value = Bytes> {
    ".{0,12}".prop_map(|s: String| Bytes::from(s.into_bytes()))
}

pub(crate) fn addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port)),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port)),
    ]
}

/// One literal segment from the whole allowed alphabet, 1..=12 bytes (occasionally 64).
pub(crate) fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => "[A-Za-z0-9_:@=~!-]{1,12}",
        1 => "[a-z]{64}",
    ]
}

/// Topics of 1..=16 segments, filtered to the 256-byte limit.
pub(crate) fn topic() -> impl Strategy<Value = Topic> {
    prop::collection::vec(segment(), 1..=16)
        .prop_map(|segs| segs.join("."))
        .prop_filter("at most 256 bytes", |s| s.len() <= 256)
        .prop_map(|s| s.parse::<Topic>().expect("strategy builds valid topics"))
}

pub(crate) fn name() -> impl Strategy<Value = Name> {
    topic().prop_map(|t| t.as_str().parse::<Name>().expect("a topic is a valid name"))
}

pub(crate) fn realm() -> impl Strategy<Value = Realm> {
    "[A-Za-z0-9_:@=~!-]{1,64}".prop_map(|s| s.parse::<Realm>().expect("valid realm"))
}

/// One pattern segment: a literal, `*` or `**`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Seg {
    /// A literal segment.
    Lit(String),
    /// `*`.
    One,
    /// `**`.
    Many,
}

/// Joins segments into pattern text, dropping a `**` that directly follows another (the
/// canonical form the syntax demands).
pub(crate) fn pattern_text(segs: &[Seg]) -> String {
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

pub(crate) fn pattern_segments(
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

pub(crate) fn pattern() -> impl Strategy<Value = Pattern> {
    pattern_segments(segment().boxed(), 16)
        .prop_map(|segs| pattern_text(&segs))
        .prop_filter("at most 256 bytes", |s| s.len() <= 256)
        .prop_map(|s| s.parse::<Pattern>().expect("strategy builds valid patterns"))
}

// ---------------------------------------------------------------------------------------------
// Strategies for frames.

/// Every type the strategies cover: all of `frame::types` plus an extension type.
pub(crate) fn covered_types() -> Vec<u8> {
    let mut t: Vec<u8> = (0u8..types::EXTENSION_MIN).filter(|&t| types::is_known(t)).collect();
    t.push(0x80);
    t
}

/// Arbitrary valid frames of type `t` (any type ≥ 0x80 gives extension frames).
pub(crate) fn frame_of(t: u8) -> BoxedStrategy<Frame> {
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

pub(crate) fn publish() -> impl Strategy<Value = frame::Publish> {
    (varint(), prop::option::of(varint()), topic(), payload()).prop_map(
        |(request_id, message_id, topic, payload)| frame::Publish {
            request_id,
            message_id,
            topic,
            payload,
        },
    )
}

pub(crate) fn deliver() -> impl Strategy<Value = frame::Deliver> {
    (prop::collection::vec(varint(), 1..6), prop::option::of(varint()), topic(), payload())
        .prop_map(|(sub_ids, message_id, topic, payload)| frame::Deliver {
            sub_ids: SmallVec::from_vec(sub_ids),
            message_id,
            topic,
            payload,
        })
}

/// A frame of any type, every type equally likely.
pub(crate) fn any_frame() -> impl Strategy<Value = Frame> {
    Union::new(covered_types().into_iter().map(frame_of))
}
